"""Stage 3: PPO with Fact-RLHF reward shaping (`RLHF/models/ppo_trainer.py` of LLaVA-RLHF).

Four roles, LoRA adapters on frozen bases that are held once:
  policy     trainable LoRA on the policy base, initialised from the starting point's adapter (the RL-init
             LoRA SFT run) or fresh
  reference  that initial adapter, frozen (no adapter: the base itself)
  value      trainable LoRA on the reward model's base, initialised from the reward model's adapter, plus a
             zero-initialised head reading position t - 1 for response token t
  reward     the reward model's adapter and head, frozen
When the policy and the reward model start from the same base (the 13B recipe, the tiny configs) one copy is
held; otherwise two (the 7B recipe pairs a 7B policy with a 13B reward model).

One loop step = one rollout batch of `batch_size` prompts:
  1. sample responses with the jitted sampler (temperature 1, top-p 1, `max_new_tokens`), stop at EOS (and
     optionally the reference's question-mark ids), `ppo.rollout_chunk_size` prompts per sampler call (all by
     default; fewer bound the KV cache, which is most of the sampler's memory at 13B);
  2. score: policy and reference log-probs, values, the reward model on prompt + response + the evaluation
     instruction with the prompt's facts freshly shuffled; symbolic bonuses from the decoded text;
  3. shape the rewards (`rl.shaping`), scale by `reward_scale` (x10) or whiten, GAE (`rl.advantages`), whiten
     the advantages over the global batch;
  4. `noptepochs` passes over the shuffled rollouts in minibatches of `step_batch_size` (each split into
     `grad_accum` micro-batches): clipped policy loss + vf_coef * clipped value loss, one optimizer for the
     policy LoRA, the value LoRA and the value head; the learning-rate schedule advances once per rollout.
The rollouts of every `save_rollouts_every`-th step go to WORKDIR/rollouts/step_K.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from fact_rlhf_jax import paths
from fact_rlhf_jax import sharding as shd
from fact_rlhf_jax.pretrained import absolute as pretrained_absolute
from fact_rlhf_jax.rl import advantages as adv_lib
from fact_rlhf_jax.rl import losses as rl_losses
from fact_rlhf_jax.rl import rollout as ro
from fact_rlhf_jax.rl import shaping
from fact_rlhf_jax.train.stage import LossTerms, Stage, StepContext
from fact_rlhf_jax.train.step import accumulate_gradients, with_frozen
from fact_rlhf_jax.train.trainable import merge, partition

SAMPLER_INPUTS = ("query_ids", "query_mask", "pixel_values")  # the prompt batch's arrays the sampler reads

log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
    """Every PPO key with its default: the reference's 13B `train_rl_model.sh` values where it has them."""
    from fact_rlhf_jax.train.defaults import base_config

    c = base_config()
    c.stage = "ppo"
    # policy_preset / reward_preset: the starting points' model presets, for `fact-rlhf plan` where they are not readable
    c.init = ml_collections.ConfigDict(dict(policy="", reward="", param_dtype="", policy_preset="", reward_preset=""))
    # A fresh policy adapter when init.policy has none (the reference's RL-init adapter is r64/alpha16 too).
    c.lora = ml_collections.ConfigDict(dict(rank=64, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down")))
    c.ppo = ml_collections.ConfigDict(dict(
        step_batch_size=256,  # rollouts per optimizer update (minibatch)
        noptepochs=2,  # passes over each rollout batch
        max_new_tokens=896,
        temperature=1.0,
        top_p=1.0,
        extra_stop_ids=(),  # e.g. the reference's "?" ids (1577, 29973 for LLaMA): a response cut there gets no EOS
        kl_coef=0.1,
        kl_estimator="k1",
        stop_penalty=-8.0,
        relative_stop_penalty=True,
        length_bonus_score=-10.0,
        correct_bonus_score=2.0,
        reward_bias=0.0,
        reward_scale=10.0,  # rewards x10 before GAE (the reference's whiten_rewards=False branch)
        whiten_rewards=False,
        gamma=1.0,
        lam=1.0,
        whiten_advantages=True,
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        token_mask="response",  # "response": statistics and losses over response tokens; "all": every slot
        init_value_from_reward=True,
        scoring_batch_size=0,  # rows per forward pass when scoring a rollout (0: all at once)
        rollout_chunk_size=0,  # prompts per sampler pass (0: all at once); the KV cache of one chunk is live at a time
        save_rollouts_every=10,
    ))
    c.trainable = ("policy/.*", "value/.*")
    c.data = ml_collections.ConfigDict(dict(
        train=[], captions="", tokenizer="", template="vicuna_v1", query_len=128, instruction_length=512,
        strict=False, read_threads=4, pad_to_square=True, reward_prompt="",  # "": the reward model's own
        shapesworld=dict(num_images=0, seed=0, noise=0.0, image_size=56, label_noise=0.0),
        sft_overrides={}, reward_overrides={},
    ))
    c.batch_size = 512  # prompts per rollout
    c.num_epochs = 4.0
    c.optim.lr = 3e-5
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 5
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    c.checkpoint.every = 10
    c.checkpoint.keep = 3
    c.log_every = 1
    return c


def tiny_config() -> ml_collections.ConfigDict:
    """CPU-sized PPO on a ShapesWorld with the tiny SFT policy and the tiny Fact-RM (configs/ppo/tiny.py)."""
    c = default_config()
    c.init.policy_preset = c.init.reward_preset = "tiny"  # `fact-rlhf plan` without the prepared models
    c.data.shapesworld.num_images = 2000
    c.data.query_len = 64
    c.data.instruction_length = 320
    c.data.read_threads = 0
    c.batch_size = 32
    c.ppo.step_batch_size = 16
    c.ppo.noptepochs = 2
    c.ppo.max_new_tokens = 64
    c.ppo.save_rollouts_every = 10
    c.lora.rank = 16
    c.lora.alpha = 16.0
    c.num_steps = 40
    c.num_epochs = 1.0
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 2
    c.mesh.fsdp = -1
    c.checkpoint.every = 10
    c.checkpoint.keep = 2
    c.log_every = 1
    return c


def _identity(source) -> str:
    """One string per starting point (to tell whether the policy and the reward model share a base)."""
    source = pretrained_absolute(source)
    return source if isinstance(source, str) else json.dumps(source, sort_keys=True)


def _configured_adapter(config):
    """The policy adapter `config.lora` describes (a fresh one when init.policy has none)."""
    from fact_rlhf_jax import pretrained

    return pretrained.AdapterSpec("lora", int(config.lora.rank), float(config.lora.alpha), tuple(config.lora.targets))


def _shares_base(policy, reward) -> bool:
    """Whether the policy's base (the starting point itself, or the base its adapter sits on) is the reward model's
    base (`pretrained.Card`s of both)."""
    if policy.adapter is not None and policy.base is not None:
        policy_base = _identity(policy.base)
    else:
        policy_base = _identity(policy.location) + (f":{policy.params_path}" if policy.params_path else "")
    return policy_base == _identity(reward.base)


class PPOStage(Stage):
    name = "ppo"

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        from transformers import AutoTokenizer

        from fact_rlhf_jax import pretrained
        from fact_rlhf_jax.data import preference, reward_input

        self.config = config
        self.workdir = workdir
        data = config.data
        policy_source, reward_source = config.init.policy, config.init.reward
        train_sources = [tuple(s) for s in data.train]
        captions_path = data.captions
        if not policy_source and int(data.shapesworld.get("num_images", 0)) > 0:
            policy_source, reward_source, world = shapesworld_start(config, workdir)
            train_sources = [(world["ppo_prompts"], world["images"], 1.0)]
            captions_path = captions_path or world["captions"]
        if not policy_source or not reward_source:
            raise ValueError("config.init.policy and config.init.reward: the policy's starting point and a reward "
                             "model workdir are both needed")
        if not train_sources:
            raise ValueError("config.data.train: no prompt file")
        dtype = config.init.get("param_dtype", "") or None
        self.policy_source, self.reward_source = policy_source, reward_source
        policy_card = pretrained.describe(policy_source, param_dtype=dtype)
        reward_card = pretrained.describe(reward_source, param_dtype=dtype)
        self._set_models(config, policy_card, reward_card, _shares_base(policy_card, reward_card))
        self.tokenizer_dir = data.tokenizer or self.policy_card.tokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        self.eos_id = int(self.tokenizer.eos_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        prompt = data.get("reward_prompt", "") or self.reward_card.extra.get("prompt", "fact_rlhf")
        self.template_text = reward_input.load_instruction(prompt)
        captions_path = captions_path or self.reward_card.extra.get("captions", "")
        self.captions = preference.load_captions(captions_path) if reward_input.is_factual(self.template_text) else None
        self.train_sources = train_sources
        self._set_rollout_settings(config)
        self._loader = None
        pretrained.write_card(workdir, pretrained.Card(
            "llava", self.policy_cfg, str(Path(self.tokenizer_dir).absolute()),
            base=self._policy_base_source(), adapter=dataclasses.replace(self.policy_adapter, path="policy"),
            extra={"stage": "ppo", "reward_model": _identity(reward_source)}))

    @classmethod
    def for_planning(cls, config: ml_collections.ConfigDict) -> "PPOStage":
        """The model side only (no tokenizer, data or weights), for `fact-rlhf plan`. A starting point readable here
        is described as for training; otherwise its preset (init.policy_preset / init.reward_preset) stands in,
        laid out as the reference recipe: the policy a `config.lora` adapter on its base (the RL-init run, so also
        the frozen reference), the reward model an adapter of the same spec plus a head, one base shared by both
        when both presets are the same model."""
        from fact_rlhf_jax import pretrained

        stage = cls.__new__(cls)
        stage.config, stage.workdir = config, None
        init, dtype, spec = config.init, config.init.get("param_dtype", "") or None, _configured_adapter(config)
        policy = pretrained.planning_card(init.policy, init.get("policy_preset", ""), preset_key="init.policy_preset",
                                          param_dtype=dtype, adapter=spec)
        reward = pretrained.planning_card(init.reward, init.get("reward_preset", ""), preset_key="init.reward_preset",
                                          param_dtype=dtype, kind="reward", adapter=spec)
        if policy.location and reward.location:  # both described from their sources
            shared = _shares_base(policy, reward)
        else:
            shared = not policy.location and not reward.location and policy.config == reward.config
        stage._set_models(config, policy, reward, shared)
        stage._set_rollout_settings(config)
        stage.eos_id, stage.pad_id = 2, 0  # LLaMA's </s> and <unk>; the ids do not change the programs' shapes
        return stage

    def _set_models(self, config, policy_card, reward_card, shared_base: bool) -> None:
        if reward_card.kind != "reward":
            raise ValueError(f"config.init.reward={reward_card.location or config.init.reward}: a {reward_card.kind} "
                             "model, not a reward model")
        self.policy_card, self.reward_card, self.shared_base = policy_card, reward_card, shared_base
        self.policy_cfg, self.reward_cfg = policy_card.config, reward_card.config
        self.policy_adapter = policy_card.adapter or _configured_adapter(config)
        self.value_adapter = reward_card.adapter

    def _set_rollout_settings(self, config) -> None:
        ppo = config.ppo
        self.shaping = shaping.ShapingConfig(
            kl_coef=float(ppo.kl_coef), kl_estimator=ppo.kl_estimator, stop_penalty=float(ppo.stop_penalty),
            relative_stop_penalty=bool(ppo.relative_stop_penalty), length_bonus_score=float(ppo.length_bonus_score),
            correct_bonus_score=float(ppo.correct_bonus_score), reward_bias=float(ppo.reward_bias),
            max_new_tokens=int(ppo.max_new_tokens))
        if ppo.token_mask not in ("response", "all"):
            raise ValueError(f"config.ppo.token_mask={ppo.token_mask!r}: expected response or all")
        batch, step_batch = int(config.batch_size), int(ppo.step_batch_size)
        if batch % step_batch:
            raise ValueError(f"batch_size={batch} (prompts per rollout) is not a multiple of ppo.step_batch_size="
                             f"{step_batch}")
        self.minibatches = batch // step_batch
        self.updates_per_step = int(ppo.noptepochs) * self.minibatches

    def _policy_base_source(self):
        card = self.policy_card
        if card.adapter is not None and card.base is not None:
            return card.base
        if card.adapter is not None:
            raise ValueError(f"{self.policy_source}: an adapter on a base kept inside that run's checkpoints; start "
                             "PPO from a run whose model card names its base (LoRA SFT with init.params_from)")
        return pretrained_absolute(self.policy_source)

    # --- model ------------------------------------------------------------------------------------
    def init_params(self, rng):
        from fact_rlhf_jax.models import heads, lora

        p_rng, v_rng, h_rng = jax.random.split(rng, 3)
        pa, va = self.policy_adapter, self.value_adapter
        return {
            "policy": lora.init(self.policy_cfg, p_rng, rank=pa.rank, targets=pa.targets),
            "value": {"lora": lora.init(self.reward_cfg, v_rng, rank=va.rank, targets=va.targets),
                      "head": heads.init(self.reward_cfg.text.hidden_size, h_rng, zero=True)},
        }

    def param_axes(self):
        from fact_rlhf_jax.models import heads, lora

        pa, va = self.policy_adapter, self.value_adapter
        return {"policy": lora.param_axes(self.policy_cfg, rank=pa.rank, targets=pa.targets),
                "value": {"lora": lora.param_axes(self.reward_cfg, rank=va.rank, targets=va.targets),
                          "head": heads.param_axes()}}

    def frozen_params(self, mesh, rules):
        from fact_rlhf_jax import pretrained

        dtype = self.config.init.get("param_dtype", "") or None
        policy = pretrained.load(self.policy_source, mesh=mesh, rules=rules, param_dtype=dtype)
        reward = pretrained.load(self.reward_source, mesh=mesh, rules=rules, param_dtype=dtype,
                                 with_base=not self.shared_base)
        frozen = {"policy_base": policy.params, "reward": {"lora": reward.adapter, "head": reward.head}}
        if policy.adapter is not None:
            frozen["ref"] = policy.adapter
        if not self.shared_base:
            frozen["reward_base"] = reward.params
        self._initial = {"policy": policy.adapter, "value": reward.adapter}
        log.info("PPO bases: %s", "one shared by all four roles" if self.shared_base else "policy + reward model")
        return frozen

    def abstract_frozen(self, mesh, rules):
        from fact_rlhf_jax import pretrained

        frozen = {"policy_base": pretrained.abstract_llava(self.policy_cfg, mesh, rules),
                  "reward": {"lora": pretrained.abstract_adapter(self.reward_cfg, self.value_adapter, mesh, rules),
                             "head": pretrained.abstract_head(self.reward_cfg, mesh)}}
        if self.policy_card.adapter is not None:
            frozen["ref"] = pretrained.abstract_adapter(self.policy_cfg, self.policy_adapter, mesh, rules)
        if not self.shared_base:
            frozen["reward_base"] = pretrained.abstract_llava(self.reward_cfg, mesh, rules)
        return frozen

    def load_pretrained(self, params, shardings):
        """A fresh run's policy adapter = the starting point's (if any); value adapter = the reward model's."""
        copy = lambda tree, sh: jax.tree.map(lambda x, s: jax.device_put(jnp.array(x, copy=True), s), tree, sh)
        out = dict(params)
        if self._initial["policy"] is not None:
            out["policy"] = copy(self._initial["policy"], shardings["policy"])
        if self.config.ppo.init_value_from_reward:
            out["value"] = {"lora": copy(self._initial["value"], shardings["value"]["lora"]),
                            "head": params["value"]["head"]}
        return out

    @staticmethod
    def reward_base(params):
        return params.get("reward_base", params["policy_base"])

    def loss(self, params, batch, rng) -> LossTerms:
        """The PPO loss on a minibatch of scored rollouts (`params` includes the frozen weights)."""
        ppo = self.config.ppo
        pa, va = self.policy_adapter, self.value_adapter
        logp, entropy = ro.token_logprobs(params["policy_base"], self.policy_cfg, params["policy"], pa.scale,
                                          batch["query_ids"], batch["query_mask"], batch["pixel_values"],
                                          batch["responses"], batch["response_mask"], float(ppo.temperature))
        values = ro.token_values(self.reward_base(params), self.reward_cfg, params["value"]["lora"],
                                 params["value"]["head"], va.scale, batch["reward_query_ids"],
                                 batch["reward_query_mask"], batch["reward_pixel_values"], batch["responses"],
                                 batch["response_mask"])
        return rl_losses.ppo_loss_terms(logp, batch["logprobs"], batch["advantages"], values, batch["values"],
                                        batch["returns"], batch["token_mask"], entropy,
                                        cliprange=float(ppo.cliprange), cliprange_value=float(ppo.cliprange_value),
                                        vf_coef=float(ppo.vf_coef))

    # --- rollouts -------------------------------------------------------------------------------------
    def sequence_scores(self, params, batch, responses, resp_mask):
        """The reward model's score per rollout [B] (a test can swap in a known reward here)."""
        reward = params["reward"]
        return ro.reward_scores(self.reward_base(params), self.reward_cfg, reward["lora"], reward["head"],
                                self.value_adapter.scale, batch["reward_query_ids"], batch["reward_query_mask"],
                                batch["reward_pixel_values"], responses, resp_mask, batch["instruction_ids"],
                                batch["instruction_mask"])

    def generate(self, params, frozen, batch, rng):
        from fact_rlhf_jax import sampling

        ppo = self.config.ppo
        stops = tuple(sorted({self.eos_id, *map(int, ppo.extra_stop_ids)}))
        return sampling.sample_tokens(
            frozen["policy_base"], params["policy"], batch["query_ids"], batch["query_mask"], batch["pixel_values"],
            rng, jnp.float32(ppo.temperature), jnp.float32(ppo.top_p), jnp.float32(self.policy_adapter.scale),
            cfg=self.policy_cfg, max_new_tokens=int(ppo.max_new_tokens), top_k=0, greedy=False,
            filtered=float(ppo.top_p) < 1.0, stop_ids=stops, pad_id=self.pad_id)

    def score_rollouts(self, params, frozen, batch, responses, lengths, correct_bonus):
        """Everything PPO needs from a rollout batch: old log-probs and values, shaped rewards, advantages and
        returns, plus per-rollout statistics. All [B, N] arrays are 0 off `token_mask`."""
        ppo = self.config.ppo
        full = with_frozen(params, frozen)
        n = responses.shape[1]
        resp_mask = ro.response_mask(lengths, n, batch["valid"])
        pa, va = self.policy_adapter, self.value_adapter
        temperature = float(ppo.temperature)

        def forward(chunk):
            logp, ent = ro.token_logprobs(full["policy_base"], self.policy_cfg, full["policy"], pa.scale,
                                          chunk["query_ids"], chunk["query_mask"], chunk["pixel_values"],
                                          chunk["responses"], chunk["mask"], temperature)
            ref, _ = ro.token_logprobs(full["policy_base"], self.policy_cfg, full.get("ref"), pa.scale,
                                       chunk["query_ids"], chunk["query_mask"], chunk["pixel_values"],
                                       chunk["responses"], chunk["mask"], temperature)
            values = ro.token_values(self.reward_base(full), self.reward_cfg, full["value"]["lora"],
                                     full["value"]["head"], va.scale, chunk["reward_query_ids"],
                                     chunk["reward_query_mask"], chunk["reward_pixel_values"], chunk["responses"],
                                     chunk["mask"])
            score = self.sequence_scores(full, chunk, chunk["responses"], chunk["mask"])
            return logp, ent, ref, values, score

        inputs = {k: batch[k] for k in ("query_ids", "query_mask", "pixel_values", "reward_query_ids",
                                        "reward_query_mask", "reward_pixel_values", "instruction_ids",
                                        "instruction_mask")}
        logp, entropy, ref, values, score = ro.in_chunks(
            forward, {**inputs, "responses": responses, "mask": resp_mask}, int(ppo.scoring_batch_size))
        valid = batch["valid"].astype(jnp.float32)
        has_eos = ro.has_token(responses, resp_mask, self.eos_id)
        if ppo.token_mask == "response":
            token_mask, last = resp_mask, jnp.maximum(lengths - 1, 0)
        else:
            token_mask, last = jnp.ones_like(resp_mask) * valid[:, None], jnp.full_like(lengths, n - 1)
        shaped = shaping.shape_rewards(score, logp, ref, resp_mask, has_eos, batch["length_bonus"], correct_bonus,
                                       last, self.shaping)
        rewards = shaped.rewards * token_mask
        if ppo.whiten_rewards:
            rewards = adv_lib.whiten(rewards, token_mask, shift_mean=False)
        else:
            rewards = rewards * float(ppo.reward_scale)
        advantages, returns = adv_lib.gae(rewards, values, token_mask, float(ppo.gamma), float(ppo.lam))
        if ppo.whiten_advantages:
            advantages = adv_lib.whiten(advantages, token_mask)
        rollout = {**inputs, "responses": responses, "response_mask": resp_mask, "token_mask": token_mask,
                   "logprobs": logp, "values": values * token_mask, "advantages": advantages, "returns": returns}
        rows = jnp.maximum(valid.sum(), 1.0)
        mean = lambda x: (x * valid).sum() / rows
        sequence_reward = sum(shaped.parts.values()) + self.shaping.reward_bias
        tokens = jnp.maximum(resp_mask.sum(), 1.0)
        stats = {
            "reward": mean(sequence_reward),
            **{f"reward/{k}": mean(v) for k, v in shaped.parts.items()},
            "no_eos_rate": mean(1.0 - has_eos.astype(jnp.float32)),
            "response_length": mean(resp_mask.sum(axis=1)),
            "kl_sum_seq": mean(shaped.kl.sum(axis=1)),
            "rollout_entropy": (entropy * resp_mask).sum() / tokens,
            "value_mean": (values * token_mask).sum() / jnp.maximum(token_mask.sum(), 1.0),
            "return_mean": (returns * token_mask).sum() / jnp.maximum(token_mask.sum(), 1.0),
        }
        rows_out = {"score": shaped.score, "parts": shaped.parts, "sequence_reward": sequence_reward}
        return rollout, stats, rows_out

    def update(self, params, opt_state, rollout, frozen, key, *, optimizer, mask, mesh):
        """`noptepochs` passes of shuffled minibatch updates over one scored rollout batch (one `lax.scan`)."""
        ppo = self.config.ppo
        b = rollout["responses"].shape[0]
        mb = b // self.minibatches
        keys = jax.random.split(key, int(ppo.noptepochs) + 1)
        order = jnp.concatenate([jax.random.permutation(k, b) for k in keys[:-1]]).reshape(-1, mb)

        def one(carry, xs):
            params, opt_state = carry
            idx, i = xs
            minibatch = jax.tree.map(lambda x: x[idx], rollout)
            trainable, frozen_part = partition(params, mask)
            terms, grads = accumulate_gradients(self.loss, trainable, frozen_part, minibatch,
                                                jax.random.fold_in(keys[-1], i), int(self.config.grad_accum), mesh,
                                                frozen)
            scale = 1.0 / jnp.maximum(terms.weight, 1.0)
            grads = jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads)
            grad_norm = optax.tree.norm(grads)
            updates, opt_state = optimizer.update(grads, opt_state, trainable)
            params = merge(optax.apply_updates(trainable, updates), frozen_part)
            sums = {k: s for k, (s, _) in terms.metrics.items()}
            counts = {k: c for k, (_, c) in terms.metrics.items()}
            return (params, opt_state), (sums, counts, grad_norm, terms.total * scale)

        steps = order.shape[0]
        (params, opt_state), (sums, counts, norms, losses) = jax.lax.scan(
            one, (params, opt_state), (order, jnp.arange(steps)))
        metrics = {k: sums[k].sum() / jnp.maximum(counts[k].sum(), 1.0) for k in sums}
        metrics.update(loss=losses.mean(), grad_norm=norms.mean())
        return params, opt_state, metrics

    def build_step(self, context: StepContext):
        return PPOStep(self, context)

    # --- data -------------------------------------------------------------------------------------
    def prompt_loader(self, *, process_index=0, process_count=1, batch_size, seed, shuffle=True, num_epochs=None):
        from fact_rlhf_jax.data.prompts import build_prompt_loader

        data = self.config.data
        return build_prompt_loader(
            self.train_sources, self.tokenizer, policy_cfg=self.policy_cfg, reward_cfg=self.reward_cfg,
            template_text=self.template_text, captions=self.captions, query_len=int(data.query_len),
            instruction_length=int(data.instruction_length), global_batch_size=batch_size * process_count,
            seed=seed, conv_template=data.template, shuffle=shuffle, num_epochs=num_epochs, strict=bool(data.strict),
            process_index=process_index, process_count=process_count, pad_to_square=bool(data.pad_to_square),
            read_threads=int(data.read_threads))

    def train_data(self, *, process_index, process_count, batch_size, seed):
        self._loader = self.prompt_loader(process_index=process_index, process_count=process_count,
                                          batch_size=batch_size, seed=seed)
        return iter(self._loader)

    def num_train_examples(self):
        return None if self._loader is None else int(self._loader.num_records)

    def count_tokens(self, batch):
        return 0  # tokens/s of PPO counts generated tokens; the step reports its own throughput

    def finish(self, workdir, data):
        from fact_rlhf_jax.data.pipeline import write_bad_record_report

        if self._loader is not None:
            write_bad_record_report(self._loader, workdir)


class PPOStep:
    """The loop's step for PPO: rollout (jitted sampler), scoring (one jit), updates (one jit, state donated)."""

    def __init__(self, stage: PPOStage, ctx: StepContext):
        self.stage, self.ctx = stage, ctx
        mesh, rules = ctx.mesh, ctx.rules
        replicated = NamedSharding(mesh, PartitionSpec())
        with_mesh = lambda fn: _under_mesh(fn, mesh, rules)
        self._generate = jax.jit(with_mesh(stage.generate))
        self._score = jax.jit(with_mesh(stage.score_rollouts))
        update = lambda params, opt_state, rollout, frozen, key: stage.update(
            params, opt_state, rollout, frozen, key, optimizer=ctx.optimizer, mask=ctx.mask, mesh=mesh)
        sh = ctx.state_shardings
        self._update = jax.jit(with_mesh(update), donate_argnums=(0, 1),
                               out_shardings=(sh["params"], sh["opt_state"], replicated))

    def __call__(self, state, host_batch):
        stage, ctx = self.stage, self.ctx
        t0 = time.perf_counter()
        batch = shd.host_local_to_global(host_batch, ctx.mesh)
        rng, gen_key, shuffle_key = jax.random.split(state["rng"], 3)
        prompts = {k: batch[k] for k in SAMPLER_INPUTS}
        gen = ro.sample_in_chunks(lambda rows, key: self._generate(state["params"], ctx.frozen, rows, key), prompts,
                                  gen_key, int(stage.config.ppo.rollout_chunk_size))
        tokens, lengths = _local_rows(gen.tokens, ctx.mesh), _local_rows(gen.lengths, ctx.mesh)
        texts = [stage.tokenizer.decode(row[:n], skip_special_tokens=True, clean_up_tokenization_spaces=False)
                 for row, n in zip(tokens, lengths)]
        bonus = np.asarray([shaping.symbolic_bonus(t, c) for t, c in zip(texts, host_batch["caption_type"])],
                           np.float32)
        t1 = time.perf_counter()
        rollout, stats, rows = self._score(state["params"], ctx.frozen, batch, gen.tokens, gen.lengths,
                                           shd.host_local_to_global(bonus, ctx.mesh))
        jax.block_until_ready(rollout)
        t2 = time.perf_counter()
        step = int(jax.device_get(state["step"]))
        params, opt_state, updates = self._update(state["params"], state["opt_state"], rollout, ctx.frozen,
                                                  shuffle_key)
        jax.block_until_ready(params)
        t3 = time.perf_counter()
        # state["step"] + 1 stays a global (replicated) array: a multi-host checkpoint cannot save a local one
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": rng}
        metrics = {k: float(v) for k, v in jax.device_get({**stats, **updates}).items()}
        generated = int(np.asarray(lengths).sum()) * jax.process_count()
        metrics.update(lr=float(ctx.schedule(step)), rollout_seconds=t1 - t0, scoring_seconds=t2 - t1,
                       update_seconds=t3 - t2, generated_tokens_per_s=generated / max(t1 - t0, 1e-9))
        every = int(stage.config.ppo.save_rollouts_every)
        if ctx.is_chief and every > 0 and (step + 1) % every == 0:
            self._save_rollouts(step + 1, host_batch, texts, rows, ctx.mesh)
        return new_state, metrics

    def _save_rollouts(self, step, host_batch, texts, rows, mesh):
        stage = self.stage
        image_id = stage.policy_cfg.image_token_id
        local = {k: _local_rows(v, mesh) for k, v in {"score": rows["score"], "reward": rows["sequence_reward"],
                                                        **{f"reward/{k}": v for k, v in rows["parts"].items()}}.items()}
        path = paths.workdir(self.ctx.workdir) / "rollouts" / f"step_{step}.jsonl"  # local or on a bucket
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                if not host_batch["valid"][i]:
                    continue
                q = [t for t, m in zip(host_batch["query_ids"][i], host_batch["query_mask"][i]) if m and t != image_id]
                record = {"prompt": stage.tokenizer.decode(q, skip_special_tokens=True), "response": text,
                          "caption_type": int(host_batch["caption_type"][i])}
                record.update({k: float(v[i]) for k, v in local.items()})
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _under_mesh(fn, mesh, rules):
    def wrapped(*args, **kwargs):
        with shd.use_mesh(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def _local_rows(x, mesh) -> np.ndarray:
    """This host's rows of a batch-sharded global array, in its local batch order."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    spec = shd.batch_sharding(mesh, x.ndim).spec
    return np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, spec))


def shapesworld_start(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str, dict[str, str]]:
    """A tiny config's starting points: WORKDIR/shapesworld, a tiny SFT model (the policy) and a tiny Fact-RM."""
    from fact_rlhf_jax.train import prerequisites

    if jax.process_count() > 1:
        raise ValueError("data.shapesworld is for single-host runs; prepare the world, SFT and reward models first")
    world = prerequisites.shapesworld(workdir, config.data.shapesworld)
    sft = prerequisites.tiny_sft(workdir, world, seed=int(config.seed),
                                 overrides=dict(config.data.get("sft_overrides", {}) or {}))
    rm = prerequisites.tiny_reward(workdir, world, sft, seed=int(config.seed),
                                   overrides=dict(config.data.get("reward_overrides", {}) or {}))
    return sft, rm, world


def build_stage(config, workdir):
    return PPOStage(config, workdir)


def plan_programs(config, mesh, rules):
    """`fact-rlhf plan` hook: the three programs of one PPO step as `PPOStep` jits them: the sampler on a rollout
    batch of `batch_size` prompts, the scoring pass over the rollouts (`ppo.scoring_batch_size` rows at a time)
    and the update (`noptepochs` x minibatches of `step_batch_size` rows, each in `grad_accum` micro-batches).
    The frozen bases, adapters and head are arguments of each; the optimizer state stays on the devices while
    sampling and scoring. Prompts are padded to `query_len`, instructions to `instruction_length`, responses
    to `max_new_tokens`."""
    from fact_rlhf_jax import plan
    from fact_rlhf_jax.data import prompts

    stage = PPOStage.for_planning(config)
    ppo, data = config.ppo, config.data
    rows, step_rows, accum = int(config.batch_size), int(ppo.step_batch_size), int(config.grad_accum)
    chunk = int(ppo.scoring_batch_size) if 0 < int(ppo.scoring_batch_size) < rows else rows
    sampled = int(ppo.rollout_chunk_size) if 0 < int(ppo.rollout_chunk_size) < rows else rows
    dp = shd.data_parallel_size(mesh)
    for what, n in ((f"ppo.step_batch_size / grad_accum = {step_rows} / {accum} (rows per update micro-batch)",
                     step_rows // accum), (f"ppo.scoring_batch_size = {chunk} (rows per scoring pass)", chunk),
                    (f"ppo.rollout_chunk_size = {sampled} (prompts per sampler pass)", sampled)):
        if step_rows % accum or n % dp or rows % n:
            raise ValueError(f"{what} does not split over the {dp} data-parallel devices of mesh "
                             f"{dict(mesh.shape)} (or does not divide batch_size {rows}); change --config.grad_accum, "
                             "--config.ppo.scoring_batch_size or --config.ppo.rollout_chunk_size")
    train = plan.abstract_train_state(stage, config, mesh, rules)
    frozen = stage.abstract_frozen(mesh, rules)
    step = PPOStep(stage, StepContext(optimizer=train.optimizer, schedule=train.schedule, mask=train.mask, mesh=mesh,
                                      rules=rules, state_shardings=train.shardings, frozen=frozen, grad_accum=accum,
                                      workdir="", is_chief=True))
    params, opt_state, key = train.state["params"], train.state["opt_state"], train.state["rng"]
    lengths = dict(query_length=prompts.query_length(stage.policy_cfg, int(data.query_len)),
                   reward_query_length=prompts.query_length(stage.reward_cfg, int(data.query_len)),
                   instruction_length=int(data.instruction_length))
    batch = plan.sharded_batch(plan.collated_spec(
        lambda ex: prompts.collate_prompts(ex, pad_id=0, **lengths),
        prompts.filler_prompt(stage.policy_cfg, stage.reward_cfg, 0), rows), mesh)
    prompts_in = {k: batch[k] for k in SAMPLER_INPUTS}
    chunk_rows = plan.sharded_batch(jax.eval_shape(lambda b: jax.tree.map(lambda x: x[:sampled], b), prompts_in), mesh)
    gen = jax.eval_shape(step._generate, params, frozen, prompts_in, key)
    responses = plan.sharded_batch({"tokens": gen.tokens, "lengths": gen.lengths,
                                    "symbolic bonus": jax.ShapeDtypeStruct((rows,), jnp.float32)}, mesh)
    scoring_args = (params, frozen, batch, *responses.values())
    rollout = plan.sharded_batch(jax.eval_shape(step._score, *scoring_args)[0], mesh)

    new = int(ppo.max_new_tokens)
    text = stage.policy_cfg.text
    cache = 2 * text.num_layers * sampled * (lengths["query_length"] + new) * text.num_kv_heads * text.dim_per_head
    cache *= jnp.dtype(stage.policy_cfg.compute_dtype).itemsize
    bases = "one base shared by policy and reward model" if stage.shared_base else "two bases (policy, reward model)"
    held = {"optimizer state": opt_state}
    inputs = {"parameters": params, "frozen weights": frozen, "prompt batch": batch}
    return [
        plan.Program("sample", f"{rows} rollouts of up to {new} new tokens after {lengths['query_length']}-token "
                     f"prompts, {sampled} at a time (KV cache {plan.format_bytes(cache)} over all devices); {bases}",
                     step._generate, (params, frozen, chunk_rows, key),
                     {"parameters": params, "frozen weights": frozen, "prompt chunk": chunk_rows},
                     resident={**held, "prompt batch": batch}, while_trips=new - 1, calls=rows // sampled),
        plan.Program("score", f"log-probs (policy, reference), values and reward-model scores of the {rows} "
                     f"rollouts, {chunk} at a time, then rewards and GAE", step._score, scoring_args,
                     {**inputs, "responses": responses}, resident=held),
        plan.Program("update", f"{int(ppo.noptepochs)} epochs x {stage.minibatches} minibatches of {step_rows} "
                     f"rollouts ({accum} micro-batch{'es' if accum > 1 else ''} of {step_rows // accum}): policy "
                     "+ value LoRA and value head",
                     step._update, (params, opt_state, rollout, frozen, key),
                     {"parameters": params, "optimizer state": opt_state, "rollout": rollout,
                      "frozen weights": frozen}, resident={"prompt batch": batch}),
    ]

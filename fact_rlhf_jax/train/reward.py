"""Stage 2: the (factually augmented) reward model on human preference pairs.

LoRA on a frozen LLaVA (the SFT model) plus a float32 scalar head reading the final hidden state at the
last token of "... the quality score of my last response is" (`data.reward_input`). Only the adapter and the
head train; the base is held once, outside the checkpoints (`Stage.frozen_params`). Loss: BCE-with-logits on
r(output_2) - r(output_1) against the preference, plus 1e-3 * |mean(r1 + r2)| (`losses.pairwise_reward_loss_terms`).

Config (`default_config()`; configs/rm/*.py):
  init.model            starting point (`fact_rlhf_jax.pretrained`): SFT workdir, llava-hf dir, original LLaVA
                        dir or {"path", "vision_tower"}; empty + data.shapesworld.num_images > 0: a ShapesWorld
                        and a tiny SFT model are prepared inside the workdir
  init.param_dtype      dtype of the frozen base ("" = the source's; "bfloat16" halves its memory)
  init.preset           the starting point's model preset (`models.config.preset`), for `fact-rlhf plan` where
                        init.model is not readable
  lora.rank, lora.alpha, lora.targets
  reward.prompt         "fact_rlhf" (facts in the instruction), "vanilla", or a text file with the template
  reward.center_coef    weight of the centering term (1e-3)
  data.train            [(preference.json, image_folder, weight)]; data.eval: held-out sources, or empty to
                        split data.eval_size pairs off the (single) training source with data.split_seed
  data.captions         image_to_caption.json (facts per image; a record's own "captions" field wins)
  data.tokenizer        "" = the starting point's; data.max_text_length: tokens of a reward input, the image
                        counted as one (2048); longer pairs are skipped and counted (`too_long`)
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import ml_collections
import numpy as np

from fact_rlhf_jax.train.losses import pairwise_reward_loss_terms
from fact_rlhf_jax.train.pair_data import PairDataStage
from fact_rlhf_jax.train.stage import LossTerms

log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
    """Every reward-model key with its default: the reference recipe's hyperparameters where it has them."""
    from fact_rlhf_jax.train.defaults import base_config

    c = base_config()
    c.stage = "reward"
    c.init = ml_collections.ConfigDict(dict(model="", param_dtype="", preset=""))
    c.lora = ml_collections.ConfigDict(dict(rank=64, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down")))
    c.reward = ml_collections.ConfigDict(dict(prompt="fact_rlhf", center_coef=1e-3))
    c.trainable = ("lora/.*", "head/.*")
    c.data = ml_collections.ConfigDict(dict(
        train=[], eval=[], captions="", tokenizer="", template="vicuna_v1", max_text_length=2048,
        length_buckets=None,  # padded lengths of a batch (the shortest that fits); None: powers of two
        eval_size=500, split_seed=42, strict=False, read_threads=4, pad_to_square=True,
        shapesworld=dict(num_images=0, seed=0, noise=0.0, image_size=56, label_noise=0.0),
        sft_overrides={},  # dotted SFT config keys -> values for the tiny SFT model prepared in the workdir
    ))
    c.batch_size = 32
    c.optim.lr = 2e-5
    c.optim.schedule = "constant"
    c.optim.warmup_ratio = 0.03
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 0.3
    c.checkpoint.every = 50
    c.checkpoint.keep = 10
    c.eval_every = 50
    return c


def tiny_config(factual: bool = True) -> ml_collections.ConfigDict:
    """CPU-sized reward model on a ShapesWorld (label noise 0) and the tiny SFT model, both prepared in the
    workdir (configs/rm/tiny.py; the tiny PPO config trains one as its reward model)."""
    c = default_config()
    c.reward.prompt = "fact_rlhf" if factual else "vanilla"
    c.init.preset = "tiny"  # `fact-rlhf plan` without the prepared SFT model (its vocabulary is the tokenizer's)
    c.data.shapesworld.num_images = 2000
    c.data.shapesworld.image_size = 56
    c.data.shapesworld.label_noise = 0.0
    c.data.eval_size = 200
    c.data.max_text_length = 512
    c.data.read_threads = 0
    c.lora.rank = 32
    c.lora.alpha = 32.0
    c.batch_size = 32
    c.num_steps = 300
    c.optim.lr = 2e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 10
    c.optim.clip_norm = 1.0
    c.mesh.fsdp = -1
    c.checkpoint.every = 100
    c.checkpoint.keep = 2
    c.log_every = 10
    c.eval_every = 100
    return c


def shapesworld_start(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, dict[str, str]]:
    """The starting point and world of a tiny config: WORKDIR/shapesworld and a tiny SFT model in WORKDIR/sft."""
    from fact_rlhf_jax.train import prerequisites

    if jax.process_count() > 1:
        raise ValueError("data.shapesworld is for single-host runs; prepare the world and the SFT model first and "
                         "name them in init.model / data.*")
    world = prerequisites.shapesworld(workdir, config.data.shapesworld)
    sft_dir = prerequisites.tiny_sft(workdir, world, seed=int(config.seed),
                                     overrides=dict(config.data.get("sft_overrides", {}) or {}))
    return sft_dir, world


class RewardStage(PairDataStage):
    name = "reward"
    pad_side = "left"  # as the reference: the score is read at the last position either way

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        from transformers import AutoTokenizer

        from fact_rlhf_jax import pretrained
        from fact_rlhf_jax.data import preference, reward_input

        self.config = config
        self.workdir = workdir
        data = config.data
        source = config.init.model
        train_sources = [tuple(s) for s in data.train]
        eval_sources = [tuple(s) for s in (data.get("eval", ()) or ())]
        captions_path = data.captions
        if not source and int(data.shapesworld.get("num_images", 0)) > 0:
            source, world = shapesworld_start(config, workdir)
            train_sources = [(world["preference"], world["images"], 1.0)]
            captions_path = captions_path or world["captions"]
        if not source:
            raise ValueError("config.init.model: no starting point (an SFT workdir or a LLaVA checkpoint directory)")
        if not train_sources:
            raise ValueError("config.data.train: no preference file")
        self.source = source
        self.card = pretrained.describe(source, param_dtype=config.init.get("param_dtype", "") or None)
        self._set_model(config, self.card.config)
        self.tokenizer_dir = data.tokenizer or self.card.tokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        self.template_text = reward_input.load_instruction(config.reward.prompt)
        self.factual = reward_input.is_factual(self.template_text)
        if self.factual and not captions_path:
            log.warning("a factual reward prompt without data.captions: records need their own 'captions' field")
        self.captions = preference.load_captions(captions_path) if self.factual else None
        self.train_sources = train_sources
        self.train_rows, self.eval_rows, self.eval_sources = preference.held_out_split(
            train_sources, eval_sources, int(data.eval_size), int(data.split_seed))
        pretrained.write_card(workdir, pretrained.Card(
            "reward", self.model_cfg, str(Path(self.tokenizer_dir).absolute()), base=pretrained.absolute(source),
            adapter=pretrained.AdapterSpec("lora", self.lora_rank, float(config.lora.alpha), self.lora_targets),
            head="head",
            extra={"prompt": str(Path(config.reward.prompt).absolute()) if Path(config.reward.prompt).is_file()
                   else config.reward.prompt,
                   "captions": str(Path(captions_path).absolute()) if captions_path else "",
                   "conv_template": data.template, "max_text_length": int(data.max_text_length)}))

    @classmethod
    def for_planning(cls, config: ml_collections.ConfigDict) -> "RewardStage":
        """The model and loss side only (no tokenizer, data or weights), for `fact-rlhf plan`: the base is
        `init.model` when readable here, else the model preset `init.preset`."""
        from fact_rlhf_jax import pretrained

        stage = cls.__new__(cls)
        stage.config, stage.workdir, stage.source = config, None, config.init.model
        card = pretrained.planning_card(config.init.model, config.init.get("preset", ""), preset_key="init.preset",
                                        param_dtype=config.init.get("param_dtype", "") or None)
        stage._set_model(config, card.config)
        return stage

    def _set_model(self, config: ml_collections.ConfigDict, model_cfg) -> None:
        self.model_cfg = model_cfg
        self.lora_rank = int(config.lora.rank)
        self.lora_targets = tuple(config.lora.targets)
        self.lora_scale = float(config.lora.alpha) / self.lora_rank
        self.max_length = int(config.data.max_text_length) - 1 + model_cfg.num_image_tokens

    # --- model ------------------------------------------------------------------------------------
    def init_params(self, rng):
        from fact_rlhf_jax.models import heads, lora

        lora_rng, head_rng = jax.random.split(rng)
        return {"lora": lora.init(self.model_cfg, lora_rng, rank=self.lora_rank, targets=self.lora_targets),
                "head": heads.init(self.model_cfg.text.hidden_size, head_rng)}

    def param_axes(self):
        from fact_rlhf_jax.models import heads, lora

        return {"lora": lora.param_axes(self.model_cfg, rank=self.lora_rank, targets=self.lora_targets),
                "head": heads.param_axes()}

    def frozen_params(self, mesh, rules):
        from fact_rlhf_jax import pretrained

        base = pretrained.load(self.source, mesh=mesh, rules=rules, param_dtype=self.model_cfg.param_dtype)
        return {"base": base.merged_params()}

    def abstract_frozen(self, mesh, rules):
        from fact_rlhf_jax import pretrained

        return {"base": pretrained.abstract_llava(self.model_cfg, mesh, rules)}

    def loss(self, params, batch, rng) -> LossTerms:
        from fact_rlhf_jax.models import reward

        r1, r2 = reward.pair_scores(params["base"], self.model_cfg, batch["input_ids"], batch["pixel_values"],
                                    batch["attention_mask"], adapter=params["lora"], head=params["head"],
                                    lora_scale=self.lora_scale)
        return pairwise_reward_loss_terms(r1, r2, batch["choice"], batch["valid"],
                                          float(self.config.reward.center_coef))

    # --- data -------------------------------------------------------------------------------------
    def _loader_for(self, sources, rows, *, process_index, process_count, batch_size, seed, shuffle, num_epochs,
                    pad_final_batch=False):
        from fact_rlhf_jax.data.preference import build_preference_loader

        data = self.config.data
        return build_preference_loader(
            sources, self.tokenizer, template_text=self.template_text, captions=self.captions,
            image_token_id=self.model_cfg.image_token_id, num_image_tokens=self.model_cfg.num_image_tokens,
            image_size=self.model_cfg.vision.image_size, max_length=self.max_length,
            global_batch_size=batch_size * process_count, seed=seed, rows=rows, shuffle=shuffle,
            num_epochs=num_epochs, strict=bool(data.strict), process_index=process_index,
            process_count=process_count, pad_to_square=bool(data.pad_to_square),
            read_threads=int(data.read_threads), pad_final_batch=pad_final_batch,
            length_buckets=None if data.get("length_buckets") is None else tuple(data.length_buckets))


def build_stage(config, workdir):
    return RewardStage(config, workdir)


def plan_programs(config, mesh, rules):
    """`fact-rlhf plan` hook: one train step (adapter + head; the frozen base an argument) on `batch_size` pairs,
    both inputs of each padded to the longest length, `max_text_length - 1 + num_image_tokens`."""
    from fact_rlhf_jax.data import preference
    from fact_rlhf_jax.plan import collated_spec, train_step_program

    stage = RewardStage.for_planning(config)
    cfg, rows, accum = stage.model_cfg, int(config.batch_size), int(config.grad_accum)
    batch = collated_spec(lambda ex: preference.collate_pairs(ex, buckets=(stage.max_length,), pad_id=0),
                          preference.filler_pair(cfg.vision.image_size, 0), rows)
    what = (f"one optimizer update of {rows} pairs x 2 x {stage.max_length} tokens ({accum} micro-batch"
            f"{'es' if accum > 1 else ''} of {rows // accum}), LoRA r{stage.lora_rank} + head on a frozen "
            f"{cfg.text.num_layers}-layer LLaVA, {cfg.param_dtype} weights, remat {cfg.remat}")
    return [train_step_program(stage, config, mesh, rules, batch, what)]

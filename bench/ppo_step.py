"""One PPO step (rollout, scoring, update) of fact_rlhf_jax against the same work done the reference's way.

JAX side: the production step, `train.ppo.PPOStep` (jitted sampler, one jit for scoring, one donated jit for
the `noptepochs` x minibatch updates), on a `PPOStage` whose four roles are built in memory from random
weights instead of training workdirs: policy = LoRA on the preset's LLaVA, reference = that LoRA frozen,
value = a second LoRA + zero scalar head, reward model = a third LoRA + head, all on one shared base (the
tiny recipes' layout). EOS is disabled, so every response is exactly --new-tokens long.

Reference side (LLaVA-RLHF's `ppo_trainer.py` way, with transformers + peft + torch on the same weights): the
policy (peft LoRA on `LlavaForConditionalGeneration`) samples with `generate`; a frozen copy of it (the
reference), the value model (its own base copy + LoRA + linear head) and the reward model (own copy + LoRA +
head) score the rollouts in torch forward passes; GAE, whitening, then `noptepochs` passes of minibatch
updates: policy and value forward, clipped PPO losses, backward, clipping, one AdamW over both adapters and
the value head.

Both sides get the same prompts: BOS + image block + 32 text tokens (left-padded, ragged) for the policy
and the value/reward query, and an instruction of --instruction tokens after the response for the reward
model. Per config: one warm-up step per side (JAX compiles), then --repeats steps per side, alternating
sides; the median of each phase is reported, with tokens/s (generated tokens / rollout seconds and rollout
tokens processed / step seconds), the roofline of each phase (`bench/roofline.py`), the compiled JAX
programs' memory (`memory_analysis()`) and the load average. Timed numbers from a shared machine are not
results; run on a quiet one:

    python bench/ppo_step.py --configs tiny,small --batch 16 --step-batch 8 --new-tokens 64 --repeats 3 \\
        --out bench/results/ppo_step.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench import common, roofline  # noqa: E402
from fact_rlhf_jax import sharding as shd  # noqa: E402
from fact_rlhf_jax.models import heads, lora, llava  # noqa: E402
from fact_rlhf_jax.models.config import LlavaConfig, preset  # noqa: E402
from fact_rlhf_jax.pretrained import AdapterSpec  # noqa: E402
from fact_rlhf_jax.rl import shaping  # noqa: E402
from fact_rlhf_jax.train import ppo  # noqa: E402
from fact_rlhf_jax.train import state as state_lib  # noqa: E402
from fact_rlhf_jax.train.optim import make_optimizer  # noqa: E402
from fact_rlhf_jax.train.stage import StepContext  # noqa: E402
from fact_rlhf_jax.train.trainable import trainable_mask  # noqa: E402

BOS_ID, PAD_ID, NO_EOS = 1, 0, -1
QUERY_TEXT = 32
PHASES = ("rollout", "scoring", "update")


class IdTokenizer:
    """What `PPOStep` needs of a tokenizer: decode (for the symbolic bonus; caption_type 1 gives none)."""

    def decode(self, ids, **_) -> str:
        return " ".join(map(str, ids))


class InMemoryPPOStage(ppo.PPOStage):
    """`PPOStage` with its four roles built from random weights in memory (no workdirs, data or tokenizer)."""

    def __init__(self, cfg: LlavaConfig, config, seed: int):
        self.config, self.workdir = config, ""
        self.policy_cfg = self.reward_cfg = cfg
        self.shared_base = True
        spec = AdapterSpec("lora", int(config.lora.rank), float(config.lora.alpha), tuple(config.lora.targets))
        self.policy_adapter = self.value_adapter = spec
        self.tokenizer, self.eos_id, self.pad_id = IdTokenizer(), NO_EOS, PAD_ID
        p = config.ppo
        self.shaping = shaping.ShapingConfig(kl_coef=float(p.kl_coef), max_new_tokens=int(p.max_new_tokens))
        self.minibatches = int(config.batch_size) // int(p.step_batch_size)
        self.updates_per_step = int(p.noptepochs) * self.minibatches
        keys = jax.random.split(jax.random.key(seed), 5)
        self.base = llava.init(cfg, keys[0])
        # b = 0 makes a fresh LoRA the identity: give the starting adapters non-zero b like trained ones
        fresh = lambda k: jax.tree.map(lambda x: x if x.ndim < 2 else 0.02 * jax.random.normal(k, x.shape, x.dtype),
                                       lora.init(cfg, k, rank=spec.rank, targets=spec.targets))
        self._initial = {"policy": fresh(keys[1]), "value": fresh(keys[2])}
        self.reward = {"lora": fresh(keys[3]), "head": heads.init(cfg.text.hidden_size, keys[4])}

    def frozen_params(self, mesh, rules):
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        put = lambda tree: jax.tree.map(lambda x: jax.device_put(x, replicated), tree)
        return {"policy_base": put(self.base), "reward": put(self.reward), "ref": put(self._initial["policy"])}


def ppo_config(args):
    c = ppo.tiny_config()
    c.batch_size = args.batch
    c.ppo.step_batch_size = args.step_batch
    c.ppo.noptepochs = args.epochs
    c.ppo.max_new_tokens = args.new_tokens
    c.ppo.save_rollouts_every = 0
    c.lora.rank, c.lora.alpha = args.lora_rank, float(args.lora_rank)
    c.grad_accum = 1
    c.optim.warmup_steps = 0  # the first step updates (a warm-up would start at learning rate 0)
    return c


def make_batch(cfg: LlavaConfig, batch: int, instruction: int, seed: int) -> dict[str, np.ndarray]:
    """The prompt batch `build_prompt_loader` would give (`data/prompts.py` keys), random tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(batch):
        text = rng.integers(3, min(cfg.text.vocab_size, 1000), size=QUERY_TEXT - (i % 8))
        rows.append([BOS_ID] + [cfg.image_token_id] * cfg.num_image_tokens + np.where(
            text == cfg.image_token_id, 3, text).tolist())
    p = max(map(len, rows))
    ids, mask = np.full((batch, p), PAD_ID, np.int32), np.zeros((batch, p), np.int32)
    for i, r in enumerate(rows):
        ids[i, p - len(r):], mask[i, p - len(r):] = r, 1
    size = cfg.vision.image_size
    pixels = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
    ins = rng.integers(3, min(cfg.text.vocab_size, 1000), size=(batch, instruction))
    ins = np.where(ins == cfg.image_token_id, 3, ins).astype(np.int32)
    return {"query_ids": ids, "query_mask": mask, "pixel_values": pixels, "reward_query_ids": ids.copy(),
            "reward_query_mask": mask.copy(), "reward_pixel_values": pixels.copy(), "instruction_ids": ins,
            "instruction_mask": np.ones_like(ins), "caption_type": np.ones(batch, np.int32),
            "length_bonus": np.ones(batch, np.float32), "valid": np.ones(batch, np.int32)}


# --------------------------------------------------------------------------------------------------
# JAX: the production PPO step


class JaxSide:
    def __init__(self, stage: InMemoryPPOStage, config, batch: dict, devices=None):
        mesh = shd.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices)
        rules = shd.Rules.create()
        optimizer, schedule = make_optimizer(config.optim, 100, updates_per_step=stage.updates_per_step)
        frozen = stage.frozen_params(mesh, rules)
        rng = jax.random.PRNGKey(0)
        mask = trainable_mask(jax.eval_shape(stage.init_params, rng), tuple(config.trainable))
        state, shardings = state_lib.create_state(stage, optimizer, mask, rng, mesh, rules)
        state["params"] = stage.load_pretrained(state["params"], shardings["params"])
        ctx = StepContext(optimizer=optimizer, schedule=schedule, mask=mask, mesh=mesh, rules=rules,
                          state_shardings=shardings, frozen=frozen, grad_accum=1, workdir="", is_chief=True)
        self.step, self.state, self.batch, self.mesh = ppo.PPOStep(stage, ctx), state, batch, mesh
        self.trained = sum(x.size for x, m in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(mask)) if m)

    def __call__(self) -> dict:
        t0 = time.perf_counter()
        self.state, metrics = self.step(self.state, self.batch)
        total = time.perf_counter() - t0
        return {"rollout": metrics["rollout_seconds"], "scoring": metrics["scoring_seconds"],
                "update": metrics["update_seconds"], "step": total, "loss": metrics["loss"]}

    def memory(self) -> dict:
        """memory_analysis() of the step's three compiled programs."""
        step, state = self.step, self.state
        gbatch = shd.host_local_to_global(self.batch, self.mesh)
        key = jax.random.key(0)
        gen = step._generate(state["params"], step.ctx.frozen, gbatch, key)
        bonus = shd.host_local_to_global(np.zeros(self.batch["valid"].shape, np.float32), self.mesh)
        rollout, _, _ = step._score(state["params"], step.ctx.frozen, gbatch, gen.tokens, gen.lengths, bonus)
        return {"rollout": common.compiled_memory(step._generate, state["params"], step.ctx.frozen, gbatch, key),
                "scoring": common.compiled_memory(step._score, state["params"], step.ctx.frozen, gbatch, gen.tokens,
                                                  gen.lengths, bonus),
                "update": common.compiled_memory(step._update, state["params"], state["opt_state"], rollout,
                                                 step.ctx.frozen, key)}


# --------------------------------------------------------------------------------------------------
# the reference's way: transformers generate + torch forwards and backward


class TorchSide:
    TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

    def __init__(self, stage: InMemoryPPOStage, config, batch: dict):
        import torch
        import transformers
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict  # noqa: F401

        self.torch, self.config = torch, config
        cfg = stage.policy_cfg
        self.image_token_id = int(cfg.image_token_id)
        with tempfile.TemporaryDirectory() as tmp:
            from fact_rlhf_jax import hf

            hf.export_llava(cfg, jax.device_get(stage.base), tmp)
            load = lambda: transformers.LlavaForConditionalGeneration.from_pretrained(tmp, dtype=torch.float32)
            lcfg = LoraConfig(r=int(config.lora.rank), lora_alpha=float(config.lora.alpha),
                              target_modules=self.TARGETS, lora_dropout=0.0, bias="none")
            self.policy = get_peft_model(load(), lcfg)
            self.value = get_peft_model(load(), lcfg)
            self.reward = get_peft_model(load(), lcfg).eval()
        self.policy.generation_config.eos_token_id = None
        self.policy.generation_config.pad_token_id = PAD_ID
        for model in (self.policy, self.value, self.reward):  # non-zero adapters, like the JAX side's
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0.0, 0.02)
        self.ref = copy.deepcopy(self.policy).eval()
        d = cfg.text.hidden_size
        self.value_head, self.reward_head = torch.nn.Linear(d, 1), torch.nn.Linear(d, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        for p in list(self.ref.parameters()) + list(self.reward.parameters()) + list(self.reward_head.parameters()):
            p.requires_grad_(False)
        trained = [p for m in (self.policy, self.value) for p in m.parameters() if p.requires_grad]
        trained += list(self.value_head.parameters())
        self.trained = trained
        self.opt = torch.optim.AdamW(trained, lr=float(config.optim.lr), weight_decay=0.0)
        self.batch = {k: torch.from_numpy(v) for k, v in batch.items()}
        self.batch["query_ids"] = self.batch["query_ids"].long()

    def _hidden(self, model, ids, mask, pixels):
        inner = model.base_model.model.model  # LlavaModel: last hidden state after the final norm
        return inner(input_ids=ids, attention_mask=mask, pixel_values=pixels).last_hidden_state

    def _logprobs(self, model, ids, mask, pixels, responses, p):
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        logits = out.logits[:, p - 1:-1] / float(self.config.ppo.temperature)
        logp_all = logits.log_softmax(-1)
        return logp_all.gather(-1, responses[..., None])[..., 0]

    def _values(self, ids, mask, pixels, p, n):
        return self.value_head(self._hidden(self.value, ids, mask, pixels)[:, p - 1:p - 1 + n])[..., 0]

    def __call__(self) -> dict:
        torch, ppo_cfg, b = self.torch, self.config.ppo, self.batch
        n, p = int(ppo_cfg.max_new_tokens), b["query_ids"].shape[1]
        t0 = time.perf_counter()
        self.policy.eval()
        with torch.no_grad():
            out = self.policy.generate(input_ids=b["query_ids"], attention_mask=b["query_mask"],
                                       pixel_values=b["pixel_values"], max_new_tokens=n, do_sample=True,
                                       temperature=float(ppo_cfg.temperature), top_p=1.0, top_k=0,
                                       eos_token_id=None, pad_token_id=PAD_ID,
                                       # a sampled image token would break transformers' image-token count
                                       # check when the rollout is scored (tiny's vocabulary includes it)
                                       suppress_tokens=[self.image_token_id])
        responses = out[:, p:]
        t1 = time.perf_counter()
        ids = torch.cat([b["query_ids"], responses], 1)
        mask = torch.cat([b["query_mask"], torch.ones_like(responses, dtype=b["query_mask"].dtype)], 1)
        with torch.no_grad():
            logp = self._logprobs(self.policy, ids, mask, b["pixel_values"], responses, p)
            ref = self._logprobs(self.ref, ids, mask, b["pixel_values"], responses, p)
            values = self._values(ids, mask, b["reward_pixel_values"], p, n)
            rids = torch.cat([ids, b["instruction_ids"].long()], 1)
            rmask = torch.cat([mask, b["instruction_mask"]], 1)
            score = self.reward_head(self._hidden(self.reward, rids, rmask, b["reward_pixel_values"])[:, -1])[:, 0]
            rewards = -float(ppo_cfg.kl_coef) * (logp - ref)
            rewards[:, -1] += score
            rewards = rewards * float(ppo_cfg.reward_scale)
            adv, last = torch.zeros_like(rewards), torch.zeros_like(rewards[:, 0])
            for t in reversed(range(n)):  # GAE
                nxt = values[:, t + 1] if t + 1 < n else torch.zeros_like(last)
                delta = rewards[:, t] + float(ppo_cfg.gamma) * nxt - values[:, t]
                last = delta + float(ppo_cfg.gamma) * float(ppo_cfg.lam) * last
                adv[:, t] = last
            returns = adv + values
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        t2 = time.perf_counter()
        self.policy.train()
        rows, mb = ids.shape[0], int(ppo_cfg.step_batch_size)
        eps, eps_v = float(ppo_cfg.cliprange), float(ppo_cfg.cliprange_value)
        for _ in range(int(ppo_cfg.noptepochs)):
            for idx in torch.randperm(rows).split(mb):
                new_logp = self._logprobs(self.policy, ids[idx], mask[idx], b["pixel_values"][idx], responses[idx], p)
                new_v = self._values(ids[idx], mask[idx], b["reward_pixel_values"][idx], p, n)
                ratio = (new_logp - logp[idx]).exp()
                pg = torch.maximum(-adv[idx] * ratio, -adv[idx] * ratio.clamp(1 - eps, 1 + eps)).mean()
                v_clip = torch.clamp(new_v, values[idx] - eps_v, values[idx] + eps_v)
                vf = 0.5 * torch.maximum((new_v - returns[idx]) ** 2, (v_clip - returns[idx]) ** 2).mean()
                loss = pg + float(ppo_cfg.vf_coef) * vf
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.trained, float(self.config.optim.clip_norm))
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        return {"rollout": t1 - t0, "scoring": t2 - t1, "update": t3 - t2, "step": t3 - t0, "loss": float(loss)}


# --------------------------------------------------------------------------------------------------
# driver


def phase_rooflines(cfg: LlavaConfig, args, prompt: int, trained: int, ceilings) -> dict:
    """Rooflines of the three phases (LoRA FLOPs left out: they are under 2 % of the base's at rank <= 64)."""
    b, n, t = args.batch, args.new_tokens, cfg.text
    seq = prompt + n
    rollout = roofline.generate_phases(cfg, b, prompt, n)
    scored = [roofline.decoder_forward(t, b, seq, (seq + 1) / 2, logits_rows=n) for _ in range(2)]  # policy, ref
    scored.append(roofline.decoder_forward(t, b, seq, (seq + 1) / 2, logits_rows=0))  # value
    rseq = seq + args.instruction
    scored.append(roofline.decoder_forward(t, b, rseq, (rseq + 1) / 2, logits_rows=0))  # reward
    scored.append(roofline.vision_forward(cfg, 4 * b))
    updates = args.epochs * (b // args.step_batch)
    # `trained`: both adapters and the value head, about half each
    policy = roofline.train_forward_backward(cfg, args.step_batch, seq, trained=trained // 2, base_trained=False,
                                             logits_rows=n)
    value = roofline.train_forward_backward(cfg, args.step_batch, seq, trained=trained // 2, base_trained=False,
                                            logits_rows=0)
    update = [policy + value] * updates  # per minibatch
    out = {"rollout": roofline.roofline(rollout, ceilings), "scoring": roofline.roofline(scored, ceilings),
           "update": roofline.roofline(update, ceilings)}
    out["step"] = roofline.roofline(rollout + scored + update, ceilings)
    return out


def bench_config(name: str, args, ceilings) -> dict:
    cfg = preset(name)
    config = ppo_config(args)
    stage = InMemoryPPOStage(cfg, config, args.seed)
    batch = make_batch(cfg, args.batch, args.instruction, args.seed)
    prompt = batch["query_ids"].shape[1]
    print(f"[{name}] {args.batch} rollouts of {prompt} + {args.new_tokens} tokens, instruction {args.instruction}, "
          f"{args.epochs} epochs x {args.batch // args.step_batch} minibatches; load {os.getloadavg()}", flush=True)
    jax_side = JaxSide(stage, config, batch)
    sides = {"jax": jax_side}
    if not args.skip_torch:
        import torch

        torch.set_num_threads(args.torch_threads or len(os.sched_getaffinity(0)))
        sides["torch"] = TorchSide(stage, config, batch)
    res = {k: {"first_step": None, "steps": [], "load_avg": []} for k in sides}
    for k, side in sides.items():
        res[k]["first_step"] = side()
        print(f"  {k:5s} first step {res[k]['first_step']}", flush=True)
    for _ in range(args.repeats):
        for k, side in sides.items():
            res[k]["steps"].append(side())
            res[k]["load_avg"].append(os.getloadavg())
    roofs = phase_rooflines(cfg, args, prompt, jax_side.trained, ceilings)
    generated = args.batch * args.new_tokens
    for k, r in res.items():
        med = {ph: statistics.median(s[ph] for s in r["steps"]) for ph in (*PHASES, "step")}
        r["median_s"] = med
        r["generated_tokens_per_s"] = generated / med["rollout"]
        r["rollout_tokens_per_s"] = args.batch * (prompt + args.new_tokens) / med["step"]
        r["roofline"] = {ph: roofline.against(med[ph], roofs[ph]) for ph in (*PHASES, "step")}
        print(f"  {k:5s} " + ", ".join(f"{ph} {med[ph]:.3f}s ({100 * roofs[ph]['seconds'] / med[ph]:.1f}% of roofline)"
                                       for ph in (*PHASES, "step"))
              + f"; {r['generated_tokens_per_s']:.1f} generated tok/s; load {r['load_avg'][-1]}", flush=True)
    memory = jax_side.memory()
    print("  jax compiled peaks: " + ", ".join(f"{ph} {common.human_bytes(m['peak'])}" for ph, m in memory.items()),
          flush=True)
    return {"config": name, "batch": args.batch, "prompt_tokens": prompt, "new_tokens": args.new_tokens,
            "instruction_tokens": args.instruction, "step_batch": args.step_batch, "epochs": args.epochs,
            "lora_rank": args.lora_rank, "roofline": roofs, "jax_memory": memory, **res}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| config | side | rollout s | scoring s | update s | step s (% roofline) | generated tok/s | "
             "JAX compiled peak (rollout / scoring / update) | load avg |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for side in ("jax", "torch"):
            if side not in r:
                continue
            m, roof = r[side]["median_s"], r[side]["roofline"]["step"]
            mem = " / ".join(common.human_bytes(r["jax_memory"][ph]["peak"]) for ph in PHASES) if side == "jax" else ""
            lines.append(f"| {r['config']} | {side} | {m['rollout']:.3f} | {m['scoring']:.3f} | {m['update']:.3f} | "
                         f"{m['step']:.3f} ({100 * roof['fraction']:.1f}%) | {r[side]['generated_tokens_per_s']:.1f} | "
                         f"{mem} | {r[side]['load_avg'][0][0]:.1f}-{r[side]['load_avg'][-1][0]:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--batch", type=int, default=16, help="rollouts per step")
    ap.add_argument("--step-batch", type=int, default=8, help="rollouts per optimizer update")
    ap.add_argument("--epochs", type=int, default=2, help="noptepochs")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--instruction", type=int, default=64, help="reward-model instruction tokens")
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-threads", type=int, default=0)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/ppo_step.json")
    args = ap.parse_args(argv)
    if args.batch % args.step_batch:
        raise SystemExit(f"--batch {args.batch} is not a multiple of --step-batch {args.step_batch}")
    ceilings = roofline.measure()
    info = {**common.machine(), "ceilings": ceilings.to_dict()}
    print(json.dumps(info), flush=True)
    t0 = time.perf_counter()
    rows = [bench_config(name, args, ceilings) for name in args.configs.split(",") if name]
    table = markdown_table(rows)
    print(table)
    common.write_json(args.out, {"machine": info, "args": vars(args), "total_s": time.perf_counter() - t0,
                                 "results": rows, "table_markdown": table})


if __name__ == "__main__":
    main()

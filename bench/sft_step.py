"""Benchmark of the SFT train step: fact_rlhf_jax (jit, donated state) vs transformers + torch AdamW.

Both sides train the same weights (the JAX init exported with `hf.export_llava`) on the same
batch: projector + LLM trained, CLIP frozen, AdamW, grad clipping 1.0, float32.

    python bench/sft_step.py --preset small --seq 512 --batch 8 --steps 5 --out bench_sft.json

Reports step time, tokens/s, model FLOPs utilisation (MFU) against this machine's measured float32 matmul
peak (the best of a few 2048^3 `jnp.dot`s), the roofline time of the step (`bench/roofline.py`: max(FLOPs /
peak, bytes / bandwidth) with the causal-attention FLOP count) and measured / roofline for both sides, the
peak memory of the compiled JAX step (`compiled.memory_analysis()`) and the load average. Model FLOPs per
step for MFU (the usual convention, full-square attention):
  trained matmuls (LLM without the embedding gather, LM head, projector): 6 * params * tokens
  decoder attention scores and values: 12 * layers * T^2 * D per sequence (full square, fwd + bwd)
  frozen CLIP: forward only, 2 * params * patches + 4 * layers * P^2 * Dv per image
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench import common, roofline  # noqa: E402


def model_flops(cfg, batch: int, seq: int) -> float:
    t, v = cfg.text, cfg.vision
    d, hd = t.hidden_size, t.dim_per_head
    per_layer = d * hd * (t.num_heads * 2 + t.num_kv_heads * 2) + 3 * d * t.intermediate_size
    llm_params = t.num_layers * per_layer + d * t.vocab_size  # + LM head; the embedding is a gather
    proj_params = v.hidden_size * d + d
    tokens = batch * seq
    trained = 6 * llm_params * tokens + 6 * proj_params * batch * cfg.num_image_tokens
    attention = 12 * t.num_layers * seq * seq * d * batch
    patches = v.num_patches + 1
    v_layer = 4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size
    vision = batch * (2 * v.num_layers * v_layer * patches + 4 * v.num_layers * patches**2 * v.hidden_size)
    return float(trained + attention + vision)


def make_batch(cfg, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One image block after BOS, a prompt, then supervised answer tokens; full length (no padding)."""
    rng = np.random.default_rng(seed)
    n_img = cfg.num_image_tokens
    # text tokens: any id from 3 up except the image token (which may sit anywhere in the vocabulary)
    ids = rng.integers(3, cfg.text.vocab_size - 1, size=(batch, seq))
    ids = np.where(ids >= cfg.image_token_id, ids + 1, ids).astype(np.int32)
    ids[:, 0] = 1
    ids[:, 1 : 1 + n_img] = cfg.image_token_id
    labels = ids.copy()
    labels[:, : 1 + n_img + 16] = -100
    pixels = rng.normal(size=(batch, 3, cfg.vision.image_size, cfg.vision.image_size)).astype(np.float32)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels, "pixel_values": pixels}


def build_jax(cfg, batch_np, loss_chunk: int = 0):
    """Returns (run_step() -> loss, initial params, memory of the compiled step). `loss_chunk` > 0: the
    cross-entropy from hidden states, that many positions of logits at a time (`model.loss_chunk`)."""
    from fact_rlhf_jax import sharding as shd
    from fact_rlhf_jax.models import llava
    from fact_rlhf_jax.train import optim
    from fact_rlhf_jax.train import state as state_lib
    from fact_rlhf_jax.train.losses import sft_loss_terms, sft_loss_terms_chunked
    from fact_rlhf_jax.train.stage import Stage
    from fact_rlhf_jax.train.step import jit_train_step, make_train_step
    from fact_rlhf_jax.train.trainable import trainable_mask

    class BenchStage(Stage):
        def init_params(self, rng):
            return llava.init(cfg, rng)

        def param_axes(self):
            return llava.param_axes(cfg)

        def loss(self, params, batch, rng):
            if loss_chunk:
                hidden = llava.hidden_states(params, cfg, batch["input_ids"], batch["pixel_values"],
                                             batch["attention_mask"])
                return sft_loss_terms_chunked(hidden, params["llm"]["lm_head"], batch["labels"], loss_chunk)
            out = llava.forward(params, cfg, batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
            return sft_loss_terms(out.logits, batch["labels"])

    stage = BenchStage()
    ocfg = optim.default_optim_config()
    ocfg.lr, ocfg.warmup_steps = 2e-5, 0
    opt, schedule = optim.make_optimizer(ocfg, 1000)
    mesh = shd.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    rules = shd.Rules.create()
    rng = jax.random.PRNGKey(0)
    mask = trainable_mask(jax.eval_shape(stage.init_params, rng), ["projector/.*", "llm/.*"])
    state, shardings = state_lib.create_state(stage, opt, mask, rng, mesh, rules)
    params0 = jax.device_get(state["params"])
    gbatch = shd.host_local_to_global(batch_np, mesh)
    step = jit_train_step(make_train_step(stage.loss, opt, schedule, mask, mesh=mesh, rules=rules), shardings,
                          jax.tree.map(lambda x: x.sharding, gbatch), mesh)
    holder = {"state": state}
    memory = common.compiled_memory(step, state, gbatch)

    def run_step():
        holder["state"], metrics = step(holder["state"], gbatch)
        return float(jax.block_until_ready(metrics)["loss"])

    return run_step, params0, memory


def build_torch(cfg, params0, batch_np):
    """Returns (run_step() -> loss, info)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from fact_rlhf_jax import hf

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        hf.export_llava(cfg, params0, Path(tmp) / "m")
        model = LlavaForConditionalGeneration.from_pretrained(Path(tmp) / "m", torch_dtype=torch.float32)
    model.train()
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    # the exported linear projector is linear_1 = W, linear_2 = identity: keep the identity fixed
    for p in model.model.multi_modal_projector.linear_2.parameters():
        p.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=2e-5, weight_decay=0.0)
    inputs = {k: torch.from_numpy(np.asarray(v)).long() if k != "pixel_values" else torch.from_numpy(v)
              for k, v in batch_np.items()}

    def step():
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    pixel_values=inputs["pixel_values"], labels=inputs["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach().item()

    return step, {"torch": torch.__version__, "threads": torch.get_num_threads()}


def time_interleaved(runners: dict, steps: int, warmup: int) -> dict:
    """Runs each side's step in turn (so both see the same machine load); first step includes compilation."""
    out = {name: {"step_times_s": []} for name in runners}
    for name, run in runners.items():
        t = time.perf_counter()
        out[name]["first_loss"] = run()
        out[name]["first_step_s"] = time.perf_counter() - t
        for _ in range(max(0, warmup - 1)):
            run()
    for _ in range(steps):
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            out[name]["step_times_s"].append(time.perf_counter() - t)
            out[name].setdefault("load_avg", []).append(os.getloadavg())
    return out


def summarise(name, res, tokens, flops, peak, roof):
    best = min(res["step_times_s"])
    med = float(np.median(res["step_times_s"]))
    res.update(median_step_s=med, best_step_s=best, tokens_per_s=tokens / med, tflops=flops / med / 1e12,
               mfu=flops / med / peak, roofline=roofline.against(med, roof))
    print(f"{name:>6}: median step {med:.3f} s (best {best:.3f}), {tokens / med:,.0f} tokens/s, "
          f"{flops / med / 1e9:,.1f} GFLOP/s, MFU {100 * flops / med / peak:.1f}%, roofline {roof['seconds']:.3f} s "
          f"({100 * roof['seconds'] / med:.1f}% of it), first loss {res['first_loss']:.4f}, "
          f"load {res['load_avg'][-1]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--layers", type=int, default=None, help="override the decoder layer count")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--loss-chunk", type=int, default=0,
                    help="> 0: JAX cross-entropy from hidden states, this many positions at a time (model.loss_chunk)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    from fact_rlhf_jax.models import config as mcfg

    cfg = mcfg.preset(args.preset)
    if args.layers:
        cfg = cfg.replace(text={"num_layers": args.layers})
    batch = make_batch(cfg, args.batch, args.seq)
    tokens = args.batch * args.seq
    flops = model_flops(cfg, args.batch, args.seq)
    ceilings = roofline.measure()
    peak = ceilings.peak_flops
    machine = {**common.machine(), "ceilings": ceilings.to_dict()}
    print(f"machine: {machine}")
    print(f"model {args.preset}: {cfg.text.num_layers} layers x {cfg.text.hidden_size}, vocab {cfg.text.vocab_size}, "
          f"ViT {cfg.vision.num_layers} x {cfg.vision.hidden_size} @ {cfg.vision.image_size}px "
          f"({cfg.num_image_tokens} image tokens); batch {args.batch} x {args.seq} tokens")
    print(f"model FLOPs per step {flops / 1e12:.3f} TFLOP; measured f32 matmul peak {peak / 1e9:,.1f} GFLOP/s, "
          f"memory bandwidth {ceilings.bandwidth / 1e9:.1f} GB/s (load {ceilings.load_avg})")

    results = {"machine": machine, "config": vars(args), "model_flops_per_step": flops, "matmul_peak_flops": peak}
    jax_step, params0, memory = build_jax(cfg, batch, args.loss_chunk)
    trained = sum(x.size for k in ("projector", "llm") for x in jax.tree.leaves(params0[k]))
    roof = roofline.roofline([roofline.train_forward_backward(cfg, args.batch, args.seq, trained=trained)], ceilings)
    results.update(roofline=roof, jax_step_memory=memory)
    print(f"roofline of the step {roof['seconds']:.3f} s; compiled JAX step: peak {common.human_bytes(memory['peak'])}, "
          f"temporaries {common.human_bytes(memory['temp'])}")
    runners = {"jax": jax_step}
    torch_info = {}
    if not args.skip_torch:
        runners["torch"], torch_info = build_torch(cfg, params0, batch)
    timed = time_interleaved(runners, args.steps, args.warmup)
    for name, res in timed.items():
        summarise(name, res, tokens, flops, peak, roof)
        results[name] = res
    if "torch" in timed:
        results["torch"].update(torch_info)
        results["speedup_jax_over_torch"] = timed["torch"]["median_step_s"] / timed["jax"]["median_step_s"]
        print(f"jax / torch speed: {results['speedup_jax_over_torch']:.2f}x; first-step loss jax "
              f"{timed['jax']['first_loss']:.5f} vs torch {timed['torch']['first_loss']:.5f}")
    if args.out:
        common.write_json(args.out, results)


if __name__ == "__main__":
    main()

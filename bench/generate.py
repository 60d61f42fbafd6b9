"""Tokens/s of `fact_rlhf_jax.sampling.generate` against transformers `generate` on the same weights.

For every model preset in --configs: random JAX params are built once, exported to a llava-hf directory
(`hf.export_llava`) and loaded into `transformers.LlavaForConditionalGeneration` (torch fp32, CPU, all cores,
eval mode, `torch.inference_mode`). Then for every batch size in --batches both sides greedily decode the same
left-padded prompts (BOS + image block + text, at most `num_image_tokens + 32` tokens) for exactly N new tokens
with EOS disabled (ours: eos_id=-1, an id that cannot be produced; HF: eos_token_id=None).

Timing: one warm-up call per side (for JAX this includes the compile; `compile_s` is the tracing + lowering +
XLA compile time that JAX reports through `jax.monitoring`), then --repeats timed calls per side, alternating
JAX and HF so that load from other processes on a shared machine hits both alike; the median is reported.
JAX calls end in `jax.block_until_ready`. tokens/s = batch * new_tokens / seconds, end to end (image tower and prefill included).
The greedy token ids of both sides are compared so that the two sides are known to do the same work.

    .venv/bin/python bench/generate.py --configs tiny,small --batches 1,16 --new-tokens 64 --repeats 3 \
        --out bench/results/generate.json

`--new-tokens` takes one number for every config or per-config values, e.g. `tiny:64,small:32`.
`--torch-threads` overrides torch's intra-op thread count (default: all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
import transformers

from fact_rlhf_jax import hf, sampling
from fact_rlhf_jax.models import llava
from fact_rlhf_jax.models.config import LlavaConfig, preset

BOS_ID = 1
PAD_ID = 0
NO_EOS = -1        # an id `generate` can never produce: every row runs for exactly N tokens
TEXT_TOKENS = 31   # longest text part; with BOS the prompt is at most num_image_tokens + 32 tokens
AGREE_FIRST = 8    # "agreement" = rows whose first AGREE_FIRST greedy tokens are identical on both sides
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling since it was created (from jax.monitoring events)."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            self.seconds += duration


# --------------------------------------------------------------------------------------------------
# inputs


def make_prompts(cfg: LlavaConfig, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-padded prompts: input_ids / attention_mask int64 [B, P], pixel_values float32 [B, 3, H, W].

    Row i is BOS + the image block + a random text of TEXT_TOKENS - (i % 8) tokens, so the batch is ragged.
    """
    rng = np.random.default_rng(seed)
    vocab_hi = min(cfg.text.vocab_size, 1000)
    rows = []
    for i in range(batch):
        text = rng.integers(3, vocab_hi, size=TEXT_TOKENS - (i % 8))
        text = np.where(text == cfg.image_token_id, 3, text)
        rows.append([BOS_ID] + [cfg.image_token_id] * cfg.num_image_tokens + text.tolist())
    p = max(map(len, rows))
    ids = np.full((batch, p), PAD_ID, np.int64)
    mask = np.zeros((batch, p), np.int64)
    for i, r in enumerate(rows):
        ids[i, p - len(r):] = r
        mask[i, p - len(r):] = 1
    size = cfg.vision.image_size
    pixels = rng.normal(size=(batch, cfg.vision.num_channels, size, size)).astype(np.float32)
    return ids, mask, pixels


# --------------------------------------------------------------------------------------------------
# the two sides


def jax_generate(params, cfg, ids, mask, pixels, new_tokens: int) -> np.ndarray:
    out = sampling.generate(params, cfg, ids, mask, pixels, max_new_tokens=new_tokens, temperature=0.0,
                            eos_id=NO_EOS, pad_id=PAD_ID)
    jax.block_until_ready(out)
    return np.asarray(out.tokens)


def load_hf(path: Path) -> transformers.LlavaForConditionalGeneration:
    model = transformers.LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    # The generation config would otherwise inherit EOS from the text config.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_ID
    return model


def hf_generate(model, ids, mask, pixels, new_tokens: int) -> np.ndarray:
    with torch.inference_mode():
        out = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                             pixel_values=torch.from_numpy(pixels), max_new_tokens=new_tokens, do_sample=False,
                             eos_token_id=None, pad_token_id=PAD_ID)
    return out[:, ids.shape[1]:].numpy()


def timed_pair(fn_a, fn_b, repeats: int) -> tuple[tuple[float, list[float], np.ndarray], ...]:
    """Warms up both sides, then alternates their timed calls (a, b, a, b, ...) so that a change in the load of a
    shared machine hits both sides alike. Returns, per side, (first call seconds, timed seconds, first output)."""
    results = []
    for fn in (fn_a, fn_b):
        t0 = time.perf_counter()
        out = fn()
        results.append((time.perf_counter() - t0, [], out))
    for _ in range(repeats):
        for fn, (_, times, _) in zip((fn_a, fn_b), results):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return tuple(results)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """a, b int [B, N] -> how far the greedy sequences agree."""
    same = a == b
    prefix = np.where(same.all(axis=1), a.shape[1], np.argmin(same, axis=1))
    k = min(AGREE_FIRST, a.shape[1])
    return {
        "first_k": k,
        "rows_agree_first_k": int(np.sum(prefix >= k)),
        "rows_agree_all": int(np.sum(prefix == a.shape[1])),
        "rows": int(a.shape[0]),
        "min_common_prefix": int(prefix.min()),
        "mean_common_prefix": float(prefix.mean()),
        # A degenerate model repeating one token would agree trivially: show how varied the outputs are.
        "mean_distinct_tokens_per_row": float(np.mean([len(set(row.tolist())) for row in a])),
    }


# --------------------------------------------------------------------------------------------------
# driver


def parse_new_tokens(spec: str, configs: list[str]) -> dict[str, int]:
    if ":" not in spec:
        return {c: int(spec) for c in configs}
    table = dict(item.split(":") for item in spec.split(","))
    missing = [c for c in configs if c not in table]
    if missing:
        raise SystemExit(f"--new-tokens {spec!r}: no value for config(s) {missing}; expected e.g. tiny:64,small:32")
    return {c: int(table[c]) for c in configs}


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "platform": platform.platform(),
        "python": platform.python_version(), "jax": jax.__version__, "jax_devices": str(jax.devices()),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
        "load_avg_start": os.getloadavg(),
    }


def bench_config(name: str, batches: list[int], new_tokens: int, repeats: int, seed: int,
                 clock: CompileClock) -> list[dict]:
    cfg = preset(name)
    params = llava.init(cfg, jax.random.key(seed))
    with tempfile.TemporaryDirectory() as tmp:
        hf.export_llava(cfg, params, tmp)
        model = load_hf(Path(tmp))
    rows = []
    for batch in batches:
        ids, mask, pixels = make_prompts(cfg, batch, seed + batch)
        print(f"[{name} b={batch}] prompt {ids.shape[1]} tokens (bucket {sampling.bucket_length(ids.shape[1])}), "
              f"{new_tokens} new tokens", flush=True)
        load_before = os.getloadavg()[0]
        compiled_before = clock.seconds
        (j_first, j_times, j_tokens), (h_first, h_times, h_tokens) = timed_pair(
            lambda: jax_generate(params, cfg, ids, mask, pixels, new_tokens),
            lambda: hf_generate(model, ids, mask, pixels, new_tokens), repeats)
        load_after = os.getloadavg()[0]
        compile_s = clock.seconds - compiled_before
        print(f"  jax  first {j_first:.2f}s, timed {[round(t, 3) for t in j_times]}", flush=True)
        print(f"  hf   first {h_first:.2f}s, timed {[round(t, 3) for t in h_times]}", flush=True)
        if h_tokens.shape != (batch, new_tokens) or j_tokens.shape != (batch, new_tokens):
            raise RuntimeError(f"expected {new_tokens} new tokens per row, got jax {j_tokens.shape} hf {h_tokens.shape}")
        j_med, h_med = statistics.median(j_times), statistics.median(h_times)
        rows.append({
            "config": name, "batch": batch, "prompt_tokens": int(ids.shape[1]),
            "bucket_tokens": sampling.bucket_length(ids.shape[1]), "new_tokens": new_tokens,
            "jax": {"first_call_s": j_first, "compile_s": compile_s, "times_s": j_times, "median_s": j_med,
                    "min_s": min(j_times),
                    "tokens_per_s": batch * new_tokens / j_med},
            "hf": {"first_call_s": h_first, "times_s": h_times, "median_s": h_med,
                   "min_s": min(h_times),
                   "tokens_per_s": batch * new_tokens / h_med},
            "agreement": agreement(j_tokens, h_tokens),
            "load_avg_1min": [load_before, load_after],
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| config | batch | prompt (bucket) | new tokens | JAX tok/s | HF tok/s | JAX / HF | JAX compile s "
        "| greedy ids agree |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        a = r["agreement"]
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['prompt_tokens']} ({r['bucket_tokens']}) | {r['new_tokens']} "
            f"| {r['jax']['tokens_per_s']:.1f} | {r['hf']['tokens_per_s']:.1f} "
            f"| {r['jax']['tokens_per_s'] / r['hf']['tokens_per_s']:.2f}x | {r['jax']['compile_s']:.1f} "
            f"| {a['rows_agree_first_k']}/{a['rows']} rows on first {a['first_k']}; "
            f"{a['rows_agree_all']}/{a['rows']} on all (min prefix {a['min_common_prefix']}) |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,small", help="comma-separated model presets")
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    ap.add_argument("--new-tokens", default="64", help="N for every config, or per config: tiny:64,small:32")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median reported)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/generate.json")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats {args.repeats}: expected at least 1")

    torch.set_num_threads(args.torch_threads or len(os.sched_getaffinity(0)))
    configs = [c for c in args.configs.split(",") if c]
    batches = [int(b) for b in args.batches.split(",") if b]
    new_tokens = parse_new_tokens(args.new_tokens, configs)
    clock = CompileClock()
    info = machine()
    print(json.dumps(info), flush=True)

    t0 = time.perf_counter()
    rows = []
    for name in configs:
        rows.extend(bench_config(name, batches, new_tokens[name], args.repeats, args.seed, clock))
    table = markdown_table(rows)
    print(table)

    info["load_avg_end"] = os.getloadavg()
    result = {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
              "machine": info, "repeats": args.repeats, "total_s": time.perf_counter() - t0,
              "results": rows, "table_markdown": table}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['total_s']:.0f}s)")


if __name__ == "__main__":
    main()

"""Tokens/s of `fact_rlhf_jax.sampling.generate` against transformers `generate` and google-tunix's sampler,
on the same weights.

For every model preset in --configs: random JAX params are built once, exported to a llava-hf directory
(`hf.export_llava`) and loaded into `transformers.LlavaForConditionalGeneration` (torch fp32, CPU, all cores,
eval mode, `torch.inference_mode`); the decoder weights also go into tunix's Llama3 (`tunix.models.llama3`,
Flax NNX) driven by `tunix.generate.sampler.Sampler`. Two scenarios per batch size (--scenarios):
  image  ours and transformers: BOS + image block + text (at most `num_image_tokens + 32` tokens);
  text   ours, transformers and tunix: text-only prompts of at most --text-prompt tokens (tunix's Llama3 has no
         vision tower). tunix's RoPE ignores its config's theta and always uses 1e6, so this scenario runs the
         preset with rope_theta 1e6 on all three sides (the same function; speed does not depend on theta).
Prompts are left-padded and ragged; every side greedily decodes exactly N new tokens with EOS disabled
(ours: eos_id=-1, an id that cannot be produced; HF: eos_token_id=None; tunix: eos_tokens=[-1]).

Timing: one warm-up call per side (for JAX sides this includes the compile; `compile_s` is the tracing +
lowering + XLA compile time JAX reports through `jax.monitoring` during that call), then --repeats rounds
in which the sides run one after another, so that load from other processes on a shared machine hits all
alike; the median is reported. tokens/s = batch * new_tokens / seconds, end to end (image tower and prefill
included). The greedy token ids of every side are compared with ours.
Beside each time: the roofline (`bench/roofline.py`: vision + prefill + one decode step per token, each
max(FLOPs / peak, bytes / bandwidth) with this machine's measured ceilings) and measured / roofline; and the
memory of our compiled sampler (`compiled.memory_analysis()`: arguments, temporaries, peak).

    .venv/bin/python bench/generate.py --configs tiny,small --batches 1,16 --new-tokens 64 --repeats 5 \
        --out bench/results/generate.json

`--new-tokens` takes one number for every config or per-config values, e.g. `tiny:64,small:32`.
`--torch-threads` overrides torch's intra-op thread count (default: all cores). `--peers` drops sides
(e.g. `jax,hf` where google-tunix is not installed: `pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse
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
import torch  # noqa: E402
import transformers  # noqa: E402

from bench import common, roofline  # noqa: E402
from fact_rlhf_jax import hf, sampling  # noqa: E402
from fact_rlhf_jax.models import llava  # noqa: E402
from fact_rlhf_jax.models.config import LlavaConfig, preset  # noqa: E402

BOS_ID = 1
PAD_ID = 0
NO_EOS = -1        # an id `generate` can never produce: every row runs for exactly N tokens
TEXT_TOKENS = 31   # longest text part; with BOS the prompt is at most num_image_tokens + 32 tokens
AGREE_FIRST = 8    # "agreement" = rows whose first AGREE_FIRST greedy tokens are identical on both sides
TUNIX_ROPE_THETA = 1e6  # tunix.models.llama3.apply_rope's default, which its Llama3 always uses
PEERS = ("jax", "hf", "tunix")


# --------------------------------------------------------------------------------------------------
# inputs


def make_prompts(cfg: LlavaConfig, batch: int, seed: int, *, text_tokens: int | None = None):
    """Left-padded prompts: input_ids / attention_mask int64 [B, P], pixel_values float32 [B, 3, H, W] or None.

    Image prompts (text_tokens None): row i is BOS + the image block + a random text of TEXT_TOKENS - (i % 8)
    tokens. Text prompts: row i is BOS + text_tokens - 1 - (i % 8) random tokens, no image. Ragged either way.
    """
    rng = np.random.default_rng(seed)
    vocab_hi = min(cfg.text.vocab_size, 1000)
    rows = []
    for i in range(batch):
        n = (TEXT_TOKENS if text_tokens is None else text_tokens - 1) - (i % 8)
        text = rng.integers(3, vocab_hi, size=n)
        text = np.where(text == cfg.image_token_id, 3, text)
        image = [] if text_tokens is not None else [cfg.image_token_id] * cfg.num_image_tokens
        rows.append([BOS_ID] + image + text.tolist())
    p = max(map(len, rows))
    ids = np.full((batch, p), PAD_ID, np.int64)
    mask = np.zeros((batch, p), np.int64)
    for i, r in enumerate(rows):
        ids[i, p - len(r):] = r
        mask[i, p - len(r):] = 1
    if text_tokens is not None:
        return ids, mask, None
    size = cfg.vision.image_size
    pixels = rng.normal(size=(batch, cfg.vision.num_channels, size, size)).astype(np.float32)
    return ids, mask, pixels


# --------------------------------------------------------------------------------------------------
# the sides


def jax_generate(params, cfg, ids, mask, pixels, new_tokens: int) -> np.ndarray:
    out = sampling.generate(params, cfg, ids, mask, pixels, max_new_tokens=new_tokens, temperature=0.0,
                            eos_id=NO_EOS, pad_id=PAD_ID)
    jax.block_until_ready(out)
    return np.asarray(out.tokens)


def jax_sampler_memory(params, cfg, ids, mask, pixels, new_tokens: int) -> dict:
    """memory_analysis() of the compiled sampler `generate` runs for these prompts."""
    ids32, mask32 = sampling.left_pad(np.asarray(ids, np.int32), np.asarray(mask, np.int32),
                                      sampling.bucket_length(ids.shape[1]), PAD_ID)
    f32 = jnp.float32
    return common.compiled_memory(
        sampling.sample_tokens, params, None, ids32, mask32, pixels, jax.random.key(0), f32(0), f32(1), f32(1),
        cfg=cfg, max_new_tokens=new_tokens, top_k=0, greedy=True, filtered=False, stop_ids=(NO_EOS,),
        pad_id=PAD_ID)


def load_hf(path: Path) -> transformers.LlavaForConditionalGeneration:
    model = transformers.LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    # The generation config would otherwise inherit EOS from the text config.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_ID
    return model


def hf_generate(model, ids, mask, pixels, new_tokens: int) -> np.ndarray:
    kw = {} if pixels is None else {"pixel_values": torch.from_numpy(pixels)}
    with torch.inference_mode():
        out = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                             max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=PAD_ID, **kw)
    return out[:, ids.shape[1]:].numpy()


class IdTokenizer:
    """tunix's sampler takes strings: a prompt travels as its token ids written out ("1 517 33"), BOS excluded
    (the sampler prepends `bos_id()`)."""

    def encode(self, text: str, **_) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids, **_) -> str:
        return " ".join(map(str, ids))

    def bos_id(self) -> int:
        return BOS_ID

    def eos_id(self) -> int:
        return 2

    def pad_id(self) -> int:
        return PAD_ID


def tunix_sampler(cfg: LlavaConfig, params: dict, cache_size: int):
    """tunix's Llama3 holding our decoder weights (`params["llm"]`) and a `Sampler` over it."""
    from flax import nnx
    from tunix.generate import sampler as tunix_sampling
    from tunix.models.llama3 import model as tunix_llama

    t = cfg.text
    if t.rope_theta != TUNIX_ROPE_THETA:
        raise ValueError(f"tunix's Llama3 always uses RoPE theta {TUNIX_ROPE_THETA:g}; the model has {t.rope_theta:g}")
    tcfg = tunix_llama.ModelConfig(num_layers=t.num_layers, vocab_size=t.vocab_size, embed_dim=t.hidden_size,
                                   hidden_dim=t.intermediate_size, num_heads=t.num_heads, head_dim=t.dim_per_head,
                                   num_kv_heads=t.num_kv_heads, rope_theta=int(t.rope_theta), norm_eps=t.rms_norm_eps)
    model = tunix_llama.Llama3(tcfg, rngs=nnx.Rngs(0))
    llm = jax.tree.map(np.asarray, params["llm"])
    lay = llm["layers"]
    model.embedder.input_embedding[...] = llm["embed"]
    model.final_norm.w[...] = llm["norm"]
    model.lm_head.w[...] = llm["lm_head"]
    for i, layer in enumerate(model.layers):
        layer.input_layernorm.w[...] = lay["attn_norm"][i]
        layer.post_attention_layernorm.w[...] = lay["mlp_norm"][i]
        for name in ("q", "k", "v", "o"):
            getattr(layer.attn, f"{name}_proj").w[...] = lay["attn"][name][i]
        for name in ("gate", "up", "down"):
            getattr(layer.mlp, f"{name}_proj").kernel[...] = lay["mlp"][name][i]
    cache = tunix_sampling.CacheConfig(cache_size=cache_size, num_layers=t.num_layers, num_kv_heads=t.num_kv_heads,
                                       head_dim=t.dim_per_head)
    return tunix_sampling.Sampler(model, IdTokenizer(), cache)


def tunix_generate(sampler, ids, mask, new_tokens: int) -> np.ndarray:
    prompts = [" ".join(map(str, row[m > 0][1:])) for row, m in zip(ids, mask)]
    out = sampler(prompts, max_generation_steps=new_tokens, max_prompt_length=ids.shape[1], temperature=0.0,
                  eos_tokens=[NO_EOS])
    return np.stack([np.asarray(t) for t in out.tokens])


def timed_sides(fns: dict, repeats: int, clock: common.CompileClock) -> dict:
    """Warms up every side (recording its first-call and compile seconds), then runs `repeats` rounds of one call
    per side in turn, so that a change in the load of a shared machine hits all sides alike."""
    res = {}
    for name, fn in fns.items():
        compiled = clock.seconds
        t0 = time.perf_counter()
        out = fn()
        res[name] = {"first_call_s": time.perf_counter() - t0, "compile_s": clock.seconds - compiled,
                     "times_s": [], "tokens": out}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            res[name]["times_s"].append(time.perf_counter() - t0)
    return res


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


class Models:
    """One preset's weights on every side (built once per config and scenario)."""

    def __init__(self, cfg: LlavaConfig, seed: int, peers: tuple[str, ...], cache_size: int):
        self.cfg = cfg
        self.params = llava.init(cfg, jax.random.key(seed))
        self.hf = None
        if "hf" in peers:
            with tempfile.TemporaryDirectory() as tmp:
                hf.export_llava(cfg, self.params, tmp)
                self.hf = load_hf(Path(tmp))
        self.tunix = tunix_sampler(cfg, self.params, cache_size) if "tunix" in peers else None

    def sides(self, ids, mask, pixels, new_tokens: int) -> dict:
        cfg, params = self.cfg, self.params
        fns = {"jax": lambda: jax_generate(params, cfg, ids, mask, pixels, new_tokens)}
        if self.hf is not None:
            fns["hf"] = lambda: hf_generate(self.hf, ids, mask, pixels, new_tokens)
        if self.tunix is not None:
            fns["tunix"] = lambda: tunix_generate(self.tunix, ids, mask, new_tokens)
        return fns


def bench_scenario(name: str, scenario: str, batches: list[int], new_tokens: int, args, peers: tuple[str, ...],
                   clock: common.CompileClock, ceilings: roofline.Machine) -> list[dict]:
    text = scenario == "text"
    cfg = preset(name)
    if text:
        cfg = cfg.replace(text={"rope_theta": TUNIX_ROPE_THETA})
    else:
        peers = tuple(p for p in peers if p != "tunix")  # tunix's Llama3 has no vision tower
    models = Models(cfg, args.seed, peers, args.text_prompt + new_tokens)
    rows = []
    for batch in batches:
        ids, mask, pixels = make_prompts(cfg, batch, args.seed + batch, text_tokens=args.text_prompt if text else None)
        bucket = sampling.bucket_length(ids.shape[1])
        print(f"[{name} {scenario} b={batch}] prompt {ids.shape[1]} tokens (bucket {bucket}), {new_tokens} new tokens, "
              f"sides {peers}, load {os.getloadavg()}", flush=True)
        load_before = os.getloadavg()
        res = timed_sides(models.sides(ids, mask, pixels, new_tokens), args.repeats, clock)
        roof = roofline.roofline(roofline.generate_phases(cfg, batch, ids.shape[1], new_tokens, images=not text),
                                 ceilings)
        ours = res["jax"]["tokens"]
        row = {"config": name, "scenario": scenario, "batch": batch, "prompt_tokens": int(ids.shape[1]),
               "bucket_tokens": bucket, "new_tokens": new_tokens, "roofline": roof,
               "jax_memory": jax_sampler_memory(models.params, cfg, ids, mask, pixels, new_tokens),
               "load_avg": {"before": load_before, "after": os.getloadavg()}}
        for side, r in res.items():
            tokens = r.pop("tokens")
            if tokens.shape != (batch, new_tokens):
                raise RuntimeError(f"{side}: expected {new_tokens} new tokens per row, got {tokens.shape}")
            med = statistics.median(r["times_s"])
            r.update(median_s=med, min_s=min(r["times_s"]), tokens_per_s=batch * new_tokens / med,
                     roofline_fraction=roof["seconds"] / med)
            if side != "jax":
                r["agreement_with_jax"] = agreement(ours, tokens)
            row[side] = r
            print(f"  {side:5s} first {r['first_call_s']:.2f}s (compile {r['compile_s']:.1f}s), timed "
                  f"{[round(t, 3) for t in r['times_s']]}, median {med:.3f}s = {r['tokens_per_s']:.1f} tok/s; "
                  f"roofline {roof['seconds']:.3g}s ({100 * r['roofline_fraction']:.1f}% of it)", flush=True)
        print(f"  jax compiled sampler: peak {common.human_bytes(row['jax_memory'].get('peak', 0))}, load {os.getloadavg()}",
              flush=True)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], peers: tuple[str, ...]) -> str:
    others = [p for p in peers if p != "jax"]
    head = ("| config | prompts | batch | prompt (bucket) | new tokens | roofline s | JAX tok/s (% roofline) | "
            + " | ".join(f"{p} tok/s (% roofline) | JAX / {p} | {p} ids = ours" for p in others)
            + " | JAX compile s | JAX peak memory | load avg |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["config"], r["scenario"], str(r["batch"]), f"{r['prompt_tokens']} ({r['bucket_tokens']})",
                 str(r["new_tokens"]), f"{r['roofline']['seconds']:.3g}",
                 f"{r['jax']['tokens_per_s']:.1f} ({100 * r['jax']['roofline_fraction']:.0f}%)"]
        for p in others:
            if p not in r:
                cells += ["-", "-", "-"]
                continue
            a = r[p]["agreement_with_jax"]
            cells += [f"{r[p]['tokens_per_s']:.1f} ({100 * r[p]['roofline_fraction']:.0f}%)",
                      f"{r['jax']['tokens_per_s'] / r[p]['tokens_per_s']:.2f}x",
                      f"{a['rows_agree_all']}/{a['rows']} rows (min prefix {a['min_common_prefix']})"]
        cells += [f"{r['jax']['compile_s']:.1f}", common.human_bytes(r["jax_memory"].get("peak", 0)),
                  f"{r['load_avg']['before'][0]:.1f}-{r['load_avg']['after'][0]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,small", help="comma-separated model presets")
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    ap.add_argument("--new-tokens", default="64", help="N for every config, or per config: tiny:64,small:32")
    ap.add_argument("--scenarios", default="image,text", help="image (ours, hf) and/or text (ours, hf, tunix)")
    ap.add_argument("--text-prompt", type=int, default=96, help="longest text-only prompt, BOS included")
    ap.add_argument("--peers", default=",".join(PEERS), help="sides to run: jax always, plus hf and/or tunix")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median reported)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/generate.json")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats {args.repeats}: expected at least 1")
    peers = tuple(p for p in PEERS if p in args.peers.split(",") or p == "jax")
    scenarios = [s for s in args.scenarios.split(",") if s]
    if set(scenarios) - {"image", "text"}:
        raise SystemExit(f"--scenarios {args.scenarios!r}: expected image and/or text")

    torch.set_num_threads(args.torch_threads or len(os.sched_getaffinity(0)))
    configs = [c for c in args.configs.split(",") if c]
    batches = [int(b) for b in args.batches.split(",") if b]
    new_tokens = parse_new_tokens(args.new_tokens, configs)
    clock = common.CompileClock()
    info = {**common.machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "transformers": transformers.__version__}
    if "tunix" in peers:
        from importlib.metadata import version
        info["google_tunix"] = version("google-tunix")
    ceilings = roofline.measure()
    info["ceilings"] = ceilings.to_dict()
    print(json.dumps(info), flush=True)
    print(f"ceilings: f32 matmul {ceilings.peak_flops / 1e9:.1f} GFLOP/s, memory {ceilings.bandwidth / 1e9:.1f} GB/s "
          f"(load {ceilings.load_avg})", flush=True)

    t0 = time.perf_counter()
    rows = []
    for name in configs:
        for scenario in scenarios:
            rows.extend(bench_scenario(name, scenario, batches, new_tokens[name], args, peers, clock, ceilings))
    table = markdown_table(rows, peers)
    print(table)
    common.write_json(args.out, {"machine": info, "repeats": args.repeats, "total_s": time.perf_counter() - t0,
                                 "results": rows, "table_markdown": table})


if __name__ == "__main__":
    main()

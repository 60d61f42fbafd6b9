"""Ahead-of-time memory plan of one SFT gradient computation, without allocating any weights.

Lowers and compiles `grad(loss)` for abstract parameters (`jax.ShapeDtypeStruct`) of a model preset and
prints XLA's buffer assignment (arguments, outputs, temporaries) for each cross-entropy variant:
full [B, T, V] logits (`loss_chunk=0`) and chunked. Works for 7B/13B shapes on a laptop CPU.

  python bench/memory.py --preset llava_7b_224 --batch 1 --seq 1536 --chunks 0,512
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import llava
from fact_rlhf_jax.train.losses import sft_loss_terms, sft_loss_terms_chunked


def plan(cfg, batch: int, seq: int, chunk: int) -> dict:
    params = llava.param_shapes(cfg)
    size = cfg.vision.image_size
    args = {
        "input_ids": jax.ShapeDtypeStruct((batch, seq), jnp.int32),
        "attention_mask": jax.ShapeDtypeStruct((batch, seq), jnp.int32),
        "labels": jax.ShapeDtypeStruct((batch, seq), jnp.int32),
        "pixel_values": jax.ShapeDtypeStruct((batch, 3, size, size), jnp.float32),
    }

    def loss(p, b):
        if chunk:
            hidden = llava.hidden_states(p, cfg, b["input_ids"], b["pixel_values"], b["attention_mask"])
            terms = sft_loss_terms_chunked(hidden, p["llm"]["lm_head"], b["labels"], chunk)
        else:
            logits = llava.forward(p, cfg, b["input_ids"], b["pixel_values"], b["attention_mask"]).logits
            terms = sft_loss_terms(logits, b["labels"])
        return terms.total / terms.weight

    compiled = jax.jit(jax.grad(loss)).lower(params, args).compile()
    m = compiled.memory_analysis()
    gib = 1 / 2**30
    return {
        "loss_chunk": chunk,
        "params_gib": sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(params)) * gib,
        "argument_gib": m.argument_size_in_bytes * gib,
        "output_gib": m.output_size_in_bytes * gib,
        "temp_gib": m.temp_size_in_bytes * gib,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--chunks", default="0,512")
    ap.add_argument("--remat", default=None, help="override the preset's remat policy")
    ap.add_argument("--dtype", default=None, help="override param and compute dtype (the CPU backend upcasts "
                    "bfloat16 matmuls to float32, so bfloat16 plans on CPU overstate temporaries)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = mcfg.preset(args.preset)
    if args.remat:
        cfg = cfg.replace(remat=args.remat)
    if args.dtype:
        cfg = cfg.replace(param_dtype=args.dtype, compute_dtype=args.dtype)
    rows = [plan(cfg, args.batch, args.seq, int(c)) for c in args.chunks.split(",")]
    print(f"{args.preset} ({cfg.param_dtype} params, remat={cfg.remat}), batch {args.batch} x {args.seq} tokens, "
          f"backend {jax.default_backend()}")
    print("| loss_chunk | params GiB | temporaries GiB |")
    print("|---:|---:|---:|")
    for r in rows:
        print(f"| {r['loss_chunk']} | {r['params_gib']:.2f} | {r['temp_gib']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"preset": args.preset, "batch": args.batch, "seq": args.seq, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

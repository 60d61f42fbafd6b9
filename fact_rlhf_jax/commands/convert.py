"""`fact-rlhf convert`: move checkpoints between training workdirs and Hugging Face directories.

  fact-rlhf convert to-hf --workdir RUN --out DIR [--dtype bfloat16]
      latest checkpoint of a training run -> llava-hf directory (+ tokenizer); LoRA adapters are merged.
  fact-rlhf convert check --hf DIR
      imports a llava-hf directory and prints its config and parameter count.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    to_hf = sub.add_parser("to-hf", help="training workdir -> llava-hf directory")
    to_hf.add_argument("--workdir", required=True)
    to_hf.add_argument("--out", required=True)
    to_hf.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the run's data.tokenizer)")
    to_hf.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    check = sub.add_parser("check", help="import a llava-hf directory and summarise it")
    check.add_argument("--hf", required=True)


def run(args: argparse.Namespace) -> int:
    from fact_rlhf_jax import hf
    from fact_rlhf_jax.models import lora
    from fact_rlhf_jax.models.params import count

    if args.action == "check":
        cfg, params = hf.import_llava(args.hf)
        print(cfg)
        print(f"parameters: {count(params):,}")
        return 0
    from fact_rlhf_jax.inference import ChatModel

    model = ChatModel.load(args.workdir, tokenizer=args.tokenizer)
    params = model.params
    if model.lora is not None:
        params = lora.merge(params, model.lora, model.lora_scale)
    hf.export_llava(model.cfg, params, args.out, dtype=args.dtype)
    model.tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}")
    return 0

"""`fact-rlhf convert`: move checkpoints between training workdirs and Hugging Face directories.

  fact-rlhf convert to-hf --workdir RUN --out DIR [--dtype bfloat16]
      latest checkpoint of a training run -> llava-hf directory (+ tokenizer); LoRA adapters are merged.
  fact-rlhf convert to-hf --model BASE [--vision-tower CLIP_DIR] --lora ADAPTER --out DIR
      llava-hf or original-LLaVA base + PEFT LoRA adapter (e.g. LLaVA-RLHF's rlhf_lora_adapter_model)
      -> llava-hf directory with the adapter merged in.
  fact-rlhf convert from-original --model DIR --vision-tower CLIP_DIR --out HF_DIR
      original LLaVA / LLaVA-RLHF checkpoint (`LlavaLlamaForCausalLM` + mm_projector; CLIP named in its
      config) -> llava-hf directory (+ tokenizer), loadable by transformers and by every command here.
  fact-rlhf convert check --hf DIR
      imports a llava-hf directory and prints its config and parameter count.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    to_hf = sub.add_parser("to-hf", help="training workdir, or base model + LoRA adapter -> llava-hf directory")
    source = to_hf.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="training workdir (its LoRA adapters, if any, are merged)")
    source.add_argument("--model", help="llava-hf or original-LLaVA directory (with --lora: the base)")
    to_hf.add_argument("--vision-tower", default=None, help="local CLIP dir for an original-LLaVA --model")
    to_hf.add_argument("--lora", default=None, help="PEFT LoRA adapter dir to merge into --model")
    to_hf.add_argument("--out", required=True)
    to_hf.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the run's data.tokenizer / --model)")
    to_hf.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    orig = sub.add_parser("from-original", help="original LLaVA / LLaVA-RLHF checkpoint -> llava-hf directory")
    orig.add_argument("--model", required=True, help="LlavaLlamaForCausalLM directory (safetensors)")
    orig.add_argument("--vision-tower", default=None, help="local CLIPVisionModel / CLIPModel directory")
    orig.add_argument("--out", required=True)
    orig.add_argument("--tokenizer", default=None, help="tokenizer dir (default: --model)")
    orig.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
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

    if args.action == "from-original":
        from transformers import AutoTokenizer

        cfg, params = hf.import_llava_original(args.model, vision_tower=args.vision_tower, dtype=args.dtype)
        hf.export_llava(cfg, params, args.out, dtype=args.dtype)
        AutoTokenizer.from_pretrained(args.tokenizer or args.model).save_pretrained(args.out)
        print(f"wrote {args.out}")
        return 0
    if args.workdir is not None:
        if args.lora or args.vision_tower:
            raise SystemExit("--lora and --vision-tower go with --model, not --workdir")
        model = ChatModel.load(args.workdir, tokenizer=args.tokenizer)
    else:
        model = ChatModel.load(args.model, tokenizer=args.tokenizer, vision_tower=args.vision_tower, lora=args.lora)
    params = model.params
    if model.lora is not None:
        params = lora.merge(params, model.lora, model.lora_scale)
    hf.export_llava(model.cfg, params, args.out, dtype=args.dtype)
    model.tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}")
    return 0

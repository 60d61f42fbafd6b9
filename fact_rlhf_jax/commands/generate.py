"""`fact-rlhf generate`: answer questions about images with a checkpoint.

  fact-rlhf generate --model DIR --image cat.png --question "What is in the image?"
  fact-rlhf generate --model DIR --questions q.jsonl --image-folder imgs/ --out answers.jsonl

`--questions` is JSONL with `question_id`, `image` (relative to --image-folder, optional) and `text`;
the output has `question_id`, `prompt`, `text` per line. DIR is a llava-hf directory, an original-LLaVA /
LLaVA-RLHF directory (with `--vision-tower`) or a training workdir; `--lora ADAPTER` applies a PEFT LoRA
adapter (e.g. LLaVA-RLHF's `rlhf_lora_adapter_model`) to the first two on the fly:

  fact-rlhf generate --model sft_model --vision-tower clip-vit-large-patch14-336 \
      --lora rlhf_lora_adapter_model --image cat.png --question "What is in the image?"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="llava-hf dir, original-LLaVA dir or training workdir")
    p.add_argument("--vision-tower", default=None, help="local CLIP dir for an original-LLaVA --model")
    p.add_argument("--lora", default=None, help="PEFT LoRA adapter dir applied to a llava-hf / original-LLaVA --model")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    p.add_argument("--image", default=None, help="one image file (with --question)")
    p.add_argument("--question", default=None, help="one question")
    p.add_argument("--questions", default=None, help="JSONL file: question_id, image, text")
    p.add_argument("--image-folder", default="", help="folder the JSONL `image` fields are relative to")
    p.add_argument("--out", default=None, help="JSONL output (default: stdout)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--conv-mode", default="llava_v1", choices=("llava_v1", "vicuna_v1", "plain"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-pad-to-square", action="store_true", help="resize without LLaVA's pad-to-square")


def _records(args) -> list[dict]:
    if args.questions:
        out = []
        with open(args.questions) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{args.questions}:{line_no}: not valid JSON ({e})")
                if "text" not in rec:
                    raise SystemExit(f"{args.questions}:{line_no}: record {rec.get('question_id')!r} has no 'text'")
                out.append(rec)
        return out
    if args.question is None:
        raise SystemExit("give --question (with optional --image) or --questions FILE.jsonl")
    return [{"question_id": 0, "image": args.image, "text": args.question}]


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from fact_rlhf_jax.inference import ChatModel

    records = _records(args)
    images = []
    for rec in records:
        if not rec.get("image"):
            images.append(None)
            continue
        path = Path(args.image_folder) / rec["image"] if args.questions else Path(rec["image"])
        if not path.exists():
            raise SystemExit(f"record {rec.get('question_id')!r}: image {path} not found")
        images.append(Image.open(path).convert("RGB"))
    model = ChatModel.load(args.model, tokenizer=args.tokenizer, vision_tower=args.vision_tower, lora=args.lora,
                           batch_size=args.batch_size, pad_to_square=not args.no_pad_to_square)
    answers = model.answer([r["text"] for r in records], images, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_p=args.top_p, conv_mode=args.conv_mode)
    out = open(args.out, "w") if args.out else sys.stdout
    try:
        for rec, text in zip(records, answers):
            out.write(json.dumps({"question_id": rec.get("question_id"), "prompt": rec["text"], "text": text}) + "\n")
    finally:
        if args.out:
            out.close()
    return 0

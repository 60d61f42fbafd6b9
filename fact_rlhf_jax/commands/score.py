"""`fact-rlhf score`: score responses with a reward model.

  fact-rlhf score --model RM_WORKDIR --records R.jsonl --out S.jsonl [--image-folder D] [--captions FILE]
  fact-rlhf score --model SFT_MODEL --lora rm_lora_adapter_model --head reward_head [--vision-tower CLIP] \
      --captions image_to_caption.json --records R.jsonl --out S.jsonl      # the released LLaVA-RLHF reward model

Each input line is a LLaVA-shaped record: `image` (relative to --image-folder, optional), `conversations`
whose last `gpt` turn is the response to score, optional `captions` (the facts a Fact-RM is given; without
them the model's `image_to_caption.json`, or --captions, is looked up by `image`). The output holds the
same records with a float `reward` and their input `line` number added, appended as they are scored: a rerun
skips the lines already in --out. Facts are shuffled with a generator seeded by (--seed, line).
Records that cannot be scored are reported with their line and skipped (--strict stops instead).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="reward-model training workdir, or the base model with --lora/--head")
    p.add_argument("--lora", default=None, help="PEFT adapter directory of a released reward model (on --model)")
    p.add_argument("--head", default=None, help="its reward head file (torch state dict or safetensors)")
    p.add_argument("--vision-tower", default=None, help="local CLIP directory for an original-LLaVA --model")
    p.add_argument("--prompt", default="fact_rlhf", help="with --lora: fact_rlhf, vanilla or a template file")
    p.add_argument("--records", required=True, help="JSONL records to score (see above)")
    p.add_argument("--out", required=True, help="JSONL output: the records with `reward` added")
    p.add_argument("--image-folder", default="", help="folder the records' `image` fields are relative to")
    p.add_argument("--captions", default=None, help="image_to_caption.json (default: the model's)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="stop at the first record that cannot be scored")


def run(args: argparse.Namespace) -> int:
    from fact_rlhf_jax.data import errors
    from fact_rlhf_jax.eval.generation import load_image
    from fact_rlhf_jax.eval.records import JsonlStore, iter_jsonl
    from fact_rlhf_jax.scoring import RewardModel

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (args.lora is None) != (args.head is None):
        raise SystemExit("--lora and --head go together (a released reward model's adapter and head)")
    if args.lora:
        model = RewardModel.from_released(args.model, args.lora, args.head, vision_tower=args.vision_tower,
                                          tokenizer=args.tokenizer, prompt=args.prompt, captions=args.captions,
                                          batch_size=args.batch_size)
    else:
        model = RewardModel.load(args.model, tokenizer=args.tokenizer, captions=args.captions,
                                 batch_size=args.batch_size)
    store = JsonlStore(args.out, "line")
    todo, skipped = [], 0
    for line, record in iter_jsonl(args.records):
        if line in store:
            continue
        try:
            ids = model.input_ids(record, np.random.default_rng([args.seed, line]))
        except errors.BadRecordError as e:
            e = e.with_context(args.records, f"#line{line}" if record.get("id") is None else str(record["id"]))
            if args.strict:
                raise SystemExit(str(e))
            log.warning("skipped: %s", e)
            skipped += 1
            continue
        todo.append((line, record, ids))
    for start in range(0, len(todo), args.batch_size):
        chunk = todo[start:start + args.batch_size]
        images = [load_image(str(Path(args.image_folder) / r["image"])) if r.get("image") else None
                  for _, r, _ in chunk]
        scores = model.score_ids([ids for _, _, ids in chunk], images)
        store.add_many([{**record, "reward": score, "line": line} for (line, record, _), score in zip(chunk, scores)])
    store.close()
    print(f"scored {len(todo)} records -> {args.out}" + (f"; skipped {skipped} (see the log)" if skipped else ""),
          file=sys.stderr)
    return 0

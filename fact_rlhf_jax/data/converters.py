"""Converters from standard annotation files to LLaVA JSON records.

  vqav2      VQA-v2 questions + annotations -> short-answer QA
  aokvqa     A-OKVQA -> multiple choice (A-D) answered with a rationale, then the letter
  flickr30k  Karpathy `dataset_flickr30k.json` or `results.csv` -> brief captioning
  tfds       a LLaVA JSON + image folder -> prepared array_record dataset

Command line (also usable from the project CLI through `add_arguments` / `run`):

    python -m fact_rlhf_jax.data.converters vqav2 --questions v2_OpenEnded_mscoco_train2014_questions.json \\
        --annotations v2_mscoco_train2014_annotations.json --out vqav2.json
    python -m fact_rlhf_jax.data.converters aokvqa --annotations aokvqa_v1p0_train.json --out aokvqa.json
    python -m fact_rlhf_jax.data.converters flickr30k --annotations dataset_flickr30k.json --out flickr.json
    python -m fact_rlhf_jax.data.converters tfds --json mix.json --image-folder images/ --out-dir prepared/

Every converter takes `image_pattern` (a `str.format` pattern with `{image_id}` or
`{filename}`: the "image" field, relative to the image folder used at training time) and
`max_records` + `seed` for a deterministic random subset.
"""

from __future__ import annotations

import argparse
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

VQA_PROMPT = "Answer the question using a single word or phrase."
AOKVQA_PROMPT = "Answer with the option's letter from the given choices. Explain your reasoning first."
CAPTION_PROMPTS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
LETTERS = "ABCDEFGH"


def _record(rid: str, image: str | None, question: str, answer: str) -> dict:
    rec: dict[str, Any] = {"id": rid}
    if image is not None:
        rec["image"] = image
    rec["conversations"] = [
        {"from": "human", "value": ("<image>\n" if image is not None else "") + question},
        {"from": "gpt", "value": answer},
    ]
    return rec


def _subset(records: list[dict], max_records: int | None, seed: int) -> list[dict]:
    if max_records is None or max_records >= len(records):
        return records
    keep = np.sort(np.random.default_rng(seed).permutation(len(records))[:max_records])
    return [records[i] for i in keep]


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _require(item: dict, keys: Sequence[str], path: str, what: str) -> None:
    missing = [k for k in keys if k not in item]
    if missing:
        rid = item.get("question_id", item.get("image_id", item.get("filename", "?")))
        raise ValueError(f"{path}: {what} {rid} lacks {missing}; expected keys {list(keys)}")


# --- VQA-v2 ----------------------------------------------------------------------------------------


def convert_vqav2(
    questions_path: str,
    annotations_path: str,
    *,
    image_pattern: str = "COCO_train2014_{image_id:012d}.jpg",
    prompt: str = VQA_PROMPT,
    max_records: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """VQA-v2 -> one record per question: "<image>\\n{question}\\n{prompt}" -> multiple_choice_answer."""
    questions = _load_json(questions_path)
    annotations = _load_json(annotations_path)
    if not isinstance(questions, dict) or "questions" not in questions:
        raise ValueError(f'{questions_path}: expected {{"questions": [{{image_id, question, question_id}}]}}')
    if not isinstance(annotations, dict) or "annotations" not in annotations:
        raise ValueError(f'{annotations_path}: expected {{"annotations": [{{question_id, multiple_choice_answer}}]}}')
    answers = {}
    for a in annotations["annotations"]:
        _require(a, ("question_id", "multiple_choice_answer"), annotations_path, "annotation")
        answers[a["question_id"]] = a["multiple_choice_answer"]
    records = []
    for q in questions["questions"]:
        _require(q, ("question_id", "image_id", "question"), questions_path, "question")
        if q["question_id"] not in answers:
            continue  # test-split questions have no answer
        text = q["question"].strip() + ("\n" + prompt if prompt else "")
        records.append(_record(f"vqav2_{q['question_id']}", image_pattern.format(image_id=q["image_id"]), text,
                               str(answers[q["question_id"]]).strip()))
    return _subset(records, max_records, seed)


# --- A-OKVQA -----------------------------------------------------------------------------------------


def aokvqa_answer(rationales: Sequence[str], letter: str, choice: str) -> str:
    """Chain of thought, then the option: "<rationale> So the answer is (B) train." """
    reasoning = " ".join(r.strip() if r.strip().endswith((".", "!", "?")) else r.strip() + "." for r in rationales
                         if r.strip())
    final = f"So the answer is ({letter}) {choice}."
    return f"{reasoning} {final}" if reasoning else final


def convert_aokvqa(
    annotations_path: str,
    *,
    image_pattern: str = "{image_id:012d}.jpg",
    prompt: str = AOKVQA_PROMPT,
    rationales: str = "first",
    max_records: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """A-OKVQA -> multiple choice with rationale.

    Question: "{question}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\n{prompt}".
    Answer: the first rationale (or all of them, `rationales="all"`) then
    "So the answer is ({letter}) {choice}.". Items without `correct_choice_idx` (test split) are skipped.
    """
    if rationales not in ("first", "all"):
        raise ValueError(f"rationales must be 'first' or 'all', got {rationales!r}")
    items = _load_json(annotations_path)
    if not isinstance(items, list):
        raise ValueError(f"{annotations_path}: expected a list of A-OKVQA items")
    records = []
    for item in items:
        _require(item, ("question_id", "image_id", "question", "choices"), annotations_path, "item")
        idx = item.get("correct_choice_idx")
        if idx is None:
            continue
        choices = list(item["choices"])
        if not 0 <= idx < len(choices) <= len(LETTERS):
            raise ValueError(f"{annotations_path}: item {item['question_id']}: correct_choice_idx {idx} "
                             f"outside its {len(choices)} choices")
        options = "\n".join(f"{LETTERS[k]}. {c}" for k, c in enumerate(choices))
        question = f"{item['question'].strip()}\n{options}" + (f"\n{prompt}" if prompt else "")
        rats = list(item.get("rationales") or [])
        rats = rats[:1] if rationales == "first" else rats
        answer = aokvqa_answer(rats, LETTERS[idx], choices[idx])
        records.append(_record(f"aokvqa_{item['question_id']}", image_pattern.format(image_id=item["image_id"]),
                               question, answer))
    return _subset(records, max_records, seed)


# --- Flickr30k -----------------------------------------------------------------------------------------


def _flickr_captions(path: str, split: str | None) -> list[tuple[str, list[str]]]:
    """[(filename, [captions...])] from Karpathy JSON or the `image_name| comment_number| comment` CSV."""
    if path.endswith(".json"):
        data = _load_json(path)
        if not isinstance(data, dict) or "images" not in data:
            raise ValueError(f'{path}: expected {{"images": [{{filename, sentences: [{{raw}}], split}}]}}')
        out = []
        for im in data["images"]:
            _require(im, ("filename", "sentences"), path, "image")
            if split is not None and im.get("split") != split:
                continue
            out.append((im["filename"], [s["raw"].strip() for s in im["sentences"] if s.get("raw", "").strip()]))
        return out
    by_image: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        # not csv.reader: comments contain unbalanced quotes and "|"; split on the first two bars only
        for k, line in enumerate(f):
            row = [c.strip() for c in line.rstrip("\n").split("|", 2)]
            if k == 0 and row[0] == "image_name":
                continue
            if len(row) < 3:
                if any(row):
                    raise ValueError(f"{path}: line {k + 1}: expected 'image_name| comment_number| comment'")
                continue
            if row[2]:
                by_image.setdefault(row[0], []).append(row[2])
    return list(by_image.items())


def convert_flickr30k(
    annotations_path: str,
    *,
    image_pattern: str = "{filename}",
    split: str | None = "train",
    captions: str = "first",
    prompts: Sequence[str] = CAPTION_PROMPTS,
    max_records: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Flickr30k -> brief captioning: "<image>\\n{prompt}" -> caption.

    `captions="first"`: one record per image; `"all"`: one per caption. The prompt is picked
    from `prompts` by a hash of the file name and caption index (stable across runs).
    `split` filters the Karpathy JSON ("train", "val", "test"; None = all); the CSV has none.
    """
    if captions not in ("first", "all"):
        raise ValueError(f"captions must be 'first' or 'all', got {captions!r}")
    records = []
    for filename, caps in _flickr_captions(annotations_path, split if annotations_path.endswith(".json") else None):
        stem = os.path.splitext(os.path.basename(filename))[0]
        for k, cap in enumerate(caps[:1] if captions == "first" else caps):
            prompt = prompts[zlib.crc32(f"{filename}:{k}".encode()) % len(prompts)]
            records.append(_record(f"flickr30k_{stem}_{k}", image_pattern.format(filename=filename), prompt, cap))
    return _subset(records, max_records, seed)


# --- output + command line ---------------------------------------------------------------------------


def write_json(records: Iterable[dict], path: str) -> str:
    records = list(records)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False, indent=1)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", required=True)

    def common(p, pattern):
        p.add_argument("--out", required=True, help="output LLaVA JSON file")
        p.add_argument("--image-pattern", default=pattern, help=f"'image' field pattern (default {pattern!r})")
        p.add_argument("--max-records", type=int, default=None, help="keep a seeded random subset of this size")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("vqav2", help="VQA-v2 questions + annotations -> LLaVA JSON")
    p.add_argument("--questions", required=True)
    p.add_argument("--annotations", required=True)
    p.add_argument("--prompt", default=VQA_PROMPT)
    common(p, "COCO_train2014_{image_id:012d}.jpg")

    p = sub.add_parser("aokvqa", help="A-OKVQA -> multiple choice with rationale")
    p.add_argument("--annotations", required=True)
    p.add_argument("--prompt", default=AOKVQA_PROMPT)
    p.add_argument("--rationales", choices=("first", "all"), default="first")
    common(p, "{image_id:012d}.jpg")

    p = sub.add_parser("flickr30k", help="Flickr30k captions (Karpathy JSON or results.csv) -> captioning")
    p.add_argument("--annotations", required=True)
    p.add_argument("--split", default="train", help="Karpathy split to keep ('' = all)")
    p.add_argument("--captions", choices=("first", "all"), default="first")
    common(p, "{filename}")

    p = sub.add_parser("tfds", help="LLaVA JSON + image folder -> prepared tfds array_record dataset")
    p.add_argument("--json", required=True)
    p.add_argument("--image-folder", default=None)
    p.add_argument("--out-dir", required=True)


def run(args: argparse.Namespace) -> int:
    if args.kind == "tfds":
        from fact_rlhf_jax.data import tfds_data

        print(tfds_data.prepare(args.json, args.image_folder, args.out_dir))
        return 0
    common = dict(image_pattern=args.image_pattern, max_records=args.max_records, seed=args.seed)
    if args.kind == "vqav2":
        records = convert_vqav2(args.questions, args.annotations, prompt=args.prompt, **common)
    elif args.kind == "aokvqa":
        records = convert_aokvqa(args.annotations, prompt=args.prompt, rationales=args.rationales, **common)
    else:
        records = convert_flickr30k(args.annotations, split=args.split or None, captions=args.captions, **common)
    write_json(records, args.out)
    print(f"wrote {len(records)} records to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fact_rlhf_jax.data.converters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

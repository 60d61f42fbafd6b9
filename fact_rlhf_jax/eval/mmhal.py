"""MMHal-Bench: 96 questions about OpenImages pictures, answers rated 0-6 by a judge.

Template/responses file: a JSON list of records with `question_type`, `question_topic`, `image_id`,
`image_src`, `image_content` (list of labels), `question`, `gt_answer`, `model_answer`. A judged file adds
`judge_response` (the review text) and `rating` (parsed, or null when the review holds no single rating).
Records are identified by their position in the file (the reference derives the question type the same way).
"""

from __future__ import annotations

import os
from typing import Any

from fact_rlhf_jax.eval import metrics
from fact_rlhf_jax.eval.generation import Answerer, GenerationSettings, Prompt, answer_prompts
from fact_rlhf_jax.eval.judge import Judge, JudgeItem, JudgeRun, fill_template, judge_all
from fact_rlhf_jax.eval.records import EvalDataError, JsonlStore, read_json, require, write_json

TEXT_FIELDS = ("question_type", "question_topic", "image_id", "image_src", "question", "gt_answer")
COLUMNS = ("score", "hallucination_rate", "n", "unparsed")
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def load_records(path: str, *, need_answers: bool) -> list[dict[str, Any]]:
    """The template (need_answers=False) or a responses file (every `model_answer` a string)."""
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise EvalDataError(f"{path}: expected a non-empty JSON list of MMHal-Bench records")
    for i, record in enumerate(data):
        where = f"{path}, record {i}"
        if not isinstance(record, dict):
            raise EvalDataError(f"{where}: expected a JSON object")
        for field in TEXT_FIELDS:
            require(record, field, str, where)
        content = require(record, "image_content", list, where)
        if not all(isinstance(c, str) for c in content):
            raise EvalDataError(f"{where}: field 'image_content' must be a list of strings")
        if need_answers:
            require(record, "model_answer", str, where)
        if "judge_response" in record and record["judge_response"] is not None:
            require(record, "judge_response", str, where)
    return data


def image_path(record: dict[str, Any], image_dir: str, where: str) -> str:
    """`image_path` if the record has one (relative paths are under image_dir), else
    `<image_dir>/<basename of image_src>`, else `<image_dir>/<image_id>.<jpg|jpeg|png|webp>`."""
    candidates = []
    if record.get("image_path"):
        candidates.append(os.path.join(image_dir, record["image_path"]))
    if record.get("image_src"):
        candidates.append(os.path.join(image_dir, os.path.basename(record["image_src"].split("?")[0])))
    candidates += [os.path.join(image_dir, record["image_id"] + ext) for ext in _IMAGE_EXTENSIONS]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise EvalDataError(f"{where}: no image found for image_id {record['image_id']!r}; tried {', '.join(candidates)}")


def generate(
    template_path: str,
    answerer: Answerer,
    out_dir: str,
    *,
    image_dir: str,
    settings: GenerationSettings,
    model_id: str = "",
    show_progress: bool = True,
) -> str:
    """Answers every question (resuming from `<out>/mmhal_answers.jsonl`) and writes the benchmark's own
    format, `<out>/mmhal_responses.json` (the template with `model_answer` filled). Returns its path."""
    records = load_records(template_path, need_answers=False)
    prompts = [
        Prompt(key=i, text=r["question"], image=image_path(r, image_dir, f"{template_path}, record {i}"))
        for i, r in enumerate(records)
    ]
    with JsonlStore(os.path.join(out_dir, "mmhal_answers.jsonl"), "index") as store:
        answer_prompts(prompts, answerer, store, settings, model_id=model_id, desc="mmhal", show_progress=show_progress)
        answers = {i: store.get(i)["text"] for i in range(len(records))}
    responses = [dict(r, model_answer=answers[i]) for i, r in enumerate(records)]
    path = os.path.join(out_dir, "mmhal_responses.json")
    write_json(path, responses)
    return path


def judge_prompt(template: str, record: dict[str, Any]) -> str:
    return fill_template(
        template,
        {
            "image_content": ", ".join(record["image_content"]),
            "question": record["question"],
            "gt_answer": record["gt_answer"],
            "model_answer": record["model_answer"],
        },
    )


def judge_records(
    records: list[dict[str, Any]],
    judge: Judge,
    template: str,
    cache_path: str,
    *,
    retry_unparsed: int = 2,
    show_progress: bool = True,
) -> tuple[list[dict[str, Any]], JudgeRun]:
    """Records with `judge_response` and `rating` added from the judge (cached in `cache_path`, keyed by
    position); records whose request failed keep no judge_response."""
    items = [
        JudgeItem(key=i, prompt=judge_prompt(template, r), fields=r) for i, r in enumerate(records)
    ]
    with JsonlStore(cache_path, "index") as store:
        run = judge_all(
            items, judge, store, is_parsed=lambda t: metrics.parse_mmhal_rating(t) is not None,
            retry_unparsed=retry_unparsed, show_progress=show_progress, desc="mmhal judge",
        )
    judged = []
    for i, r in enumerate(records):
        if i in run.judged:
            review = run.judged[i]["review"]
            judged.append(dict(r, judge_response=review, rating=metrics.parse_mmhal_rating(review)))
        else:
            judged.append(dict(r))
    return judged, run


def summarize(records: list[dict[str, Any]], path: str) -> dict[str, dict[str, float]]:
    """Per question type and overall; every record needs a `judge_response`."""
    missing = [i for i, r in enumerate(records) if not isinstance(r.get("judge_response"), str)]
    if missing:
        raise EvalDataError(
            f"{path}: {len(missing)} of {len(records)} records have no judge_response (first: record {missing[0]}); "
            "run with a judge to fill them"
        )
    ratings = [metrics.parse_mmhal_rating(r["judge_response"]) for r in records]
    return metrics.mmhal_summary(ratings, [r["question_type"] for r in records])


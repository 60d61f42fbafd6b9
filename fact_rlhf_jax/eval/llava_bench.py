"""LLaVA-Bench (COCO, "qa90"): the model's answers against reference answers, judged pairwise.

Files (the format of LLaVA's `qa90_*` set):
- questions JSONL: `question_id`, `image` (file name), `text`, `category` (conv | detail | complex);
- reference answers JSONL (e.g. `qa90_gpt4_answer.jsonl`): `question_id`, `text`;
- context JSONL (e.g. `caps_boxes_coco2014_val_80.jsonl`): `image`, `captions` (list of strings),
  `instances` (list of `{"category": str, "bbox": [x1, y1, x2, y2]}`);
- model answers JSONL: `question_id`, `text`.
The judge sees the context, the question, the reference answer as Assistant 1 and the model's answer as
Assistant 2, and puts the two scores (1-10) on its first line. Relative score = 100 * mean(model) / mean(reference).
"""

from __future__ import annotations

import json
import os
from typing import Any

from fact_rlhf_jax.eval import metrics
from fact_rlhf_jax.eval.generation import Answerer, GenerationSettings, Prompt, answer_prompts
from fact_rlhf_jax.eval.judge import Judge, JudgeItem, JudgeRun, fill_template, judge_all, load_template
from fact_rlhf_jax.eval.records import EvalDataError, JsonlStore, iter_jsonl, require

COLUMNS = ("relative", "reference", "model", "n", "unparsed")


def load_questions(path: str) -> list[dict[str, Any]]:
    out = []
    for line, record in iter_jsonl(path):
        qid = require(record, "question_id", (int, str), f"{path}, line {line}")
        where = f"{path}, question_id {qid!r}"
        for field in ("image", "text", "category"):
            require(record, field, str, where)
        out.append(record)
    if not out:
        raise EvalDataError(f"{path}: no questions")
    return out


def load_answers(path: str) -> dict[str, str]:
    """question_id (as a string, so 7 and "7" match) -> answer text."""
    out = {}
    for line, record in iter_jsonl(path, tolerate_partial_last_line=True):
        qid = require(record, "question_id", (int, str), f"{path}, line {line}")
        out[str(qid)] = require(record, "text", str, f"{path}, question_id {qid!r}")
    return out


def load_context(path: str) -> dict[str, str]:
    """image file name -> the [Context] text: captions, a blank line, then `category: [x1, y1, x2, y2]` lines."""
    out = {}
    for line, record in iter_jsonl(path):
        where = f"{path}, line {line}"
        image = require(record, "image", str, where)
        captions = require(record, "captions", list, f"{path}, image {image!r}")
        instances = record.get("instances", [])
        boxes = []
        for j, inst in enumerate(instances):
            if not isinstance(inst, dict) or "category" not in inst or "bbox" not in inst:
                raise EvalDataError(f"{path}, image {image!r}: instances[{j}] needs 'category' and 'bbox'")
            coords = ", ".join(f"{float(v):.3f}" for v in inst["bbox"])
            boxes.append(f"{inst['category']}: [{coords}]")
        out[image] = "\n".join(str(c) for c in captions) + "\n\n" + "\n".join(boxes)
    return out


def generate(
    questions: list[dict[str, Any]],
    answerer: Answerer,
    answers_path: str,
    *,
    image_dir: str,
    settings: GenerationSettings,
    model_id: str = "",
    show_progress: bool = True,
) -> int:
    prompts = [
        Prompt(key=q["question_id"], text=q["text"], image=os.path.join(image_dir, q["image"]), extra={"category": q["category"]})
        for q in questions
    ]
    with JsonlStore(answers_path, "question_id") as store:
        return answer_prompts(prompts, answerer, store, settings, model_id=model_id, desc="llava-bench", show_progress=show_progress)


def load_rules(name: str) -> dict[str, Any]:
    return json.loads(load_template(name))


def judge_prompt(template: str, rules: dict[str, Any], question: dict[str, Any], context: str, reference: str, answer: str) -> str:
    focus = rules["focus"].get(question["category"], rules["focus"]["default"])
    return fill_template(
        template,
        {
            "context": context,
            "question": question["text"],
            "answer_1": reference,
            "answer_2": answer,
            "instruction": rules["instruction"].replace("{focus}", focus),
        },
    )


def judge_answers(
    questions: list[dict[str, Any]],
    answers: dict[str, str],
    references: dict[str, str],
    contexts: dict[str, str],
    judge: Judge,
    template: str,
    rules: dict[str, Any],
    cache_path: str,
    *,
    paths: dict[str, str],
    retry_unparsed: int = 2,
    show_progress: bool = True,
) -> tuple[list[dict[str, Any]], JudgeRun]:
    """One review per question (cached in `cache_path` keyed by question_id). Returns per-question rows
    `{question_id, category, review, scores}` for the reviewed questions, and the run."""
    items = []
    for q in questions:
        qid = q["question_id"]
        for what, table in (("answers", answers), ("references", references)):
            if str(qid) not in table:
                raise EvalDataError(f"{paths[what]}: no answer for question_id {qid!r}")
        if q["image"] not in contexts:
            raise EvalDataError(f"{paths['context']}: no context for image {q['image']!r} (question_id {qid!r})")
        prompt = judge_prompt(template, rules, q, contexts[q["image"]], references[str(qid)], answers[str(qid)])
        items.append(JudgeItem(key=qid, prompt=prompt, fields={"question": q, "answer": answers[str(qid)]}))
    with JsonlStore(cache_path, "question_id") as store:
        run = judge_all(
            items, judge, store, is_parsed=lambda t: metrics.parse_pair_scores(t) is not None,
            retry_unparsed=retry_unparsed, show_progress=show_progress, desc="llava-bench judge",
        )
    rows = []
    for q in questions:
        if q["question_id"] in run.judged:
            review = run.judged[q["question_id"]]["review"]
            rows.append({"question_id": q["question_id"], "category": q["category"], "review": review,
                         "scores": metrics.parse_pair_scores(review)})
    return rows, run


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return metrics.relative_scores([r["scores"] for r in rows], [r["category"] for r in rows])

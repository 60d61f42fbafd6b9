"""POPE: yes/no object-existence questions, scored per split (random / popular / adversarial).

Questions: the official JSONL (`question_id`, `image`, `text`, `label` = "yes" | "no").
Answers: JSONL with `question_id` and `text` (LLaVA's `model_vqa` output has both).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from fact_rlhf_jax.eval import metrics
from fact_rlhf_jax.eval.generation import Answerer, GenerationSettings, Prompt, answer_prompts
from fact_rlhf_jax.eval.records import EvalDataError, JsonlStore, iter_jsonl, require

METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio", "n")


@dataclasses.dataclass(frozen=True)
class PopeQuestion:
    question_id: Any
    image: str
    text: str
    label: bool  # True = "yes"


POPE_SPLITS = ("random", "popular", "adversarial")


def split_name(path: str) -> str:
    """`coco_pope_adversarial.jsonl` / `shapesworld_pope_random.jsonl` -> the split; any other file -> its stem."""
    stem = os.path.splitext(os.path.basename(path))[0]
    prefix, _, last = stem.rpartition("_")
    return last if prefix.endswith("pope") and last in POPE_SPLITS else stem


def load_questions(path: str) -> list[PopeQuestion]:
    out = []
    for line, record in iter_jsonl(path):
        where = f"{path}, line {line}"
        qid = require(record, "question_id", (int, str), where)
        where = f"{path}, question_id {qid!r}"
        label = require(record, "label", str, where)
        if label.strip().lower() not in ("yes", "no"):
            raise EvalDataError(f"{where}: field 'label' must be 'yes' or 'no', got {label!r}")
        out.append(
            PopeQuestion(
                question_id=qid,
                image=require(record, "image", str, where),
                text=require(record, "text", str, where),
                label=label.strip().lower() == "yes",
            )
        )
    if not out:
        raise EvalDataError(f"{path}: no questions")
    return out


def load_answers(path: str) -> dict[str, str]:
    """question_id (as a string, so 7 and "7" match) -> answer text."""
    answers: dict[str, str] = {}
    for line, record in iter_jsonl(path, tolerate_partial_last_line=True):
        where = f"{path}, line {line}"
        qid = require(record, "question_id", (int, str), where)
        answers[str(qid)] = require(record, "text", str, f"{path}, question_id {qid!r}")
    return answers


def score(questions: list[PopeQuestion], answers: dict[str, str], answers_path: str) -> dict[str, float]:
    """binary_metrics over the questions, each answer parsed by the reference rule. Every question needs
    an answer; answers to other ids are ignored."""
    missing = [q.question_id for q in questions if str(q.question_id) not in answers]
    if missing:
        raise EvalDataError(
            f"{answers_path}: no answer for {len(missing)} of {len(questions)} questions "
            f"(first missing question_id {missing[0]!r})"
        )
    predictions = [metrics.parse_pope_answer(answers[str(q.question_id)]) for q in questions]
    return metrics.binary_metrics(predictions, [q.label for q in questions])


def average(per_split: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean over splits (how the papers report "avg"); n is the total."""
    splits = list(per_split.values())
    out = {k: sum(s[k] for s in splits) / len(splits) for k in METRIC_KEYS if k != "n"}
    out["n"] = sum(s["n"] for s in splits)
    return out


def generate(
    questions: list[PopeQuestion],
    answerer: Answerer,
    answers_path: str,
    *,
    image_dir: str,
    prompt_suffix: str,
    settings: GenerationSettings,
    model_id: str = "",
    show_progress: bool = True,
    desc: str = "pope",
) -> int:
    """Answers the questions not yet in `answers_path` (JSONL, `question_id` + `text`, appended as it goes)."""
    prompts = [
        Prompt(key=q.question_id, text=q.text + prompt_suffix, image=os.path.join(image_dir, q.image))
        for q in questions
    ]
    with JsonlStore(answers_path, "question_id") as store:
        return answer_prompts(prompts, answerer, store, settings, model_id=model_id, desc=desc, show_progress=show_progress)

"""ShapesWorld metrics computed from the scene graphs.

Yes/no and CHAIR-style numbers come from the shared `fact_rlhf_jax.eval.metrics` (one
implementation for the evaluation harness and ShapesWorld); this module adds what only ShapesWorld
can score: multiple-choice accuracy, mean length and the annotator-based hallucination numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fact_rlhf_jax.eval.metrics import binary_metrics, chair, parse_pope_answer
from fact_rlhf_jax.shapesworld.annotator import annotate
from fact_rlhf_jax.shapesworld.scene import Scene

_OPTION_PATTERNS = (
    re.compile(r"^\s*\(?([A-D])[.)](?:\s|$)"),  # "B. ...", "(B) ..."
    re.compile(r"correct option is \(?([A-D])\b"),  # "... so the correct option is B."
    re.compile(r"answer is \(?([A-D])\b"),
    re.compile(r"^\s*([A-D])\s*$"),  # just the letter
)


def parse_choice(text: str) -> str | None:
    """The option letter A-D an answer picks, or None: a leading "B." / "(B)", "correct option
    is B", "answer is B", or the bare letter."""
    for pattern in _OPTION_PATTERNS:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def multiple_choice_accuracy(answers: Sequence[str], correct: Sequence[str]) -> dict[str, float]:
    """Share of answers whose parsed letter equals the correct one; unparsable answers are wrong
    and counted in `unparsed`."""
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correct letters")
    picks = [parse_choice(a) for a in answers]
    n = len(answers)
    return {
        "accuracy": sum(p == c for p, c in zip(picks, correct)) / n if n else 0.0,
        "unparsed": sum(p is None for p in picks),
        "n": n,
    }


def yes_no_metrics(answers: Sequence[str], labels: Sequence[str | bool]) -> dict[str, float]:
    """POPE-style accuracy, precision, recall, F1 and yes-ratio of free-text answers (parsed with the
    POPE rule) against "yes"/"no" (or boolean) labels."""
    truth = [l if isinstance(l, bool) else l.strip().lower() == "yes" for l in labels]
    return binary_metrics([parse_pope_answer(a) for a in answers], truth)


def mean_length(responses: Sequence[str]) -> float:
    """Mean number of whitespace-separated words per response."""
    return sum(len(r.split()) for r in responses) / len(responses) if responses else 0.0


def hallucination_metrics(scenes: Sequence[Scene], responses: Sequence[str]) -> dict[str, float]:
    """Annotator-based object hallucination of free-text responses against their scene graphs:
    chair_i (hallucinated mentions / mentions), chair_s (responses with a hallucination /
    responses), coverage (scene objects mentioned / scene objects), mentions,
    hallucinated_mentions, n, plus mean_length (words) and hallucinations_per_response."""
    if len(scenes) != len(responses):
        raise ValueError(f"{len(responses)} responses but {len(scenes)} scenes")
    notes = [annotate(s, r) for s, r in zip(scenes, responses)]
    out = dict(chair([a.mentioned for a in notes], [a.present for a in notes]))
    out["hallucinations_per_response"] = out["hallucinated_mentions"] / len(notes) if notes else 0.0
    out["mean_length"] = mean_length(responses)
    return out


def preference_accuracy(predicted: Sequence[int], annotator: Sequence[int]) -> float:
    """Share of pairs where a model's choice (1 or 2) agrees with the annotator's."""
    if len(predicted) != len(annotator):
        raise ValueError(f"{len(predicted)} predictions but {len(annotator)} annotator labels")
    return sum(p == a for p, a in zip(predicted, annotator)) / len(predicted) if predicted else 0.0

"""Benchmark metrics shared by the evaluation harness and ShapesWorld.

Pure Python over plain lists, so every number can be checked by hand in a test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def parse_pope_answer(text: str) -> bool:
    """POPE's yes/no rule: keep the text before the first '.', drop commas, split on spaces;
    any of the words `No`, `not`, `no` means "no", otherwise "yes". Returns True for yes."""
    head = text.split(".", 1)[0].replace(",", "")
    words = head.split(" ")
    return not any(w in ("No", "not", "no") for w in words)


def binary_metrics(predictions: Sequence[bool], labels: Sequence[bool]) -> dict[str, float]:
    """Yes/no metrics with "yes" as the positive class; fractions in [0, 1].

    Returns accuracy, precision TP/(TP+FP), recall TP/(TP+FN), f1, yes_ratio (#yes predictions / n) and n.
    Undefined ratios (no positive predictions, no positive labels) are 0.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    n = len(labels)
    tp = sum(1 for p, l in zip(predictions, labels) if p and l)
    fp = sum(1 for p, l in zip(predictions, labels) if p and not l)
    tn = sum(1 for p, l in zip(predictions, labels) if not p and not l)
    fn = sum(1 for p, l in zip(predictions, labels) if not p and l)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n if n else 0.0,
        "n": n,
    }


def chair(mentioned: Sequence[Iterable[str]], present: Sequence[Iterable[str]]) -> dict[str, float]:
    """CHAIR object hallucination over responses.

    mentioned[i]: canonical object names response i mentions (duplicates count as separate mentions);
    present[i]: canonical object names really in image i.
      chair_i = hallucinated mentions / all mentions        (per mention)
      chair_s = responses with >= 1 hallucination / responses (per response)
      coverage = present objects mentioned / present objects  (recall of the description)
    """
    if len(mentioned) != len(present):
        raise ValueError(f"{len(mentioned)} responses but {len(present)} ground-truth object lists")
    n_mentions = n_hallucinated = n_bad_responses = n_present = n_covered = 0
    for said, truth in zip(mentioned, present):
        said = list(said)
        truth = set(truth)
        bad = [m for m in said if m not in truth]
        n_mentions += len(said)
        n_hallucinated += len(bad)
        n_bad_responses += bool(bad)
        n_present += len(truth)
        n_covered += len(truth & set(said))
    n = len(mentioned)
    return {
        "chair_i": n_hallucinated / n_mentions if n_mentions else 0.0,
        "chair_s": n_bad_responses / n if n else 0.0,
        "coverage": n_covered / n_present if n_present else 0.0,
        "mentions": n_mentions,
        "hallucinated_mentions": n_hallucinated,
        "n": n,
    }

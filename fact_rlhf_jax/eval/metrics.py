"""Benchmark metrics shared by the evaluation harness and ShapesWorld.

Pure Python over plain lists, so every number can be checked by hand in a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


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


# ---------------------------------------------------------------------------------------------------
# MMHal-Bench

MMHAL_QUESTION_TYPES = (
    "attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other",
)


def parse_mmhal_rating(judge_text: str) -> int | None:
    """The reference's rule: look for the substrings `rating: 0` ... `rating: 6` in the lower-cased text;
    exactly one distinct value found -> that value, otherwise None (the reference then scores 0)."""
    lowered = judge_text.lower()
    found = [s for s in range(7) if f"rating: {s}" in lowered]
    return found[0] if len(found) == 1 else None


def mmhal_rating(hallucinated: bool, informativeness: int) -> int:
    """The MMHal 0-6 scale from its two judgements (6, "good analysis or reasoning", is never given by
    an offline judge): no hallucination 3 / 4 / 5, with hallucination 0 / 1 / 2 for not / somewhat / very
    informative (informativeness 0 / 1 / 2)."""
    if informativeness not in (0, 1, 2):
        raise ValueError(f"informativeness must be 0, 1 or 2, got {informativeness!r}")
    return informativeness if hallucinated else 3 + informativeness


def mmhal_summary(ratings: Sequence[int | None], question_types: Sequence[str]) -> dict[str, dict[str, float]]:
    """Score (mean rating, 0-6) and hallucination rate (share of ratings < 3) per question type and overall.

    A rating of None (judge output without exactly one `rating: N`) counts as 0, as in the reference,
    and is counted in `unparsed`.
    """
    if len(ratings) != len(question_types):
        raise ValueError(f"{len(ratings)} ratings but {len(question_types)} question types")

    def summarize(rs: list[int | None]) -> dict[str, float]:
        values = [0 if r is None else r for r in rs]
        n = len(values)
        return {
            "score": sum(values) / n if n else 0.0,
            "hallucination_rate": sum(1 for v in values if v < 3) / n if n else 0.0,
            "n": n,
            "unparsed": sum(1 for r in rs if r is None),
        }

    groups: dict[str, list[int | None]] = {}
    for r, t in zip(ratings, question_types):
        groups.setdefault(t, []).append(r)
    known = [t for t in MMHAL_QUESTION_TYPES if t in groups]
    others = sorted(t for t in groups if t not in MMHAL_QUESTION_TYPES)
    out = {t: summarize(groups[t]) for t in known + others}
    out["overall"] = summarize(list(ratings))
    return out


# ---------------------------------------------------------------------------------------------------
# LLaVA-Bench (relative score against a reference answer)


def parse_pair_scores(judge_text: str) -> tuple[float, float] | None:
    """Two scores on the first line of a pairwise review (`"8 7"` or `"8, 7"`); None if that line does not
    hold exactly two numbers."""
    lines = judge_text.strip().split("\n")
    first = lines[0].replace(",", " ").split() if lines else []
    if len(first) != 2:
        return None
    try:
        return float(first[0]), float(first[1])
    except ValueError:
        return None


def relative_scores(
    pairs: Sequence[tuple[float, float] | None], categories: Sequence[str]
) -> dict[str, dict[str, float]]:
    """LLaVA-Bench summary per category and overall ("all").

    pairs[i] = (reference answer score, model answer score) on 1-10, or None when the review could not be
    parsed (left out of the means and counted in `unparsed`).
      relative     = 100 * mean(model) / mean(reference)
      reference / model = 10 * mean score (the 0-100 scale the LLaVA papers print next to the ratio)
    """
    if len(pairs) != len(categories):
        raise ValueError(f"{len(pairs)} reviews but {len(categories)} categories")

    def summarize(ps: list[tuple[float, float] | None]) -> dict[str, float]:
        good = [p for p in ps if p is not None]
        ref = sum(p[0] for p in good) / len(good) if good else 0.0
        mod = sum(p[1] for p in good) / len(good) if good else 0.0
        return {
            "relative": 100.0 * mod / ref if ref else 0.0,
            "reference": 10.0 * ref,
            "model": 10.0 * mod,
            "n": len(good),
            "unparsed": len(ps) - len(good),
        }

    groups: dict[str, list[tuple[float, float] | None]] = {}
    for p, c in zip(pairs, categories):
        groups.setdefault(c, []).append(p)
    out = {c: summarize(groups[c]) for c in sorted(groups)}
    out["all"] = summarize(list(pairs))
    return out


# ---------------------------------------------------------------------------------------------------
# Confidence intervals


def bootstrap_interval(
    n: int,
    statistic: Callable[[Sequence[int]], float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic over `n` items (responses, questions, ...).

    `statistic(indices)` computes the number from the items at `indices` (a list with repeats); it is
    evaluated on `resamples` draws of n indices with replacement from a generator seeded with `seed`, and
    the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of those values are returned (numpy's
    linear interpolation). n = 0 gives (0.0, 0.0).
    """
    if n == 0:
        return 0.0, 0.0
    import numpy as np

    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n).tolist()) for _ in range(resamples)], np.float64)
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)

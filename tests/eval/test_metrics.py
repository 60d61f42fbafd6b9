"""Every metric against values worked out by hand in the comments."""

import pytest

from fact_rlhf_jax.eval import metrics


@pytest.mark.parametrize(
    "text, is_yes",
    [
        ("Yes, there is a dog.", True),
        ("No", False),
        ("There is not a dog.", False),
        ("Yes. There is no dog.", True),  # only the text before the first '.' counts
        ("No, there isn't.", False),  # the comma goes, "No" stays a word
        ("no.", False),
        ("Nope", True),  # the reference rule only knows No / not / no
        ("None of them", True),
        ("not,", False),
    ],
)
def test_parse_pope_answer(text, is_yes):
    assert metrics.parse_pope_answer(text) is is_yes


def test_binary_metrics_by_hand():
    # TP: 0, 4; FP: 1; TN: 2, 5; FN: 3
    m = metrics.binary_metrics([True, True, False, False, True, False], [True, False, False, True, True, False])
    assert m == pytest.approx({"accuracy": 4 / 6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 3 / 6, "n": 6})


def test_binary_metrics_no_positive_predictions():
    m = metrics.binary_metrics([False, False], [True, False])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)


def test_chair_by_hand():
    m = metrics.chair([["dog", "cat", "dog"], ["car"], []], [["dog"], ["car", "person"], ["tree"]])
    # 4 mentions, 1 hallucinated (cat); 1 of 3 responses hallucinates; 2 of 4 present objects mentioned
    assert m == pytest.approx({"chair_i": 0.25, "chair_s": 1 / 3, "coverage": 0.5, "mentions": 4, "hallucinated_mentions": 1, "n": 3})


@pytest.mark.parametrize(
    "text, rating",
    [
        ("Explanation.\nRating: 4", 4),
        ("rating: 4 because ... Rating: 4", 4),  # the same value twice is one value
        ("rating: 3, or maybe rating: 5", None),
        ("no score given", None),
        ("Rating:5", None),  # the reference looks for 'rating: ' with a space
        ("RATING: 6", 6),
        ("Rating: 0", 0),
    ],
)
def test_parse_mmhal_rating(text, rating):
    assert metrics.parse_mmhal_rating(text) == rating


def test_mmhal_summary_by_hand():
    s = metrics.mmhal_summary(
        [5, None, 2, 6, 0, 3], ["attribute", "adversarial", "attribute", "adversarial", "other", "other"]
    )
    assert list(s) == ["attribute", "adversarial", "other", "overall"]  # benchmark order, then overall
    assert s["attribute"] == pytest.approx({"score": 3.5, "hallucination_rate": 0.5, "n": 2, "unparsed": 0})
    assert s["adversarial"] == pytest.approx({"score": 3.0, "hallucination_rate": 0.5, "n": 2, "unparsed": 1})
    assert s["other"] == pytest.approx({"score": 1.5, "hallucination_rate": 0.5, "n": 2, "unparsed": 0})
    # overall: (5 + 0 + 2 + 6 + 0 + 3) / 6; ratings below 3: 0, 2, 0
    assert s["overall"] == pytest.approx({"score": 16 / 6, "hallucination_rate": 0.5, "n": 6, "unparsed": 1})


@pytest.mark.parametrize(
    "text, scores",
    [
        ("8 7\nAssistant 1 is better.", (8.0, 7.0)),
        ("8, 7", (8.0, 7.0)),
        ("8.5 9\n", (8.5, 9.0)),
        ("Scores: 8 7", None),
        ("8\n7", None),
        ("", None),
        ("eight seven", None),
    ],
)
def test_parse_pair_scores(text, scores):
    assert metrics.parse_pair_scores(text) == scores


def test_relative_scores_by_hand():
    s = metrics.relative_scores([(8, 6), (10, 9), None, (6, 6)], ["conv", "conv", "detail", "detail"])
    # conv: reference mean 9, model mean 7.5 -> 100 * 7.5 / 9
    assert s["conv"] == pytest.approx({"relative": 250 / 3, "reference": 90.0, "model": 75.0, "n": 2, "unparsed": 0})
    assert s["detail"] == pytest.approx({"relative": 100.0, "reference": 60.0, "model": 60.0, "n": 1, "unparsed": 1})
    # all: reference (8 + 10 + 6) / 3 = 8, model (6 + 9 + 6) / 3 = 7
    assert s["all"] == pytest.approx({"relative": 87.5, "reference": 80.0, "model": 70.0, "n": 3, "unparsed": 1})


def test_mmhal_rating_scale():
    assert [metrics.mmhal_rating(False, i) for i in (0, 1, 2)] == [3, 4, 5]
    assert [metrics.mmhal_rating(True, i) for i in (0, 1, 2)] == [0, 1, 2]
    with pytest.raises(ValueError):
        metrics.mmhal_rating(False, 3)


def test_bootstrap_interval_against_numpy():
    import numpy as np

    values = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    mean = lambda idx: sum(values[i] for i in idx) / len(idx)
    lo, hi = metrics.bootstrap_interval(len(values), mean, resamples=500, seed=3)
    # written out: 500 draws of 10 indices from default_rng(3), the 2.5 % and 97.5 % quantiles of the means
    rng = np.random.default_rng(3)
    means = [np.mean(np.asarray(values)[rng.integers(0, 10, size=10)]) for _ in range(500)]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert lo < 0.7 < hi
    assert metrics.bootstrap_interval(len(values), mean, resamples=500, seed=3) == (lo, hi)  # seeded
    assert metrics.bootstrap_interval(len(values), mean, resamples=500, seed=4) != (lo, hi)


def test_bootstrap_interval_edge_cases():
    assert metrics.bootstrap_interval(5, lambda idx: 2.5, resamples=50) == (2.5, 2.5)
    assert metrics.bootstrap_interval(0, lambda idx: 1.0) == (0.0, 0.0)

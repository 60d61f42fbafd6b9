"""The reward-model probe: agreement with the annotator, centred correlations and best-of-n, checked against
numbers worked out by hand."""

import numpy as np
import pytest

from fact_rlhf_jax.demo.reward_probe import best_of_n, rank_report
from fact_rlhf_jax.shapesworld.scene import Scene, SceneObject


def _scene(*kinds):
    cells = [(0, 0), (0, 2), (2, 0), (2, 2)]
    return Scene(objects=tuple(SceneObject(shape=s, colour=c, size="medium", cell=cell, jitter=(0.0, 0.0))
                               for (c, s), cell in zip(kinds, cells)), background="beige", noise=0.0)


SCENES = [_scene(("red", "circle"), ("blue", "square")), _scene(("green", "star"))]
TEXTS = [["There is a red circle and a blue square.",      # 2 covered, 0 hallucinated
          "There is a red circle and a yellow cross.",     # 1 covered, 1 hallucinated
          "There is a red circle."],                        # 1 covered
         ["There is a green star and a purple diamond.",   # 1 covered, 1 hallucinated
          "There is a green star.",                         # 1 covered
          "There is a black star."]]                        # 0 covered, 1 hallucinated


def test_best_of_n_counts_the_chosen_samples_only():
    out = best_of_n(SCENES, TEXTS, [1, 1])
    # mentions: red circle, yellow cross | green star -> 3; hallucinated: yellow cross -> 1
    assert out["hallucination_rate"] == pytest.approx(1 / 3)
    assert out["coverage"] == pytest.approx(2 / 3)  # red circle of 2, green star of 1
    assert out["mean_length"] == pytest.approx((9 + 5) / 2)


def test_rank_report_against_a_hand_computation():
    annotator = np.array([[2.0, -2.0, 1.0], [-1.0, 1.0, -2.0]])
    words = np.array([[9.0, 8.0, 5.0], [9.0, 5.0, 5.0]])
    hallucinations = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    rewards = np.array([[0.5, 0.7, 0.1], [0.2, 0.2, -1.0]])
    out = rank_report(rewards, annotator, words, hallucinations, SCENES, TEXTS)
    # image 0, annotator order 0 > 2 > 1: pairs (0,1) wrong, (0,2) right, (2,1) wrong
    # image 1, annotator order 1 > 0 > 2: (1,0) tie -> 1/2, (1,2) right, (0,2) right
    assert out["agreement"] == pytest.approx((1 + 0.5 + 1 + 1) / 6)

    def centred_corr(x, y):
        x = (x - x.mean(1, keepdims=True)).ravel()
        y = (y - y.mean(1, keepdims=True)).ravel()
        return float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)))

    assert out["corr_words"] == pytest.approx(centred_corr(rewards, words))
    assert out["corr_hallucinations"] == pytest.approx(centred_corr(rewards, hallucinations))
    # favourites: sample 1 of image 0 (0.7), sample 0 of image 1 (first of the tied 0.2)
    assert out["best_of_n"] == best_of_n(SCENES, TEXTS, [1, 0])
    assert out["best_of_n"]["hallucination_rate"] == pytest.approx(2 / 4)

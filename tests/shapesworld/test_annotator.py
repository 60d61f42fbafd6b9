"""The simulated annotator and the ShapesWorld metrics on hand-written responses; every expected
number below was counted by hand."""

import pytest

from fact_rlhf_jax.shapesworld.annotator import annotate, find_mentions, prefer, preference_score
from fact_rlhf_jax.shapesworld.metrics import (
    hallucination_metrics,
    mean_length,
    multiple_choice_accuracy,
    parse_choice,
    preference_accuracy,
    yes_no_metrics,
)
from fact_rlhf_jax.shapesworld.scene import Scene, SceneObject

# Two red circles (top left, top right) and a small blue square (bottom).
SCENE = Scene(
    (
        SceneObject("circle", "red", "small", (0, 0)),
        SceneObject("circle", "red", "large", (0, 2)),
        SceneObject("square", "blue", "small", (2, 1)),
    )
)
# One yellow star in the center.
STAR = Scene((SceneObject("star", "yellow", "medium", (1, 1)),))


@pytest.mark.parametrize(
    "response, mentioned, hallucinated",
    [
        ("There are two red circles and a blue square.", ["red circle", "red circle #2", "blue square"], []),
        # synonyms: crimson = red, disk = circle, box = square
        ("A crimson disk and a navy box.", ["red circle", "blue square"], []),
        # negated mentions are not mentions; a bare shape resolves to the scene's object
        ("There is no green star. The square sits at the bottom.", ["blue square"], []),
        # one red circle too many, and a star that is not there
        ("Three red circles, a square and a star.", ["red circle", "red circle #2", "red circle #3", "blue square", "star"], ["red circle #3", "star"]),
        # colour after the shape: "the square is red" claims a red square
        ("The square is red.", ["red square"], ["red square"]),
        # plural without a number: all of that kind
        ("The red circles are at the top.", ["red circle", "red circle #2"], []),
        # repeated mentions of one object count once
        ("A red circle is in the top left. The red circle is small.", ["red circle"], []),
        # "No." ends the sentence, so the next mention is affirmative
        ("No. There is a yellow plus sign on the left.", ["yellow cross"], ["yellow cross"]),
        ("Nothing but shapes and objects.", [], []),
    ],
)
def test_annotate_hand_counted(response, mentioned, hallucinated):
    a = annotate(SCENE, response)
    assert list(a.mentioned) == mentioned
    assert list(a.hallucinated) == hallucinated


def test_find_mentions_reads_count_size_colour():
    [m] = find_mentions("I see four tiny violet rhombi.")
    assert (m.shape, m.colour, m.size, m.count) == ("diamond", "purple", "small", 4)
    [m] = find_mentions("Both plus signs")
    assert (m.shape, m.count) == ("cross", 2)


def test_coverage_and_preference():
    full = "Two red circles at the top and a blue square at the bottom."
    partial = "A red circle at the top."
    wrong = "Two red circles, a blue square and a green triangle."
    assert annotate(SCENE, full).coverage == 1.0
    assert annotate(SCENE, partial).coverage == pytest.approx(1 / 3)
    # fewer hallucinations wins even with less coverage
    assert prefer(SCENE, wrong, partial) == 2
    assert prefer(SCENE, partial, wrong) == 1
    # tie on hallucinations (0 each): more coverage wins
    assert prefer(SCENE, partial, full) == 2
    # full tie: the first
    assert prefer(SCENE, full, full) == 1
    # the score orders as `prefer`: hallucinations first (3 objects: each costs 4), then coverage
    assert [preference_score(SCENE, r) for r in (full, partial, wrong)] == [3, 1, -4 + 3]
    silent = "A plain picture."
    assert preference_score(SCENE, silent) == 0
    assert preference_score(SCENE, wrong) < preference_score(SCENE, silent) < preference_score(SCENE, partial)


def test_hallucination_metrics_hand_counted():
    responses = [
        "Two red circles and a blue square.",  # 3 mentions, 0 hallucinated, covers 3/3
        "A red circle and a green triangle.",  # 2 mentions, 1 hallucinated, covers 1/3
        "A yellow star and a black star.",  # 2 mentions, 1 hallucinated, covers 1/1
    ]
    m = hallucination_metrics([SCENE, SCENE, STAR], responses)
    assert m["mentions"] == 7
    assert m["hallucinated_mentions"] == 2
    assert m["chair_i"] == pytest.approx(2 / 7)
    assert m["chair_s"] == pytest.approx(2 / 3)
    assert m["coverage"] == pytest.approx((3 + 1 + 1) / 7)
    assert m["hallucinations_per_response"] == pytest.approx(2 / 3)
    assert m["mean_length"] == pytest.approx((7 + 7 + 7) / 3)


def test_yes_no_metrics_hand_counted():
    answers = ["Yes, there is.", "No.", "yes", "There is not a star.", "Yes"]
    labels = ["yes", "no", "no", "yes", "yes"]
    # predictions: yes, no, yes, no, yes -> TP=2 FP=1 TN=1 FN=1
    m = yes_no_metrics(answers, labels)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(3 / 5)


def test_multiple_choice_and_lengths():
    assert parse_choice("B. The star is yellow.") == "B"
    assert parse_choice("The star is yellow. So the correct option is C.") == "C"
    assert parse_choice("(D) four") == "D"
    assert parse_choice("A") == "A"
    assert parse_choice("A star is yellow.") is None  # "A" as an article is not an option
    m = multiple_choice_accuracy(["B. yes", "So the correct option is C.", "I am not sure."], ["B", "A", "D"])
    assert m == {"accuracy": pytest.approx(1 / 3), "unparsed": 1, "n": 3}
    assert mean_length(["one two", "three", ""]) == pytest.approx(1.0)
    assert preference_accuracy([1, 2, 2, 1], [1, 1, 2, 2]) == 0.5

"""Object mention finding and the offline MMHal rule judge, against hand-worked cases."""

import pytest

from fact_rlhf_jax.eval.objects import ObjectVocabulary, singular
from fact_rlhf_jax.eval.rule_judge import RuleJudge


@pytest.mark.parametrize(
    "word, expected",
    [("buses", "bus"), ("knives", "knife"), ("ponies", "pony"), ("boxes", "box"), ("glass", "glass"),
     ("leaves", "leaf"), ("dogs", "dog"), ("people", "person"), ("skis", "skis"), ("bus", "bus"),
     ("horses", "horse"), ("houses", "house"), ("gloves", "glove"), ("ties", "tie"), ("benches", "bench"),
     ("glasses", "glass"), ("skies", "sky")],
)
def test_singular(word, expected):
    assert singular(word) == expected


@pytest.fixture(scope="module")
def vocab():
    return ObjectVocabulary.from_file()


@pytest.mark.parametrize(
    "text, mentions",
    [
        ("Two dogs and a hot dog near the fire hydrants.", ["dog", "hot dog", "fire hydrant"]),
        ("People are sitting on a sofa watching TV.", ["person", "couch", "tv"]),
        ("A man holds a cell phone and a phone charger.", ["person", "cell phone", "cell phone"]),
        ("A sunny sky over the sea.", []),
    ],
)
def test_mentions(vocab, text, mentions):
    assert vocab.mentions(text) == mentions


def test_canonical_and_extension(vocab):
    assert vocab.canonical_of("Fire hydrant") == "fire hydrant"
    assert vocab.canonical_of("Lighthouse") is None
    extended = vocab.extended(["Lighthouse"])
    assert extended.canonical_of("lighthouses") == "lighthouse"
    assert extended.mentions("a dog by two lighthouses and a lighthouse") == ["dog", "lighthouse", "lighthouse"]


def test_synonym_file_format(tmp_path):
    path = tmp_path / "syn.txt"
    path.write_text("# comment\nship, boat, vessel\ncar, auto\n")
    v = ObjectVocabulary.from_file(str(path))
    assert v.mentions("a vessel, a boat and two autos") == ["ship", "ship", "car"]


HYDRANT = dict(
    image_content=["Fire hydrant"],
    question="What color is the fire hydrant cap in the picture?",
    gt_answer="The color of the fire hydrant cap in the image is yellow.",
)  # key words of the human answer: {yellow} (color, fire, hydrant, cap are in the question; image is a stop word)
FRISBEE = dict(
    image_content=["Dog", "Frisbee"],
    question="What is the dog doing?",
    gt_answer="The dog is jumping to catch a red frisbee in the park.",
)  # key words: {jumping, catch, red, frisbee, park}

RULE_CASES = [
    (HYDRANT, "The cap is yellow.", 5),  # coverage 1, nothing invented
    (HYDRANT, "The cap is yellow and a dog sits next to it.", 2),  # very informative, dog invented
    (HYDRANT, "The cap is red.", 3),  # coverage 0, nothing invented
    (HYDRANT, "A red car is parked by the hydrant.", 0),  # coverage 0, car invented
    (FRISBEE, "It is jumping for a frisbee.", 4),  # coverage 2/5, nothing invented
    (FRISBEE, "It is catching a frisbee next to a bench.", 1),  # coverage 1/5 (catching != catch), bench invented
    (FRISBEE, "", 3),  # nothing said: not informative, no hallucination
    (HYDRANT, "Yellow.", 5),
]


@pytest.mark.parametrize("record, response, rating", RULE_CASES)
def test_rule_judge(record, response, rating):
    review = RuleJudge().review("", dict(record, model_answer=response))
    assert review.splitlines()[-1] == f"Rating: {rating}"


def test_rule_judge_knows_objects_that_only_other_images_contain():
    """ShapesWorld-style labels are not COCO objects: the judge learns them from the whole benchmark."""
    judge = RuleJudge(benchmark_labels=["orange star", "black diamond", "red cross", "purple triangle"])
    record = dict(image_content=["purple triangle"], question="Is the purple triangle small, medium or large?",
                  gt_answer="The purple triangle is large.")
    # "red star" is no label anywhere, but its head noun "star" is (from "orange star"): hallucinated.
    rating, review = judge.rate(**record, response="The purple triangle is large. There is a red star.")
    assert "star" in review.split(":")[1] and rating == 2  # hallucination, key word "large" covered
    rating, review = judge.rate(**record, response="The purple triangle is large.")
    assert rating == 5 and "none" in review
    # Without the benchmark's labels nothing marks the star: the old behaviour on non-COCO worlds.
    rating, _ = RuleJudge().rate(**record, response="The purple triangle is large. There is a red star.")
    assert rating == 5

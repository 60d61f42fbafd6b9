"""The ShapesWorld MMHal judge: key terms, the informativeness rules, ratings by hand, and the CLI."""

import json

import pytest

from fact_rlhf_jax.cli import main
from fact_rlhf_jax.shapesworld.judge import ShapesWorldJudge, key_terms
from fact_rlhf_jax.shapesworld.scene import Scene, SceneObject

SCENE = Scene(
    (SceneObject("circle", "red", "large", (0, 0)), SceneObject("square", "blue", "small", (0, 2)),
     SceneObject("star", "green", "medium", (2, 1))),
    background="beige", noise=0.0,
)
IMAGE = "001000000000.png"
MC_QUESTION = "What colour is the star?\nA. red\nB. green\nC. blue\nD. black"
DESCRIPTION = ("The image shows three objects. A large red circle is at the top left. A small blue square sits at the "
               "top right. A green star is at the bottom.")

# (question_type, question, gt_answer, model answer, rating)
CASES = [
    ("holistic", "Describe the image in detail.", DESCRIPTION,
     "A big crimson disk at the top left, a small blue box at the top right and a green star at the bottom.", 5),
    ("holistic", "Describe the image in detail.", DESCRIPTION, "A red circle and a yellow triangle.", 1),
    ("holistic", "Describe the image in detail.", DESCRIPTION, "There are some shapes.", 3),
    ("other", MC_QUESTION, "B. The image contains a green star.", "B.", 5),
    ("other", MC_QUESTION, "B. The image contains a green star.", "A.", 3),
    ("other", MC_QUESTION, "B. The image contains a green star.", "A. The star is red.", 0),
    ("attribute", "What colour is the star?", "The star is green.", "The star is green.", 5),
    ("attribute", "What colour is the star?", "The star is green.", "It is green.", 4),
    ("attribute", "What colour is the star?", "The star is green.", "The star is blue.", 0),
    ("adversarial", "What size is the yellow star?", "There is no yellow star in the image.",
     "There is no yellow star in the image.", 5),
    ("adversarial", "What size is the yellow star?", "There is no yellow star in the image.",
     "The yellow star is small.", 1),
    ("counting", "How many circles are there?", "There is one circle in the image.", "There is one circle.", 5),
    ("counting", "How many circles are there?", "There is one circle in the image.", "There are two circles.", 0),
    ("environment", "What does the background of the image look like?",
     "The background is beige. It is plain, without noise.", "The background is beige.", 4),
    ("environment", "What does the background of the image look like?",
     "The background is beige. It is plain, without noise.", "The background is pale blue with noise.", 3),
]


def _record(question_type, question, gt, answer):
    return {"question_type": question_type, "question_topic": "star", "image_id": IMAGE[:-4], "image_src": IMAGE,
            "image_content": SCENE.names, "question": question, "gt_answer": gt, "model_answer": answer}


def test_key_terms_are_canonical():
    assert key_terms("The huge crimson disk is at the top. Two plus signs, pale blue background, no noise.") == {
        ("size", "large"), ("colour", "red"), ("shape", "circle"), ("position", "top"), ("number", "2"),
        ("shape", "cross"), ("background", "pale blue"), ("answer", "no"), ("texture", "noise")}
    assert key_terms("It is plain, without noise; the square is medium-sized and larger.") == {
        ("texture", "plain"), ("shape", "square"), ("size", "medium"), ("size", "large")}


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_ratings_by_hand(case):
    *fields, rating = case
    judge = ShapesWorldJudge({IMAGE: SCENE})
    review = judge.review("(prompt unused)", _record(*fields))
    assert review.splitlines()[-1] == f"Rating: {rating}", review


def test_unknown_image_names_the_record():
    judge = ShapesWorldJudge({}, "sg.json")
    with pytest.raises(KeyError, match="sg.json: no scene graph for image_src '001000000000.png'"):
        judge.rate(_record(*CASES[0][:4]))


def test_cli_judge_shapesworld(tmp_path):
    graphs = tmp_path / "scene_graphs.json"
    graphs.write_text(json.dumps({IMAGE: SCENE.to_json()}))
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps([_record(*c[:4]) for c in CASES]))
    out = tmp_path / "out"
    args = ["eval", "mmhal", "--responses", str(responses), "--judge", "shapesworld", "--out-dir", str(out),
            "--no-progress"]
    assert main(args) == 2  # the scene graphs are required
    assert main(args + ["--scene-graphs", str(graphs)]) == 0
    judged = json.loads((out / "mmhal_judged.json").read_text())
    assert [r["rating"] for r in judged] == [c[4] for c in CASES]
    overall = json.loads((out / "results.json").read_text())["mmhal"]["results"]["overall"]
    assert overall["score"] == pytest.approx(sum(c[4] for c in CASES) / len(CASES))

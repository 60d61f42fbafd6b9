"""`fact-rlhf eval pope`: score-only on hand-made files, several splits, errors, generate mode."""

import json
import os

import pytest

from fact_rlhf_jax.cli import main
from fact_rlhf_jax.eval import generation

from .fakes import FakeAnswerer, write_images, write_jsonl

LABELS = ["yes", "no", "yes", "no", "yes", "no"]
ANSWERS = ["Yes, there is.", "No.", "There is not a car.", "Yes", "No.", "no"]  # parsed: Y N N Y N N
# TP: q0; FP: q3; TN: q1, q5; FN: q2, q4
EXPECTED = {"accuracy": 0.5, "precision": 0.5, "recall": 1 / 3, "f1": 0.4, "yes_ratio": 2 / 6, "n": 6}


def _questions(path, labels=LABELS):
    return write_jsonl(path, [{"question_id": i, "image": f"im{i % 2}.jpg", "text": f"Is there a thing {i} in the image?",
                               "label": label} for i, label in enumerate(labels)])


def test_score_only_writes_the_metrics_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    questions = _questions(tmp_path / "q.jsonl")
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": i, "text": ANSWERS[i]} for i in (5, 3, 1, 0, 2)]
                          + [{"question_id": "4", "text": ANSWERS[4]}]  # a string id matches the number
                          + [{"question_id": 99, "text": "yes"}])  # answers to unknown ids are ignored
    out = tmp_path / "m.json"
    assert main(["eval", "pope", "--questions", questions, "--answers", answers, "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == set(EXPECTED)
    assert metrics == pytest.approx(EXPECTED)
    assert "| q | 50.00 | 50.00 | 33.33 | 40.00 | 33.33 | 6 |" in capsys.readouterr().out
    assert not os.path.exists("eval_results")  # --out alone writes nothing else


def test_several_splits_and_the_average(tmp_path):
    random_q = _questions(tmp_path / "coco_pope_random.jsonl")
    popular_q = _questions(tmp_path / "coco_pope_popular.jsonl", ["yes"] * 6)
    random_a = write_jsonl(tmp_path / "ra.jsonl", [{"question_id": i, "text": t} for i, t in enumerate(ANSWERS)])
    popular_a = write_jsonl(tmp_path / "pa.jsonl", [{"question_id": i, "text": "Yes"} for i in range(6)])
    out_dir = tmp_path / "res"
    code = main(["eval", "pope", "--questions", random_q, "--questions", popular_q, "--answers", random_a,
                 "--answers", popular_a, "--out-dir", str(out_dir), "--out", str(tmp_path / "m.json")])
    assert code == 0
    rows = json.loads((out_dir / "results.json").read_text())["pope"]["results"]
    popular = {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "yes_ratio": 1.0, "n": 6}
    assert rows["random"] == pytest.approx(EXPECTED)
    assert rows["popular"] == pytest.approx(popular)
    assert rows["average"] == pytest.approx({k: (EXPECTED[k] + popular[k]) / 2 for k in EXPECTED if k != "n"} | {"n": 12})
    assert json.loads((tmp_path / "m.json").read_text())["average"]["f1"] == pytest.approx(0.7)
    md = (out_dir / "results.md").read_text()
    assert "## pope" in md and "| average | 75.00 |" in md


def test_missing_answer_is_reported_with_file_and_id(tmp_path, capsys):
    questions = _questions(tmp_path / "q.jsonl")
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": i, "text": "yes"} for i in range(5)])
    assert main(["eval", "pope", "--questions", questions, "--answers", answers, "--out", str(tmp_path / "m.json")]) == 2
    assert f"{answers}: no answer for 1 of 6 questions (first missing question_id 5)" in capsys.readouterr().err


def test_bad_label_is_reported(tmp_path, capsys):
    questions = _questions(tmp_path / "q.jsonl", ["yes", "maybe"])
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": i, "text": "yes"} for i in range(2)])
    assert main(["eval", "pope", "--questions", questions, "--answers", answers, "--out", str(tmp_path / "m.json")]) == 2
    assert f"{questions}, question_id 1: field 'label' must be 'yes' or 'no', got 'maybe'" in capsys.readouterr().err


def test_generate_mode_prompts_settings_and_resume(tmp_path, monkeypatch):
    questions = _questions(tmp_path / "coco_pope_random.jsonl")
    images = write_images(tmp_path / "img", ["im0.jpg", "im1.jpg"])
    out_dir = tmp_path / "out"
    os.makedirs(out_dir)
    # a previous run answered q0 and died while writing q1
    (out_dir / "pope_random_answers.jsonl").write_text('{"question_id": 0, "text": "Yes, there is."}\n{"question_id": 1, "te')
    suffix = "\nAnswer the question using a single word or phrase."
    fake = FakeAnswerer({f"Is there a thing {i} in the image?{suffix}": ANSWERS[i] for i in range(6)})
    loaded = {}
    monkeypatch.setattr(generation, "load_answerer", lambda path, **kw: loaded.update(kw, path=path) or fake)
    code = main(["eval", "pope", "--questions", questions, "--checkpoint", str(tmp_path), "--image-dir", images,
                 "--out-dir", str(out_dir), "--config.batch_size=4", "--config.seed=5", "--no-progress"])
    assert code == 0
    assert loaded == {"path": str(tmp_path), "batch_size": 4, "seed": 5}
    asked = [q for call in fake.calls for q in call["questions"]]
    assert asked == [f"Is there a thing {i} in the image?{suffix}" for i in range(1, 6)]
    assert [len(c["questions"]) for c in fake.calls] == [4, 1]
    assert {(c["temperature"], c["max_new_tokens"]) for c in fake.calls} == {(0.2, 64)}  # the reference settings
    lines = (out_dir / "pope_random_answers.jsonl").read_text().splitlines()
    assert [json.loads(line)["question_id"] for line in lines] == [0, 1, 2, 3, 4, 5]
    rows = json.loads((out_dir / "results.json").read_text())["pope"]["results"]
    assert rows["random"] == pytest.approx(EXPECTED)


def test_split_names_of_coco_and_shapesworld_files():
    from fact_rlhf_jax.eval.pope import split_name

    assert split_name("Eval/pope/coco_pope_adversarial.jsonl") == "adversarial"
    assert split_name("world/pope/shapesworld_pope_popular.jsonl") == "popular"
    assert split_name("my_questions.jsonl") == "my_questions"
    assert split_name("coco_pope_custom.jsonl") == "coco_pope_custom"

"""`fact-rlhf eval chair`: COCO instances and plain object lists, hand-counted mentions."""

import json

import pytest

from fact_rlhf_jax.cli import main
from fact_rlhf_jax.eval import generation

from .fakes import FakeAnswerer, write_images, write_json, write_jsonl

NAMES = [f"COCO_val2014_{i:012d}.jpg" for i in (1, 2, 3)]


def _instances(tmp_path):
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 3, "name": "car"},
                  {"id": 62, "name": "chair"}, {"id": 88, "name": "teddy bear"}]
    annotations = [(1, 1), (1, 18), (1, 18), (2, 3), (3, 62), (3, 88)]
    return write_json(tmp_path / "instances.json", {
        "images": [{"id": i, "file_name": n} for i, n in zip((1, 2, 3), NAMES)],
        "annotations": [{"id": k, "image_id": im, "category_id": c} for k, (im, c) in enumerate(annotations)],
        "categories": categories,
    })


def _read(out):
    return json.loads((out / "results.json").read_text())["chair"]["results"]["all"]


def test_coco_instances_by_hand(tmp_path):
    descriptions = write_jsonl(tmp_path / "d.jsonl", [
        {"image": NAMES[0], "text": "A man walks two dogs past a parked car."},  # person, dog, car*  (* = not there)
        {"image_id": 2, "caption": "A red car on the street."},  # car
        {"image": NAMES[2], "text": "A teddy bear sits next to a cat and another cat."},  # teddy bear, cat*, cat*
    ])
    out = tmp_path / "out"
    assert main(["eval", "chair", "--truth", _instances(tmp_path), "--descriptions", descriptions, "--out-dir", str(out)]) == 0
    # 7 mentions, 3 hallucinated; 2 of 3 descriptions hallucinate; 4 of 5 present objects mentioned (chair missed)
    assert _read(out) == pytest.approx({"chair_i": 3 / 7, "chair_s": 2 / 3, "coverage": 4 / 5, "mentions": 7,
                                        "hallucinated_mentions": 3, "n": 3})
    details = [json.loads(x) for x in (out / "chair_details.jsonl").read_text().splitlines()]
    assert details[2] == {"image": NAMES[2], "mentioned": ["teddy bear", "cat", "cat"], "hallucinated": ["cat"]}


def test_object_lists_json_and_jsonl(tmp_path):
    truth = write_jsonl(tmp_path / "objects.jsonl", [
        {"image": "x.jpg", "objects": ["Dog", "sofa"]},  # canonical: dog, couch
        {"image": "y.jpg", "objects": ["lighthouse"]},  # not in the COCO list: kept as its own name
    ])
    descriptions = write_jsonl(tmp_path / "d.jsonl", [
        {"image": "x.jpg", "text": "A puppy on a couch with a cat."},  # dog, couch, cat*
        {"image": "y.jpg", "text": "A lighthouse and a boat."},  # lighthouse, boat*
    ])
    out = tmp_path / "out"
    assert main(["eval", "chair", "--truth", truth, "--descriptions", descriptions, "--out-dir", str(out)]) == 0
    assert _read(out) == pytest.approx({"chair_i": 2 / 5, "chair_s": 1.0, "coverage": 1.0, "mentions": 5,
                                        "hallucinated_mentions": 2, "n": 2})
    as_json = write_json(tmp_path / "objects.json", {"x.jpg": ["Dog", "sofa"], "y.jpg": ["lighthouse"]})
    out2 = tmp_path / "out2"
    assert main(["eval", "chair", "--truth", as_json, "--descriptions", descriptions, "--out-dir", str(out2)]) == 0
    assert _read(out2) == _read(out)


def test_unknown_image_is_reported(tmp_path, capsys):
    descriptions = write_jsonl(tmp_path / "d.jsonl", [{"image": "nope.jpg", "text": "a dog"}])
    assert main(["eval", "chair", "--truth", _instances(tmp_path), "--descriptions", descriptions,
                 "--out-dir", str(tmp_path / "o")]) == 2
    assert "image 'nope.jpg' has no ground truth" in capsys.readouterr().err


def test_generate_mode(tmp_path, monkeypatch):
    images = write_images(tmp_path / "img", NAMES)
    fake = FakeAnswerer({"Please describe this image in detail.": "A dog and a person."})
    monkeypatch.setattr(generation, "load_answerer", lambda path, **kw: fake)
    out = tmp_path / "out"
    code = main(["eval", "chair", "--truth", _instances(tmp_path), "--checkpoint", str(tmp_path), "--image-dir", images,
                 "--out-dir", str(out), "--config.num_images=2", "--no-progress"])
    assert code == 0
    assert sum(len(c["questions"]) for c in fake.calls) == 2
    lines = [json.loads(x) for x in (out / "chair_answers.jsonl").read_text().splitlines()]
    assert [x["image"] for x in lines] == NAMES[:2]
    # image 1 has person and dog: no hallucination; image 2 has only a car: dog and person hallucinated
    assert _read(out) == pytest.approx({"chair_i": 0.5, "chair_s": 0.5, "coverage": 2 / 3, "mentions": 4,
                                        "hallucinated_mentions": 2, "n": 2})

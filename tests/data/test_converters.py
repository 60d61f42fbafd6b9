"""Converters: VQA-v2, A-OKVQA, Flickr30k (JSON and CSV) -> LLaVA JSON, and their command line."""

import json

import pytest

from fact_rlhf_jax.data import converters, sources


def write(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(path)


def test_vqav2(tmp_path):
    q = write(tmp_path / "q.json", {"questions": [
        {"image_id": 9, "question": "Is it red? ", "question_id": 90},
        {"image_id": 12, "question": "How many?", "question_id": 120},
        {"image_id": 12, "question": "Unanswered (test split)?", "question_id": 121},
    ]})
    a = write(tmp_path / "a.json", {"annotations": [
        {"question_id": 90, "multiple_choice_answer": "yes", "answers": [{"answer": "yes"}]},
        {"question_id": 120, "multiple_choice_answer": "2", "answers": [{"answer": "2"}]},
    ]})
    recs = converters.convert_vqav2(q, a)
    assert recs == [
        {"id": "vqav2_90", "image": "COCO_train2014_000000000009.jpg", "conversations": [
            {"from": "human", "value": "<image>\nIs it red?\nAnswer the question using a single word or phrase."},
            {"from": "gpt", "value": "yes"}]},
        {"id": "vqav2_120", "image": "COCO_train2014_000000000012.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHow many?\nAnswer the question using a single word or phrase."},
            {"from": "gpt", "value": "2"}]},
    ]
    sub = converters.convert_vqav2(q, a, max_records=1, seed=5)
    assert len(sub) == 1 and sub[0] in recs
    with pytest.raises(ValueError, match="q.json"):
        converters.convert_vqav2(write(tmp_path / "q.json", {"qs": []}), a)


def test_aokvqa(tmp_path):
    path = write(tmp_path / "aok.json", [
        {"question_id": "x1", "image_id": 299207, "question": "What is the man waiting for?",
         "choices": ["skateboard", "train", "delivery", "cab"], "correct_choice_idx": 1,
         "direct_answers": ["train"] * 10,
         "rationales": ["He stands on a platform", "Trains stop here.", "The tracks are near."]},
        {"question_id": "x2", "image_id": 1, "question": "Test item?", "choices": ["a", "b", "c", "d"]},
    ])
    (rec,) = converters.convert_aokvqa(path)
    assert rec["id"] == "aokvqa_x1" and rec["image"] == "000000299207.jpg"
    assert rec["conversations"][0]["value"] == (
        "<image>\nWhat is the man waiting for?\nA. skateboard\nB. train\nC. delivery\nD. cab\n"
        "Answer with the option's letter from the given choices. Explain your reasoning first.")
    assert rec["conversations"][1]["value"] == "He stands on a platform. So the answer is (B) train."
    (rec,) = converters.convert_aokvqa(path, rationales="all", image_pattern="aok/{image_id}.jpg")
    assert rec["image"] == "aok/299207.jpg"
    assert rec["conversations"][1]["value"] == (
        "He stands on a platform. Trains stop here. The tracks are near. So the answer is (B) train.")


def test_flickr30k_karpathy_json_and_csv(tmp_path):
    karpathy = write(tmp_path / "dataset_flickr30k.json", {"images": [
        {"filename": "100.jpg", "split": "train", "sentences": [{"raw": "A dog runs ."}, {"raw": "A brown dog."}]},
        {"filename": "200.jpg", "split": "test", "sentences": [{"raw": "Two kids."}]},
    ]})
    recs = converters.convert_flickr30k(karpathy, image_pattern="flickr30k-images/{filename}")
    assert len(recs) == 1
    assert recs[0]["id"] == "flickr30k_100_0" and recs[0]["image"] == "flickr30k-images/100.jpg"
    q = recs[0]["conversations"][0]["value"]
    assert q.startswith("<image>\n") and q[len("<image>\n"):] in converters.CAPTION_PROMPTS
    assert recs[0]["conversations"][1]["value"] == "A dog runs ."
    all_caps = converters.convert_flickr30k(karpathy, captions="all", split=None)
    assert [r["conversations"][1]["value"] for r in all_caps] == ["A dog runs .", "A brown dog.", "Two kids."]

    csv_path = write(tmp_path / "results.csv",
                     "image_name| comment_number| comment\n"
                     "100.jpg| 0| A dog runs .\n100.jpg| 1| A brown dog.\n200.jpg| 0| Two kids | playing.\n")
    from_csv = converters.convert_flickr30k(csv_path, captions="all")
    assert [(r["image"], r["conversations"][1]["value"]) for r in from_csv] == [
        ("100.jpg", "A dog runs ."), ("100.jpg", "A brown dog."), ("200.jpg", "Two kids | playing.")]
    # same file + caption index -> same prompt, whichever annotation format
    assert from_csv[0]["conversations"][0] == all_caps[0]["conversations"][0]


def test_command_line_writes_readable_llava_json(tmp_path, capsys):
    q = write(tmp_path / "q.json", {"questions": [{"image_id": 1, "question": "Q?", "question_id": 7}]})
    a = write(tmp_path / "a.json", {"annotations": [{"question_id": 7, "multiple_choice_answer": "no"}]})
    out = tmp_path / "out" / "vqa.json"
    assert converters.main(["vqav2", "--questions", q, "--annotations", a, "--out", str(out),
                            "--image-pattern", "{image_id}.png"]) == 0
    src = sources.read_llava_json(str(out), str(tmp_path))
    assert len(src) == 1 and src.record(0)["image"] == "1.png"
    assert "wrote 1 records" in capsys.readouterr().out

"""`fact-rlhf eval mmhal`: rule judge, judge outputs already in the file, a flaky chat judge, generate mode."""

import json
import os

import pytest

from fact_rlhf_jax.cli import main
from fact_rlhf_jax.eval import generation

from .chat_server import ChatServer
from .fakes import FakeAnswerer, mmhal_record, write_images, write_json
from .test_objects import RULE_CASES


@pytest.fixture(autouse=True)
def _no_judge_env(monkeypatch):
    for name in ("FACT_RLHF_JUDGE_BASE_URL", "OPENAI_BASE_URL", "FACT_RLHF_JUDGE_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _results(out_dir):
    with open(os.path.join(out_dir, "results.json")) as f:
        return json.load(f)["mmhal"]["results"]


def test_rule_judge_scores_by_hand(tmp_path):
    records = [mmhal_record(i, **case, model_answer=answer) for i, (case, answer, _) in enumerate(RULE_CASES)]
    responses = write_json(tmp_path / "responses.json", records)
    out = str(tmp_path / "out")
    assert main(["eval", "mmhal", "--responses", responses, "--judge", "rule", "--out-dir", out, "--no-progress"]) == 0
    results = _results(out)
    # one record per question type, so each type's score is that record's rating (5 2 3 0 4 1 3 5)
    for i, (_, _, rating) in enumerate(RULE_CASES):
        assert results[records[i]["question_type"]]["score"] == rating
    assert results["overall"] == pytest.approx({"score": 23 / 8, "hallucination_rate": 3 / 8, "n": 8, "unparsed": 0})
    with open(os.path.join(out, "mmhal_judged.json")) as f:
        judged = json.load(f)
    assert [r["rating"] for r in judged] == [case[2] for case in RULE_CASES]
    assert "| overall | 2.875 | 37.50 | 8 | 0 |" in open(os.path.join(out, "results.md")).read()


def test_judge_outputs_already_in_file(tmp_path, capsys):
    reviews = ["Fine.\nRating: 4", "rating: 1", "I cannot decide.", "Rating: 6"]
    records = [dict(mmhal_record(i, ["Dog"], "q", "a", "answer"), judge_response=r) for i, r in enumerate(reviews)]
    responses = write_json(tmp_path / "judged.json", records)
    out = str(tmp_path / "out")
    # no judge configured anywhere: it must not try to judge
    assert main(["eval", "mmhal", "--responses", responses, "--out-dir", out, "--no-progress"]) == 0
    # (4 + 1 + 0 + 6) / 4; ratings below 3: 1 and the unparsed 0
    assert _results(out)["overall"] == pytest.approx({"score": 2.75, "hallucination_rate": 0.5, "n": 4, "unparsed": 1})
    assert "count as 0" in open(os.path.join(out, "results.md")).read()


def test_missing_judge_is_a_clear_error(tmp_path, capsys):
    responses = write_json(tmp_path / "r.json", [mmhal_record(0, ["Dog"], "q", "a", "answer")])
    assert main(["eval", "mmhal", "--responses", responses, "--out-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no judge endpoint" in capsys.readouterr().err


def test_bad_record_names_file_record_and_field(tmp_path, capsys):
    record = mmhal_record(0, ["Dog"], "q", "a", "answer")
    del record["gt_answer"]
    responses = write_json(tmp_path / "r.json", [record])
    assert main(["eval", "mmhal", "--responses", responses, "--judge", "rule", "--out-dir", str(tmp_path / "o")]) == 2
    assert f"{responses}, record 0: missing field 'gt_answer'" in capsys.readouterr().err


def test_flaky_chat_judge_rerun_loses_nothing_and_sends_nothing_twice(tmp_path):
    questions = ["QUESTION-ZERO", "QUESTION-ONE", "QUESTION-TWO", "QUESTION-THREE", "QUESTION-FOUR"]
    records = [mmhal_record(i, ["Dog"], q, "a dog", "a dog") for i, q in enumerate(questions)]
    responses = write_json(tmp_path / "responses.json", records)
    healthy = {"ok": False}

    def script(prompt, attempt):
        if "QUESTION-ZERO" in prompt:
            return ("ok", "Good.\nRating: 6")
        if "QUESTION-ONE" in prompt:  # the server is down for this record during the first run
            return ("ok", "Rating: 3") if healthy["ok"] else ("status", 500)
        if "QUESTION-TWO" in prompt:  # never gives a parsable rating
            return ("ok", "Rating: 2 or maybe rating: 5")
        if "QUESTION-THREE" in prompt:  # times out once
            return ("sleep", 1.0) if attempt == 0 else ("ok", "Rating: 2")
        return ("ok", "Hmm.") if attempt == 0 else ("ok", "Rating: 4")  # malformed once

    out = str(tmp_path / "out")
    with ChatServer(script) as server:
        argv = ["eval", "mmhal", "--responses", responses, "--out-dir", out, "--no-progress",
                f"--config.judge.base_url={server.base_url}", "--config.judge.model=judge-1",
                "--config.judge.max_retries=1", "--config.judge.backoff_s=0.01", "--config.judge.timeout_s=0.3",
                "--config.judge.retry_unparsed=2"]
        assert main(argv) == 1  # QUESTION-ONE could not be judged
        counts = [server.count(q) for q in questions]
        assert counts == [1, 2, 3, 2, 2]
        assert not os.path.exists(os.path.join(out, "results.json"))
        with open(os.path.join(out, "mmhal_judgements.jsonl")) as f:
            assert sorted(json.loads(line)["index"] for line in f) == [0, 2, 3, 4]

        healthy["ok"] = True
        assert main(argv) == 0
        assert [server.count(q) for q in questions] == [1, 3, 3, 2, 2]  # only QUESTION-ONE was sent again
        # ratings 6, 3, unparsed -> 0, 2, 4: score 15 / 5, below 3: 0 and 2
        expected = {"score": 3.0, "hallucination_rate": 0.4, "n": 5, "unparsed": 1}
        assert _results(out)["overall"] == pytest.approx(expected)

        assert main(argv) == 0
        assert len(server.requests) == 11  # a third run sends nothing
        assert _results(out)["overall"] == pytest.approx(expected)


def test_generate_mode_is_batched_and_resumable(tmp_path, monkeypatch):
    records = [mmhal_record(i, ["Dog"], f"What is the dog doing in picture {i}?", "It sleeps.") for i in range(3)]
    template = write_json(tmp_path / "template.json", records)
    images = write_images(tmp_path / "images", [f"img{i}_o.jpg" for i in range(3)])
    answers = {r["question"]: f"answer {i}" for i, r in enumerate(records)}
    out = str(tmp_path / "out")
    argv = ["eval", "mmhal", "--template", template, "--checkpoint", str(tmp_path), "--image-dir", images,
            "--judge", "rule", "--out-dir", out, "--no-progress", "--config.batch_size=2", "--config.max_new_tokens=32"]

    crashing = FakeAnswerer(answers, fail_on_call=1)
    monkeypatch.setattr(generation, "load_answerer", lambda path, **kw: crashing)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert len(crashing.calls) == 1 and crashing.calls[0]["questions"] == [r["question"] for r in records[:2]]

    fake = FakeAnswerer(answers)
    monkeypatch.setattr(generation, "load_answerer", lambda path, **kw: fake)
    assert main(argv) == 0
    assert [c["questions"] for c in fake.calls] == [[records[2]["question"]]]  # only the unanswered one
    call = fake.calls[0]
    assert (call["max_new_tokens"], call["temperature"], call["conv_mode"], call["images"]) == (32, 0.0, "llava_v1", [(8, 6)])
    with open(os.path.join(out, "mmhal_responses.json")) as f:
        filled = json.load(f)
    assert [r["model_answer"] for r in filled] == ["answer 0", "answer 1", "answer 2"]
    assert {k: v for k, v in filled[0].items() if k != "model_answer"} == {k: v for k, v in records[0].items() if k != "model_answer"}
    assert _results(out)["overall"]["n"] == 3


def test_generate_mode_missing_image(tmp_path, monkeypatch, capsys):
    template = write_json(tmp_path / "template.json", [mmhal_record(0, ["Dog"], "q", "a")])
    monkeypatch.setattr(generation, "load_answerer", lambda path, **kw: FakeAnswerer())
    code = main(["eval", "mmhal", "--template", template, "--checkpoint", str(tmp_path), "--image-dir", str(tmp_path),
                 "--judge", "rule", "--out-dir", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert f"{template}, record 0: no image found for image_id 'img0'" in capsys.readouterr().err

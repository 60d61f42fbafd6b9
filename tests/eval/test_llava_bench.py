"""`fact-rlhf eval llava-bench` against a local chat-completions judge."""

import json
import re

import pytest

from fact_rlhf_jax.cli import main
from fact_rlhf_jax.eval import generation

from .chat_server import ChatServer
from .fakes import FakeAnswerer, write_images, write_jsonl

CATEGORIES = ["conv", "conv", "detail", "complex"]
# judge replies per question: (reference score, model score) on the first line; q2 never parsable
REPLIES = {0: "8 6\nAssistant 1 is more precise.", 1: "10, 9\nBoth good.", 2: "Assistant 1: 8, Assistant 2: 7", 3: "6 6\nSame."}


def _files(tmp_path):
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": i, "image": "a.jpg" if i < 2 else "b.jpg", "text": f"QUESTION-{i}: what is shown?", "category": c}
        for i, c in enumerate(CATEGORIES)])
    references = write_jsonl(tmp_path / "ref.jsonl", [{"question_id": i, "text": f"reference answer {i}"} for i in range(4)])
    context = write_jsonl(tmp_path / "ctx.jsonl", [
        {"image": "a.jpg", "captions": ["A dog on grass.", "A brown dog."], "instances": [{"category": "dog", "bbox": [0.1, 0.2, 0.5, 0.75]}]},
        {"image": "b.jpg", "captions": ["A red bus."], "instances": []},
    ])
    return questions, references, context


def _script(prompt, attempt):
    qid = int(re.search(r"QUESTION-(\d)", prompt).group(1))
    return ("ok", REPLIES[qid])


def test_relative_scores_by_hand_and_no_resend(tmp_path):
    questions, references, context = _files(tmp_path)
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": i, "text": f"model answer {i}"} for i in range(4)])
    out = tmp_path / "out"
    with ChatServer(_script) as server:
        argv = ["eval", "llava-bench", "--questions", questions, "--references", references, "--context", context,
                "--answers", answers, "--out-dir", str(out), "--no-progress", f"--config.judge.base_url={server.base_url}",
                "--config.judge.model=judge-1", "--config.judge.retry_unparsed=1"]
        assert main(argv) == 0
        assert [server.count(f"QUESTION-{i}") for i in range(4)] == [1, 1, 2, 1]  # q2 asked once more
        assert main(argv) == 0
        assert len(server.requests) == 5  # the rerun reuses every review
    rows = json.loads((out / "results.json").read_text())["llava_bench"]["results"]
    assert rows["conv"] == pytest.approx({"relative": 100 * 7.5 / 9, "reference": 90.0, "model": 75.0, "n": 2, "unparsed": 0})
    assert rows["detail"] == pytest.approx({"relative": 0.0, "reference": 0.0, "model": 0.0, "n": 0, "unparsed": 1})
    assert rows["complex"] == pytest.approx({"relative": 100.0, "reference": 60.0, "model": 60.0, "n": 1, "unparsed": 0})
    # all: reference (8 + 10 + 6) / 3 = 8, model (6 + 9 + 6) / 3 = 7
    assert rows["all"] == pytest.approx({"relative": 87.5, "reference": 80.0, "model": 70.0, "n": 3, "unparsed": 1})

    payload = server.payloads[0]
    assert payload["temperature"] == 0.2
    assert payload["messages"][0] == {"role": "system", "content": "You are a helpful and precise assistant for checking the quality of the answer."}
    prompt = payload["messages"][1]["content"]
    assert prompt.startswith("[Context]\nA dog on grass.\nA brown dog.\n\ndog: [0.100, 0.200, 0.500, 0.750]\n\n[Question]\nQUESTION-0")
    assert "[Assistant 1]\nreference answer 0\n\n[End of Assistant 1]\n\n[Assistant 2]\nmodel answer 0\n\n[End of Assistant 2]" in prompt
    assert "conversational question" in prompt  # the conv instruction


def test_generate_mode(tmp_path, monkeypatch):
    questions, references, context = _files(tmp_path)
    images = write_images(tmp_path / "img", ["a.jpg", "b.jpg"])
    fake = FakeAnswerer()
    monkeypatch.setattr(generation, "load_answerer", lambda path, **kw: fake)
    with ChatServer(_script) as server:
        code = main(["eval", "llava-bench", "--questions", questions, "--references", references, "--context", context,
                     "--checkpoint", str(tmp_path), "--image-dir", images, "--out-dir", str(tmp_path / "out"), "--no-progress",
                     f"--config.judge.base_url={server.base_url}", "--config.judge.model=j", "--config.judge.retry_unparsed=0"])
    assert code == 0
    assert [q for c in fake.calls for q in c["questions"]] == [f"QUESTION-{i}: what is shown?" for i in range(4)]
    lines = [json.loads(x) for x in (tmp_path / "out" / "llava_bench_answers.jsonl").read_text().splitlines()]
    assert [(x["question_id"], x["text"], x["category"]) for x in lines] == [(i, "yes", c) for i, c in enumerate(CATEGORIES)]


def test_rule_judge_is_refused(tmp_path, capsys):
    questions, references, context = _files(tmp_path)
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": i, "text": "x"} for i in range(4)])
    code = main(["eval", "llava-bench", "--questions", questions, "--references", references, "--context", context,
                 "--answers", answers, "--out-dir", str(tmp_path / "o"), "--config.judge.kind=rule"])
    assert code == 2 and "only for MMHal-Bench" in capsys.readouterr().err

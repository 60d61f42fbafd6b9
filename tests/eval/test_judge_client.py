"""The chat-completions judge client against a local server: retries, backoff, failures, resumability."""

import pytest

from fact_rlhf_jax.eval.judge import (
    ChatJudge, JudgeFatalError, JudgeItem, JudgeRequestError, JudgeSettings, judge_all,
)
from fact_rlhf_jax.eval.records import JsonlStore

from .chat_server import ChatServer


def _judge(server, sleeps=None, **kw):
    settings = JudgeSettings(base_url=server.base_url, model="judge-1", api_key="sk-test",
                             timeout_s=kw.pop("timeout_s", 2.0), max_retries=kw.pop("max_retries", 3),
                             backoff_s=1.0, backoff_max_s=3.0, **kw)
    return ChatJudge(settings, system=kw.get("system"), sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_request_shape():
    with ChatServer(lambda prompt, attempt: ("ok", f"echo {prompt}")) as server:
        judge = ChatJudge(JudgeSettings(base_url=server.base_url, model="judge-1", api_key="sk-test", temperature=0.2,
                                        max_tokens=77), system="be precise")
        assert judge.review("hello") == "echo hello"
    payload = server.payloads[0]
    assert payload["model"] == "judge-1"
    assert payload["temperature"] == 0.2 and payload["max_tokens"] == 77
    assert payload["messages"] == [{"role": "system", "content": "be precise"}, {"role": "user", "content": "hello"}]
    assert server.headers["Authorization"] == "Bearer sk-test"


def test_retries_500_timeout_and_garbage_with_backoff():
    plan = [("status", 500), ("sleep", 1.5), ("garbage", "<html>oops</html>"), ("ok", "fine")]
    sleeps = []
    with ChatServer(lambda prompt, attempt: plan[attempt]) as server:
        judge = _judge(server, sleeps, timeout_s=0.3, max_retries=3)
        assert judge.review("q") == "fine"
    assert len(server.requests) == 4
    assert sleeps == [1.0, 2.0, 3.0]  # 1 * 2**k, capped at backoff_max_s = 3


def test_retry_after_header_is_respected_up_to_the_cap():
    plan = [("status", (429, 2.5)), ("status", (429, 10)), ("status", 429), ("ok", "done")]
    sleeps = []
    with ChatServer(lambda prompt, attempt: plan[attempt]) as server:
        assert _judge(server, sleeps).review("q") == "done"
    # max(backoff, Retry-After) capped at 3: max(1, 2.5); min(3, max(2, 10)); no header -> 4 capped to 3
    assert sleeps == [2.5, 3.0, 3.0]


def test_gives_up_after_max_retries():
    with ChatServer(lambda prompt, attempt: ("status", 503)) as server:
        with pytest.raises(JudgeRequestError, match="HTTP 503"):
            _judge(server, max_retries=2).review("q")
    assert len(server.requests) == 3


@pytest.mark.parametrize("code", [400, 401, 404])
def test_non_retryable_status_stops_at_once(code):
    with ChatServer(lambda prompt, attempt: ("status", code)) as server:
        with pytest.raises(JudgeFatalError, match=f"HTTP {code}"):
            _judge(server).review("q")
    assert len(server.requests) == 1


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("FACT_RLHF_JUDGE_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("FACT_RLHF_JUDGE_MODEL", "m")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    s = JudgeSettings().resolved()
    assert (s.base_url, s.model, s.api_key) == ("http://127.0.0.1:9/v1", "m", "k")
    monkeypatch.delenv("FACT_RLHF_JUDGE_MODEL")
    with pytest.raises(JudgeFatalError, match="no judge model"):
        JudgeSettings().resolved()


class CountingJudge:
    name = "counting"

    def __init__(self, crash_after=None):
        self.seen = []
        self.crash_after = crash_after

    def review(self, prompt, fields):
        if self.crash_after is not None and len(self.seen) == self.crash_after:
            raise KeyboardInterrupt("simulated crash")
        self.seen.append(prompt)
        return f"review of {prompt}"


def test_judge_all_resumes_after_a_crash_without_resending(tmp_path):
    items = [JudgeItem(key=i, prompt=f"p{i}", fields={}) for i in range(5)]
    cache = str(tmp_path / "cache.jsonl")
    crashing = CountingJudge(crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        with JsonlStore(cache, "index") as store:
            judge_all(items, crashing, store, show_progress=False)
    with JsonlStore(cache, "index") as store:
        judge = CountingJudge()
        run = judge_all(items, judge, store, show_progress=False)
    assert judge.seen == ["p2", "p3", "p4"]
    assert {k: r["review"] for k, r in run.judged.items()} == {i: f"review of p{i}" for i in range(5)}
    with JsonlStore(cache, "index") as store:
        again = CountingJudge()
        judge_all(items, again, store, show_progress=False)
    assert again.seen == []


def test_changed_prompt_is_judged_again(tmp_path):
    cache = str(tmp_path / "cache.jsonl")
    with JsonlStore(cache, "index") as store:
        judge_all([JudgeItem(0, "old answer", {})], CountingJudge(), store, show_progress=False)
    with JsonlStore(cache, "index") as store:
        judge = CountingJudge()
        run = judge_all([JudgeItem(0, "new answer", {})], judge, store, show_progress=False)
    assert judge.seen == ["new answer"] and run.judged[0]["review"] == "review of new answer"


def test_store_drops_a_cut_off_last_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"index": 0, "review": "a"}\n{"index": 1, "rev')
    with JsonlStore(str(path), "index") as store:
        assert list(store.records) == [0]
        store.add({"index": 1, "review": "b"})
    assert path.read_text() == '{"index": 0, "review": "a"}\n{"index": 1, "review": "b"}\n'

"""Judges for MMHal-Bench and LLaVA-Bench: an OpenAI-compatible chat-completions client and a cache.

`ChatJudge.review(prompt, fields)` POSTs one user message (plus an optional system message) to
`{base_url}/chat/completions` with the standard library only, retrying with exponential backoff on
timeouts, connection errors, HTTP 408/409/429/5xx and malformed replies; every loop is bounded by
`max_retries`. `judge_all` sends only what the cache file does not hold yet and appends each judgement
as soon as it arrives, so an interrupted or partly failed run loses nothing and a rerun sends nothing
twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from fact_rlhf_jax.eval.records import JsonlStore

RETRYABLE_HTTP = (408, 409, 425, 429, 500, 502, 503, 504)


class JudgeRequestError(RuntimeError):
    """A request kept failing after every retry (the record stays unjudged; a rerun tries it again)."""


class JudgeFatalError(RuntimeError):
    """A failure retrying cannot fix (bad key, unknown model, bad URL): the run stops."""


class Judge(Protocol):
    name: str

    def review(self, prompt: str, fields: dict[str, Any]) -> str: ...


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
    """Where and how to ask. Empty `base_url` / `model` / `api_key` fall back to the environment:
    FACT_RLHF_JUDGE_BASE_URL or OPENAI_BASE_URL, FACT_RLHF_JUDGE_MODEL, FACT_RLHF_JUDGE_API_KEY or
    OPENAI_API_KEY."""

    base_url: str = ""
    model: str = ""
    api_key: str = ""
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    retry_unparsed: int = 2

    def resolved(self) -> "JudgeSettings":
        env = os.environ
        base_url = self.base_url or env.get("FACT_RLHF_JUDGE_BASE_URL") or env.get("OPENAI_BASE_URL") or ""
        model = self.model or env.get("FACT_RLHF_JUDGE_MODEL") or ""
        api_key = self.api_key or env.get("FACT_RLHF_JUDGE_API_KEY") or env.get("OPENAI_API_KEY") or ""
        if not base_url:
            raise JudgeFatalError(
                "no judge endpoint: set judge.base_url in the config, --config.judge.base_url, or "
                "FACT_RLHF_JUDGE_BASE_URL (e.g. https://api.openai.com/v1)"
            )
        if not model:
            raise JudgeFatalError("no judge model: set judge.model in the config or FACT_RLHF_JUDGE_MODEL")
        return dataclasses.replace(self, base_url=base_url.rstrip("/"), model=model, api_key=api_key)


class ChatJudge:
    """Chat-completions client. `sleep` is injectable so tests do not wait for real backoff."""

    def __init__(
        self, settings: JudgeSettings, *, system: str | None = None, sleep: Callable[[float], None] = time.sleep
    ):
        self.settings = settings.resolved()
        self.system = system
        self.sleep = sleep
        self.name = f"chat:{self.settings.model}"
        self.requests_sent = 0

    def review(self, prompt: str, fields: dict[str, Any] | None = None) -> str:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": prompt}
        ]
        payload = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        return self._post_with_retries(payload)

    def _post_with_retries(self, payload: dict[str, Any]) -> str:
        s = self.settings
        last_error = ""
        for attempt in range(s.max_retries + 1):
            retry_after: float | None = None
            try:
                return self._post(payload)
            except urllib.error.HTTPError as e:
                body = _read_body(e)
                if e.code not in RETRYABLE_HTTP:
                    raise JudgeFatalError(f"{s.base_url}/chat/completions answered HTTP {e.code}: {body}") from None
                last_error = f"HTTP {e.code}: {body}"
                retry_after = _retry_after_seconds(e)
            except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError) as e:
                last_error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except _MalformedReply as e:
                last_error = str(e)
            if attempt < s.max_retries:
                delay = min(s.backoff_max_s, s.backoff_s * 2**attempt)
                if retry_after is not None:
                    delay = min(s.backoff_max_s, max(delay, retry_after))
                self.sleep(delay)
        raise JudgeRequestError(f"judge request failed {s.max_retries + 1} times; last error: {last_error}")

    def _post(self, payload: dict[str, Any]) -> str:
        s = self.settings
        request = urllib.request.Request(
            f"{s.base_url}/chat/completions",
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {s.api_key}"} if s.api_key else {})},
            method="POST",
        )
        self.requests_sent += 1
        with urllib.request.urlopen(request, timeout=s.timeout_s) as response:
            raw = response.read()
        try:
            reply = json.loads(raw)
            content = reply["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise _MalformedReply(f"reply is not a chat completion: {raw[:200]!r}") from None
        if not isinstance(content, str):
            raise _MalformedReply(f"reply content is not text: {content!r}")
        return content


class _MalformedReply(Exception):
    pass


def _read_body(e: urllib.error.HTTPError) -> str:
    try:
        return e.read()[:300].decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only for the message
        return ""


def _retry_after_seconds(e: urllib.error.HTTPError) -> float | None:
    value = e.headers.get("Retry-After") if e.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class JudgeItem:
    """One thing to judge: `key` names it in the cache, `prompt` is what a chat judge is sent, `fields`
    the structured inputs a rule judge reads."""

    key: Any
    prompt: str
    fields: dict[str, Any]


@dataclasses.dataclass
class JudgeRun:
    judged: dict[Any, dict[str, Any]]
    sent: int
    failed: dict[Any, str]


def prompt_digest(judge_name: str, prompt: str) -> str:
    """A cached judgement is reused only for the same judge and the exact same prompt."""
    return hashlib.sha256(f"{judge_name}\n{prompt}".encode("utf-8")).hexdigest()[:16]


def judge_all(
    items: Sequence[JudgeItem],
    judge: Judge,
    store: JsonlStore,
    *,
    is_parsed: Callable[[str], bool] = lambda text: True,
    retry_unparsed: int = 0,
    show_progress: bool = True,
    desc: str = "judging",
) -> JudgeRun:
    """Judges every item whose (judge, prompt) is not in `store` yet.

    A reply that `is_parsed` rejects is asked again up to `retry_unparsed` times; the last reply is saved
    either way (the caller scores it by the benchmark's rule for unparsed reviews). A request that fails
    after all retries is recorded in `failed` and left out of the store, so a rerun sends it again.
    """
    sent = 0
    failed: dict[Any, str] = {}
    judged: dict[Any, dict[str, Any]] = {}
    todo = []
    for item in items:
        digest = prompt_digest(judge.name, item.prompt)
        cached = store.get(item.key)
        if cached is not None and cached.get("digest") == digest:
            judged[item.key] = cached
        else:
            todo.append((item, digest))
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, disable=not show_progress)
    try:
        for item, digest in todo:
            try:
                text = judge.review(item.prompt, item.fields)
                sent += 1
                for _ in range(retry_unparsed):
                    if is_parsed(text):
                        break
                    text = judge.review(item.prompt, item.fields)
                    sent += 1
            except JudgeRequestError as e:
                failed[item.key] = str(e)
                bar.update(1)
                continue
            record = {store.key_field: item.key, "digest": digest, "judge": judge.name, "review": text}
            store.add(record)
            judged[item.key] = record
            bar.update(1)
    finally:
        bar.close()
    return JudgeRun(judged=judged, sent=sent, failed=failed)


def fill_template(template: str, values: dict[str, str]) -> str:
    """Replaces `{name}` for the given names only, so other braces in a template stay as written."""
    out = template
    for name, value in values.items():
        out = out.replace("{" + name + "}", value)
    return out


def load_template(name: str) -> str:
    """A prompt template shipped in `fact_rlhf_jax/eval/templates/`, or any file path."""
    path = name if os.path.sep in name or os.path.exists(name) else os.path.join(
        os.path.dirname(__file__), "templates", name
    )
    with open(path, encoding="utf-8") as f:
        return f.read()

"""Reading benchmark files and keeping answer/judgement files that survive interruptions.

Every reader names the file, the record (line number or id) and the field when something is wrong.
`JsonlStore` is the resumable piece: one JSON object per line, appended and flushed as results arrive,
so a rerun reads what is there and only does the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any


class EvalDataError(ValueError):
    """A benchmark, answer or judgement file does not have the expected shape."""


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvalDataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise EvalDataError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """All records of a JSON-lines file; blank lines are skipped."""
    return [record for _, record in iter_jsonl(path)]


def iter_jsonl(path: str, *, tolerate_partial_last_line: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, record). With `tolerate_partial_last_line`, a last line cut off mid-write
    (no trailing newline, not parseable) is ignored: that is how a killed run leaves its file."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise EvalDataError(f"{path}: file not found") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_partial_last_line and i == len(lines) - 1:
                return
            raise EvalDataError(f"{path}, line {i + 1}: not valid JSON ({e})") from None
        if not isinstance(record, dict):
            raise EvalDataError(f"{path}, line {i + 1}: expected a JSON object, got {type(record).__name__}")
        yield i + 1, record


def require(record: dict[str, Any], field: str, kind: type | tuple[type, ...], where: str) -> Any:
    """record[field], checked to be of `kind`; `where` names file and record for the error message."""
    if field not in record:
        raise EvalDataError(f"{where}: missing field {field!r}")
    value = record[field]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise EvalDataError(f"{where}: field {field!r} must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise EvalDataError(f"{where}: field {field!r} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object", bool: "a boolean"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def write_json(path: str, value: Any) -> None:
    """Writes atomically (temp file + rename) so a crash never leaves half a results file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


class JsonlStore:
    """An append-only JSON-lines file of records keyed by `key_field`.

    Opening it reads the records already there (a truncated last line from a killed run is dropped
    and cut from the file); `add` appends one record and flushes it to disk at once.
    Later records with the same key win, so re-judging a record just appends.
    """

    def __init__(self, path: str, key_field: str):
        self.path = path
        self.key_field = key_field
        self.records: dict[Any, dict[str, Any]] = {}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.exists(path):
            self._load()
        self._file = open(path, "a", encoding="utf-8")

    def _load(self) -> None:
        good_bytes = 0
        with open(self.path, "rb") as f:
            data = f.read()
        for line in data.split(b"\n"):
            if not line.strip():
                good_bytes += len(line) + 1
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break  # only a cut-off last write can land here; everything after it is dropped
            if not isinstance(record, dict) or self.key_field not in record:
                raise EvalDataError(f"{self.path}: record without field {self.key_field!r}: {line[:200]!r}")
            self.records[record[self.key_field]] = record
            good_bytes += len(line) + 1
        good_bytes = min(good_bytes, len(data))
        if good_bytes < len(data) or (data and not data.endswith(b"\n")):
            with open(self.path, "r+b") as f:
                f.truncate(good_bytes)
                if good_bytes and not data[:good_bytes].endswith(b"\n"):
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")

    def __contains__(self, key: Any) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: Any) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, record: dict[str, Any], *, persist: bool = True) -> None:
        """Keeps the record; with `persist` (process 0 of a multi-host run) also appends it to the file."""
        key = record[self.key_field]
        if persist:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        self.records[key] = record

    def add_many(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.add(r)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonlStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

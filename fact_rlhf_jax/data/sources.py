"""Record sources: LLaVA JSON / JSONL + an image folder, or a prepared tfds array_record dir.

Every source is a random-access sequence of records with one interface:
`len(src)`, `src.record(i) -> dict` (validated to be a JSON object),
`src.record_id(i, record) -> str`, `src.has_image(record) -> bool`,
`src.load_image(record) -> PIL.Image` (RGB). Problems raise `BadRecordError` with the file,
the record id and the field.

A LLaVA record is `{"id": str, "image": "<file relative to image_folder>" (optional),
"conversations": [{"from": "human"|"gpt", "value": str}, ...]}` (see docs/data.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fact_rlhf_jax.data import errors
from fact_rlhf_jax.data import image as image_lib


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One entry of a mixture: a LLaVA JSON/JSONL file or a tfds dir, its image folder, its weight.

    `weight` scales how many records the source contributes per epoch: 1.0 = each record
    once, 2.0 = twice, 0.25 = a seeded random quarter.
    """

    path: str
    image_folder: str | None = None
    weight: float = 1.0
    split: str = "train"


def parse_sources(sources: Any) -> list[SourceSpec]:
    """Accepts a SourceSpec, a (path, image_folder[, weight]) tuple, a dict/ConfigDict, or a list of those."""
    if isinstance(sources, (str, os.PathLike)) or isinstance(sources, (SourceSpec, Mapping)) or (
        hasattr(sources, "keys") and hasattr(sources, "get")
    ):
        sources = [sources]
    if isinstance(sources, tuple) and sources and isinstance(sources[0], (str, os.PathLike)):
        sources = [sources]
    specs = []
    for s in sources:
        if isinstance(s, SourceSpec):
            spec = s
        elif isinstance(s, (str, os.PathLike)):
            spec = SourceSpec(os.fspath(s))
        elif isinstance(s, Mapping) or (hasattr(s, "keys") and hasattr(s, "get")):
            unknown = set(s.keys()) - {f.name for f in dataclasses.fields(SourceSpec)}
            if unknown:
                raise ValueError(f"data source {dict(s)}: unknown keys {sorted(unknown)}; "
                                 "expected path, image_folder, weight, split")
            spec = SourceSpec(**{k: s[k] for k in s.keys()})
        elif isinstance(s, Sequence) and 1 <= len(s) <= 3:
            spec = SourceSpec(os.fspath(s[0]), s[1] if len(s) > 1 else None,
                              float(s[2]) if len(s) > 2 else 1.0)
        else:
            raise ValueError(f"cannot read data source {s!r}; expected (path, image_folder, weight) or a dict")
        if not spec.weight >= 0:
            raise ValueError(f"data source {spec.path}: weight must be >= 0, got {spec.weight}")
        specs.append(spec)
    if not specs:
        raise ValueError("no data sources given")
    return specs


class _Unparsable:
    """Stands in for a JSONL line that is not valid JSON."""

    def __init__(self, error: str):
        self.error = error


class LlavaJsonSource:
    """Records of a LLaVA JSON list (`.json`) or one-record-per-line file (`.jsonl`)."""

    def __init__(self, path: str, image_folder: str | None = None):
        self.path = os.fspath(path)
        self.image_folder = None if image_folder is None else os.fspath(image_folder)
        if self.path.endswith(".jsonl"):
            with open(self.path, encoding="utf-8") as f:
                self._records = [line for line in f if line.strip()]
            self._lines = True
        else:
            with open(self.path, encoding="utf-8") as f:
                try:
                    data = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.path}: not valid JSON ({e}); expected a list of LLaVA records "
                                     "(or use a .jsonl file with one record per line)") from None
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise ValueError(f"{self.path}: expected a JSON list of LLaVA records, got {type(data).__name__}")
            self._records = data
            self._lines = False

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Any:
        return self.record(i)

    def record(self, i: int) -> dict:
        rec = self._records[i]
        if self._lines:
            try:
                rec = json.loads(rec)
            except json.JSONDecodeError as e:
                raise errors.BadRecordError(self.path, f"#line{i + 1}", "<record>", errors.BAD_JSON,
                                            f"invalid JSON: {e}") from None
        return validate_record(self.path, i, rec)

    def record_id(self, i: int, rec: dict) -> str:
        rid = rec.get("id") if isinstance(rec, dict) else None
        return str(rid) if rid is not None else f"#{i}"

    @staticmethod
    def has_image(rec: dict) -> bool:
        return bool(rec.get("image"))

    def image_path(self, rec: dict) -> str:
        name = rec["image"]
        return name if self.image_folder is None else os.path.join(self.image_folder, name)

    def load_image(self, rec: dict):
        return image_lib.load_image(self.image_path(rec))


def validate_record(path: str, i: int, rec: Any) -> dict:
    """Checks the record-level shape (a JSON object, "image" a string); conversations are checked later."""
    if not isinstance(rec, dict):
        raise errors.BadRecordError(path, f"#{i}", "<record>", errors.BAD_JSON,
                                    f"expected a JSON object, got {type(rec).__name__}")
    image = rec.get("image")
    if image is not None and not isinstance(image, str):
        rid = rec.get("id")
        raise errors.BadRecordError(path, str(rid) if rid is not None else f"#{i}", "image", errors.BAD_JSON,
                                    f"expected a file name string, got {type(image).__name__}")
    return rec


def read_llava_json(path: str, image_folder: str | None = None) -> LlavaJsonSource:
    """Opens a LLaVA JSON (list) or JSONL file; image names resolve against `image_folder`."""
    return LlavaJsonSource(path, image_folder)


def open_source(spec: SourceSpec):
    """The record source for one spec: a tfds array_record dir, or a LLaVA JSON/JSONL file."""
    if os.path.isdir(spec.path):
        from fact_rlhf_jax.data import tfds_data

        prepared = tfds_data.find_prepared_dir(spec.path)
        if prepared is not None:
            return tfds_data.TfdsSource(prepared, spec.split)
    if os.path.isdir(spec.path):
        raise ValueError(f"{spec.path}: a directory without dataset_info.json; expected a LLaVA .json/.jsonl "
                         "file or a prepared tfds dataset dir")
    if not os.path.isfile(spec.path):
        raise FileNotFoundError(f"data source {spec.path} does not exist")
    return LlavaJsonSource(spec.path, spec.image_folder)


def mixture_index(lengths: Sequence[int], weights: Sequence[float], seed: int) -> np.ndarray:
    """One epoch of a weighted mixture: int64 [N, 2] rows of (source, record index).

    Source s contributes round(weights[s] * lengths[s]) rows: floor(w) full copies plus a
    seeded random subset for the fractional part. Deterministic given `seed`; the caller
    shuffles the rows.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for s, (n, w) in enumerate(zip(lengths, weights)):
        count = int(round(w * n))
        full, rest = divmod(count, n) if n else (0, 0)
        idx = [np.arange(n)] * full
        if rest:
            idx.append(np.sort(rng.permutation(n)[:rest]))
        if idx:
            idx = np.concatenate(idx)
            parts.append(np.stack([np.full_like(idx, s), idx], axis=1))
    if not parts:
        raise ValueError(f"the mixture is empty (lengths {list(lengths)}, weights {list(weights)})")
    return np.concatenate(parts).astype(np.int64)

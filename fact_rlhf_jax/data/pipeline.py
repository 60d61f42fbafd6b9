"""The SFT input pipeline on grain: mixture -> shuffle -> repeat -> host shard -> prepare -> batch.

```python
loader = build_sft_loader(sources, tokenizer, image_token_id=..., num_image_tokens=..., image_size=336,
                          max_length=2048, global_batch_size=128, seed=0)
it = iter(loader)
batch = next(it)          # this host's share: dict of numpy arrays (keys below)
state = it.get_state()    # JSON-serialisable; it.set_state(state) resumes exactly
loader.bad_records        # {"missing_image": 3, ...}
```

Batch (host-local, B = global_batch_size // process_count):
  input_ids int32 [B, T], attention_mask int32 [B, T], labels int32 [B, T] (-100 ignored),
  pixel_values float32 [B, 3, image_size, image_size] (zeros without an image).
T is the smallest length bucket that holds the longest example of the batch.

Host sharding: host p of P takes positions [k*B_global + p*B, k*B_global + (p+1)*B) of the shuffled
global stream for every global batch k; so the hosts' k-th batches side by side, in process order, are
global positions [k*B_global, (k+1)*B_global) in stream order (before bad records are skipped), and a
run's global batches are the same arrays on any number of hosts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from fact_rlhf_jax.data import conversation, errors, sources as sources_lib
from fact_rlhf_jax.data import image as image_lib

log = logging.getLogger(__name__)

BAD_RECORDS_KEY = "__bad_records__"  # per-batch side channel, removed before the batch is returned
_MAX_EXAMPLES_PER_REASON = 20
_MAX_BAD_IN_A_ROW = 1024  # an endless stream of nothing but bad records stops with an error instead of spinning


def default_buckets(max_length: int, smallest: int = 64) -> tuple[int, ...]:
    """Powers of two from `smallest` below `max_length`, plus `max_length` itself."""
    out = []
    b = smallest
    while b < max_length:
        out.append(b)
        b *= 2
    out.append(max_length)
    return tuple(out)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if b >= length:
            return int(b)
    raise ValueError(f"length {length} exceeds the largest bucket {max(buckets)}")


def pad_to(x: np.ndarray, length: int, value: int, pad_side: str) -> np.ndarray:
    """Pads the last axis of [.., T] to `length` on the left or right."""
    extra = length - x.shape[-1]
    if extra < 0:
        raise ValueError(f"cannot pad length {x.shape[-1]} down to {length}")
    width = [(0, 0)] * (x.ndim - 1) + [(extra, 0) if pad_side == "left" else (0, extra)]
    return np.pad(x, width, constant_values=value)


def collate(examples: Sequence[dict], *, length: int, pad_id: int, pad_side: str) -> dict[str, np.ndarray]:
    """Stacks prepared examples into a batch padded to `length` (see module docstring for keys)."""
    def stack(key, value):
        return np.stack([pad_to(e[key], length, value, pad_side) for e in examples]).astype(np.int32)

    return {
        "input_ids": stack("input_ids", pad_id),
        "attention_mask": np.stack(
            [pad_to(np.ones_like(e["input_ids"]), length, 0, pad_side) for e in examples]
        ).astype(np.int32),
        "labels": stack("labels", conversation.IGNORE_INDEX),
        "pixel_values": np.stack([e["pixel_values"] for e in examples]).astype(np.float32),
    }


class _Bad:
    """A skipped record flowing through the pipeline so the batcher can count it."""

    __slots__ = ("reason", "message")

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message


class PrepareExample:
    """(source, index) -> SFT example dict; raises `BadRecordError` naming the file and record."""

    def __init__(self, sources, tokenizer, *, template, image_token_id, num_image_tokens, image_size,
                 max_length, pad_to_square=True):
        self.sources = sources
        self.tokenizer = tokenizer
        self.template = conversation.get_template(template)
        self.image_token_id = int(image_token_id)
        self.num_image_tokens = int(num_image_tokens)
        self.image_size = int(image_size)
        self.max_length = int(max_length)
        self.pad_to_square = pad_to_square

    def prepare(self, s: int, i: int) -> dict[str, np.ndarray]:
        return with_record(self.sources[s], i, self._prepare)

    def _prepare(self, src, rec) -> dict[str, np.ndarray]:
        has_image = src.has_image(rec)
        tok = conversation.tokenize_conversations(
            rec.get("conversations"), self.tokenizer, has_image=has_image, template=self.template,
            image_token_id=self.image_token_id, num_image_tokens=self.num_image_tokens, max_length=self.max_length)
        pixels = record_pixels(src, rec, self.image_size, self.pad_to_square)
        return {"input_ids": tok.input_ids, "labels": tok.labels, "pixel_values": pixels}


def with_record(src, i: int, fn):
    """`fn(src, record i)`, with any `BadRecordError` located in the source file and record id."""
    rid = None
    try:
        rec = src.record(i)
        rid = src.record_id(i, rec)
        return fn(src, rec)
    except errors.BadRecordError as e:
        raise e.with_context(src.path, rid) from None


def record_pixels(src, rec, image_size: int, pad_to_square: bool = True) -> np.ndarray:
    """float32 [3, S, S]: the record's image preprocessed, or zeros for a text-only record."""
    if src.has_image(rec):
        return image_lib.preprocess(src.load_image(rec), image_size, pad_to_square=pad_to_square)
    return image_lib.zeros(image_size)


def skip_or_raise(prepare, strict: bool):
    """Runs `prepare()`; a `BadRecordError` becomes a `_Bad` marker the batcher counts (or is raised when strict)."""
    try:
        return prepare()
    except errors.BadRecordError as e:
        if strict:
            raise
        return _Bad(e.reason, str(e))


class _SkipBadAndBatchIterator(grain.DatasetIterator):
    """Pulls prepared examples, counts and skips `_Bad` ones, emits padded batches.

    State = parent state + the running bad-record counts, so a resumed iterator reports
    the same totals. Each batch carries the running counts under BAD_RECORDS_KEY.
    """

    def __init__(self, parent, batch_size, collate, filler, pad_final_batch=False):
        super().__init__(parent)
        self._pad_final_batch = pad_final_batch
        self._batch_size = batch_size
        self._collate = collate
        self._filler = filler
        self._counts: dict[str, int] = {}
        self._examples: dict[str, list[str]] = {}

    def __next__(self):
        good = []
        bad_in_a_row = 0
        while len(good) < self._batch_size:
            try:
                ex = next(self._parent)
            except StopIteration:
                if not (self._pad_final_batch and good):
                    raise  # end of stream; a partial batch is dropped
                good.extend([self._filler()] * (self._batch_size - len(good)))
                break
            if isinstance(ex, _Bad):
                self._counts[ex.reason] = self._counts.get(ex.reason, 0) + 1
                kept = self._examples.setdefault(ex.reason, [])
                if len(kept) < _MAX_EXAMPLES_PER_REASON:
                    kept.append(ex.message)
                bad_in_a_row += 1
                if bad_in_a_row >= max(_MAX_BAD_IN_A_ROW, 16 * self._batch_size):
                    raise ValueError(
                        f"no usable record in the last {bad_in_a_row} records read (skipped so far by reason: "
                        f"{dict(self._counts)}); latest: {ex.message}")
                continue
            bad_in_a_row = 0
            good.append(ex)
        batch = self._collate(good)
        batch[BAD_RECORDS_KEY] = {"counts": dict(self._counts),
                                  "examples": {k: list(v) for k, v in self._examples.items()}}
        return batch

    def get_state(self):
        return {"parent": self._parent.get_state(), "bad_records": dict(self._counts),
                "bad_examples": {k: list(v) for k, v in self._examples.items()}}

    def set_state(self, state):
        self._parent.set_state(state["parent"])
        self._counts = {k: int(v) for k, v in state.get("bad_records", {}).items()}
        self._examples = {k: list(v) for k, v in state.get("bad_examples", {}).items()}


class _SkipBadAndBatch(grain.IterDataset):
    def __init__(self, parent, batch_size, collate, filler, pad_final_batch=False):
        super().__init__(parent)
        self._args = (batch_size, collate, filler, pad_final_batch)

    def __iter__(self):
        return _SkipBadAndBatchIterator(self._parent.__iter__(), *self._args)


class LoaderIterator(grain.DatasetIterator):
    """Iterator over host-local batches; `get_state()`/`set_state()` are JSON-friendly dicts."""

    def __init__(self, loader: "Loader", parent):
        super().__init__(parent)
        self._loader = loader

    def __next__(self) -> dict[str, np.ndarray]:
        try:
            batch = next(self._parent)
        except StopIteration:
            # records skipped after the last full batch never ride on a batch: read them here
            if isinstance(self._parent, _SkipBadAndBatchIterator):
                state = self._parent.get_state()
                self._loader._record_bad({"counts": state["bad_records"], "examples": state["bad_examples"]})
            raise
        self._loader._record_bad(batch.pop(BAD_RECORDS_KEY))
        return batch

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)
        self._loader._record_bad({"counts": state.get("bad_records", {}), "examples": state.get("bad_examples", {})},
                                 quiet=True)


class Loader:
    """Iterable of host-local batches; see `build_loader` (and `build_sft_loader`)."""

    def __init__(self, dataset: grain.IterDataset, *, source_paths, global_batch_size, local_batch_size,
                 max_length, buckets, pad_id, pad_side, strict, num_records):
        self._dataset = dataset
        self.source_paths = list(source_paths)
        self.global_batch_size = global_batch_size
        self.local_batch_size = local_batch_size
        self.max_length = max_length
        self.buckets = tuple(buckets)
        self.pad_id = pad_id
        self.pad_side = pad_side
        self.strict = strict
        self.num_records = num_records  # rows of one mixture epoch (all hosts together)
        self.bad_records: dict[str, int] = {}
        self.bad_examples: dict[str, list[str]] = {}

    def __iter__(self) -> LoaderIterator:
        self.bad_records, self.bad_examples = {}, {}
        return LoaderIterator(self, self._dataset.__iter__())

    def _record_bad(self, info: dict, quiet: bool = False) -> None:
        counts = {k: int(v) for k, v in info.get("counts", {}).items()}
        if not quiet:
            for reason, n in counts.items():
                before = self.bad_records.get(reason, 0)
                if n > before and _crossed_power_of_ten(before, n):
                    example = (info.get("examples", {}).get(reason) or ["?"])[-1]
                    log.warning("skipped %d bad record(s) so far for reason %r; latest: %s", n, reason, example)
        self.bad_records = counts
        self.bad_examples = {k: list(v) for k, v in info.get("examples", {}).items()}


def _crossed_power_of_ten(before: int, after: int) -> bool:
    """True on the 1st, 10th, 100th, ... occurrence (keeps the log short)."""
    p = 1
    while p <= after:
        if before < p <= after:
            return True
        p *= 10
    return False


def build_loader(
    sources,
    *,
    make_prepare,
    collate,
    filler,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    read_threads: int = 8,
    pad_final_batch: bool = False,
    row_filter: np.ndarray | None = None,
    **loader_info,
) -> Loader:
    """The input pipeline every stage shares: mixture -> shuffle -> repeat -> host shard -> prepare -> batch.

    make_prepare: `f(opened_sources) -> prepare`, where `prepare(position, source_index, record_index) ->
      example dict` raises `BadRecordError` for an unusable record (skipped and counted, or raised with
      `loader_info["strict"]`). `position` is the example's place in the global stream (epochs included), the
      same on every host count and after a resume, for per-example randomness (e.g. seeded caption shuffles).
    collate: `f(list of examples) -> batch dict`; filler: `f() -> example` filling the last eval batch.
    row_filter: optional int array [N, 2] of (source, index) rows to keep (a held-out split), in place of
      the weighted mixture of all records.
    """
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size {global_batch_size} is not divisible by process_count {process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    specs = sources_lib.parse_sources(sources)
    opened = [sources_lib.open_source(s) for s in specs]
    if row_filter is None:
        rows = sources_lib.mixture_index([len(s) for s in opened], [s.weight for s in specs], seed)
    else:
        rows = np.asarray(row_filter, np.int64).reshape(-1, 2)
    ds = grain.MapDataset.source(rows)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs).map_with_index(lambda position, row: (position, row))
    if process_count > 1:
        ds = host_share(ds, global_batch_size, process_index, process_count, pad_final_batch)
    strict = bool(loader_info.get("strict", False))
    prepare = make_prepare(opened)

    def example(item):
        if isinstance(item, str):  # _PAST_THE_END, a slot beyond the stream's end (host_share)
            return filler()
        return skip_or_raise(lambda: prepare(int(item[0]), int(item[1][0]), int(item[1][1])), strict)

    ds = ds.map(example)
    local_batch = global_batch_size // process_count
    read = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=max(2 * local_batch, 16))
    it_ds = _SkipBadAndBatch(ds.to_iter_dataset(read), local_batch, collate, filler, pad_final_batch=pad_final_batch)
    info = dict(max_length=None, buckets=(), pad_id=0, pad_side="right", strict=False)
    info.update(loader_info)
    return Loader(it_ds, source_paths=[s.path for s in specs], global_batch_size=global_batch_size,
                     local_batch_size=local_batch, num_records=len(rows), **info)


_PAST_THE_END = "past the end"  # a host's slot in the last global batch beyond a finite stream: a filler row


def host_share(ds: grain.MapDataset, global_batch: int, process_index: int, process_count: int,
               pad_final_batch: bool) -> grain.MapDataset:
    """Host p's share of the global stream: positions [k*G + p*b, k*G + (p+1)*b) of each global batch k (G rows,
    b = G / P per host). With `pad_final_batch`, every host has a share of the last, partial global batch of a
    finite stream (slots past its end are `_PAST_THE_END`, filler rows), so all hosts hold the same number of
    batches; without, that partial batch is dropped."""
    local, n = global_batch // process_count, len(ds)
    batches = -(-n // global_batch) if pad_final_batch else n // global_batch

    def slot(j: int):
        position = (j // local) * global_batch + process_index * local + j % local
        return ds[position] if position < n else _PAST_THE_END

    return grain.MapDataset.range(batches * local).map(slot)


def build_sft_loader(
    sources,
    tokenizer,
    *,
    image_token_id: int,
    num_image_tokens: int,
    image_size: int,
    template: str = "vicuna_v1",
    max_length: int,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    strict: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    pad_side: str = "right",
    length_buckets: Sequence[int] | None = None,
    pad_id: int | None = None,
    pad_to_square: bool = True,
    read_threads: int = 8,
    pad_final_batch: bool = False,
) -> Loader:
    """Builds the SFT loader over a weighted mixture of LLaVA sources.

    Args:
      sources: list of (path, image_folder, weight) / dicts / `SourceSpec`s; path is a LLaVA
        .json/.jsonl file or a prepared tfds array_record dir (see `tfds_builder`).
      tokenizer: any LLaMA-layout transformers tokenizer (BOS and EOS defined).
      image_token_id, num_image_tokens: from the model config; the image block is the id
        repeated `num_image_tokens` times.
      image_size: CLIP crop size (224 / 336).
      max_length: maximum expanded length (image block included).
      global_batch_size: rows per global batch; each host gets global_batch_size // process_count.
      num_epochs: None repeats forever; otherwise the last incomplete batch is dropped, or with
        `pad_final_batch` filled up with rows that have one attended pad token and no labels (eval).
      strict: raise `BadRecordError` on the first unusable record instead of skipping it.
      pad_side: "right" (SFT) or "left".
      length_buckets: allowed padded lengths; None -> `default_buckets(max_length)`;
        an empty list -> always pad to max_length.
      pad_id: defaults to the tokenizer's pad id, else its unk id, else 0.
      read_threads: threads preparing examples ahead (0 = prepare on demand).
    """
    if pad_side not in ("left", "right"):
        raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
    conversation.get_template(template)
    buckets = resolve_buckets(max_length, length_buckets)
    pad_id = resolve_pad_id(tokenizer, pad_id)

    def make_prepare(opened):
        prep = PrepareExample(opened, tokenizer, template=template, image_token_id=image_token_id,
                              num_image_tokens=num_image_tokens, image_size=image_size, max_length=max_length,
                              pad_to_square=pad_to_square)
        return lambda position, s, i: prep.prepare(s, i)

    def collate_batch(examples):
        longest = max(len(e["input_ids"]) for e in examples)
        return collate(examples, length=bucket_length(longest, buckets), pad_id=pad_id, pad_side=pad_side)

    def filler():
        """A row that fills the last batch: one attended pad token, nothing supervised, no image."""
        return {"input_ids": np.full((1,), pad_id, np.int32),
                "labels": np.full((1,), conversation.IGNORE_INDEX, np.int32),
                "pixel_values": image_lib.zeros(image_size)}

    return build_loader(sources, make_prepare=make_prepare, collate=collate_batch, filler=filler,
                        global_batch_size=global_batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                        process_index=process_index, process_count=process_count, read_threads=read_threads,
                        pad_final_batch=pad_final_batch, max_length=max_length, buckets=buckets, pad_id=pad_id,
                        pad_side=pad_side, strict=strict)


def resolve_buckets(max_length: int, length_buckets: Sequence[int] | None) -> tuple[int, ...]:
    """None -> `default_buckets(max_length)`; else the given lengths up to `max_length`, plus `max_length`."""
    if length_buckets is None:
        return default_buckets(max_length)
    return tuple(sorted({int(b) for b in length_buckets if int(b) <= max_length} | {int(max_length)}))


def resolve_pad_id(tokenizer, pad_id: int | None = None) -> int:
    """`pad_id`, else the tokenizer's pad id, else its unk id, else 0."""
    if pad_id is not None:
        return int(pad_id)
    return next((int(v) for v in (getattr(tokenizer, "pad_token_id", None),
                                  getattr(tokenizer, "unk_token_id", None)) if v is not None), 0)


def to_global(batch: dict[str, np.ndarray], mesh, *, pad_side: str = "right", pad_id: int = 0):
    """Host-local numpy batch -> global `jax.Array`s, leading dim split over (data, fsdp).

    With several hosts, first pads every host's batch to the longest T among hosts (hosts may
    pick different length buckets), so all hosts contribute the same shape. T is the last axis
    ([B, T] batches, and [B, 2, T] pair batches).
    """
    import jax

    from fact_rlhf_jax import sharding

    if jax.process_count() > 1 and "input_ids" in batch:
        from jax.experimental import multihost_utils

        t = int(np.max(multihost_utils.process_allgather(np.int32(batch["input_ids"].shape[-1]))))
        fill = {"input_ids": pad_id, "attention_mask": 0, "labels": conversation.IGNORE_INDEX}
        batch = {k: pad_to(v, t, fill[k], pad_side) if k in fill else v for k, v in batch.items()}
    return sharding.host_local_to_global(batch, mesh)


def write_bad_record_report(loader: Loader, workdir: str, filename: str = "bad_records.json") -> str:
    """Writes `{workdir}/bad_records.json` (counts by reason + example messages; workdir local or on a bucket) and
    logs the counts."""
    from fact_rlhf_jax import paths

    path = paths.workdir(workdir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "counts": dict(sorted(loader.bad_records.items())),
        "total": int(sum(loader.bad_records.values())),
        "examples": loader.bad_examples,
        "sources": loader.source_paths,
        "strict": loader.strict,
    }
    paths.write_atomic(path, json.dumps(report, indent=2))
    log.info("bad records: %s (total %d) -> %s", report["counts"] or "none", report["total"], path)
    return os.fspath(path)

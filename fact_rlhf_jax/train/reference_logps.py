"""The reference model's sequence log-probs for DPO: one pass over each data file, kept in the workdir.

The reference never trains, so its log-prob of a (prompt, response) pair is a constant of the pair. It is
computed once, by one pass over every record of a preference file (in file order, independent of any
shuffle), and stored as

    WORKDIR/reference_logps/<key>.npz    logps float32 [records, 2]: (chosen, rejected); NaN for skipped records
    WORKDIR/reference_logps/<key>.json   what the key hashes (below), for people

The key hashes everything the numbers depend on: the reference model (its source, dtype and, for training
workdirs along its base chain, their latest checkpoint step), the file's content, the tokenizer, template,
length limit and image settings. A resumed run, a rerun with another seed or shuffle, or a second run on the
same data finds the table; a changed file or model gets a new one. Delete the directory to force a recompute.
Training batches then carry each pair's two numbers (`data.dpo_pairs`, `ref_logps`), looked up by
(file, record index), so the training step never runs the reference model.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fact_rlhf_jax import paths

log = logging.getLogger(__name__)

CACHE_DIR = "reference_logps"
FORMAT = 1


def file_digest(path: str) -> str:
    """sha256 of a data file's bytes (a tfds directory: of its file names, sizes and dataset_info.json)."""
    h = hashlib.sha256()
    p = Path(path)
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f"{f.relative_to(p)}:{f.stat().st_size}\n".encode())
            if f.name == "dataset_info.json":
                h.update(f.read_bytes())
    else:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def model_identity(source: Any, param_dtype: str) -> dict:
    """The reference model as the key sees it: the source spec, the dtype, and the latest checkpoint step of
    every training workdir along its base chain (so a model that trained on gets a new key)."""
    from fact_rlhf_jax import pretrained
    from fact_rlhf_jax.train.checkpoint import Checkpointer

    chain, current = [], source
    while current is not None:
        card = pretrained.describe(current)
        step = None
        location = paths.local_or_url(card.location)
        if pretrained.is_workdir(location) and (location / "checkpoints").exists():
            ckpt = Checkpointer(location / "checkpoints", async_save=False)
            step = ckpt.latest_step()
            ckpt.close()
        chain.append({"location": paths.absolute(card.location), "checkpoint_step": step})
        current = card.base
    spec = source.to_dict() if hasattr(source, "to_dict") else source if isinstance(source, str) else dict(source)
    return {"source": spec, "param_dtype": param_dtype, "chain": chain}


def cache_key(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:20]


def load_table(workdir, fingerprint: dict, num_records: int) -> np.ndarray | None:
    """The stored table for `fingerprint` in `workdir` (local or a bucket), or None when there is none (or it
    does not fit the file)."""
    path = paths.workdir(workdir) / CACHE_DIR / f"{cache_key(fingerprint)}.npz"
    if not path.exists():
        return None
    with np.load(io.BytesIO(path.read_bytes())) as data:
        table = data["logps"]
    if table.shape != (num_records, 2):
        log.warning("%s holds %s log-probs for a file of %d records; recomputing", path, table.shape, num_records)
        return None
    return table


def save_table(workdir, fingerprint: dict, table: np.ndarray):
    """Writes the table (process 0 only), atomically; returns its path."""
    directory = paths.workdir(workdir) / CACHE_DIR
    key = cache_key(fingerprint)
    path = directory / f"{key}.npz"
    if jax.process_index() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, logps=table.astype(np.float32))
        paths.write_atomic(path, buffer.getvalue())
        info = {"format": FORMAT, "records": int(table.shape[0]),
                "skipped": int(np.isnan(table[:, 0]).sum()), **fingerprint}
        (directory / f"{key}.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def compute_table(logps_fn: Callable[[dict], tuple[np.ndarray, np.ndarray]], batches: Iterable[dict],
                  num_records: int) -> np.ndarray:
    """Runs `logps_fn(batch) -> (record [B, 2], logps [B, 2])` over `batches` (one source, every record once;
    `record` and `logps` of the whole global batch) and fills float32 [num_records, 2], NaN where no row came.

    With several hosts every call is collective: a host whose share ran out sends its last batch again with
    every row marked as filler (`record` -1, `valid` 0) until all hosts are done."""
    table = np.full((num_records, 2), np.nan, np.float32)
    it, last = iter(batches), None
    while True:
        batch = next(it, None)
        if not _any_host(batch is not None):
            break
        if batch is None:
            if last is None:
                raise ValueError(f"this host got no record of the {num_records} for the reference pass")
            batch = {**last, "record": np.full_like(last["record"], -1), "valid": np.zeros_like(last["valid"])}
        last = batch
        record, logps = logps_fn(batch)
        real = record[:, 0] >= 0
        table[record[real, 1]] = logps[real]
    return table


def _any_host(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())

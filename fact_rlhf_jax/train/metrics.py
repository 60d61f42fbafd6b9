"""Where metrics go: `WORKDIR/metrics.jsonl`, TensorBoard events in WORKDIR, a console progress bar.

Only process 0 writes; the other hosts get a writer that does nothing. WORKDIR may be a bucket (gs://...).
`metrics.jsonl` holds one JSON object per logged step:
  {"step": 10, "loss": 2.31, "lr": 1.2e-05, "tokens_per_s": 5123.0, ...,
   "eval/loss": 2.40, ...}
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

from fact_rlhf_jax import paths

log = logging.getLogger(__name__)


def _plain(value: Any) -> float | int | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


class JsonLines:
    """An append-only text file of lines. On a local disk each line is appended as it comes; an object on a
    bucket cannot be appended to, so there the lines are kept and the object rewritten whole at most every
    `flush_secs` seconds and on `close` (starting from what it already holds, so a resumed run continues it)."""

    def __init__(self, path, flush_secs: float = 30.0):
        self.path, self.flush_secs = path, flush_secs
        self._remote = paths.is_url(path)
        self._file = None if self._remote else open(os.fspath(path), "a", buffering=1)
        self._text = (path.read_text() if path.exists() else "") if self._remote else ""
        self._flushed, self._pending = time.monotonic(), False

    def write(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line)
            return
        self._text += line
        self._pending = True
        if time.monotonic() - self._flushed >= self.flush_secs:
            self.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        elif self._pending:
            self.path.write_text(self._text)
            self._flushed, self._pending = time.monotonic(), False

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


class MetricsWriter:
    def __init__(self, workdir, *, total_steps: int, initial_step: int = 0, enabled: bool = True,
                 tensorboard: bool = True, progress: bool = True):
        self.enabled = enabled
        self.workdir = paths.workdir(workdir)
        self._file = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._file = JsonLines(self.workdir / "metrics.jsonl")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(logdir=str(self.workdir), flush_secs=30)
            except ImportError:  # optional
                log.warning("tensorboardX is not installed; no TensorBoard events are written")
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, desc="train", dynamic_ncols=True)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """One record for `step` (to the file and TensorBoard)."""
        if not self.enabled:
            return
        record = {"step": int(step), "time": time.time()}
        record.update({k: _plain(v) for k, v in metrics.items()})
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time") and v is not None:
                    self._tb.add_scalar(k, v, int(step))

    def progress(self, step: int, metrics: dict[str, Any]) -> None:
        """Moves the bar to `step` and shows loss and tokens/s."""
        if self._bar is None:
            return
        self._bar.update(max(0, int(step) - self._bar.n))
        shown = {}
        for key in ("loss", "tokens_per_s"):
            if key in metrics:
                shown[key] = f"{float(metrics[key]):.4g}" if key == "loss" else f"{float(metrics[key]):,.0f}"
        self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._file is not None:
            self._file.close()

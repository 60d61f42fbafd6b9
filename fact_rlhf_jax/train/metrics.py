"""Where metrics go: `WORKDIR/metrics.jsonl`, TensorBoard events in WORKDIR, a console progress bar.

Only process 0 writes; the other hosts get a writer that does nothing.
`metrics.jsonl` holds one JSON object per logged step:
  {"step": 10, "loss": 2.31, "lr": 1.2e-05, "tokens_per_s": 5123.0, ...,
   "eval/loss": 2.40, ...}
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _plain(value: Any) -> float | int | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


class MetricsWriter:
    def __init__(self, workdir: str | Path, *, total_steps: int, initial_step: int = 0, enabled: bool = True,
                 tensorboard: bool = True, progress: bool = True):
        self.enabled = enabled
        self.workdir = Path(workdir)
        self._file = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.workdir / "metrics.jsonl", "a", buffering=1)
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

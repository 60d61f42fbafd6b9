"""SIGTERM (TPU preemption, `kill`, Slurm/k8s shutdown) -> save a checkpoint and exit cleanly.

The handler only sets a flag; the loop checks it after each step. With several hosts the
flag is OR-ed over all of them so every host saves the same step.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np

log = logging.getLogger(__name__)


class PreemptionWatcher:
    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._flag = False
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        log.warning("received signal %d: will save a checkpoint after this step and exit", signum)
        self._flag = True

    def requested(self) -> bool:
        """True on every host if any host was signalled (a collective when there are several hosts)."""
        if jax.process_count() == 1:
            return self._flag
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self._flag, np.int32))
        return bool(np.asarray(flags).any())

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

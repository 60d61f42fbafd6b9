"""What every benchmark script shares: machine description, compile clock, compiled-program memory, JSON output."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

import jax

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling since it was created (from jax.monitoring events)."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            self.seconds += duration


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__, "backend": jax.default_backend(),
            "jax_devices": str(jax.devices()), "load_avg_start": os.getloadavg()}


def compiled_memory(jitted, *args, **kwargs) -> dict:
    """Bytes of one compiled program (`jitted.lower(*args).compile().memory_analysis()`): arguments, outputs,
    temporaries, and the peak = arguments + outputs + temporaries - outputs aliased to donated arguments."""
    stats = jitted.lower(*args, **kwargs).compile().memory_analysis()
    if stats is None:
        return {"available": False}
    out = {k: int(getattr(stats, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def human_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def write_json(path: str | Path, result: dict) -> None:
    result = {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]), **result}
    result.setdefault("machine", {})["load_avg_end"] = os.getloadavg()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")

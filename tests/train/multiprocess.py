"""Running `fact-rlhf train` as one process with 8 CPU devices and as two processes with 4 each (a coordinator
on localhost), for tests that the two runs end equal."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(devices: int, **extra) -> dict:
    out = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT), **extra)
    return uncached(out) if "JAX_COORDINATOR_ADDRESS" in extra else out


def uncached(environ: dict) -> dict:
    """`environ` without the tests' shared on-disk XLA cache: in a multi-process run, a process that loads a
    program from the cache reaches the first collective long before one that compiles it, and under load the
    wait outlasts gloo's 30 s rendezvous."""
    return {k: v for k, v in environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}


def losses(workdir: Path, key: str = "loss") -> list[float]:
    return [r[key] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if key in r]


def metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def wait_all(procs: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    """Waits for every process (all are killed if one times out), checks each exited with 0; their outputs."""
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def train_args(config: str, workdir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "fact_rlhf_jax", "train", "--config", config, "--workdir", str(workdir),
            "--config.progress_bar=false", *overrides]


def run_one_and_two_processes(args_for, single: Path, multi: Path, timeout: float = 600) -> None:
    """`args_for(workdir)` as one process (8 devices) in `single`, then as two (4 devices each) in `multi`."""
    proc = subprocess.run(args_for(single), cwd=ROOT, env=env(8), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    port = free_port()
    procs = [subprocess.Popen(args_for(multi) + ["--distributed"], cwd=ROOT,
                              env=env(4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                      JAX_PROCESS_ID=str(pid)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in range(2)]
    wait_all(procs, timeout)

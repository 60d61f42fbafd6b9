"""`fact-rlhf train --distributed` with two processes (4 CPU devices each) ends with the parameters and
losses of the same run in one process with 8 devices: per-host data shards, global batches, checkpoints
written by both hosts and metrics by host 0."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import jax

from fact_rlhf_jax.inference import ChatModel
from fact_rlhf_jax.shapesworld import write_world

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(world: dict, workdir: Path) -> list[str]:
    train = repr([(str(world["sft"]), str(world["images"]), 1.0)])
    return [sys.executable, "-m", "fact_rlhf_jax", "train", "--config", "configs/sft/tiny.py",
            "--workdir", str(workdir), "--config.data.shapesworld.num_images=0", f"--config.data.train={train}",
            f"--config.data.tokenizer={world['tokenizer']}", "--config.num_steps=3", "--config.checkpoint.every=3",
            "--config.eval_every=0", "--config.progress_bar=false", "--config.batch_size=8",
            # eps far above float noise: Adam would turn rounding-level gradient differences into lr-sized steps
            "--config.optim.eps=1e-3"]


def _env(devices: int, **extra) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
                PYTHONPATH=str(ROOT), **extra)


def _losses(workdir: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


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


def test_two_process_training_equals_one_process(tmp_path):
    world = write_world(tmp_path / "world", num_images=24, seed=0, noise=0.0)
    single = tmp_path / "single"
    proc = subprocess.run(_train_args(world, single), cwd=ROOT, env=_env(8), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    multi = tmp_path / "multi"
    port = _free_port()
    procs = [subprocess.Popen(_train_args(world, multi) + ["--distributed"], cwd=ROOT,
                              env=_env(4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(pid)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in range(2)]
    wait_all(procs)

    np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
    a, b = ChatModel.load(single), ChatModel.load(multi)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=0)
    data_states = sorted(p.name for p in (multi / "checkpoints" / "3" / "data").glob("process_*"))
    assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]

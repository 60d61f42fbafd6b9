"""Interrupted runs: SIGKILL + rerun and SIGTERM + rerun end bitwise equal to an uninterrupted run (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from fact_rlhf_jax.train.loop import run_training
from tests.train.toy_stage import ToyStage, toy_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 8


def start_cli(workdir: Path) -> subprocess.Popen:
    """The toy config through the real CLI; batches from index 3 on take 1 s so the test can signal mid-run."""
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_DEFAULT_MATMUL_PRECISION="highest", TOY_SLOW_FROM="3", TOY_SLOW_SECONDS="1.0")
    cmd = [sys.executable, "-m", "fact_rlhf_jax", "train", "--config", str(REPO / "tests/train/toy_stage.py"),
           "--workdir", str(workdir), f"--config.num_steps={STEPS}"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_checkpoint(workdir: Path, step: int, proc: subprocess.Popen, timeout=240.0):
    path = workdir / "checkpoints" / str(step)  # orbax renames the finished temp dir to this name
    deadline = time.time() + timeout
    while not path.is_dir():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}):\n{proc.stdout.read().decode()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.2)


def assert_bitwise_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(jax.device_get(a))
    leaves_b, tree_b = jax.tree.flatten(jax.device_get(b))
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    result = run_training(toy_config(num_steps=STEPS), tmp_path_factory.mktemp("ref"), ToyStage())
    assert result.step == STEPS
    return jax.device_get(result.state)


def logged_steps(workdir: Path) -> list[int]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(l)["step"] for l in lines if "loss" in json.loads(l)]


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, uninterrupted):
    proc = start_cli(tmp_path)
    wait_for_checkpoint(tmp_path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert max(logged_steps(tmp_path)) < STEPS  # it really was cut short

    resumed = run_training(toy_config(num_steps=STEPS), tmp_path, ToyStage())
    assert resumed.step == STEPS
    assert_bitwise_equal(resumed.state, uninterrupted)
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == STEPS


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, uninterrupted):
    proc = start_cli(tmp_path)
    wait_for_checkpoint(tmp_path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    stopped_at = max(logged_steps(tmp_path))
    assert 2 < stopped_at < STEPS, out
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved[-1] == stopped_at  # the step it was on when signalled, not only the periodic ones

    resumed = run_training(toy_config(num_steps=STEPS), tmp_path, ToyStage())
    assert_bitwise_equal(resumed.state, uninterrupted)


def test_params_from_another_workdir_restore_into_shardings(tmp_path, uninterrupted):
    """Starting from another run (`init.params_from`, `pretrained.load`) reads only `params` of its latest
    checkpoint, straight into the requested shardings; a subtree can be restored alone."""
    from fact_rlhf_jax import sharding as shd
    from fact_rlhf_jax.pretrained import restore_subtrees
    from tests.train.toy_stage import TOY_AXES, toy_params

    run_training(toy_config(num_steps=STEPS), tmp_path, ToyStage())
    mesh = shd.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    like = jax.eval_shape(toy_params, jax.random.PRNGKey(0))
    shardings = shd.shardings_for(like, TOY_AXES, mesh, shd.Rules.create())
    params = restore_subtrees(tmp_path, {"": (like, shardings)})[""]
    assert_bitwise_equal(params, uninterrupted["params"])
    assert params["embed"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    mlp = restore_subtrees(tmp_path, {"mlp": (like["mlp"], shardings["mlp"])})["mlp"]
    assert_bitwise_equal(mlp, uninterrupted["params"]["mlp"])

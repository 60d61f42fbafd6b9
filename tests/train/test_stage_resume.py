"""SIGKILL mid-run, rerun: the reward model and PPO end bitwise equal to an uninterrupted run.

Each run goes through the real CLI in a subprocess, is killed once a checkpoint appears, and is resumed by
rerunning; caption shuffles (by stream position), the sampler's keys (in the state) and the data position must
all come back exactly.
"""

import json
import signal

import pytest

from fact_rlhf_jax import config as config_lib
from fact_rlhf_jax.train.loop import run_training
from tests.train.test_resume import REPO, assert_bitwise_equal, wait_for_checkpoint

STEPS = 6


def overrides(stage: str, models: dict) -> list[tuple[str, str]]:
    world = models["world"]
    common = [("num_steps", str(STEPS)), ("checkpoint.every", "2"), ("checkpoint.keep", "5"), ("log_every", "1"),
              ("progress_bar", "false"), ("tensorboard", "false"), ("data.shapesworld.num_images", "0")]
    if stage == "rm":
        return common + [("init.model", models["sft"]), ("data.train", repr([(world["preference"], world["images"], 1.0)])),
                         ("data.captions", world["captions"]), ("data.eval_size", "8"), ("batch_size", "8"),
                         ("eval_every", "-1"), ("eval_batches", "1")]
    return common + [("init.policy", models["sft"]), ("init.reward", models["reward"]),
                     ("data.train", repr([(world["ppo_prompts"], world["images"], 1.0)])), ("batch_size", "8"),
                     ("ppo.step_batch_size", "4"), ("ppo.max_new_tokens", "8"), ("optim.warmup_steps", "0"),
                     ("ppo.save_rollouts_every", "0")]


CONFIGS = {"rm": "configs/rm/tiny.py", "ppo": "configs/ppo/tiny.py"}


def start_cli(workdir, spec, items):
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_DEFAULT_MATMUL_PRECISION="highest", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "fact_rlhf_jax", "train", "--config", spec, "--workdir", str(workdir)]
    cmd += [f"--config.{k}={v}" for k, v in items]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("stage", ["rm", "ppo"])
def test_sigkill_then_rerun_equals_uninterrupted(stage, tiny_models, tmp_path):
    spec, items = str(REPO / CONFIGS[stage]), overrides(stage, tiny_models)
    reference = run_training(config_lib.load(spec, items), tmp_path / "uninterrupted")
    assert reference.step == STEPS

    work = tmp_path / "killed"
    proc = start_cli(work, spec, items)
    wait_for_checkpoint(work, 2, proc, timeout=900)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert max(logged_steps_of(work)) < STEPS  # it really was cut short

    resumed = run_training(config_lib.load(spec, items), work)
    assert resumed.step == STEPS
    assert_bitwise_equal(resumed.state["params"], reference.state["params"])
    assert_bitwise_equal(resumed.state["opt_state"], reference.state["opt_state"])


def logged_steps_of(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines() if (workdir / "metrics.jsonl").exists() else []
    return [json.loads(l)["step"] for l in lines if "loss" in json.loads(l)] or [0]

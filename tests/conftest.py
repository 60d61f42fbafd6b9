"""Test-wide setup: 8 fake CPU devices, set before jax is imported anywhere."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A small ShapesWorld, the tiny SFT model (its 40 steps) and a tiny Fact-RM (4 steps: mechanics, not
    quality) trained on it, built once per test worker. Returns {"world": paths, "sft": dir, "reward": dir, "root": dir}."""
    import ml_collections

    from fact_rlhf_jax.train import prerequisites

    root = tmp_path_factory.mktemp("tiny_models")
    world = prerequisites.shapesworld(root, ml_collections.ConfigDict(
        dict(num_images=48, seed=0, noise=0.2, image_size=56, label_noise=0.0)))
    quiet = {"progress_bar": False, "tensorboard": False, "log_every": 100}
    sft = prerequisites.tiny_sft(root, world, overrides={"checkpoint.every": 40, "eval_every": -1, "eval_batches": 1,
                                                         **quiet})
    rm = prerequisites.tiny_reward(root, world, sft, overrides={
        "num_steps": 4, "batch_size": 8, "data.eval_size": 8, "checkpoint.every": 4, "eval_every": -1,
        "eval_batches": 1, **quiet})
    return {"world": world, "sft": sft, "reward": rm, "root": str(root)}

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
def tiny_world_and_sft(tmp_path_factory):
    """A small ShapesWorld and a tiny SFT model trained on it for one step (the DPO and `pairs` tests start
    here): {"world": {file key: path}, "sft": workdir}."""
    import ml_collections

    from fact_rlhf_jax.train import prerequisites

    root = tmp_path_factory.mktemp("tiny_world_and_sft")
    world = prerequisites.shapesworld(root, ml_collections.ConfigDict(dict(
        num_images=24, seed=0, noise=0.0, image_size=28, label_noise=0.0)))
    sft = prerequisites.tiny_sft(root, world, overrides={
        "num_steps": 1, "checkpoint.every": 1, "data.eval": [], "log_every": 1, "tensorboard": False})
    return {"world": world, "sft": sft}

"""`fact-rlhf train --distributed` with two processes (4 CPU devices each) ends with the parameters and
losses of the same run in one process with 8 devices: per-host data shards, global batches, checkpoints
written by both hosts and metrics by host 0."""

import jax
import numpy as np

from fact_rlhf_jax.inference import ChatModel
from fact_rlhf_jax.shapesworld import write_world
from tests.train.multiprocess import losses, run_one_and_two_processes, train_args


def test_two_process_training_equals_one_process(tmp_path):
    world = write_world(tmp_path / "world", num_images=24, seed=0, noise=0.0)
    train = repr([(str(world["sft"]), str(world["images"]), 1.0)])

    def args(workdir):
        return train_args("configs/sft/tiny.py", workdir, "--config.data.shapesworld.num_images=0",
                          f"--config.data.train={train}", f"--config.data.tokenizer={world['tokenizer']}",
                          "--config.num_steps=3", "--config.checkpoint.every=3", "--config.eval_every=0",
                          "--config.batch_size=8",
                          # eps far above float noise: Adam would turn rounding-level gradient differences into
                          # lr-sized steps
                          "--config.optim.eps=1e-3")

    single, multi = tmp_path / "single", tmp_path / "multi"
    run_one_and_two_processes(args, single, multi)

    np.testing.assert_allclose(losses(multi), losses(single), rtol=1e-5)
    a, b = ChatModel.load(single), ChatModel.load(multi)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=0)
    data_states = sorted(p.name for p in (multi / "checkpoints" / "3" / "data").glob("process_*"))
    assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]

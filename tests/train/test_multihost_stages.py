"""The reward model and PPO trained by two processes (4 CPU devices each) end where one process with 8 devices
ends: the same mesh (fsdp=8) and global batches, so the same programs; only the collectives cross a process
boundary. Both runs start from the session's tiny SFT model and tiny Fact-RM (tests/conftest.py)."""

import jax
import numpy as np

from fact_rlhf_jax import pretrained
from fact_rlhf_jax import sharding as shd
from tests.train.multiprocess import metrics, run_one_and_two_processes, train_args

# eps far above float noise: Adam would turn rounding-level gradient differences into lr-sized steps
COMMON = ("--config.tensorboard=false", "--config.eval_every=0", "--config.optim.eps=1e-3",
          "--config.data.shapesworld.num_images=0", "--config.data.read_threads=0")


def _assert_same(single_tree, multi_tree, atol):
    leaves = list(zip(jax.tree.leaves(single_tree), jax.tree.leaves(multi_tree)))
    assert leaves
    for a, b in leaves:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


def _assert_same_metrics(single, multi, keys):
    rows_single, rows_multi = metrics(single), metrics(multi)
    assert [r["step"] for r in rows_single] == [r["step"] for r in rows_multi]
    for a, b in zip(rows_single, rows_multi):
        for k in keys:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=f"step {a['step']}: {k}")


def test_reward_model_two_processes_equal_one(tiny_models, tmp_path):
    world = tiny_models["world"]

    def args(workdir):
        return train_args("configs/rm/tiny.py", workdir, *COMMON, f"--config.init.model={tiny_models['sft']}",
                          f"--config.data.train={[(world['preference'], world['images'], 1.0)]!r}",
                          f"--config.data.captions={world['captions']}", "--config.data.eval_size=0",
                          "--config.batch_size=16", "--config.num_steps=3", "--config.checkpoint.every=3",
                          "--config.log_every=1")

    single, multi = tmp_path / "single", tmp_path / "multi"
    run_one_and_two_processes(args, single, multi)
    _assert_same_metrics(single, multi, ("loss", "accuracy", "grad_norm"))
    a, b = pretrained.load(single, with_base=False), pretrained.load(multi, with_base=False)
    # float32 sums over the same shards, reduced across two processes instead of within one: equal to rounding
    _assert_same((a.adapter, a.head), (b.adapter, b.head), atol=1e-6)
    assert sorted(p.name for p in (multi / "checkpoints" / "3" / "data").glob("process_*")) == [
        "process_0-of-2.json", "process_1-of-2.json"]


def test_ppo_two_processes_equal_one(tiny_models, tmp_path):
    world = tiny_models["world"]

    def args(workdir):
        return train_args("configs/ppo/tiny.py", workdir, *COMMON, f"--config.init.policy={tiny_models['sft']}",
                          f"--config.init.reward={tiny_models['reward']}",
                          f"--config.data.train={[(world['ppo_prompts'], world['images'], 1.0)]!r}",
                          "--config.batch_size=16", "--config.ppo.step_batch_size=8", "--config.ppo.max_new_tokens=8",
                          "--config.num_steps=2", "--config.checkpoint.every=2", "--config.ppo.save_rollouts_every=2",
                          "--config.ppo.rollout_chunk_size=8")  # two sampler calls, each with rows of every host

    single, multi = tmp_path / "single", tmp_path / "multi"
    run_one_and_two_processes(args, single, multi)
    # the rollouts (sampled from the same key on the same logits; process 0 writes its own rows, the first half
    # of the global batch) and every statistic of them
    rollouts = [(d / "rollouts" / "step_2.jsonl").read_text().splitlines() for d in (single, multi)]
    assert len(rollouts[0]) == 16 and rollouts[1] == rollouts[0][:8]
    _assert_same_metrics(single, multi, ("reward", "response_length", "kl_sum_seq", "policy_loss", "value_loss",
                                         "loss", "grad_norm"))
    policy_single, policy_multi = pretrained.load(single, with_base=False), pretrained.load(multi, with_base=False)
    _assert_same(policy_single.adapter, policy_multi.adapter, atol=1e-6)
    reward = pretrained.describe(tiny_models["reward"])
    mesh = shd.single_device_mesh()
    value = {"lora": pretrained.abstract_adapter(reward.config, reward.adapter, mesh, None),
             "head": pretrained.abstract_head(reward.config, mesh)}
    wanted = {"value": (value, jax.tree.map(lambda x: x.sharding, value))}
    _assert_same(pretrained.restore_subtrees(single, wanted), pretrained.restore_subtrees(multi, wanted), atol=1e-6)

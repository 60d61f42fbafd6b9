"""PPO: prompt batches, a known reward that PPO raises, the sharded update equal to the single-device one."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fact_rlhf_jax import sharding as shd
from fact_rlhf_jax.data.prompts import query_length
from fact_rlhf_jax.train import ppo
from fact_rlhf_jax.train import state as state_lib
from fact_rlhf_jax.train.loop import make_rules, run_training
from fact_rlhf_jax.train.optim import make_optimizer
from fact_rlhf_jax.train.trainable import trainable_mask


def ppo_config(models, **overrides):
    c = ppo.tiny_config()
    c.init.policy = models["sft"]
    c.init.reward = models["reward"]
    c.data.shapesworld.num_images = 0
    c.data.train = [(models["world"]["ppo_prompts"], models["world"]["images"], 1.0)]
    c.batch_size = 16
    c.ppo.step_batch_size = 8
    c.ppo.max_new_tokens = 12
    c.ppo.save_rollouts_every = 0
    c.progress_bar = False
    c.tensorboard = False
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        with node.ignore_type():
            node[leaf] = value
    return c


def test_prompt_batches(tiny_models, tmp_path):
    world = tiny_models["world"]
    records = json.loads(open(world["ppo_prompts"]).read())
    mc = next(r for r in records if r["caption_type"] in (2, 3, 4, 5))
    long = dict(records[0], id="long", conversations=[{"from": "human", "value": "<image>\n" + "why " * 200},
                                                      {"from": "gpt", "value": "x"}])
    bad = dict(records[1], id="bad", caption_type=9)
    (tmp_path / "p.json").write_text(json.dumps([mc, long, bad] + records[:5]))
    stage = ppo.PPOStage(ppo_config(tiny_models, **{"data.train": [(str(tmp_path / "p.json"), world["images"], 1.0)],
                                                    "data.read_threads": 0}), str(tmp_path / "w"))
    loader = stage.prompt_loader(batch_size=3, seed=0, shuffle=False, num_epochs=1)
    batches = list(iter(loader))
    assert len(batches) == 2 and loader.bad_records == {"too_long": 1, "bad_label": 1}
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    q = query_length(stage.policy_cfg, stage.config.data.query_len)
    assert batch["query_ids"].shape == (6, q) and (batch["query_mask"][:, -1] == 1).all()
    assert batch["instruction_ids"].shape == (6, stage.config.data.instruction_length)
    assert (batch["instruction_mask"][:, 0] == 1).all()  # right-padded
    # a multiple-choice prompt's reward instruction lists its aok_ rationales, shuffled
    captions = json.loads(open(world["captions"]).read())
    row = list(batch["caption_type"]).index(mc["caption_type"])
    text = stage.tokenizer.decode(batch["instruction_ids"][row][batch["instruction_mask"][row] > 0])
    assert all(fact in text for fact in captions["aok_" + mc["image"]])
    assert not any(c in text for c in captions[mc["image"]])


class TargetTokenStage(ppo.PPOStage):
    """PPO with a known reward: how often the response says the target token."""

    target = None

    def sequence_scores(self, params, batch, responses, resp_mask):
        return ((responses == self.target) * resp_mask).sum(axis=1).astype(jnp.float32)


def test_ppo_raises_a_known_reward(tiny_models, tmp_path):
    """Reward = occurrences of "▁the" in the response (the tiny SFT policy says it about once in two responses
    of 12 tokens). reward_scale 1: with x10 returns the zero-initialised value head's loss would dominate the
    shared gradient clip for the first steps, and this test has only a few dozen."""
    config = ppo_config(tiny_models, num_steps=24, **{
        "ppo.length_bonus_score": 0.0, "ppo.stop_penalty": 0.0, "ppo.kl_coef": 0.01, "ppo.reward_scale": 1.0,
        "optim.lr": 5e-3, "optim.warmup_steps": 0, "checkpoint.every": 100})
    stage = TargetTokenStage(config, str(tmp_path))
    stage.target = stage.tokenizer.convert_tokens_to_ids("\u2581the")
    assert stage.target != stage.tokenizer.unk_token_id
    run_training(config, tmp_path, stage)
    rewards = [json.loads(l)["reward/model"] for l in open(tmp_path / "metrics.jsonl") if "reward/model" in l]
    assert len(rewards) == 24
    first, last = np.mean(rewards[:6]), np.mean(rewards[-6:])
    assert last > first + 0.3, rewards


@pytest.fixture(scope="module")
def rollout_and_start(tiny_models, tmp_path_factory):
    """One scored rollout batch and the initial train state, computed on one device."""
    config = ppo_config(tiny_models, **{"optim.warmup_steps": 0})  # the first rollout's updates at the full lr
    stage = ppo.PPOStage(config, str(tmp_path_factory.mktemp("ppo_update")))
    mesh = shd.single_device_mesh()
    rules = make_rules(config)
    frozen = stage.frozen_params(mesh, rules)
    optimizer, schedule = make_optimizer(config.optim, 10, updates_per_step=stage.updates_per_step)
    rng = jax.random.PRNGKey(0)
    mask = trainable_mask(jax.eval_shape(stage.init_params, rng), tuple(config.trainable))
    state, shardings = state_lib.create_state(stage, optimizer, mask, rng, mesh, rules)
    state["params"] = stage.load_pretrained(state["params"], shardings["params"])
    host = next(stage.train_data(process_index=0, process_count=1, batch_size=16, seed=0))
    batch = jax.tree.map(jnp.asarray, host)
    with shd.use_mesh(mesh, rules):
        gen = stage.generate(state["params"], frozen, batch, jax.random.key(1))
        rollout, stats, _ = stage.score_rollouts(state["params"], frozen, batch, gen.tokens, gen.lengths,
                                                 jnp.zeros(16))
    assert float(rollout["token_mask"].sum()) > 16  # real responses
    return config, jax.device_get(rollout), jax.device_get(state), mask


def run_update(config, rollout, state, mask, mesh_shape):
    stage = ppo.PPOStage(config, "/tmp/unused_ppo_workdir")
    mesh = shd.single_device_mesh() if mesh_shape is None else shd.make_mesh(mesh_shape)
    rules = make_rules(config)
    frozen = stage.frozen_params(mesh, rules)
    optimizer, _ = make_optimizer(config.optim, 10, updates_per_step=stage.updates_per_step)
    _, shardings = state_lib.abstract_state(stage, optimizer, mask, jax.random.PRNGKey(0), mesh, rules)
    params = jax.tree.map(jax.device_put, state["params"], shardings["params"])
    opt_state = jax.tree.map(jax.device_put, state["opt_state"], shardings["opt_state"])
    placed = shd.host_local_to_global(rollout, mesh)
    with shd.use_mesh(mesh, rules):
        fn = jax.jit(lambda p, o, r, f: stage.update(p, o, r, f, jax.random.key(3), optimizer=optimizer, mask=mask,
                                                     mesh=mesh))
        params, _, metrics = fn(params, opt_state, placed, frozen)
    return jax.device_get(params), jax.device_get(metrics)


@pytest.mark.parametrize("mesh_shape", [{"data": 2, "fsdp": 2, "tensor": 2}, {"data": 1, "fsdp": 8, "tensor": 1}])
def test_sharded_update_equals_single_device(rollout_and_start, mesh_shape):
    config, rollout, state, mask = rollout_and_start
    single, single_metrics = run_update(config, rollout, state, mask, None)
    sharded, sharded_metrics = run_update(config, rollout, state, mask, mesh_shape)
    # atol: the updates move parameters by ~4e-3 (Adam at lr 5e-3); another reduction order of a near-zero
    # gradient element shifts its update by up to ~1e-3 of that (1.3e-6 measured), a wrong sharding by all of it
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-6)
    moved = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(state["params"]))]
    assert max(moved) > 1e-4  # the update did something
    for k in ("policy_loss", "value_loss", "approx_kl"):
        np.testing.assert_allclose(single_metrics[k], sharded_metrics[k], rtol=1e-4, atol=1e-6)

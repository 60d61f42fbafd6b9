"""The shared train step on the stand-in model: accumulation, normalisation, freezing, sharding."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fact_rlhf_jax import sharding as shd
from fact_rlhf_jax.train import optim
from fact_rlhf_jax.train import state as state_lib
from fact_rlhf_jax.train.step import jit_train_step, make_train_step, split_microbatches
from fact_rlhf_jax.train.trainable import leaf_paths, merge, partition, trainable_mask
from tests.train.toy_stage import SEQ, VOCAB, ToyStage, toy_params

ROWS = 8


def numpy_toy_nll(params, ids, labels):
    """Per-row lists of next-token NLLs of the stand-in model, float64 numpy."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    x = p["embed"][ids] * p["frozen_scale"]
    logits = np.tanh(x @ p["mlp"]["w_in"]) @ p["mlp"]["w_out"]
    rows = []
    for b in range(ids.shape[0]):
        row = []
        for t in range(ids.shape[1] - 1):
            y = labels[b, t + 1]
            if y == -100:
                continue
            z = logits[b, t]
            row.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[y])
        rows.append(row)
    return rows


def uneven_batch():
    """Micro-batches (rows i, i+4 for 4 micro-batches) with very different supervised-token counts."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, VOCAB, size=(ROWS, SEQ)).astype(np.int32)
    labels = ids.copy()
    labels[:, 0] = -100
    # rows 0 and 4 (micro-batch 0) keep 7 targets each; the others keep only 1
    for r in range(ROWS):
        if r % 4:
            labels[r, 2:] = -100
    mask = np.ones_like(ids)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def make_step(num_micro, mesh=None, lr=0.1):
    stage = ToyStage()
    params = toy_params(jax.random.PRNGKey(0))
    mask = trainable_mask(params, [".*"], ["frozen_scale"])
    opt = optax.sgd(lr)
    trainable, _ = partition(params, mask)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt.init(trainable),
             "rng": jax.random.PRNGKey(1)}
    step = make_train_step(stage.loss, opt, lambda s: lr, mask, grad_accum=num_micro, mesh=mesh)
    return step, state, params


def test_split_microbatches_takes_strided_rows():
    x = np.arange(8)[:, None] * np.ones((1, 3), int)
    out = split_microbatches({"x": jnp.asarray(x)}, 4)["x"]
    assert out.shape == (4, 2, 3)
    np.testing.assert_array_equal(np.asarray(out[:, :, 0]), [[0, 4], [1, 5], [2, 6], [3, 7]])


@pytest.mark.parametrize("num_micro", [1, 4])
def test_loss_is_normalised_by_all_supervised_tokens(num_micro):
    step, state, params = make_step(num_micro)
    batch = uneven_batch()
    _, metrics = jax.jit(step)(state, jax.tree.map(jnp.asarray, batch))
    rows = numpy_toy_nll(params, batch["input_ids"], batch["labels"])
    tokens = [t for row in rows for t in row]
    expected = np.sum(tokens) / len(tokens)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
    assert float(metrics["weight"]) == len(tokens) == 2 * 7 + 6 * 1
    # the mean of micro-batch means is a different number on this batch: the test can tell them apart
    micro_means = [np.mean([t for r in range(ROWS) if r % 4 == i for t in rows[r]]) for i in range(4)]
    assert abs(np.mean(micro_means) - expected) > 1e-2
    # per-sequence metric: mean over rows of their mean NLL
    np.testing.assert_allclose(float(metrics["loss_per_sequence"]), np.mean([np.mean(r) for r in rows]), rtol=1e-5)


def test_accumulated_update_equals_one_big_batch_and_frozen_stays():
    batch = jax.tree.map(jnp.asarray, uneven_batch())
    step1, state1, params = make_step(1)
    step4, state4, _ = make_step(4)
    new1, m1 = jax.jit(step1)(state1, batch)
    new4, m4 = jax.jit(step4)(state4, batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
                 new1["params"], new4["params"])
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(new4["params"]["frozen_scale"]), np.asarray(params["frozen_scale"]))
    assert not np.allclose(np.asarray(new4["params"]["embed"]), np.asarray(params["embed"]))
    assert int(new4["step"]) == 1


@pytest.mark.parametrize("mesh_shape", [dict(data=2, fsdp=2, tensor=2), dict(data=1, fsdp=2, tensor=4)])
def test_sharded_step_equals_single_device(mesh_shape):
    batch = uneven_batch()
    mesh = shd.make_mesh(mesh_shape)
    rules = shd.Rules.create()
    stage = ToyStage()
    cfg = optim.default_optim_config()
    cfg.lr, cfg.warmup_steps, cfg.clip_norm = 0.1, 0, 0.0
    opt, schedule = optim.make_optimizer(cfg, 10)
    params_shape = jax.eval_shape(stage.init_params, jax.random.PRNGKey(0))
    mask = trainable_mask(params_shape, [".*"], ["frozen_scale"])
    sharded_state, shardings = state_lib.create_state(stage, opt, mask, jax.random.PRNGKey(0), mesh, rules)
    # the embedding [vocab, embed] is split over tensor and fsdp
    assert sharded_state["params"]["embed"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    mu = optax.tree_utils.tree_get(sharded_state["opt_state"], "mu")["embed"]
    assert mu.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")

    # same AdamW step on one device and on the mesh
    one_state, _ = state_lib.create_state(stage, opt, mask, jax.random.PRNGKey(0), shd.single_device_mesh(), rules)
    step_one = make_train_step(stage.loss, opt, schedule, mask, grad_accum=2)
    ref_state, ref_metrics = jax.jit(step_one)(one_state, jax.tree.map(jnp.asarray, batch))

    gbatch = shd.host_local_to_global(batch, mesh)
    step_mesh = make_train_step(stage.loss, opt, schedule, mask, grad_accum=2, mesh=mesh, rules=rules)
    jitted = jit_train_step(step_mesh, shardings, jax.tree.map(lambda x: x.sharding, gbatch), mesh)
    new_state, metrics = jitted(sharded_state, gbatch)
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6),
                 new_state["params"], ref_state["params"])
    assert new_state["params"]["embed"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")


def test_trainable_mask_by_regex():
    params = {"vision": {"w": 1}, "projector": {"w": 2, "b": 3}, "llm": {"layers": {"q": 4}, "embed": 5}}
    mask = trainable_mask(params, ["projector/.*", "llm/.*"], ["llm/embed"])
    assert mask == {"vision": {"w": False}, "projector": {"w": True, "b": True},
                    "llm": {"layers": {"q": True}, "embed": False}}
    t, f = partition(params, mask)
    assert t["vision"]["w"] is None and f["vision"]["w"] == 1
    assert merge(t, f) == params
    with pytest.raises(ValueError, match="matches no parameter"):
        trainable_mask(params, ["projecter/.*"])


def test_warmup_cosine_schedule_matches_formula():
    cfg = optim.default_optim_config()
    cfg.lr, cfg.warmup_ratio = 2e-5, 0.03
    total = 100
    sched = optim.make_schedule(cfg, total)
    warm = 3  # ceil(0.03 * 100)
    for s in [0, 1, 2, 3, 50, 99, 100]:
        if s < warm:
            want = 2e-5 * s / warm
        else:
            want = 2e-5 * 0.5 * (1 + np.cos(np.pi * (s - warm) / (total - warm)))
        np.testing.assert_allclose(float(sched(s)), want, rtol=1e-5, atol=1e-12)


def test_weight_decay_skips_norms_and_biases_by_path():
    import jax.numpy as jnp

    from fact_rlhf_jax.models import config as mcfg
    from fact_rlhf_jax.models import llava

    shapes = jax.eval_shape(lambda k: llava.init(mcfg.preset("tiny"), k), jax.random.PRNGKey(0))
    tree = {"base": shapes, "lora": {"llm": {"layers": {"attn": {"q": {"a": jnp.zeros(2), "b": jnp.zeros(2)}}}}}}
    mask = optim.make_decay_mask(optim.default_optim_config().no_decay)(tree)
    decayed = {p for p, m in zip(leaf_paths(tree), jax.tree.leaves(mask)) if m}
    for path in ["base/llm/layers/attn/q", "base/llm/lm_head", "base/projector/w", "base/vision/layers/mlp/fc1/w",
                 "lora/llm/layers/attn/q/a", "lora/llm/layers/attn/q/b"]:
        assert path in decayed, path
    for path in ["base/llm/layers/attn_norm", "base/llm/norm", "base/projector/b", "base/vision/layers/attn/k/b",
                 "base/vision/layers/ln1/scale", "base/vision/pre_norm/bias"]:
        assert path not in decayed, path

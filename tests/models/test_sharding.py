"""Sharded runs equal single-device runs: forward logits and one AdamW step on 8 fake CPU devices."""

import numpy as np
import optax
import pytest

import jax
import jax.numpy as jnp

from fact_rlhf_jax import sharding
from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import llava, lora

CFG = mcfg.preset("tiny")


def _batch(seed=0, b=8, t=16):
    rng = np.random.default_rng(seed)
    n = CFG.num_image_tokens
    ids = rng.integers(3, CFG.text.vocab_size - 1, size=(b, t)).astype(np.int32)
    ids[:, 1:1 + n] = CFG.image_token_id
    ids[:, 0] = 1
    mask = np.ones((b, t), np.int32)
    mask[::2, -3:] = 0  # some right padding
    px = rng.normal(size=(b, 3, CFG.vision.image_size, CFG.vision.image_size)).astype(np.float32)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": px}


def _loss(params, adapters, batch):
    out = llava.forward(params, CFG, batch["input_ids"], batch["pixel_values"], batch["attention_mask"],
                        lora=adapters, lora_scale=0.5)
    logp = jax.nn.log_softmax(out.logits[:, :-1], axis=-1)
    nll = -jnp.take_along_axis(logp, batch["input_ids"][:, 1:, None], axis=-1)[..., 0]
    w = batch["attention_mask"][:, 1:]
    return jnp.sum(nll * w) / jnp.sum(w)


def _step(params, adapters, opt_state, batch, opt):
    loss, (g_params, g_lora) = jax.value_and_grad(_loss, argnums=(0, 1))(params, adapters, batch)
    updates, opt_state = opt.update((g_params, g_lora), opt_state, (params, adapters))
    params, adapters = optax.apply_updates((params, adapters), updates)
    return params, adapters, opt_state, loss


def _run(mesh_shape):
    # eps well above float noise: Adam maps any tiny gradient to a full-size step, which would turn
    # reduction-order rounding of near-zero gradients into lr-sized differences.
    opt = optax.adamw(1e-2, eps=1e-4, weight_decay=0.1)
    rules = sharding.Rules.create()
    key = jax.random.key(0)
    batch = _batch()
    if mesh_shape is None:
        params = llava.init(CFG, key)
        adapters = lora.init(CFG, jax.random.key(1), rank=4)
        # Give B non-zero values so the LoRA path contributes to the logits.
        adapters = jax.tree.map(lambda x: x + 0.01, adapters)
        opt_state = opt.init((params, adapters))
        logits = llava.forward(params, CFG, batch["input_ids"], batch["pixel_values"], batch["attention_mask"],
                               lora=adapters, lora_scale=0.5).logits
        params, adapters, _, loss = jax.jit(_step, static_argnums=4)(params, adapters, opt_state, batch, opt)
        return np.asarray(logits), loss, params, adapters
    mesh = sharding.make_mesh(mesh_shape)
    with sharding.use_mesh(mesh, rules):
        params = llava.init_sharded(CFG, key, mesh, rules)
        lora_sh = sharding.shardings_for(lora.param_shapes(CFG, rank=4), lora.param_axes(CFG, rank=4), mesh, rules)
        adapters = jax.jit(lambda k: jax.tree.map(lambda x: x + 0.01, lora.init(CFG, k, rank=4)),
                           out_shardings=lora_sh)(jax.random.key(1))
        gbatch = sharding.host_local_to_global(batch, mesh)
        # The embedding is sharded over vocab (tensor) and embed (fsdp) whenever those axes exist.
        emb_spec = params["llm"]["embed"].sharding.spec
        if mesh.shape["tensor"] > 1:
            assert "tensor" in jax.tree.leaves(tuple(emb_spec))
        opt_state = jax.jit(opt.init)((params, adapters))
        logits = jax.jit(lambda p, a, b: llava.forward(p, CFG, b["input_ids"], b["pixel_values"],
                                                      b["attention_mask"], lora=a, lora_scale=0.5).logits)(
            params, adapters, gbatch)
        params, adapters, _, loss = jax.jit(_step, static_argnums=4)(params, adapters, opt_state, gbatch, opt)
        return np.asarray(logits), loss, params, adapters


@pytest.fixture(scope="module")
def single():
    return _run(None)


@pytest.mark.parametrize("mesh_shape", [
    {"data": 8, "fsdp": 1, "tensor": 1},
    {"data": 2, "fsdp": 2, "tensor": 2},
    {"data": 1, "fsdp": 2, "tensor": 4},
])
def test_sharded_forward_and_step_equal_single_device(single, mesh_shape):
    assert jax.device_count() == 8
    logits, loss, params, adapters = _run(mesh_shape)
    np.testing.assert_allclose(logits, single[0], atol=2e-5, rtol=0)
    np.testing.assert_allclose(float(loss), float(single[1]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves((params, adapters)), jax.tree.leaves(single[2:])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=0)


def test_rules_reject_collisions_and_unknown_axes():
    rules = sharding.Rules.create()
    with pytest.raises(sharding.ShardingRulesError, match="both map to mesh axis"):
        sharding.logical_to_spec(("embed", "vision_embed"), rules)
    with pytest.raises(sharding.ShardingRulesError, match="unknown mesh axis"):
        sharding.Rules.create([("embed", "model")])
    with pytest.raises(sharding.ShardingRulesError, match="no sharding rule"):
        sharding.logical_to_spec(("nonsense",), rules)


def test_make_mesh_fills_minus_one_and_rejects_bad_shapes():
    mesh = sharding.make_mesh({"data": 2, "fsdp": -1, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError):
        sharding.make_mesh({"data": 3, "fsdp": -1})
    with pytest.raises(ValueError):
        sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 4})


def test_train_step_compiles_without_involuntary_rematerialisation(capfd):
    """XLA warns on stderr when a sharding mismatch forces it to replicate an activation."""
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.Rules.create()
    batch = _batch()
    with sharding.use_mesh(mesh, rules):
        params = llava.init_sharded(CFG, jax.random.key(0), mesh, rules)
        gbatch = sharding.host_local_to_global(batch, mesh)
        capfd.readouterr()
        jax.jit(jax.grad(_loss, argnums=(0, 1))).lower(params, None, gbatch).compile()
    err = capfd.readouterr().err
    assert "Involuntary full rematerialization" not in err, err[-2000:]

"""Remat and the dtype policy: rematerialisation changes memory, not numbers; bf16 stays close to fp32."""

import numpy as np

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import llava


def _loss(cfg):
    rng = np.random.default_rng(0)
    n = cfg.num_image_tokens
    ids = np.concatenate([[1], [cfg.image_token_id] * n, rng.integers(3, 200, size=8)])[None].astype(np.int32)
    px = rng.normal(size=(1, 3, cfg.vision.image_size, cfg.vision.image_size)).astype(np.float32)

    def loss(params):
        logits = llava.forward(params, cfg, ids, px).logits
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, ids[..., None], -1)[..., 0])

    return loss


def test_remat_gives_the_same_gradients():
    cfg = mcfg.preset("tiny")
    params = llava.init(cfg, jax.random.key(0))
    g_plain = jax.grad(_loss(cfg))(params)
    for policy in ("full", "dots"):
        g_remat = jax.grad(_loss(cfg.replace(remat=policy)))(params)
        for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5)


def test_bfloat16_policy_stays_close_to_float32():
    cfg = mcfg.preset("tiny")
    params = llava.init(cfg, jax.random.key(0))
    ref = _loss(cfg)(params)
    bf16 = cfg.replace(param_dtype="bfloat16", compute_dtype="bfloat16")
    params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(llava.init(bf16, jax.random.key(0))))
    got = _loss(bf16)(params16)
    assert abs(float(got) - float(ref)) < 0.02 * abs(float(ref))

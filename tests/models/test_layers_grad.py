"""Gradients of the CPU-specific layer rules against plain autodiff written out here: `layers.matmul` (its
custom weight-gradient layout) and the checkpointed whole-sequence attention."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import layers as L
from fact_rlhf_jax.models import llama


@pytest.mark.parametrize("x_shape,w_shape,n_in", [
    ((3, 5, 8), (8, 24), 1),       # K < O: x is transposed for the weight gradient
    ((3, 5, 24), (24, 8), 1),      # K > O: dy is transposed, then the weight-sized result
    ((2, 7, 4, 6), (4, 6, 10), 2),  # two contracting dims (the attention output projection)
    ((4, 8), (8, 2, 3), 1),        # several output dims (q / k / v projections)
])
def test_matmul_value_and_gradients_equal_tensordot(x_shape, w_shape, n_in):
    assert jax.default_backend() == "cpu"  # the custom rule is the CPU path
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
    out_shape = x_shape[: len(x_shape) - n_in] + w_shape[n_in:]
    probe = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
    ours = lambda x, w: jnp.sum(L.matmul(x, w, n_in) * probe)
    plain = lambda x, w: jnp.sum(jnp.tensordot(x, w, axes=n_in) * probe)
    np.testing.assert_allclose(L.matmul(x, w, n_in), jnp.tensordot(x, w, axes=n_in), rtol=1e-6, atol=1e-6)
    for got, want in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(plain, (0, 1))(x, w)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dense_with_lora_gradients_equal_plain_autodiff():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 5, 12)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(12, 20)), jnp.float32)
    lora = {"a": jnp.asarray(rng.normal(size=(12, 4)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(4, 20)), jnp.float32)}

    def plain(x, w, lora):
        return jnp.tensordot(x, w, 1) + 0.5 * jnp.tensordot(jnp.tensordot(x, lora["a"], 1), lora["b"], 1)

    f = lambda fn: (lambda *a: jnp.sum(jnp.sin(fn(*a))))
    ours = lambda x, w, lora: L.dense(x, w, lora=lora, lora_scale=0.5)
    got, want = jax.grad(f(ours), (0, 1, 2))(x, w, lora), jax.grad(f(plain), (0, 1, 2))(x, w, lora)
    for g, h in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5)


def test_checkpointed_attention_gradients_equal_a_plain_softmax_attention():
    rng = np.random.default_rng(2)
    b, t, h, kvh, d = 2, 9, 4, 2, 8
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, n, d)), jnp.float32) for n in (h, kvh, kvh))
    am = np.ones((b, t), np.int32)
    am[1, :4] = 0  # left padding
    mask = llama.causal_mask(jnp.asarray(am))
    real = jnp.asarray(am, jnp.float32)[:, :, None, None]  # padded queries are never read

    def plain(q, k, v):
        kr, vr = jnp.repeat(k, h // kvh, axis=2), jnp.repeat(v, h // kvh, axis=2)
        s = jnp.einsum("bthd,bshd->bhts", q, kr) / np.sqrt(d)
        s = jnp.where(mask[:, None], s, -1e30)
        return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, axis=-1), vr)

    loss = lambda fn: (lambda q, k, v: jnp.sum(jnp.cos(fn(q, k, v)) * real))
    ours = lambda q, k, v: L.attention(q, k, v, mask)
    np.testing.assert_allclose(ours(q, k, v) * real, plain(q, k, v) * real, rtol=1e-5, atol=1e-6)
    for g, want in zip(jax.grad(loss(ours), (0, 1, 2))(q, k, v), jax.grad(loss(plain), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)

"""`LlavaConfig.attention_impl`: every choice that runs on CPU equals the einsum default; the others refuse
CPU with an error that names the backend they need. The splash kernel runs here in the Pallas interpreter."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fact_rlhf_jax import sampling
from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import layers as L
from fact_rlhf_jax.models import llama, llava


def _left_padded(b=3, t=20, h=4, kvh=2, d=16, seed=0):
    """q [B, T, H, D], k/v [B, T, KVH, D], causal + key-padding mask with ragged left padding, real-query rows."""
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, n, d)), jnp.float32) for n in (h, kvh, kvh))
    am = np.ones((b, t), np.int32)
    for i in range(b):
        am[i, : 3 * i] = 0
    return q, k, v, llama.causal_mask(jnp.asarray(am)), am.astype(bool)


def test_dot_product_equals_the_einsum_path():
    q, k, v, mask, _ = _left_padded()
    want = np.asarray(L.attention(q, k, v, mask))
    got = np.asarray(L.attention(q, k, v, mask, impl="dot_product"))
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
    # the KV-cache layout [B, KVH, S, D] gives the same result on both paths
    kc, vc = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    for impl in ("xla", "dot_product"):
        np.testing.assert_allclose(np.asarray(L.attention(q, kc, vc, mask, impl=impl, kv_heads_first=True)), want,
                                   atol=2e-6, rtol=1e-5)


def test_splash_kernel_in_the_interpreter_equals_the_einsum_path_on_real_rows_forward_and_backward():
    q, k, v, mask, real = _left_padded(t=150)  # 150 keys: two 128-blocks, the second padded
    want = np.asarray(L.attention(q, k, v, mask))
    got = np.asarray(L.splash_attention(q, k, v, mask, interpret=True))
    np.testing.assert_allclose(got[real], want[real], atol=2e-6, rtol=1e-5)
    # and its backward pass (training), through a loss on the real rows
    q, k, v, mask, real = _left_padded(t=40, seed=1)
    w = jnp.asarray(np.random.default_rng(2).normal(size=q.shape), jnp.float32)
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.where(real[:, :, None, None], fn(q, k, v) * w, 0.0))
    want = jax.grad(loss(lambda q, k, v: L.attention(q, k, v, mask)), argnums=(0, 1, 2))(q, k, v)
    got = jax.grad(loss(lambda q, k, v: L.splash_attention(q, k, v, mask, interpret=True)), argnums=(0, 1, 2))(q, k, v)
    for g, e in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl,backend", [("cudnn", "GPU"), ("splash", "TPU")])
def test_accelerator_kernels_refuse_cpu_naming_the_backend(impl, backend):
    q, k, v, mask, _ = _left_padded()
    with pytest.raises(ValueError, match=f"attention_impl='{impl}' needs a {backend} backend"):
        L.attention(q, k, v, mask, impl=impl)


def test_unknown_impl_is_rejected():
    q, k, v, mask, _ = _left_padded()
    with pytest.raises(ValueError, match="expected one of"):
        L.attention(q, k, v, mask, impl="flash")


def _assert_model_and_sampler_match_the_default(impl: str, seed: int):
    """tiny LLaVA with `attention_impl=impl`: logits on real positions and greedy tokens equal the default's."""
    cfg = mcfg.preset("tiny")
    alt = cfg.replace(attention_impl=impl)
    params = llava.init(cfg, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    rows = [[1] + [cfg.image_token_id] * cfg.num_image_tokens + list(rng.integers(3, 200, size=n)) for n in (4, 11)]
    ids, am = sampling.left_pad_prompts(rows, pad_id=0)
    px = rng.normal(size=(2, 3, cfg.vision.image_size, cfg.vision.image_size)).astype(np.float32)
    real = am.astype(bool)
    want = np.asarray(llava.forward(params, cfg, ids, px, am).logits)[real]
    got = np.asarray(llava.forward(params, alt, ids, px, am).logits)[real]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    a = sampling.generate(params, cfg, ids, am, px, max_new_tokens=5, eos_id=-1)
    b = sampling.generate(params, alt, ids, am, px, max_new_tokens=5, eos_id=-1)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_allclose(np.asarray(a.logprobs), np.asarray(b.logprobs), atol=1e-5)


def test_model_forward_and_greedy_sampling_with_dot_product_equal_the_default():
    _assert_model_and_sampler_match_the_default("dot_product", seed=0)


def test_model_with_splash_in_the_interpreter_equals_the_default(monkeypatch):
    """The model-level wiring of "splash" (mask -> segment ids, GQA, the sampler's prefill through the kernel and
    its cached steps through the einsum path), with the kernel interpreted so that it runs on CPU."""
    monkeypatch.setattr(L, "_IMPL_BACKEND", {"cudnn": "gpu"})
    kernel = L.splash_attention
    monkeypatch.setattr(L, "splash_attention", lambda *a, **kw: kernel(*a, interpret=True, **kw))
    _assert_model_and_sampler_match_the_default("splash", seed=2)

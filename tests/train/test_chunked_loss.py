"""Chunked cross-entropy from hidden states equals the plain logits version: values, metrics and gradients."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fact_rlhf_jax.train.losses import IGNORE_INDEX, sft_loss_terms, sft_loss_terms_chunked


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_chunked_matches_full_logits(chunk):
    rng = np.random.default_rng(0)
    b, t, d, v = 3, 11, 8, 37
    hidden = jnp.asarray(rng.normal(size=(b, t, d)).astype(np.float32))
    head = jnp.asarray(rng.normal(size=(d, v)).astype(np.float32))
    labels = rng.integers(0, v, size=(b, t)).astype(np.int32)
    labels[0, :5] = IGNORE_INDEX
    labels[2, :] = IGNORE_INDEX  # a row with nothing supervised
    labels = jnp.asarray(labels)

    def full(h, w):
        return sft_loss_terms(jnp.einsum("btd,dv->btv", h, w), labels)

    def chunked(h, w):
        return sft_loss_terms_chunked(h, w, labels, chunk)

    a, c = full(hidden, head), chunked(hidden, head)
    np.testing.assert_allclose(float(c.total), float(a.total), rtol=1e-6)
    assert float(c.weight) == float(a.weight)
    for k in a.metrics:
        for x, y in zip(a.metrics[k], c.metrics[k]):
            np.testing.assert_allclose(float(y), float(x), rtol=1e-6)
    ga = jax.grad(lambda h, w: full(h, w).total, argnums=(0, 1))(hidden, head)
    gc = jax.grad(lambda h, w: chunked(h, w).total, argnums=(0, 1))(hidden, head)
    for x, y in zip(ga, gc):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-5)


def test_sft_stage_loss_chunk_setting_gives_the_same_loss(tmp_path):
    from fact_rlhf_jax import config as config_lib
    from fact_rlhf_jax.train.sft import build_stage

    overrides = [("data.shapesworld.num_images", "16")]
    plain = build_stage(config_lib.load("configs/sft/tiny.py", overrides), str(tmp_path))
    chunked = build_stage(config_lib.load("configs/sft/tiny.py", overrides + [("model.loss_chunk", "16")]),
                          str(tmp_path))
    batch = next(iter(plain.train_data(process_index=0, process_count=1, batch_size=4, seed=0)))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    params = plain.init_params(jax.random.key(0))
    a = plain.loss(params, batch, jax.random.key(1))
    c = chunked.loss(params, batch, jax.random.key(1))
    assert float(a.weight) > 0
    np.testing.assert_allclose(float(c.total), float(a.total), rtol=1e-5)

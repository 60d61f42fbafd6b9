"""LoRA adapters: zero-init is a no-op, the adapted forward equals the merged-weight forward, and merge
matches a numpy computation."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import llava, lora

CFG = mcfg.preset("tiny")


def _inputs():
    rng = np.random.default_rng(0)
    n = CFG.num_image_tokens
    ids = np.concatenate([[1], [CFG.image_token_id] * n, rng.integers(3, 200, size=6)])[None].astype(np.int32)
    px = rng.normal(size=(1, 3, CFG.vision.image_size, CFG.vision.image_size)).astype(np.float32)
    return ids, px


def test_fresh_adapters_do_not_change_the_model():
    params = llava.init(CFG, jax.random.key(0))
    adapters = lora.init(CFG, jax.random.key(1), rank=8)
    for group in adapters["llm"]["layers"].values():
        for ab in group.values():
            assert float(jnp.abs(ab["b"]).max()) == 0.0 and float(jnp.abs(ab["a"]).max()) > 0.0
    ids, px = _inputs()
    base = llava.forward(params, CFG, ids, px).logits
    adapted = llava.forward(params, CFG, ids, px, lora=adapters, lora_scale=0.25).logits
    np.testing.assert_array_equal(np.asarray(base), np.asarray(adapted))


@pytest.mark.parametrize("targets", [lora.DEFAULT_TARGETS, ("q", "v")])
def test_adapted_forward_equals_merged_weights(targets):
    params = llava.init(CFG, jax.random.key(0))
    adapters = lora.init(CFG, jax.random.key(1), rank=4, targets=targets)
    adapters = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape), adapters)
    ids, px = _inputs()
    adapted = llava.forward(params, CFG, ids, px, lora=adapters, lora_scale=0.5).logits
    merged = llava.forward(lora.merge(params, adapters, 0.5), CFG, ids, px).logits
    np.testing.assert_allclose(np.asarray(adapted), np.asarray(merged), atol=1e-5, rtol=0)
    assert float(jnp.abs(adapted - llava.forward(params, CFG, ids, px).logits).max()) > 1e-3


def test_merge_matches_numpy_and_leaves_base_untouched():
    params = llava.init(CFG, jax.random.key(0))
    adapters = lora.init(CFG, jax.random.key(1), rank=3, targets=("o",))
    adapters = jax.tree.map(lambda x: x + 0.1, adapters)
    before = np.asarray(params["llm"]["layers"]["attn"]["o"]).copy()
    merged = lora.merge(params, adapters, 2.0)
    a = np.asarray(adapters["llm"]["layers"]["attn"]["o"]["a"])  # [L, H, Dh, r]
    b = np.asarray(adapters["llm"]["layers"]["attn"]["o"]["b"])  # [L, r, D]
    want = before + 2.0 * np.einsum("lhdr,lre->lhde", a, b)
    np.testing.assert_allclose(np.asarray(merged["llm"]["layers"]["attn"]["o"]), want, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(params["llm"]["layers"]["attn"]["o"]), before)
    assert a.shape == (CFG.text.num_layers, CFG.text.num_heads, CFG.text.dim_per_head, 3)


def test_unknown_target_is_rejected():
    with pytest.raises(ValueError, match="unknown LoRA target"):
        lora.init(CFG, jax.random.key(0), rank=2, targets=("q_proj",))

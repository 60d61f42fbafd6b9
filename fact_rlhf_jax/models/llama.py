"""LLaMA-style decoder (RMSNorm, rotate-half RoPE, SwiGLU, grouped-query attention) as pure functions.

Layers are stacked on a leading `layers` axis and run under `lax.scan`. The sampler's KV cache (`KVCache`: one
[batch, kv_heads, cache_len, head_dim] array per layer for keys and one for values) is filled by `prefill`
(the same scan, keeping each layer's keys and values) and extended by `decode` with a cache, which unrolls the
layers so that each layer's cache is its own buffer that XLA updates in place.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import layers as L
from fact_rlhf_jax.models.config import TextConfig
from fact_rlhf_jax.models.params import ParamSpec, normal, ones

INIT = normal(0.02)

# Projections LoRA can adapt, with the number of leading input dims of each weight (after `layers`).
PROJECTIONS = {"q": 1, "k": 1, "v": 1, "o": 2, "gate": 1, "up": 1, "down": 1}


def specs(cfg: TextConfig) -> dict[str, Any]:
    d, f, n, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    h, kvh, hd = cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head
    return {
        "embed": ParamSpec((v, d), ("vocab", "embed"), INIT),
        "layers": {
            "attn_norm": ParamSpec((n, d), ("layers", "embed"), ones),
            "attn": {
                "q": ParamSpec((n, d, h, hd), ("layers", "embed", "heads", "head_dim"), INIT),
                "k": ParamSpec((n, d, kvh, hd), ("layers", "embed", "kv_heads", "head_dim"), INIT),
                "v": ParamSpec((n, d, kvh, hd), ("layers", "embed", "kv_heads", "head_dim"), INIT),
                "o": ParamSpec((n, h, hd, d), ("layers", "heads", "head_dim", "embed"), INIT),
            },
            "mlp_norm": ParamSpec((n, d), ("layers", "embed"), ones),
            "mlp": {
                "gate": ParamSpec((n, d, f), ("layers", "embed", "mlp"), INIT),
                "up": ParamSpec((n, d, f), ("layers", "embed", "mlp"), INIT),
                "down": ParamSpec((n, f, d), ("layers", "mlp", "embed"), INIT),
            },
        },
        "norm": ParamSpec((d,), ("embed",), ones),
        "lm_head": ParamSpec((d, v), ("embed", "vocab"), INIT),
    }


class KVCache(NamedTuple):
    # One [batch, kv_heads, cache_len, head_dim] array per layer: heads before slots is the layout both attention
    # matmuls read without a transpose (with slots first, XLA transposed every layer's cache in every step).
    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]


def init_cache(cfg: TextConfig, batch: int, length: int, dtype) -> KVCache:
    shape = (batch, cfg.num_kv_heads, length, cfg.dim_per_head)
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    return KVCache(zeros(), zeros())


def embed_tokens(params: dict, input_ids: jax.Array, dtype) -> jax.Array:
    """input_ids [B, T] -> [B, T, D]. Ids outside the vocab (image placeholders) embed as id 0."""
    table = params["embed"]
    vocab = table.shape[0]
    ids = jnp.where((input_ids >= 0) & (input_ids < vocab), input_ids, 0)
    # Gather the fsdp-sharded feature dim first (as FSDP does for every weight); otherwise the lookup's
    # output is split over fsdp on features while the batch wants fsdp too, and XLA rematerialises it.
    table = L.constrain(table, ("vocab", "act_embed"))
    return L.constrain(jnp.take(table, ids, axis=0).astype(dtype), ("batch", None, "act_embed"))


def _layer(cfg: TextConfig, x, positions_cos_sin, mask, p, lora, lora_scale, cache_kv, cache_index, impl):
    """One decoder block -> (x, kv). With `cache_kv` = this layer's (ck, cv) [B, KVH, S, Dh], the new keys and
    values are written at cache slots [cache_index, cache_index + T), attention reads the whole cache and kv is
    the updated (ck, cv); without, kv is this block's own (k, v) [B, T, KVH, Dh]."""
    cos, sin = positions_cos_sin
    a = p["attn"]
    la = (lora or {}).get("attn", {})
    lm = (lora or {}).get("mlp", {})
    h = L.rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    q = L.apply_rope(L.dense(h, a["q"], lora=la.get("q"), lora_scale=lora_scale), cos, sin)
    k = L.apply_rope(L.dense(h, a["k"], lora=la.get("k"), lora_scale=lora_scale), cos, sin)
    v = L.dense(h, a["v"], lora=la.get("v"), lora_scale=lora_scale)
    q = L.constrain(q, ("batch", None, "act_heads", None))
    if cache_kv is not None:
        ck, cv = cache_kv
        at = (0, 0, cache_index, 0)
        ck = jax.lax.dynamic_update_slice(ck, jnp.swapaxes(k, 1, 2).astype(ck.dtype), at)
        cv = jax.lax.dynamic_update_slice(cv, jnp.swapaxes(v, 1, 2).astype(cv.dtype), at)
        new_cache = (ck, cv)
        # splash is a kernel for whole-sequence causal self-attention, not for reading a cache
        attn = L.attention(q, ck.astype(q.dtype), cv.astype(q.dtype), mask, impl="xla" if impl == "splash" else impl,
                           kv_heads_first=True)
    else:
        new_cache = (k, v)
        attn = L.attention(q, k, v, mask, impl=impl)
    x = x + L.dense(attn, a["o"], n_in=2, lora=la.get("o"), lora_scale=lora_scale)
    x = L.constrain(x, ("batch", None, "act_embed"))
    h = L.rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    m = p["mlp"]
    gate = L.dense(h, m["gate"], lora=lm.get("gate"), lora_scale=lora_scale)
    up = L.dense(h, m["up"], lora=lm.get("up"), lora_scale=lora_scale)
    inner = L.constrain(jax.nn.silu(gate) * up, ("batch", None, "act_mlp"))
    x = x + L.dense(inner, m["down"], lora=lm.get("down"), lora_scale=lora_scale)
    return L.constrain(x, ("batch", None, "act_embed")), new_cache


def unstack_layers(tree: dict, num_layers: int) -> list[dict]:
    """A stacked layer tree ({name: [layers, ...]}) -> one tree per layer, e.g. `params["layers"]` for `decode`."""
    return [jax.tree.map(lambda a: a[i], tree) for i in range(num_layers)]


def decode(params: dict, cfg: TextConfig, x: jax.Array, positions: jax.Array, mask: jax.Array, *,
           lora: dict | None = None, lora_scale: float = 1.0, cache: KVCache | None = None,
           cache_index: jax.Array | int = 0, remat: str = "none", attention_impl: str = "xla"):
    """Runs the decoder stack on embeddings.

    x [B, T, D]; positions [B, T] (RoPE positions); mask bool [B, T, S] (True = may attend), where S = T
    without a cache and S = cache_len with one (the new keys are written at `cache_index` first).
    Returns (hidden [B, T, D] after the final norm, updated cache or None).

    With a cache the layers are unrolled, and `params["layers"]` (and `lora["layers"]`) may be the lists
    `unstack_layers` makes: the sampler unstacks once per call, because XLA:CPU copies a stacked weight's
    slice into a new buffer wherever a matmul reads it, which inside the decode loop meant every step.
    A prompt is best filled in with `prefill` (the layer scan; unrolling it too would double compile time).
    """
    cos_sin = L.rope_cos_sin(positions, cfg.dim_per_head, cfg.rope_theta)
    layer_lora = None if lora is None else lora.get("layers")

    if cache is None:
        h, _ = _scan_layers(params, cfg, x, cos_sin, mask, layer_lora, lora_scale, remat, attention_impl, False)
        new_cache = None
    else:
        # Unrolled, one cache buffer per layer, updated in place.
        layer = lambda tree, i: tree[i] if isinstance(tree, (list, tuple)) else jax.tree.map(lambda a: a[i], tree)
        h, ks, vs = x, [], []
        for i in range(cfg.num_layers):
            p, lp = layer(params["layers"], i), None if layer_lora is None else layer(layer_lora, i)
            # tie the layer's weights to this step's activations: otherwise the compiler may hoist every layer's
            # (fsdp-gathered) weights out of the decode loop and hold them all at once
            h, p, lp = jax.lax.optimization_barrier((h, p, lp))
            h, (ck, cv) = _layer(cfg, h, cos_sin, mask, p, lp, lora_scale, (cache.k[i], cache.v[i]), cache_index,
                                 attention_impl)
            ks.append(ck)
            vs.append(cv)
        new_cache = KVCache(tuple(ks), tuple(vs))
    h = L.rms_norm(h, params["norm"], cfg.rms_norm_eps)
    return h, new_cache


def _scan_layers(params, cfg, x, cos_sin, mask, layer_lora, lora_scale, remat, impl, keep_kv: bool):
    """The stacked layers under `lax.scan` -> (h, (k, v) [layers, B, T, KVH, Dh] if keep_kv else None)."""
    def step(h, xs):
        p, lp = xs
        h, kv = _layer(cfg, h, cos_sin, mask, p, lp, lora_scale, None, 0, impl)
        return h, kv if keep_kv else None

    return jax.lax.scan(L.maybe_remat(step, remat), x, (params["layers"], layer_lora))


def prefill(params: dict, cfg: TextConfig, x: jax.Array, positions: jax.Array, mask: jax.Array, cache_len: int, *,
            lora: dict | None = None, lora_scale: float = 1.0, attention_impl: str = "xla", dtype=jnp.float32):
    """The decoder over a whole prompt (stacked layers, scanned) that also returns a fresh KV cache of
    `cache_len` slots holding the prompt's keys and values at slots [0, T).

    x [B, T, D], positions [B, T], mask bool [B, T, T] -> (hidden [B, T, D] after the final norm, KVCache).
    """
    cos_sin = L.rope_cos_sin(positions, cfg.dim_per_head, cfg.rope_theta)
    layer_lora = None if lora is None else lora.get("layers")
    h, (ks, vs) = _scan_layers(params, cfg, x, cos_sin, mask, layer_lora, lora_scale, "none", attention_impl, True)
    cache = init_cache(cfg, x.shape[0], cache_len, dtype)
    write = lambda c, new: jax.lax.dynamic_update_slice(c, jnp.swapaxes(new, 1, 2).astype(c.dtype), (0, 0, 0, 0))
    cache = KVCache(tuple(write(c, ks[i]) for i, c in enumerate(cache.k)),
                    tuple(write(c, vs[i]) for i, c in enumerate(cache.v)))
    return L.rms_norm(h, params["norm"], cfg.rms_norm_eps), cache


def lm_logits(params: dict, hidden: jax.Array) -> jax.Array:
    """hidden [B, T, D] -> float32 logits [B, T, V] (accumulated in float32 whatever the compute dtype)."""
    w = params["lm_head"].astype(hidden.dtype)
    logits = jnp.einsum("btd,dv->btv", hidden, w, preferred_element_type=jnp.float32)
    return L.constrain(logits, ("batch", None, "act_vocab"))


def causal_mask(attention_mask: jax.Array) -> jax.Array:
    """attention_mask [B, T] (1 = real) -> bool [B, T, T]: causal and no padded keys."""
    t = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))
    return causal[None] & (attention_mask[:, None, :] > 0)


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """Pad-aware positions: the first real token is 0 whatever the padding side. [B, T] int32."""
    return jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0).astype(jnp.int32)


def forward(params: dict, cfg: TextConfig, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
            lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32, remat: str = "none"):
    """Text-only forward: input_ids [B, T] -> (logits [B, T, V] float32, hidden [B, T, D])."""
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    x = embed_tokens(params, input_ids, dtype)
    hidden, _ = decode(params, cfg, x, positions_from_mask(attention_mask), causal_mask(attention_mask),
                       lora=lora, lora_scale=lora_scale, remat=remat)
    return lm_logits(params, hidden), hidden

"""Stateless building blocks shared by the vision tower and the decoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fact_rlhf_jax import sharding

_NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)


def dense(x: jax.Array, w: jax.Array, *, n_in: int = 1, bias: jax.Array | None = None,
          lora: dict | None = None, lora_scale: float = 1.0) -> jax.Array:
    """x [..., *in] . w [*in, *out] (+ bias [*out]) (+ LoRA: (x . a [*in, r]) . b [r, *out] * scale)."""
    w = w.astype(x.dtype)
    y = jnp.tensordot(x, w, axes=n_in)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    if lora is not None:
        down = jnp.tensordot(x, lora["a"].astype(x.dtype), axes=n_in)
        y = y + (lora_scale * jnp.tensordot(down, lora["b"].astype(x.dtype), axes=1)).astype(y.dtype)
    return y


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """LLaMA RMSNorm: normalise in float32, cast back, then scale (HF order of operations)."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * x32.astype(x.dtype)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """Rotate-half RoPE tables (HF LLaMA layout). positions [B, T] -> cos, sin [B, T, head_dim] (float32)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, heads, head_dim]; cos/sin [B, T, head_dim]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, impl: str = "xla") -> jax.Array:
    """Grouped-query attention.

    q [B, T, H, Dh], k/v [B, S, KVH, Dh] with H a multiple of KVH, mask bool [B, T, S] (True = attend) or None.
    Scores and softmax in float32. Returns [B, T, H, Dh]. Rows with no allowed key get uniform weights
    (finite, never NaN); they only occur at padded query positions.
    """
    if impl != "xla":
        return jax.nn.dot_product_attention(
            q, k, v, mask=None if mask is None else mask[:, None], implementation=impl
        ).astype(q.dtype)
    b, t, h, d = q.shape
    kvh = k.shape[2]
    qg = q.reshape(b, t, kvh, h // kvh, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * (d ** -0.5)
    if mask is not None:
        scores = jnp.where(mask[:, None, None, :, :], scores, _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def remat_policy(name: str):
    if name == "none":
        return None
    if name == "full":
        return jax.checkpoint_policies.nothing_saveable
    if name == "dots":
        return jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
    raise ValueError(f"unknown remat policy {name!r}; expected none, full or dots")


def maybe_remat(fn, policy_name: str):
    policy = remat_policy(policy_name)
    return fn if policy is None else jax.checkpoint(fn, policy=policy)


constrain = sharding.constrain

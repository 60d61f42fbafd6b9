"""Stateless building blocks shared by the vision tower and the decoder."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from fact_rlhf_jax import sharding

_NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)


def dense(x: jax.Array, w: jax.Array, *, n_in: int = 1, bias: jax.Array | None = None,
          lora: dict | None = None, lora_scale: float = 1.0) -> jax.Array:
    """x [..., *in] . w [*in, *out] (+ bias [*out]) (+ LoRA: (x . a [*in, r]) . b [r, *out] * scale)."""
    w = w.astype(x.dtype)
    y = matmul(x, w, n_in)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    if lora is not None:
        down = matmul(x, lora["a"].astype(x.dtype), n_in)
        y = y + (lora_scale * matmul(down, lora["b"].astype(x.dtype), 1)).astype(y.dtype)
    return y


def matmul(x: jax.Array, w: jax.Array, n_in: int = 1) -> jax.Array:
    """x [..., *in] . w [*in, *out] -> [..., *out]: `jnp.tensordot(x, w, n_in)`, differentiated on CPU by
    `_cpu_matmul`'s rule (accelerator compilers choose their own operand layouts)."""
    if jax.default_backend() == "cpu":
        return _cpu_matmul(x, w, n_in)
    return jnp.tensordot(x, w, axes=n_in)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cpu_matmul(x: jax.Array, w: jax.Array, n_in: int) -> jax.Array:
    """`tensordot(x, w, n_in)` whose weight gradient transposes the smaller of x and dy in a copy of its own.

    Left to itself, XLA:CPU makes the operands of that matmul contiguous by writing the output gradient
    transposed, inside the fusion that computes it (for the MLP, the SwiGLU backward at [F, tokens]); those
    strided writes were a quarter of a demo SFT step. Transposing the smaller of x and dy in a copy of its own,
    behind an optimization barrier so the compiler cannot fold it back into the matmul, runs an MLP's forward
    and backward 1.6-1.8x faster (tokens x 192 x 512 and tokens x 512 x 1376, float32, 2 cores).
    """
    return jnp.tensordot(x, w, axes=n_in)


def _cpu_matmul_fwd(x, w, n_in):
    return _cpu_matmul(x, w, n_in), (x, w)


def _cpu_matmul_bwd(n_in, residuals, dy):
    x, w = residuals
    out_dims = tuple(range(n_in, w.ndim))
    dx = jnp.tensordot(dy, w, axes=(tuple(range(dy.ndim - len(out_dims), dy.ndim)), out_dims))
    k, o = math.prod(w.shape[:n_in]), math.prod(w.shape[n_in:])
    x2, dy2 = x.reshape(-1, k), dy.reshape(-1, o)  # [N, K], [N, O]
    if k <= o:
        dw = jnp.dot(jax.lax.optimization_barrier(x2.T), dy2, preferred_element_type=jnp.float32)
    else:  # transpose the smaller operand: dW^T = dy^T . x, then the weight-sized result
        dw = jnp.dot(jax.lax.optimization_barrier(dy2.T), x2, preferred_element_type=jnp.float32).T
    return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)


_cpu_matmul.defvjp(_cpu_matmul_fwd, _cpu_matmul_bwd)


def first_argmax(x: jax.Array) -> jax.Array:
    """x [..., V] -> int32 [...]: the first index of the maximum over the last axis, as `jnp.argmax` wherever
    the row holds no NaN (a row with NaN gives V - 1).

    Two plain reductions (the max, then the smallest index holding it) instead of argmax's variadic reduce,
    which XLA:CPU runs 3-4x slower over a 32000-token vocabulary (about a millisecond per decode step at
    batch 16, and 150 ms of an SFT step's accuracy metric at 4 x 512 tokens). No gradient flows through it.
    """
    x = jax.lax.stop_gradient(x)
    vocab = x.shape[-1]
    top = jnp.max(x, axis=-1, keepdims=True)
    index = jnp.min(jnp.where(x == top, jnp.arange(vocab, dtype=jnp.int32), vocab), axis=-1)
    return jnp.minimum(index, vocab - 1).astype(jnp.int32)


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


ATTENTION_IMPLS = ("xla", "dot_product", "cudnn", "splash")
_IMPL_BACKEND = {"cudnn": "gpu", "splash": "tpu"}
_JAX_IMPLEMENTATION = {"dot_product": "xla", "cudnn": "cudnn"}


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, impl: str = "xla",
              kv_heads_first: bool = False) -> jax.Array:
    """Grouped-query attention.

    q [B, T, H, Dh], k/v [B, S, KVH, Dh] (with `kv_heads_first`: [B, KVH, S, Dh], the KV-cache layout) with H a
    multiple of KVH, mask bool [B, T, S] (True = attend) or None. Returns [B, T, H, Dh].

    impl (`LlavaConfig.attention_impl`):
      "xla"          einsum scores, float32 softmax, einsum values; XLA fuses what it can. Rows with no
                     allowed key get uniform weights (finite, never NaN); they only occur at padded queries.
      "dot_product"  `jax.nn.dot_product_attention(implementation="xla")`, any backend.
      "cudnn"        `jax.nn.dot_product_attention(implementation="cudnn")`: cuDNN's fused kernel, GPU only,
                     float16/bfloat16 inputs.
      "splash"       the Pallas TPU splash-attention kernel (`splash_attention` below), TPU only; it reads the
                     mask as causal + key padding, the mask `llama.causal_mask` builds.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl={impl!r}: expected one of {ATTENTION_IMPLS}")
    needs = _IMPL_BACKEND.get(impl)
    if needs is not None and jax.default_backend() != needs:
        raise ValueError(f"attention_impl={impl!r} needs a {needs.upper()} backend; this process runs on "
                         f"{jax.default_backend()!r}. Use 'xla' or 'dot_product' there.")
    if impl != "xla":
        if kv_heads_first:
            k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
        if impl == "splash":
            return splash_attention(q, k, v, mask)
        return jax.nn.dot_product_attention(
            q, k, v, mask=None if mask is None else mask[:, None], implementation=_JAX_IMPLEMENTATION[impl]
        ).astype(q.dtype)
    if not kv_heads_first:
        return _self_attention(q, k, v, mask)
    b, t, h, d = q.shape
    kvh = k.shape[1]
    # Reading a KV cache [B, KVH, S, Dh]: grouped, so the cache is read once per KV head, never repeated.
    kv = "bksd"
    qg = q.reshape(b, t, kvh, h // kvh, d)
    scores = jnp.einsum(f"btkgd,{kv}->bkgts", qg, k, preferred_element_type=jnp.float32) * (d ** -0.5)
    if mask is not None:
        scores = jnp.where(mask[:, None, None, :, :], scores, _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum(f"bkgts,{kv}->btkgd", probs, v)
    return out.reshape(b, t, h, d)


@jax.checkpoint
def _self_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """`attention(impl="xla")` over whole sequences (training, scoring, prefill): q [B, T, H, Dh], k/v
    [B, T, KVH, Dh] -> [B, T, H, Dh].

    One key/value head per query head and 4-D einsums: XLA:CPU runs this 1.6-1.9x faster forward + backward
    than grouped 5-D einsums; the repeat is a no-op for multi-head attention (Vicuna / LLaMA-2 7B and 13B).
    Checkpointed: the backward pass recomputes the [B, H, T, T] probabilities from q and k instead of keeping
    every layer's (`small` SFT step, 8 x 512 tokens on 2 CPU cores: peak memory 5.3 -> 4.3 GB, and a few
    percent faster, since zero-filling and writing the stored probabilities cost more than recomputing them).
    """
    h, d, kvh = q.shape[2], q.shape[3], k.shape[2]
    k, v = (jnp.repeat(x, h // kvh, axis=2) if h != kvh else x for x in (k, v))
    scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) * (d ** -0.5)
    if mask is not None:
        scores = jnp.where(mask[:, None, :, :], scores, _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhts,bshd->bthd", probs, v)


SPLASH_BLOCK = 128


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
                     interpret: bool = False) -> jax.Array:
    """Causal self-attention with key padding through the Pallas TPU splash kernel.

    q [B, T, H, Dh], k/v [B, T, KVH, Dh]; mask bool [B, T, T] = causal & key-valid (or None: causal only).
    Key validity becomes the kernel's segment ids (padding = segment 0, real tokens = 1), so rows of real
    queries equal `attention(impl="xla")`; rows of padded queries differ (they attend to other padding) and
    are never read. T is padded to a multiple of SPLASH_BLOCK. `interpret=True` runs the kernel in the Pallas
    interpreter (any backend; how the tests check it on CPU).
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    b, t, h, d = q.shape
    kvh = k.shape[2]
    if k.shape[1] != t:
        raise ValueError(f"splash attention is for self-attention: {t} queries but {k.shape[1]} keys")
    groups = h // kvh
    valid = jnp.ones((b, t), bool) if mask is None else jnp.any(mask, axis=1)
    tp = -(-t // SPLASH_BLOCK) * SPLASH_BLOCK
    pad = ((0, 0), (0, tp - t), (0, 0), (0, 0))
    # [B, KVH, G, Tp, Dh] queries (pre-scaled: the kernel does not scale), [B, KVH, Tp, Dh] keys and values.
    qg = jnp.pad(q * (d ** -0.5), pad).reshape(b, tp, kvh, groups, d).transpose(0, 2, 3, 1, 4)
    kg, vg = (jnp.pad(x, pad).transpose(0, 2, 1, 3) for x in (k, v))
    segments = jnp.pad(valid.astype(jnp.int32), ((0, 0), (0, tp - t)))
    blocks = sa.BlockSizes(block_q=SPLASH_BLOCK, block_kv=SPLASH_BLOCK, block_kv_compute=SPLASH_BLOCK,
                           block_q_dkv=SPLASH_BLOCK, block_kv_dkv=SPLASH_BLOCK,
                           block_kv_dkv_compute=SPLASH_BLOCK, block_q_dq=SPLASH_BLOCK, block_kv_dq=SPLASH_BLOCK)
    kernel = sa.make_splash_mqa_single_device(sa.MultiHeadMask([sa.CausalMask((tp, tp))] * groups),
                                              block_sizes=blocks, interpret=interpret)
    # One MQA kernel call per (row, KV head): its G query heads share that head's keys and values.
    per_head = lambda qh, kh, vh, seg: kernel(qh, kh, vh, segment_ids=sa.SegmentIds(seg, seg))
    per_row = lambda qr, kr, vr, seg: jax.vmap(per_head, in_axes=(0, 0, 0, None))(qr, kr, vr, seg)
    out = jax.vmap(per_row)(qg, kg, vg, segments)  # [B, KVH, G, Tp, Dh]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, tp, h, d)[:, :t].astype(q.dtype)


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

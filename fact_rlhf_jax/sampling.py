"""The one sampler: jitted prefill + `lax.while_loop` decode over a preallocated KV cache.

Prompts are left-padded to a bucket length so that new prompt lengths reuse compiled code. Each row
stops at EOS or any extra stop id; after stopping it emits `pad_id` with log-prob 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fact_rlhf_jax.models import layers as L
from fact_rlhf_jax.models import llama, llava
from fact_rlhf_jax.models.config import LlavaConfig

DEFAULT_BUCKETS = (32, 64, 96, 128, 192, 256, 384, 512, 640, 768, 1024, 1536, 2048, 3072, 4096)


class GenerateOutput(NamedTuple):
    tokens: jax.Array    # int32 [B, N]
    logprobs: jax.Array  # float32 [B, N]: log p(token) under softmax(logits / temperature) (plain logits if greedy)
    lengths: jax.Array   # int32 [B]: tokens generated, the stop token included


def bucket_length(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    for b in buckets:
        if b >= n:
            return b
    return n


def left_pad(input_ids: np.ndarray, attention_mask: np.ndarray, length: int, pad_id: int):
    """Pads (or re-pads) a left-padded batch to `length` columns on the left."""
    b, t = input_ids.shape
    if t > length:
        raise ValueError(f"prompt of {t} tokens does not fit bucket {length}")
    ids = np.full((b, length), pad_id, np.int32)
    mask = np.zeros((b, length), np.int32)
    ids[:, length - t:] = input_ids
    mask[:, length - t:] = attention_mask
    return ids, mask


def left_pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int, rows: int | None = None):
    """Ragged prompts -> left-padded (input_ids, attention_mask) int32 [rows, max_len].

    With `rows` > len(prompts), the extra rows repeat the last prompt (a fixed batch shape, one compile).
    """
    if not prompts:
        raise ValueError("no prompts")
    rows = len(prompts) if rows is None else rows
    t = max(len(p) for p in prompts)
    ids = np.full((rows, t), pad_id, np.int32)
    mask = np.zeros((rows, t), np.int32)
    for i in range(rows):
        p = prompts[min(i, len(prompts) - 1)]
        ids[i, t - len(p):] = p
        mask[i, t - len(p):] = 1
    return ids, mask


def _filter_logits(logits: jax.Array, top_p: jax.Array, top_k: int) -> jax.Array:
    """logits [B, V] float32 -> logits with tokens outside top-k / the top-p nucleus set to -inf."""
    neg = jnp.finfo(jnp.float32).min
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
    exclusive_cum = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = exclusive_cum < top_p
    cutoff = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, neg, logits)


def _select(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int,
            greedy: bool, filtered: bool):
    """Returns (token [B], logprob [B]) for one decode step.

    `greedy` and `filtered` are static so that greedy decoding and plain sampling never pay for the
    [B, V] sort of the top-p/top-k filter.
    """
    scaled = logits if greedy else logits / temperature
    if greedy:
        token = L.first_argmax(scaled)
    else:
        candidates = _filter_logits(scaled, top_p, top_k) if filtered else scaled
        # = jax.random.categorical(key, candidates) (the Gumbel-max trick, the same draws), with the fast argmax
        token = L.first_argmax(candidates + jax.random.gumbel(key, candidates.shape, candidates.dtype))
    # log_softmax(scaled)[token] without writing the [B, V] log-probabilities
    shifted = scaled - jax.lax.stop_gradient(jnp.max(scaled, axis=-1, keepdims=True))
    chosen = jnp.take_along_axis(shifted, token[:, None], axis=-1)[:, 0]
    return token, chosen - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "top_k", "greedy", "filtered", "stop_ids",
                                             "pad_id"))
def sample_tokens(params, lora, input_ids, attention_mask, pixel_values, rng, temperature, top_p, lora_scale, *,
                  cfg: LlavaConfig, max_new_tokens: int, top_k: int, greedy: bool, filtered: bool,
                  stop_ids: tuple[int, ...], pad_id: int) -> GenerateOutput:
    """The jitted sampler on device arrays (e.g. a sharded global batch): left-padded input_ids / attention_mask
    [B, P], pixel_values [B, 3, H, W] or None; temperature, top_p, lora_scale as f32 scalars. `generate` below is
    the host-side entry point (numpy prompts, length buckets)."""
    b, p = input_ids.shape
    n = max_new_tokens
    s = p + n
    dtype = jnp.dtype(cfg.compute_dtype)
    llm, llm_lora = params["llm"], None if lora is None else lora.get("llm")

    # Prefill: the whole (left-padded) prompt, its keys and values at cache slots [0, p).
    kv_valid = jnp.concatenate([attention_mask > 0, jnp.zeros((b, n), bool)], axis=1)  # [B, S]
    positions = llama.positions_from_mask(attention_mask)
    x = llava.embed_inputs(params, cfg, input_ids, pixel_values)
    hidden, cache = llama.prefill(llm, cfg.text, x, positions, llama.causal_mask(attention_mask), s, lora=llm_lora,
                                  lora_scale=lora_scale, attention_impl=cfg.attention_impl, dtype=dtype)

    # Decode: per-layer weights, sliced once here rather than in every step (see `llama.decode`).
    llm = {**llm, "layers": llama.unstack_layers(llm["layers"], cfg.text.num_layers)}
    if llm_lora is not None:
        llm_lora = {**llm_lora, "layers": llama.unstack_layers(llm_lora["layers"], cfg.text.num_layers)}
    decode = functools.partial(llama.decode, llm, cfg.text, lora=llm_lora, lora_scale=lora_scale,
                               attention_impl=cfg.attention_impl)
    logits = llama.lm_logits(params["llm"], hidden[:, -1:])[:, 0]
    next_pos = jnp.sum(attention_mask, axis=1).astype(jnp.int32)  # [B]: RoPE position of the first new token

    stop = jnp.asarray(stop_ids, jnp.int32)
    select = functools.partial(_select, top_k=top_k, greedy=greedy, filtered=filtered)
    rng, key = jax.random.split(rng)
    token, logp = select(logits, key, temperature, top_p)
    tokens = jnp.full((b, n), pad_id, jnp.int32).at[:, 0].set(token)
    logprobs = jnp.zeros((b, n), jnp.float32).at[:, 0].set(logp)
    done = jnp.isin(token, stop)

    def cond(state):
        i, _, _, done, *_ = state
        return (i < n) & ~jnp.all(done)

    def body(state):
        i, tokens, logprobs, done, cache, kv_valid, rng = state
        prev = tokens[:, i - 1]
        slot = p + i - 1
        kv_valid = kv_valid.at[:, slot].set(True)
        x = llama.embed_tokens(params["llm"], prev[:, None], dtype)
        pos = (next_pos + i - 1)[:, None]
        hidden, cache = decode(x, pos, kv_valid[:, None, :], cache=cache, cache_index=slot)
        logits = llama.lm_logits(params["llm"], hidden)[:, 0]
        rng, key = jax.random.split(rng)
        token, logp = select(logits, key, temperature, top_p)
        token = jnp.where(done, pad_id, token)
        logp = jnp.where(done, 0.0, logp)
        tokens = tokens.at[:, i].set(token)
        logprobs = logprobs.at[:, i].set(logp)
        done = done | jnp.isin(token, stop)
        return i + 1, tokens, logprobs, done, cache, kv_valid, rng

    state = (jnp.int32(1), tokens, logprobs, done, cache, kv_valid, rng)
    _, tokens, logprobs, done, *_ = jax.lax.while_loop(cond, body, state)
    is_stop = jnp.isin(tokens, stop)
    first_stop = jnp.where(jnp.any(is_stop, axis=1), jnp.argmax(is_stop, axis=1) + 1, n)
    return GenerateOutput(tokens, logprobs, first_stop.astype(jnp.int32))


def generate(params: dict, cfg: LlavaConfig, input_ids, attention_mask, pixel_values, *, rng: jax.Array | None = None,
             max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
             eos_id: int = 2, stop_ids: Sequence[int] = (), pad_id: int = 0, lora: dict | None = None,
             lora_scale: float = 1.0, buckets: Sequence[int] | None = DEFAULT_BUCKETS) -> GenerateOutput:
    """Samples continuations of left-padded prompts.

    input_ids / attention_mask [B, P] (left-padded), pixel_values [B, 3, H, W] or None.
    temperature 0 is greedy; top_k 0 and top_p 1 disable those filters. With `buckets`, P is padded up to
    the next bucket so that different prompt lengths share one compiled program.
    """
    input_ids = np.asarray(input_ids, np.int32)
    attention_mask = np.asarray(attention_mask, np.int32)
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ValueError(f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must be [batch, time]")
    if np.any(attention_mask[:, -1] == 0):
        raise ValueError("prompts must be left-padded: the last column of attention_mask has a 0")
    if buckets:
        input_ids, attention_mask = left_pad(input_ids, attention_mask, bucket_length(input_ids.shape[1], buckets), pad_id)
    rng = jax.random.key(0) if rng is None else rng
    stops = tuple(sorted({int(eos_id), *map(int, stop_ids)}))
    return sample_tokens(params, lora, input_ids, attention_mask, pixel_values, rng,
                     jnp.float32(temperature), jnp.float32(top_p), jnp.float32(lora_scale),
                     cfg=cfg, max_new_tokens=int(max_new_tokens), top_k=int(top_k), greedy=temperature <= 0.0,
                     filtered=top_k > 0 or top_p < 1.0, stop_ids=stops, pad_id=int(pad_id))

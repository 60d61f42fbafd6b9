"""Forward passes over a rollout: policy and reference log-probs, per-token values, reward-model scores.

Sequences are `query (left-padded) ⊕ response (right-padded, pads after the stop token)`, and for the reward
model `reward query ⊕ response ⊕ instruction (right-padded)`. Pads in the middle are harmless: keys at pad
positions are masked and positions are pad-aware (`cumsum(mask) - 1`), so every real token sees exactly the
sequence with the pads removed (the reference strips and re-pads instead).

Shapes: queries [B, P], responses [B, N], response_mask [B, N], pixels [B, 3, S, S], instruction [B, I].
Response token t is predicted by the hidden state at P + t - 1; the value of t is read there too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import heads, llama, llava, reward
from fact_rlhf_jax.models.config import LlavaConfig


def response_mask(lengths: jax.Array, n: int, valid: jax.Array | None = None) -> jax.Array:
    """float32 [B, N]: 1 on the first `lengths` tokens of each response (stop token included), 0 on filler rows."""
    mask = (jnp.arange(n)[None, :] < lengths[:, None]).astype(jnp.float32)
    return mask if valid is None else mask * valid[:, None].astype(jnp.float32)


def _response_hidden(base, cfg, adapter, lora_scale, query_ids, query_mask, pixels, responses, resp_mask):
    """Final hidden states at the positions that predict each response token: [B, N, D]."""
    p, n = query_ids.shape[1], responses.shape[1]
    ids = jnp.concatenate([query_ids, responses], axis=1)
    mask = jnp.concatenate([query_mask, resp_mask.astype(query_mask.dtype)], axis=1)
    hidden = llava.hidden_states(base, cfg, ids, pixels, mask, lora=adapter, lora_scale=lora_scale)
    return jax.lax.dynamic_slice_in_dim(hidden, p - 1, n, axis=1)


def token_logprobs(base: dict, cfg: LlavaConfig, adapter: dict | None, lora_scale, query_ids, query_mask, pixels,
                   responses, resp_mask, temperature) -> tuple[jax.Array, jax.Array]:
    """(log pi(y_t | ...) under softmax(logits / temperature), entropy of that distribution), float32 [B, N],
    0 off the mask."""
    h = _response_hidden(base, cfg, adapter, lora_scale, query_ids, query_mask, pixels, responses, resp_mask)
    logits = llama.lm_logits(base["llm"], h) / temperature
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_all, responses[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    m = resp_mask.astype(jnp.float32)
    return logp * m, entropy * m


def token_values(base: dict, cfg: LlavaConfig, adapter: dict, head: dict, lora_scale, query_ids, query_mask, pixels,
                 responses, resp_mask) -> jax.Array:
    """V(state before response token t), float32 [B, N] (computed on every slot; callers mask)."""
    h = _response_hidden(base, cfg, adapter, lora_scale, query_ids, query_mask, pixels, responses, resp_mask)
    return heads.apply(head, h)


def reward_scores(base: dict, cfg: LlavaConfig, adapter: dict, head: dict, lora_scale, query_ids, query_mask, pixels,
                  responses, resp_mask, instruction_ids, instruction_mask) -> jax.Array:
    """The reward model's score of each prompt + response + evaluation instruction, float32 [B]."""
    ids = jnp.concatenate([query_ids, responses, instruction_ids], axis=1)
    mask = jnp.concatenate([query_mask, resp_mask.astype(query_mask.dtype), instruction_mask], axis=1)
    return reward.scores(base, cfg, ids, pixels, mask, adapter=adapter, head=head, lora_scale=lora_scale)


def has_token(tokens: jax.Array, resp_mask: jax.Array, token_id: int) -> jax.Array:
    """bool [B]: whether `token_id` occurs among the response tokens."""
    return jnp.any((tokens == token_id) & (resp_mask > 0), axis=1)


def in_chunks(fn, arrays: dict, chunk: int):
    """Applies `fn(dict of [c, ...] arrays) -> pytree of [c, ...]` over row chunks of size `chunk` with `lax.map`
    (rows i, i + B/c, ... form a chunk, so a batch sharded over devices stays local); chunk >= B: one call."""
    b = jax.tree.leaves(arrays)[0].shape[0]
    if chunk <= 0 or chunk >= b:
        return fn(arrays)
    if b % chunk:
        raise ValueError(f"{b} rollout rows do not split into chunks of {chunk}")
    k = b // chunk
    split = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(chunk, k, *x.shape[1:]), 0, 1), arrays)
    out = jax.lax.map(fn, split)
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(b, *x.shape[2:]), out)


def sample_in_chunks(sample, rows: dict, rng: jax.Array, chunk: int):
    """`sample(rows, key) -> pytree of [c, ...]` called once per chunk of `chunk` rows, outside any jit, so every
    call runs the same compiled sampler and only one chunk's KV cache is live at a time (a `lax.map` inside one
    program lets the compiler keep more). Chunk j holds rows j, j + B/c, ... (local to each device of a batch
    sharded in blocks) and gets key j of `jax.random.split(rng, B / chunk)`; chunk >= B: one call with `rng`."""
    b = jax.tree.leaves(rows)[0].shape[0]
    if chunk <= 0 or chunk >= b:
        return sample(rows, rng)
    if b % chunk:
        raise ValueError(f"{b} prompts do not split into sampler chunks of {chunk}")
    k = b // chunk
    outs = [sample(jax.tree.map(lambda x: x[j::k], rows), key) for j, key in enumerate(jax.random.split(rng, k))]
    return jax.tree.map(lambda *xs: jnp.stack(xs, axis=1).reshape(b, *xs[0].shape[1:]), *outs)


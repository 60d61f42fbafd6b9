"""Reward (and value) scores: a LLaVA with a LoRA adapter, read by a scalar head.

The score of a sequence is `head(final-norm hidden state at its last real token)`, float32, under left or
right padding (the reference reads position -1 of left-padded inputs, the same token).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import heads, llava
from fact_rlhf_jax.models.config import LlavaConfig


def scores(base: dict, cfg: LlavaConfig, input_ids: jax.Array, pixel_values: jax.Array | None,
           attention_mask: jax.Array, *, adapter: dict | None, head: dict, lora_scale: float) -> jax.Array:
    """input_ids / attention_mask [B, T], pixel_values [B, 3, H, W] -> float32 [B]."""
    hidden = llava.hidden_states(base, cfg, input_ids, pixel_values, attention_mask, lora=adapter,
                                 lora_scale=lora_scale)
    return heads.apply(head, heads.at_last_token(hidden, attention_mask))


def pair_scores(base: dict, cfg: LlavaConfig, input_ids: jax.Array, pixel_values: jax.Array,
                attention_mask: jax.Array, *, adapter: dict | None, head: dict,
                lora_scale: float) -> tuple[jax.Array, jax.Array]:
    """input_ids / attention_mask [B, 2, T] (both candidates of a pair share one image [B, 3, H, W])
    -> (scores of candidate 1, scores of candidate 2), float32 [B] each."""
    b, two, t = input_ids.shape
    pixels = jnp.repeat(pixel_values, two, axis=0)
    flat = scores(base, cfg, input_ids.reshape(b * two, t), pixels, attention_mask.reshape(b * two, t),
                  adapter=adapter, head=head, lora_scale=lora_scale).reshape(b, two)
    return flat[:, 0], flat[:, 1]

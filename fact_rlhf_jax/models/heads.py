"""Scalar heads on the decoder's final hidden states: the reward head and the value head.

A head is `{"w": float32 [D], "b": float32 []}` and computes `h @ w + b` in float32 (the reference's
`nn.Linear(D, 1)` with `weight` [1, D] squeezed). The reward head starts like torch's default Linear weight
(uniform in +-1/sqrt(D)) with a zero bias; the value head starts all zeros.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models.params import ParamSpec, axes_from_specs, init_from_specs, shapes_from_specs, zeros


def _torch_linear_weight(d: int):
    bound = 1.0 / math.sqrt(d)
    return lambda key, shape, dtype: jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


def specs(hidden_size: int, *, zero: bool = False) -> dict:
    return {"w": ParamSpec((hidden_size,), ("embed",), zeros if zero else _torch_linear_weight(hidden_size)),
            "b": ParamSpec((), (), zeros)}


def init(hidden_size: int, rng: jax.Array, *, zero: bool = False) -> dict:
    """Reward head (`zero=False`) or value head (`zero=True`), float32."""
    return init_from_specs(specs(hidden_size, zero=zero), rng, jnp.float32)


def param_axes() -> dict:
    return axes_from_specs(specs(1))


def param_shapes(hidden_size: int) -> dict:
    return shapes_from_specs(specs(hidden_size), jnp.float32)


def apply(head: dict, hidden: jax.Array) -> jax.Array:
    """hidden [..., D] -> float32 [...]."""
    h = hidden.astype(jnp.float32)
    return jnp.einsum("...d,d->...", h, head["w"].astype(jnp.float32)) + head["b"].astype(jnp.float32)


def last_token_index(attention_mask: jax.Array) -> jax.Array:
    """[B, T] (1 = real token) -> int32 [B]: position of the last real token, under left or right padding."""
    t = attention_mask.shape[1]
    return (t - 1 - jnp.argmax(jnp.flip(attention_mask > 0, axis=1), axis=1)).astype(jnp.int32)


def at_last_token(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """hidden [B, T, D] -> [B, D] at each row's last real token."""
    idx = last_token_index(attention_mask)
    return jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0]

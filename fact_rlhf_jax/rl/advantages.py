"""Generalised advantage estimation and whitening over masked [batch, time] arrays.

GAE runs as a reverse `lax.scan` over time; rewards and values are zero off the mask, so a sequence ends
at its last response token (with the reference's all-slots mask the scan runs over every slot).
Whitening uses statistics of the masked entries of the whole global batch: under `jit` over a sharded
batch the reductions are global, so every host sees the same mean and standard deviation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """rewards, values, mask [B, N] -> (advantages, returns) [B, N], zero off the mask.

    delta_t = r_t + gamma * V_{t+1} - V_t (V_N = 0);  A_t = delta_t + gamma * lam * A_{t+1};  returns = A + V.
    """
    m = mask.astype(jnp.float32)
    r = rewards.astype(jnp.float32) * m
    v = values.astype(jnp.float32) * m
    next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
    delta = r + gamma * next_v - v

    def back(carry, d):
        a = d + gamma * lam * carry
        return a, a

    _, adv = jax.lax.scan(back, jnp.zeros_like(delta[:, 0]), delta.T, reverse=True)
    adv = adv.T * m
    return adv, (adv + v) * m


def masked_mean_std(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and (biased) standard deviation of the masked entries of x."""
    m = mask.astype(jnp.float32)
    n = jnp.maximum(m.sum(), 1.0)
    mean = (x * m).sum() / n
    var = (jnp.square(x - mean) * m).sum() / n
    return mean, jnp.sqrt(var)


def whiten(x: jax.Array, mask: jax.Array, *, shift_mean: bool = True, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / (std + eps) over the masked entries (the mean added back when not `shift_mean`); 0 off the mask."""
    mean, std = masked_mean_std(x, mask)
    out = (x - mean) / (std + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.astype(out.dtype)

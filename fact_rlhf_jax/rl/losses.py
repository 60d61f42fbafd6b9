"""PPO's clipped policy and value losses as masked sums (units: response tokens of the minibatch).

    ratio = exp(logp - old_logp)
    pg    = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))
    v_c   = clip(V, V_old - eps_v, V_old + eps_v)
    vf    = 0.5 * max((V - R)^2, (v_c - R)^2)
    loss  = mean(pg) + vf_coef * mean(vf)            (means over the masked tokens)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fact_rlhf_jax.train.stage import LossTerms


def ppo_loss_terms(logprobs, old_logprobs, advantages, values, old_values, returns, mask, entropy, *,
                   cliprange: float = 0.2, cliprange_value: float = 0.2, vf_coef: float = 0.1) -> LossTerms:
    """All arrays [B, N]; `entropy` is the policy's per-token entropy (reported only)."""
    m = mask.astype(jnp.float32)
    n = m.sum()
    f32 = lambda x: x.astype(jnp.float32)
    log_ratio = f32(logprobs) - f32(old_logprobs)
    ratio = jnp.exp(log_ratio)
    adv = f32(advantages)
    pg1 = -adv * ratio
    pg2 = -adv * jnp.clip(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg = jnp.maximum(pg1, pg2)
    v, v_old, ret = f32(values), f32(old_values), f32(returns)
    v_clipped = jnp.clip(v, v_old - cliprange_value, v_old + cliprange_value)
    vf1, vf2 = jnp.square(v - ret), jnp.square(v_clipped - ret)
    vf = 0.5 * jnp.maximum(vf1, vf2)
    s = lambda x: (x * m).sum()
    metrics = {
        "policy_loss": (s(pg), n),
        "value_loss": (s(vf), n),
        "clip_frac": (s((pg2 > pg1).astype(jnp.float32)), n),
        "value_clip_frac": (s((vf2 > vf1).astype(jnp.float32)), n),
        "approx_kl": (s(0.5 * jnp.square(log_ratio)), n),
        "entropy": (s(f32(entropy)), n),
    }
    return LossTerms(total=s(pg) + vf_coef * s(vf), weight=n, metrics=metrics)

"""Learning-rate schedules and the optimizer (optax AdamW + global-norm clipping).

Config group `optim` (see `default_optim_config`):
  lr, schedule ("cosine" | "linear" | "constant"), warmup_ratio or warmup_steps,
  end_lr_ratio, weight_decay, b1, b2, eps, clip_norm (0 disables), no_decay.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax


def default_optim_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            lr=2e-5,
            schedule="cosine",
            warmup_ratio=0.03,  # used when warmup_steps < 0
            warmup_steps=-1,
            end_lr_ratio=0.0,
            weight_decay=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            clip_norm=1.0,
            # parameter paths (re.fullmatch) without weight decay: norms, biases, LayerNorm scales
            no_decay=(".*norm.*", ".*/bias", ".*/scale", "(.*/)?(vision|projector)/(.*/)?b"),
        )
    )


def warmup_steps(cfg: ml_collections.ConfigDict, total_steps: int) -> int:
    """`warmup_steps` if set, else ceil(warmup_ratio * total_steps) (the HF Trainer rule)."""
    if cfg.get("warmup_steps", -1) is not None and cfg.get("warmup_steps", -1) >= 0:
        return int(cfg.warmup_steps)
    return int(math.ceil(float(cfg.get("warmup_ratio", 0.0)) * total_steps))


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine / linear decay to `end_lr_ratio * lr` at `total_steps`, or constant.

    Step `i` (0-based, the number of updates already applied) gets `schedule(i)`, as in
    HF `get_cosine_schedule_with_warmup`: the first update runs at lr 0 when warmup > 0.
    """
    peak = float(cfg.lr)
    warm = warmup_steps(cfg, total_steps)
    end = peak * float(cfg.get("end_lr_ratio", 0.0))
    kind = cfg.get("schedule", "cosine")
    decay_steps = max(total_steps - warm, 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm_lr = peak * step / max(warm, 1)
        progress = jnp.clip((step - warm) / decay_steps, 0.0, 1.0)
        if kind == "cosine":
            decayed = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        elif kind == "linear":
            decayed = peak + (end - peak) * progress
        elif kind == "constant":
            decayed = jnp.full_like(progress, peak)
        else:
            raise ValueError(f"optim.schedule: unknown schedule {kind!r}; expected cosine, linear or constant")
        return jnp.where(step < warm, warm_lr, decayed)

    return schedule


def make_decay_mask(no_decay: tuple[str, ...]):
    """`params -> bool tree`: True where weight decay applies (path matches none of `no_decay`).

    By path rather than by rank: decoder layers are stacked, so norm scales are 2-D too.
    """
    import re

    from fact_rlhf_jax.models.params import path_str

    patterns = [re.compile(p) for p in no_decay]

    def mask(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: not any(p.fullmatch(path_str(path)) for p in patterns), params)

    return mask


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int,
                   updates_per_step: int = 1) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (decoupled weight decay) after global-norm clipping. Returns (optimizer, schedule).

    `schedule(i)` is the learning rate of loop step i. With `updates_per_step` > 1 (PPO: several minibatch
    updates per rollout) the schedule advances once per loop step: update u uses `schedule(u // updates_per_step)`.
    """
    schedule = make_schedule(cfg, total_steps)
    k = int(updates_per_step)
    per_update = schedule if k == 1 else (lambda count: schedule(count // k))
    decay_mask = make_decay_mask(tuple(cfg.get("no_decay", ()) or ()))
    parts = []
    if cfg.get("clip_norm", 0.0) and cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(cfg.clip_norm)))
    parts.append(
        optax.adamw(
            learning_rate=per_update,
            b1=float(cfg.b1),
            b2=float(cfg.b2),
            eps=float(cfg.eps),
            weight_decay=float(cfg.weight_decay),
            mask=decay_mask,
        )
    )
    return optax.chain(*parts), schedule

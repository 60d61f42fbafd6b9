"""The jitted, sharded, state-donating train step and the eval step, shared by every stage.

Train state (a plain dict, so orbax saves and restores it as is):
  step       int32 []       updates applied so far
  params     the stage's parameter tree (trainable and frozen leaves)
  opt_state  optimizer state over the trainable leaves only
  rng        uint32 [2]     advanced once per step

Frozen weights (`Stage.frozen_params`) are a separate, non-donated argument: `step(state, batch, frozen)`;
the loss sees `with_frozen(params, frozen)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fact_rlhf_jax import sharding as shd
from fact_rlhf_jax.train.stage import LossTerms
from fact_rlhf_jax.train.trainable import merge, partition

LossFn = Callable[[Any, dict, jax.Array], LossTerms]


def split_microbatches(batch: dict, num_micro: int) -> dict:
    """[B, ...] -> [num_micro, B / num_micro, ...]; micro-batch i holds rows i, i + k, i + 2k, ...

    Strided rows keep each device's rows on that device when the batch dim is sharded.
    """

    def split(x):
        if x.shape[0] % num_micro:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {num_micro} micro-batches")
        x = x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, batch)


def _constrain_micro(batch: dict, mesh: Mesh | None) -> dict:
    if mesh is None or mesh.size == 1:
        return batch

    def c(x):
        spec = shd.batch_sharding(mesh, x.ndim - 1).spec
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(None, *spec)))

    return jax.tree.map(c, batch)


def with_frozen(params: Any, frozen: dict | None) -> Any:
    """The state's params with the frozen weights' top-level keys added (what a stage's loss receives)."""
    if not frozen:
        return params
    clash = set(params) & set(frozen)
    if clash:
        raise ValueError(f"frozen weights reuse parameter keys {sorted(clash)}")
    return {**params, **frozen}


def accumulate_gradients(loss_fn: LossFn, trainable, frozen, batch: dict, rng, num_micro: int, mesh=None,
                         frozen_weights: dict | None = None):
    """Sums (total, weight, metric sums/counts, gradients of total) over `num_micro` micro-batches.

    `frozen` is the non-trainable part of the state's params (`partition`); `frozen_weights` the stage's
    frozen weights held outside the state."""

    def one(micro, key):
        def objective(t):
            terms = loss_fn(with_frozen(merge(t, frozen), frozen_weights), micro, key)
            return terms.total, terms

        (_, terms), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
        return terms, grads

    if num_micro == 1:
        return one(batch, jax.random.fold_in(rng, 0))

    micro = _constrain_micro(split_microbatches(batch, num_micro), mesh)
    first = jax.tree.map(lambda x: x[0], micro)
    terms_shape, grads_shape = jax.eval_shape(one, first, rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (terms_shape, grads_shape))

    def body(carry, xs):
        mb, i = xs
        terms, grads = one(mb, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (terms, grads)), None

    (terms, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(num_micro)))
    return terms, grads


def _safe_div(a, b):
    b = jnp.asarray(b, jnp.float32)
    return jnp.asarray(a, jnp.float32) / jnp.where(b > 0, b, 1.0)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mask: Any,
    *,
    grad_accum: int = 1,
    mesh: Mesh | None = None,
    rules: shd.Rules | None = None,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """`step(state, batch) -> (state, metrics)`, not yet jitted (see `jit_train_step`).

    metrics: loss (total / weight over the whole global batch), grad_norm (before clipping),
    lr (of this update), weight (units in the batch), and each stage metric as sum / count.
    """

    def step(state, batch, frozen_weights=None):
        with shd.use_mesh(mesh, rules) if mesh is not None else _nullcontext():
            rng, step_rng = jax.random.split(state["rng"])
            trainable, frozen = partition(state["params"], mask)
            terms, grads = accumulate_gradients(loss_fn, trainable, frozen, batch, step_rng, grad_accum, mesh,
                                                frozen_weights)
            grads = jax.tree.map(lambda g: _safe_div(g, terms.weight).astype(g.dtype), grads)
            grad_norm = optax.tree.norm(grads)
            updates, opt_state = optimizer.update(grads, state["opt_state"], trainable)
            trainable = optax.apply_updates(trainable, updates)
            new_state = {
                "step": state["step"] + 1,
                "params": merge(trainable, frozen),
                "opt_state": opt_state,
                "rng": rng,
            }
            metrics = {
                "loss": _safe_div(terms.total, terms.weight),
                "grad_norm": grad_norm,
                "lr": schedule(state["step"]),
                "weight": terms.weight,
            }
            for name, (s, c) in terms.metrics.items():
                metrics[name] = _safe_div(s, c)
            return new_state, metrics

    return step


def make_eval_step(eval_loss_fn: Callable[[Any, dict], LossTerms], mesh=None, rules=None):
    """`eval_step(params, batch) -> {name: (sum, count)}` including `loss: (total, weight)`; sum these over batches."""

    def eval_step(params, batch):
        with shd.use_mesh(mesh, rules) if mesh is not None else _nullcontext():
            terms = eval_loss_fn(params, batch)
            out = {"loss": (terms.total, terms.weight)}
            out.update(terms.metrics)
            return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), out)

    return eval_step


def jit_step_with_frozen(step, state_shardings, batch_shardings, mesh: Mesh, frozen_shardings: Any = None):
    """Jits `step` with the state donated: `f(state, batch)`, or `f(state, batch, frozen)` with frozen weights
    (not donated) in `frozen_shardings`."""
    replicated = NamedSharding(mesh, PartitionSpec())
    in_shardings = (state_shardings, batch_shardings)
    if frozen_shardings is not None:
        in_shardings += (frozen_shardings,)
    return jax.jit(step, in_shardings=in_shardings, out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def jit_train_step(step, state_shardings, batch_shardings, mesh: Mesh, frozen: Any = None):
    """Jits `step` with the state donated. With `frozen` weights, returns `f(state, batch)` that passes them
    as the (non-donated) third argument in their own shardings."""
    if frozen is None:
        return jit_step_with_frozen(step, state_shardings, batch_shardings, mesh)
    jitted = jit_step_with_frozen(step, state_shardings, batch_shardings, mesh,
                                  jax.tree.map(lambda x: x.sharding, frozen))
    return lambda state, batch: jitted(state, batch, frozen)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

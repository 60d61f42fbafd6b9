"""Creating the train state directly in its shardings.

`jax.eval_shape(init)` gives shapes; `shardings_for(shapes, axes)` maps the stage's logical
axes to mesh shardings; optimizer-state leaves that mirror a parameter get that parameter's
sharding (`optax.tree_map_params`), everything else (counts, step, rng) is replicated; then
`jax.jit(init, out_shardings=...)` materialises each shard on its device only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fact_rlhf_jax import sharding as shd
from fact_rlhf_jax.train.stage import Stage
from fact_rlhf_jax.train.trainable import partition


def make_init_fn(stage: Stage, optimizer: optax.GradientTransformation, mask: Any):
    """`init(rng) -> state` (pure; jit it with out_shardings)."""

    def init(rng):
        params_rng, state_rng = jax.random.split(rng)
        params = stage.init_params(params_rng)
        trainable, _ = partition(params, mask)
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": optimizer.init(trainable),
            "rng": state_rng,
        }

    return init


def state_shardings(abstract_state: dict, param_axes: Any, optimizer, mask: Any, mesh: Mesh, rules: shd.Rules) -> dict:
    """NamedShardings for every leaf of the state."""
    replicated = NamedSharding(mesh, PartitionSpec())
    params_sh = shd.shardings_for(abstract_state["params"], param_axes, mesh, rules)
    trainable_sh, _ = partition(params_sh, mask)
    opt_sh = optax.tree_map_params(
        optimizer,
        lambda _, sh: sh,
        abstract_state["opt_state"],
        trainable_sh,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: x is None or isinstance(x, NamedSharding),
    )
    return {"step": replicated, "params": params_sh, "opt_state": opt_sh, "rng": replicated}


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def create_state(stage: Stage, optimizer, mask: Any, rng: jax.Array, mesh: Mesh, rules: shd.Rules):
    """Returns (state placed in its shardings, shardings)."""
    init = make_init_fn(stage, optimizer, mask)
    abstract = jax.eval_shape(init, rng)
    shardings = state_shardings(abstract, stage.param_axes(), optimizer, mask, mesh, rules)
    with shd.use_mesh(mesh, rules):
        state = jax.jit(init, out_shardings=shardings)(rng)
    return state, shardings


def abstract_state(stage: Stage, optimizer, mask: Any, rng: jax.Array, mesh: Mesh, rules: shd.Rules):
    """Shapes + shardings of the state without allocating it (restore target)."""
    init = make_init_fn(stage, optimizer, mask)
    abstract = jax.eval_shape(init, rng)
    shardings = state_shardings(abstract, stage.param_axes(), optimizer, mask, mesh, rules)
    return abstract_with_shardings(abstract, shardings), shardings

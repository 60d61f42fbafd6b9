"""Parameter declarations: one table gives every weight its shape, logical axes and initialiser.

Model modules describe their weights as nested dicts of `ParamSpec`; from that single source we derive
the initialised pytree, the logical-axes pytree (for sharding) and the abstract shapes (for
`jax.eval_shape`-free sharding plans and checkpoint restore targets).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One weight: `shape`, logical `axes` (same length), and how to initialise it."""

    shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    init: Initializer

    def __post_init__(self):
        if len(self.shape) != len(self.axes):
            raise ValueError(f"shape {self.shape} and axes {self.axes} differ in rank")


def is_spec(x) -> bool:
    return isinstance(x, ParamSpec)


def normal(stddev: float) -> Initializer:
    return lambda key, shape, dtype: (stddev * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def zeros(key, shape, dtype):
    return jnp.zeros(shape, dtype)


def ones(key, shape, dtype):
    return jnp.ones(shape, dtype)


def path_str(path) -> str:
    """`/`-joined string of a jax key path: ('llm', 'layers', 'attn', 'q') -> 'llm/layers/attn/q'."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def init_from_specs(specs: Any, rng: jax.Array, dtype) -> Any:
    """Initialises every spec with a key derived from its path, so adding a weight never reshuffles others."""

    def make(path, spec: ParamSpec):
        key = jax.random.fold_in(rng, zlib.crc32(path_str(path).encode()) & 0x7FFFFFFF)
        return spec.init(key, spec.shape, dtype)

    return jax.tree_util.tree_map_with_path(make, specs, is_leaf=is_spec)


def axes_from_specs(specs: Any) -> Any:
    return jax.tree.map(lambda s: s.axes, specs, is_leaf=is_spec)


def shapes_from_specs(specs: Any, dtype) -> Any:
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.dtype(dtype)), specs, is_leaf=is_spec)


def count(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))

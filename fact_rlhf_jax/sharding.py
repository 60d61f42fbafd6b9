"""The one sharding vocabulary of the project.

Weights and activations name their dimensions with *logical* axes (`embed`, `mlp`,
`heads`, `vocab`, `batch`, ...). A rules table maps each logical axis to zero or more
*mesh* axes (`data`, `fsdp`, `tensor`). Everything that places data on devices goes
through `logical_to_spec` / `logical_sharding` / `shardings_for`, so changing the
parallelism layout means editing the rules table in a config, nothing else.

Mesh axes:
  data    pure data parallelism (params replicated across it)
  fsdp    data parallelism with params/optimizer state sharded across it (ZeRO-3 style)
  tensor  tensor (model) parallelism over heads / mlp / vocab
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axes. `None` means replicated.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("layers", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("vision_embed", "fsdp"),
    ("vision_mlp", "tensor"),
    ("vision_heads", "tensor"),
    ("patch", None),
    ("channels", None),
    ("lora_rank", None),
    ("out", None),
    # Activations: batch is split over data+fsdp, so their feature dims use tensor parallelism only.
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


class ShardingRulesError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Rules:
    """Logical-to-mesh axis mapping; rejects rules that reuse a mesh axis within one array."""

    table: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def create(cls, rules: Sequence[tuple[str, Any]] | Mapping[str, Any] = DEFAULT_RULES) -> "Rules":
        items = rules.items() if isinstance(rules, Mapping) else rules
        table = []
        seen = set()
        for logical, mesh_axes in items:
            if logical in seen:
                raise ShardingRulesError(f"logical axis {logical!r} appears twice in the sharding rules")
            seen.add(logical)
            if mesh_axes is None:
                mesh_axes = ()
            elif isinstance(mesh_axes, str):
                mesh_axes = (mesh_axes,)
            mesh_axes = tuple(mesh_axes)
            for a in mesh_axes:
                if a not in MESH_AXES:
                    raise ShardingRulesError(f"rule {logical!r} -> {a!r}: unknown mesh axis (have {MESH_AXES})")
            table.append((logical, mesh_axes))
        return cls(tuple(table))

    def mesh_axes(self, logical: str | None) -> tuple[str, ...]:
        if logical is None:
            return ()
        for name, axes in self.table:
            if name == logical:
                return axes
        raise ShardingRulesError(f"no sharding rule for logical axis {logical!r}")


def logical_to_spec(
    axes: Sequence[str | None],
    rules: Rules,
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec.

    With `shape` and `mesh`, a mesh axis that does not divide its dimension is dropped
    for that array (that dimension is replicated instead) rather than failing.
    """
    used: dict[str, str] = {}
    spec = []
    for i, logical in enumerate(axes):
        mesh_axes = [a for a in rules.mesh_axes(logical) if mesh is None or mesh.shape[a] > 1]
        for a in mesh_axes:
            if a in used:
                raise ShardingRulesError(
                    f"logical axes {used[a]!r} and {logical!r} both map to mesh axis {a!r} in {tuple(axes)}"
                )
            used[a] = logical
        if shape is not None and mesh is not None and mesh_axes:
            size = math.prod(mesh.shape[a] for a in mesh_axes)
            if shape[i] % size:
                log.debug("dim %d (%s=%d) not divisible by %s; replicating", i, logical, shape[i], mesh_axes)
                mesh_axes = []
        spec.append(None if not mesh_axes else (mesh_axes[0] if len(mesh_axes) == 1 else tuple(mesh_axes)))
    return PartitionSpec(*spec)


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a (data, fsdp, tensor) mesh. One size may be -1: it takes all remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = dict(shape or {"data": 1, "fsdp": -1, "tensor": 1})
    for k in shape:
        if k not in MESH_AXES:
            raise ValueError(f"unknown mesh axis {k!r}; expected some of {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot fill mesh {shape}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(sizes, devices=devices, allow_split_physical_axes=True)
    except Exception:  # CPU / odd topologies: plain order is fine
        grid = np.asarray(devices).reshape(sizes)
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return Mesh(grid, MESH_AXES, axis_types=axis_types)


def single_device_mesh() -> Mesh:
    return make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def logical_sharding(axes: Sequence[str | None], mesh: Mesh, rules: Rules, shape=None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, rules, shape=shape, mesh=mesh))


def shardings_for(shapes: Any, axes: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a pytree of shapes (arrays or ShapeDtypeStructs) given a matching pytree of axes.

    `axes` leaves are tuples of logical names; they are treated as leaves, not as subtrees.
    """
    is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
    return jax.tree.map(
        lambda ax, s: logical_sharding(ax, mesh, rules, shape=s.shape),
        axes,
        shapes,
        is_leaf=is_axes,
    )


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a host batch: leading dim split over (data, fsdp), the rest replicated."""
    axes = tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)
    lead = None if not axes else (axes[0] if len(axes) == 1 else axes)
    return NamedSharding(mesh, PartitionSpec(lead, *([None] * (ndim - 1))))


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


# --- activation constraints ---------------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("sharding", default=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules | None = None):
    """Activates `mesh` + `rules` for `constrain` calls inside model code (traced under jit)."""
    token = _ACTIVE.set((mesh, rules or Rules.create()))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical axes; a no-op when no mesh is active."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    if mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, logical_sharding(axes, mesh, rules, shape=x.shape))


def host_local_to_global(batch: Any, mesh: Mesh) -> Any:
    """Assembles per-host numpy batches (leading dim = this host's share) into global jax.Arrays."""

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    return jax.tree.map(put, batch)

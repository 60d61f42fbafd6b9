"""Which parameters train: regexes over `/`-joined parameter paths.

`llm/layers/attn/q` is the path of `params["llm"]["layers"]["attn"]["q"]`. A parameter
trains when its path fully matches one of `trainable` and none of `frozen`
(`re.fullmatch`, so `projector/.*` means everything under `projector`).

The trainable and frozen parts of one tree are handled as two trees of the same
structure with `None` where a leaf belongs to the other part (`partition` / `merge`), so
gradients and optimizer state exist only for trainable leaves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax

from fact_rlhf_jax.models.params import path_str


def leaf_paths(tree: Any) -> list[str]:
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def trainable_mask(tree: Any, trainable: Sequence[str], frozen: Sequence[str] = ()) -> Any:
    """Boolean tree: True where the leaf's path matches `trainable` and not `frozen`.

    Raises if a pattern matches nothing (a typo would silently freeze or train the wrong weights).
    """
    if isinstance(trainable, str):
        trainable = (trainable,)
    if isinstance(frozen, str):
        frozen = (frozen,)
    train_res = [re.compile(p) for p in trainable]
    frozen_res = [re.compile(p) for p in frozen]
    paths = leaf_paths(tree)
    for pattern in list(train_res) + list(frozen_res):
        if not any(pattern.fullmatch(p) for p in paths):
            sample = ", ".join(paths[:8]) + (" ..." if len(paths) > 8 else "")
            raise ValueError(f"parameter regex {pattern.pattern!r} matches no parameter path (paths: {sample})")

    def decide(path, _):
        name = path_str(path)
        return any(r.fullmatch(name) for r in train_res) and not any(r.fullmatch(name) for r in frozen_res)

    return jax.tree_util.tree_map_with_path(decide, tree)


def partition(tree: Any, mask: Any) -> tuple[Any, Any]:
    """Splits `tree` into (trainable, frozen): same structure, `None` where the leaf is in the other part."""
    trainable = jax.tree.map(lambda x, m: x if m else None, tree, mask)
    frozen = jax.tree.map(lambda x, m: None if m else x, tree, mask)
    return trainable, frozen


def merge(trainable: Any, frozen: Any) -> Any:
    """Inverse of `partition`."""
    return jax.tree.map(lambda a, b: b if a is None else a, trainable, frozen, is_leaf=lambda x: x is None)


def count(tree: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def summary(tree: Any, mask: Any) -> str:
    """One line: how many parameters train and how many are frozen."""
    t, f = partition(tree, mask)
    return f"{count(t):,} trainable / {count(f):,} frozen parameters"

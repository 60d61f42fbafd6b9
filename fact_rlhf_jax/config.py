"""Experiment configs: one Python file per experiment plus command-line overrides.

A config file defines `get_config(arg=None) -> ml_collections.ConfigDict`. On the command
line it is named `--config path/to/file.py[:arg]`; any `--config.a.b=value` (or
`--config.a.b value`) that follows overrides one field. Override values are parsed to the
type of the field they replace (bool: true/false/1/0/yes/no; tuples/lists/dicts and
fields that are `None` by Python literal syntax, falling back to the raw string).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

log = logging.getLogger(__name__)

OVERRIDE_PREFIX = "--config."


class ConfigError(ValueError):
    pass


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path[:arg]`: imports the file and calls `get_config(arg)` (or `get_config()` without arg)."""
    path, arg = spec, None
    # A ':' after the '.py' suffix separates the argument (Windows drive letters never reach here).
    if ".py:" in spec:
        path, arg = spec.split(".py:", 1)
        path += ".py"
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist (from --config {spec!r})")
    module_name = "_fact_rlhf_config_" + file.stem
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {file} defines no get_config(arg=None) function")
    config = module.get_config(arg) if arg is not None else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{file}: get_config() returned {type(config).__name__}, expected ml_collections.ConfigDict")
    return config


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separates `--config.a.b=value` / `--config.a.b value` items from the other arguments.

    Returns (remaining argv, [(dotted key, raw value), ...]) in command-line order.
    """
    rest: list[str] = []
    overrides: list[tuple[str, str]] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        item = argv[i]
        if item.startswith(OVERRIDE_PREFIX):
            key = item[len(OVERRIDE_PREFIX) :]
            if "=" in key:
                key, value = key.split("=", 1)
            else:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{item} needs a value (--config.{key}=VALUE)")
                value = argv[i + 1]
                i += 1
            overrides.append((key, value))
        else:
            rest.append(item)
        i += 1
    return rest, overrides


def _parse_literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_value(raw: str, current: Any, key: str) -> Any:
    """Parses `raw` into the type of `current` (the value being overridden)."""
    if isinstance(current, bool):
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "y"):
            return True
        if lowered in ("false", "0", "no", "n"):
            return False
        raise ConfigError(f"--config.{key}: expected a boolean (true/false), got {raw!r}")
    if isinstance(current, int):
        try:
            return int(raw)
        except ValueError:
            value = _parse_literal(raw)
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"--config.{key}: expected an integer, got {raw!r}") from None
    if isinstance(current, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"--config.{key}: expected a number, got {raw!r}") from None
    if isinstance(current, str):
        return raw
    if isinstance(current, (tuple, list)):
        value = _parse_literal(raw)
        if isinstance(value, str):  # a bare comma list: a,b,c
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    return _parse_literal(raw)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]) -> ml_collections.ConfigDict:
    """Applies dotted-key overrides in place; unknown keys are an error (they are usually typos)."""
    for key, raw in overrides:
        parts = key.split(".")
        node = config
        for depth, part in enumerate(parts[:-1]):
            if part not in node:
                raise ConfigError(f"--config.{key}: no field {'.'.join(parts[: depth + 1])!r} in the config")
            node = node[part]
            if not isinstance(node, (ml_collections.ConfigDict, dict)):
                raise ConfigError(f"--config.{key}: {'.'.join(parts[: depth + 1])!r} is not a group of fields")
        leaf = parts[-1]
        if leaf not in node:
            known = ", ".join(sorted(node.keys()))
            raise ConfigError(f"--config.{key}: no field {leaf!r} (fields here: {known})")
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            value = _parse_literal(raw)
            if not isinstance(value, dict):
                raise ConfigError(f"--config.{key} is a group of fields; override its members instead")
            with node.unlocked() if isinstance(node, ml_collections.ConfigDict) else _null():
                node[leaf] = ml_collections.ConfigDict(value)
            continue
        value = parse_value(raw, current, key)
        if isinstance(node, ml_collections.ConfigDict):
            with node.ignore_type():
                node[leaf] = value
        else:
            node[leaf] = value
    return config


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def load(spec: str, overrides: Sequence[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """`load_config_file` + `apply_overrides`."""
    return apply_overrides(load_config_file(spec), overrides)


def to_plain(config: ml_collections.ConfigDict) -> dict:
    """A JSON-safe nested dict of the config (tuples become lists)."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def save_resolved(config: ml_collections.ConfigDict, workdir, name: str = "config.json"):
    """Writes the resolved config to `workdir/name` (a local or bucket workdir, `fact_rlhf_jax.paths`). If one is
    already there and differs, logs the changes. Returns its path."""
    from fact_rlhf_jax import paths

    path = paths.workdir(workdir) / name
    plain = to_plain(config)
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous is not None and previous != plain:
            for key in sorted(set(_flatten(previous)) | set(_flatten(plain))):
                old, new = _flatten(previous).get(key), _flatten(plain).get(key)
                if old != new:
                    log.warning("config changed since the last run in %s: %s: %r -> %r", workdir, key, old, new)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths.write_atomic(path, json.dumps(plain, indent=2, sort_keys=True) + "\n")
    return path


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}

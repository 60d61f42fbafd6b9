"""Evaluation configs: defaults per benchmark, `--config path[:arg]` files and `--config.a.b=value` overrides.

`configs/eval/<benchmark>.py` files hold the same keys as `default_config(<benchmark>)` (a test keeps them in
step); the CLI registers one `--config.<key>` flag per default key so overrides are type-checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from typing import Any

import ml_collections

POPE_SUFFIX = "\nAnswer the question using a single word or phrase."


def _judge_defaults(temperature: float) -> dict[str, Any]:
    return {
        "kind": "chat",  # "chat" (OpenAI-compatible endpoint) or "rule" (offline, MMHal only)
        "base_url": "",  # empty: FACT_RLHF_JUDGE_BASE_URL or OPENAI_BASE_URL
        "model": "",  # empty: FACT_RLHF_JUDGE_MODEL
        "api_key_env": "OPENAI_API_KEY",  # the key is read from this variable (or FACT_RLHF_JUDGE_API_KEY)
        "temperature": temperature,
        "max_tokens": 1024,
        "timeout_s": 60.0,
        "max_retries": 5,
        "backoff_s": 2.0,
        "backoff_max_s": 60.0,
        "retry_unparsed": 2,
    }


_DEFAULTS: dict[str, dict[str, Any]] = {
    "pope": {
        "checkpoint": "",
        "image_dir": "",
        "batch_size": 16,
        "max_new_tokens": 64,
        "temperature": 0.2,
        "conv_mode": "llava_v1",
        "prompt_suffix": POPE_SUFFIX,
    },
    "mmhal": {
        "checkpoint": "",
        "image_dir": "",
        "batch_size": 8,
        "max_new_tokens": 1024,
        "temperature": 0.0,
        "conv_mode": "llava_v1",
        "judge_template": "mmhal_judge.txt",
        "judge": _judge_defaults(0.0),
    },
    "llava_bench": {
        "checkpoint": "",
        "image_dir": "",
        "batch_size": 8,
        "max_new_tokens": 1024,
        "temperature": 0.2,
        "conv_mode": "llava_v1",
        "judge_template": "llava_bench_judge.txt",
        "judge_rules": "llava_bench_rules.json",
        "judge_system": "You are a helpful and precise assistant for checking the quality of the answer.",
        "judge": _judge_defaults(0.2),
    },
    "chair": {
        "checkpoint": "",
        "image_dir": "",
        "batch_size": 8,
        "max_new_tokens": 512,
        "temperature": 0.0,
        "conv_mode": "llava_v1",
        "prompt": "Please describe this image in detail.",
        "num_images": 500,  # 0 = every image with ground truth
        "synonyms": "",  # empty: the packaged COCO synonym list
    },
}

BENCHMARKS = tuple(_DEFAULTS)


def default_config(benchmark: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads(json.dumps(_DEFAULTS[benchmark])))


def flat_items(cfg: Any, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            items.extend(flat_items(value, path + "."))
        else:
            items.append((path, value))
    return items


def _parser_for(value: Any):
    if isinstance(value, bool):
        def parse_bool(s: str) -> bool:
            if s.lower() in ("1", "true", "yes"):
                return True
            if s.lower() in ("0", "false", "no"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")
        return parse_bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, (list, tuple)):
        return json.loads
    return str


def add_config_arguments(parser: argparse.ArgumentParser, benchmark: str) -> None:
    parser.add_argument(
        "--config", default=None, metavar="PATH[:ARG]",
        help=f"config file with get_config(arg) (default: built-in, same as configs/eval/{benchmark}.py)",
    )
    for path, value in flat_items(default_config(benchmark)):
        parser.add_argument(
            f"--config.{path}", dest=f"cfg__{path}", type=_parser_for(value), default=argparse.SUPPRESS,
            metavar=type(value).__name__.upper(), help=f"override config.{path} (default {value!r})",
        )


def load_config(spec: str | None, benchmark: str) -> ml_collections.ConfigDict:
    if not spec:
        return default_config(benchmark)
    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: config file not found")
    module_spec = importlib.util.spec_from_file_location("_eval_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: expected a function get_config(arg=None)")
    return module.get_config(arg or None)


def config_from_args(args: argparse.Namespace, benchmark: str) -> ml_collections.ConfigDict:
    cfg = load_config(getattr(args, "config", None), benchmark)
    for name, value in vars(args).items():
        if not name.startswith("cfg__"):
            continue
        node = cfg
        *parents, leaf = name[len("cfg__"):].split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg

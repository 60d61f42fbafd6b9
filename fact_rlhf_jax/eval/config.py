"""Evaluation configs: defaults per benchmark, `--config path[:arg]` files and `--config.a.b=value` overrides.

`configs/eval/<benchmark>.py` files hold the same values as `default_config(<benchmark>)` (a test keeps them in
step). Config files and overrides go through the project's loader, `fact_rlhf_jax.config`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import ml_collections

from fact_rlhf_jax import config as shared_config

POPE_SUFFIX = "\nAnswer the question using a single word or phrase."


def _judge_defaults(temperature: float) -> dict[str, Any]:
    return {
        "kind": "chat",  # "chat" (OpenAI-compatible endpoint); "rule" or "shapesworld" (offline, MMHal only)
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
        "tokenizer": "",  # empty: the tokenizer files in the checkpoint
        "seed": 0,
        "image_dir": "",
        "batch_size": 16,
        "max_new_tokens": 64,
        "temperature": 0.2,
        "conv_mode": "llava_v1",
        "prompt_suffix": POPE_SUFFIX,
    },
    "mmhal": {
        "checkpoint": "",
        "tokenizer": "",  # empty: the tokenizer files in the checkpoint
        "seed": 0,
        "image_dir": "",
        "batch_size": 8,
        "max_new_tokens": 1024,
        "temperature": 0.0,
        "conv_mode": "llava_v1",
        "judge_template": "mmhal_judge.txt",
        "judge": _judge_defaults(0.0) | {"scene_graphs": ""},  # scene_graphs: for kind "shapesworld"
    },
    "llava_bench": {
        "checkpoint": "",
        "tokenizer": "",  # empty: the tokenizer files in the checkpoint
        "seed": 0,
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
        "tokenizer": "",  # empty: the tokenizer files in the checkpoint
        "seed": 0,
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


def add_config_arguments(parser: argparse.ArgumentParser, benchmark: str) -> None:
    """`--config PATH[:ARG]` plus one `--config.<key>` flag per default key (argparse needs to know them);
    values are parsed by `fact_rlhf_jax.config` to the type of the field they replace."""
    parser.add_argument(
        "--config", default=None, metavar="PATH[:ARG]",
        help=f"config file with get_config(arg) (default: built-in, same as configs/eval/{benchmark}.py)",
    )
    for path, value in flat_items(default_config(benchmark)):
        parser.add_argument(
            f"--config.{path}", dest=f"cfg__{path}", default=argparse.SUPPRESS, action="append",
            metavar=type(value).__name__.upper(), help=f"override config.{path} (default {value!r})",
        )


def config_from_args(args: argparse.Namespace, benchmark: str) -> ml_collections.ConfigDict:
    spec = getattr(args, "config", None)
    cfg = shared_config.load_config_file(spec) if spec else default_config(benchmark)
    overrides = [
        (name[len("cfg__"):], raw) for name, values in vars(args).items() if name.startswith("cfg__") for raw in values
    ]
    return shared_config.apply_overrides(cfg, overrides)

"""`fact-rlhf plan --config FILE[:arg] --mesh data=D,fsdp=F,tensor=T [--device KIND] [--config.key=value ...]`.

Compiles the programs of the config's stage ahead of time for a mesh of D*F*T devices of one kind, on
abstract inputs (no weights, data or tokenizer are read), and prints per-device memory (parameters,
optimizer state, activations and temporaries, peak), FLOPs per step and whether it fits the device's memory.
TPU kinds use the real TPU compiler when libtpu is installed (`pip install -e ".[tpu]"`, no TPU needed);
otherwise, and for GPUs, the programs compile for simulated CPU devices (bfloat16 temporaries overstated).
Exit status: 0 when every program fits, 1 when one does not, 2 on a configuration error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

CONFIG_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fact_rlhf_jax.plan import DEVICE_KINDS

    kinds = ", ".join(f"{k} ({v.hbm_gib:g} GiB)" for k, v in DEVICE_KINDS.items())
    parser.add_argument("--config", required=True, help="config file, optionally with an argument: path.py[:arg]")
    parser.add_argument("--mesh", default=None,
                        help="data=D,fsdp=F,tensor=T (missing axes are 1); default: the config's mesh if it has no -1")
    parser.add_argument("--device", default="tpu-v4", choices=sorted(DEVICE_KINDS), metavar="KIND",
                        help=f"device kind: {kinds} (default tpu-v4)")
    parser.add_argument("--backend", default="auto", choices=("auto", "tpu", "cpu"),
                        help="auto: the TPU compiler for TPU kinds when libtpu is installed, else simulated CPU devices")
    parser.add_argument("--memory-gib", type=float, default=None, help="device memory to check against (default: the kind's)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the plan as JSON ('-' = stdout only JSON)")
    parser.epilog = "Any --config.a.b=VALUE (or --config.a.b VALUE) overrides one field of the config."


def _mesh(args, config) -> dict[str, int]:
    from fact_rlhf_jax.plan import parse_mesh

    if args.mesh:
        return parse_mesh(args.mesh)
    mesh = {k: int(v) for k, v in dict(config.mesh).items()}
    if any(v < 1 for v in mesh.values()):
        raise ValueError(f"the config's mesh {mesh} has a -1 size; pass --mesh data=D,fsdp=F,tensor=T")
    return mesh


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)
    from fact_rlhf_jax import config as config_lib

    try:
        config = config_lib.load(args.config, getattr(args, "config_overrides", []))
        mesh = _mesh(args, config)
    except ValueError as e:
        print(f"fact-rlhf plan: error: {e}", file=sys.stderr)
        return 2
    _prepare_jax(math.prod(mesh.values()))

    from fact_rlhf_jax import plan as plan_lib

    try:
        target = plan_lib.make_target(args.device, math.prod(mesh.values()), args.backend, args.memory_gib)
        result = plan_lib.make_plan(config, mesh, target, config_name=args.config)
    except (ValueError, RuntimeError, NotImplementedError) as e:
        print(f"fact-rlhf plan: error: {e}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(plan_lib.format_plan(result))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result.to_dict(), f, indent=2)
    return 0 if result.fits else 1


def _prepare_jax(num_devices: int) -> None:
    """Before JAX starts: CPU only (nothing runs on an accelerator) with enough simulated devices."""
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return  # in-process callers (tests) bring their own devices
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", max(num_devices, 1))

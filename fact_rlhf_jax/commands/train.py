"""`fact-rlhf train --config configs/<stage>/<exp>.py[:arg] --workdir DIR [--config.key=value ...]`.

Trains the stage named by `config.stage`. The resolved config is written to
`DIR/config.json`; rerunning the same command in the same DIR resumes from the latest
checkpoint. SIGTERM saves a checkpoint and exits with status 0.

Multi-host: pass `--distributed` on every host. `jax.distributed.initialize()` then finds the
cluster itself on TPU VMs and SLURM, or reads JAX_COORDINATOR_ADDRESS (host:port),
JAX_NUM_PROCESSES and JAX_PROCESS_ID from the environment (see launch/).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file, optionally with an argument: path.py[:arg]")
    parser.add_argument("--workdir", required=True, help="run directory: config, checkpoints, metrics, events")
    parser.add_argument("--distributed", action="store_true", help="initialise jax.distributed (multi-host runs)")
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    parser.epilog = "Any --config.a.b=VALUE (or --config.a.b VALUE) overrides one field of the config."

    # `--config.a.b=value` items are not argparse options; take them out before argparse sees them.
    def parse_args(args=None, namespace=None):
        from fact_rlhf_jax.config import split_overrides

        rest, overrides = split_overrides(sys.argv[2:] if args is None else args)
        ns = argparse.ArgumentParser.parse_args(parser, rest, namespace)
        ns.config_overrides = overrides
        return ns

    parser.parse_args = parse_args


def init_distributed() -> None:
    import jax

    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    if args.distributed:
        init_distributed()

    from fact_rlhf_jax import config as config_lib
    from fact_rlhf_jax.train.loop import run_training

    config = config_lib.load(args.config, getattr(args, "config_overrides", []))
    result = run_training(config, args.workdir)
    if result.preempted:
        logging.getLogger(__name__).warning("stopped at step %d of %d on a signal; checkpoint saved",
                                            result.step, result.total_steps)
    return 0

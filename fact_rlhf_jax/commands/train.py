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

# `--config.a.b=value` items are split off by the CLI into `args.config_overrides`.
CONFIG_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file, optionally with an argument: path.py[:arg]")
    parser.add_argument("--workdir", required=True, help="run directory: config, checkpoints, metrics, events")
    parser.add_argument("--distributed", action="store_true", help="initialise jax.distributed (multi-host runs)")
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    parser.epilog = "Any --config.a.b=VALUE (or --config.a.b VALUE) overrides one field of the config."


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    if args.distributed:
        from fact_rlhf_jax import distributed

        distributed.initialize(force=True)

    from fact_rlhf_jax import config as config_lib
    from fact_rlhf_jax.train.loop import run_training

    config = config_lib.load(args.config, getattr(args, "config_overrides", []))
    result = run_training(config, args.workdir)
    if result.preempted:
        logging.getLogger(__name__).warning("stopped at step %d of %d on a signal; checkpoint saved",
                                            result.step, result.total_steps)
    return 0

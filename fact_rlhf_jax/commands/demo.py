"""`fact-rlhf demo --workdir DIR [--smoke]`: the end-to-end ShapesWorld demo (docs/demo.md).

Writes a ShapesWorld, trains the demo model from scratch (SFT), evaluates it on held-out images and writes
DIR/results.json, DIR/results.md and DIR/figures/. Every stage runs in its own DIR/<stage>; rerunning the
same command resumes and skips finished stages. `--smoke` runs the same chain at toy size (about a minute).
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="demo directory: world, one sub-directory per stage, results")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: the whole chain in about a minute")
    parser.add_argument("--log-level", default="WARNING", help="Python logging level (default WARNING)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from fact_rlhf_jax.demo.config import FULL, SMOKE
    from fact_rlhf_jax.demo.pipeline import StageError, run_stages
    from fact_rlhf_jax.demo.stages import stages

    try:
        run_stages(args.workdir, SMOKE if args.smoke else FULL, stages())
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"results: {args.workdir}/results.md")
    return 0

"""`fact-rlhf <command> ...`: one entry point for every job.

Each subcommand lives in `fact_rlhf_jax/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int | None`. A module that sets `CONFIG_OVERRIDES = True`
receives the `--config.a.b=value` items (which argparse cannot declare) as `args.config_overrides`. Modules are imported only
when their command runs, so `fact-rlhf --help` stays fast and a broken optional
dependency of one command never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("fact_rlhf_jax.commands.train", "train a stage (sft, reward, dpo, ppo) from a config file"),
    "score": ("fact_rlhf_jax.commands.score", "score responses with a reward model"),
    "pairs": ("fact_rlhf_jax.commands.pairs", "sample on-policy preference pairs labelled by a reward model"),
    "generate": ("fact_rlhf_jax.commands.generate", "answer prompts about images with a model"),
    "eval": ("fact_rlhf_jax.commands.eval", "run or score POPE, MMHal-Bench, LLaVA-Bench, CHAIR"),
    "shapesworld": ("fact_rlhf_jax.commands.shapesworld", "write the ShapesWorld synthetic data sets"),
    "convert": ("fact_rlhf_jax.commands.convert", "convert checkpoints between HF and fact_rlhf_jax"),
    "demo": ("fact_rlhf_jax.commands.demo", "end-to-end ShapesWorld demo: SFT, evaluation, results and plots"),
    "data": ("fact_rlhf_jax.commands.data", "convert VQAv2 / A-OKVQA / Flickr30k to LLaVA JSON; pack tfds datasets"),
    "plan": ("fact_rlhf_jax.commands.plan", "compile a config ahead of time for a mesh: memory per device, FLOPs, fits"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fact-rlhf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Parse the command name first, then let the command's own module define its flags.
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or the usage error and exits
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"fact-rlhf {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    rest = argv[1:]
    overrides = []
    if getattr(module, "CONFIG_OVERRIDES", False):
        from fact_rlhf_jax.config import split_overrides

        rest, overrides = split_overrides(rest)
    args = sub.parse_args(rest)
    args.config_overrides = overrides
    code = module.run(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())

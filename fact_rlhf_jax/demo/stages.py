"""The demo's stages, in order. Reward models, PPO and DPO plug in as more entries of `stages()`:

    Stage("rm_vanilla", "reward model (vanilla)", run=..., slot=("reward_models", "vanilla")),
    Stage("ppo_vanilla", "PPO with the vanilla RM", run=...),
    evaluation("rlhf", "ppo_vanilla", load=...),      # -> results.json models.rlhf

Each `run(ctx, workdir)` returns the stage's result (JSON-able) and is called only while the stage is not
done; training stages call `train.loop.run_training(config, workdir)`, which resumes from the stage's own
checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fact_rlhf_jax.demo.pipeline import Context, Stage, StageError, collect_results, read_done

log = logging.getLogger(__name__)


def write_world(ctx: Context, workdir: Path) -> dict[str, Any]:
    from fact_rlhf_jax.demo.world import write_demo_world

    s = ctx.settings
    world = write_demo_world(workdir, train_images=s.train_images, eval_images=s.eval_images,
                             image_size=s.image_size, noise=s.noise, seed=s.seed, sft_eval_images=s.sft_eval_images)
    return world.info["counts"]


def train(make_config: Callable[[Context], Any]) -> Callable[[Context, Path], dict[str, Any]]:
    """A training stage: `make_config(ctx)` -> ConfigDict, run by the shared loop in the stage's workdir.
    Result: the last logged metrics and the number of steps."""

    def run(ctx: Context, workdir: Path) -> dict[str, Any]:
        from fact_rlhf_jax.train.loop import run_training

        result = run_training(make_config(ctx), workdir)
        if result.preempted or result.step < result.total_steps:
            raise StageError(f"{workdir}: training stopped at step {result.step} of {result.total_steps}; "
                             "rerun to resume")
        return {"steps": result.step, "last_metrics": result.last_metrics}

    return run


def pretrain_config(ctx: Context):
    from fact_rlhf_jax.demo import config

    return config.pretrain_config(ctx.world, ctx.settings)


def sft_config(ctx: Context):
    from fact_rlhf_jax.demo import config

    return config.sft_config(ctx.world, ctx.settings, init_from=str(ctx.workdir("pretrain")))


def load_workdir_model(stage: str) -> Callable[[Context], Any]:
    """A `ChatModel` from a training stage's workdir (latest checkpoint)."""

    def load(ctx: Context):
        from fact_rlhf_jax.inference import ChatModel

        return ChatModel.load(ctx.workdir(stage), batch_size=ctx.settings.eval.batch_size, seed=ctx.settings.seed)

    return load


def evaluation(model: str, load: Callable[[Context], Any]) -> Stage:
    """Stage `eval_<model>`: every metric of the model on the eval images -> results.json models.<model>."""

    def run(ctx: Context, workdir: Path) -> dict[str, Any]:
        from fact_rlhf_jax.demo.evaluate import evaluate_model

        return evaluate_model(load(ctx), ctx.world, workdir, ctx.settings.eval)

    return Stage(f"eval_{model}", f"evaluate {model}", run, slot=("models", model))


def report(stage_list: Callable[[], list[Stage]]) -> Stage:
    """The last stage: results.json, results.md and figures from every finished stage (runs every time)."""

    def run(ctx: Context, workdir: Path) -> dict[str, Any]:
        from fact_rlhf_jax.demo.report import write_report

        stages = [s for s in stage_list() if not s.always]
        records = {s.name: r for s in stages if (r := read_done(ctx.workdir(s.name))) is not None}
        results = collect_results(stages, records)
        model_dirs = {s.slot[1]: ctx.workdir(s.name) for s in stages if s.slot and s.slot[0] == "models"}
        world = ctx.world if (ctx.world.root / "world.json").exists() else None
        paths = write_report(ctx.root, results, {n: r["seconds"] for n, r in records.items()}, model_dirs, world)
        return {k: str(p) for k, p in paths.items()}

    return Stage("report", "write results.json, results.md and figures", run, always=True)


def stages() -> list[Stage]:
    return [
        Stage("world", "write the ShapesWorld", write_world),
        Stage("pretrain", "caption pretraining of the demo model from scratch", train(pretrain_config)),
        Stage("sft", "SFT from the pretrained model", train(sft_config)),
        evaluation("sft", load_workdir_model("sft")),
        report(stages),
    ]

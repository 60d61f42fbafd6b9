"""The demo's stages, in order: world, vision tower, caption pretraining, SFT, preference pairs sampled from
the SFT model, the SFT samples of the reward-model probe, the two reward models (vanilla and factual), PPO
with each, DPO, an evaluation of every policy, the report.

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
                             image_size=s.image_size, noise=s.noise, label_noise=s.label_noise, seed=s.seed,
                             sft_eval_images=s.sft_eval_images, extra_qa=s.sft_extra_qa)
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


def vision_config(ctx: Context):
    from fact_rlhf_jax.demo import config

    return config.vision_config(ctx.world, ctx.settings)


def pretrain_config(ctx: Context):
    from fact_rlhf_jax.demo import config

    return config.pretrain_config(ctx.world, ctx.settings, init_from=str(ctx.workdir("vision")))


def sft_config(ctx: Context):
    from fact_rlhf_jax.demo import config

    return config.sft_config(ctx.world, ctx.settings, init_from=str(ctx.workdir("pretrain")))


def pairs_path(ctx: Context) -> str:
    from fact_rlhf_jax.demo.preferences import pairs_file

    return str(pairs_file(ctx.workdir("pairs")))


def sample_pairs(ctx: Context, workdir: Path) -> dict[str, Any]:
    from fact_rlhf_jax.demo.preferences import sample_pairs as sample

    return sample(ctx.world, ctx.workdir("sft"), workdir, ctx.settings.pairs, seed=ctx.settings.seed)


def sample_probe(ctx: Context, workdir: Path) -> dict[str, Any]:
    """The reward-model probe's samples (SFT model, eval images) and the annotator's own best-of-n on them."""
    from fact_rlhf_jax.demo.reward_probe import Probe, sample_descriptions
    from fact_rlhf_jax.inference import ChatModel

    p = ctx.settings.probe
    chat = ChatModel.load(ctx.workdir("sft"), batch_size=ctx.settings.pairs.batch_size, seed=ctx.settings.seed)
    probe = sample_descriptions(chat, ctx.world, workdir, images=p.images, samples=p.samples,
                                max_new_tokens=p.max_new_tokens, seed=ctx.settings.seed)
    return Probe(ctx.world, probe).baselines()


def probe_reward_model(ctx: Context, reward_dir: Path) -> dict[str, Any]:
    """How the reward model in `reward_dir` ranks the probe samples (`reward_probe.Probe.report`)."""
    from fact_rlhf_jax.demo.reward_probe import Probe, load_probe
    from fact_rlhf_jax.scoring import RewardModel

    probe = Probe(ctx.world, load_probe(ctx.workdir("probe")))
    reward_model = RewardModel.load(reward_dir, batch_size=ctx.settings.pairs.batch_size)
    return probe.report(probe.reward_model_scores(reward_model))


def rm_config(factual: bool):
    def make(ctx: Context):
        from fact_rlhf_jax.demo import config

        return config.reward_config(ctx.world, ctx.settings, str(ctx.workdir("sft")), pairs_path(ctx),
                                    factual=factual)

    return make


def ppo_config(reward_stage: str):
    def make(ctx: Context):
        from fact_rlhf_jax.demo import config

        return config.ppo_config(ctx.world, ctx.settings, str(ctx.workdir("sft")), str(ctx.workdir(reward_stage)))

    return make


def dpo_config(ctx: Context):
    from fact_rlhf_jax.demo import config

    return config.dpo_config(ctx.world, ctx.settings, str(ctx.workdir("sft")), pairs_path(ctx))


def reward_model(name: str, factual: bool) -> Stage:
    """Stage `rm_<name>`: a reward model -> results.json reward_models.<name> = {"accuracy": held-out accuracy,
    "probe": its ranking of the SFT model's samples (`reward_probe`), ...}."""
    run_training = train(rm_config(factual))

    def run(ctx: Context, workdir: Path) -> dict[str, Any]:
        result = run_training(ctx, workdir)
        evals = [m for m in _metrics(workdir) if "eval/accuracy" in m]
        if not evals:
            raise StageError(f"{workdir}/metrics.jsonl: no eval/accuracy (the held-out split is empty?)")
        return {"accuracy": evals[-1]["eval/accuracy"], "steps": result["steps"],
                "train_accuracy": result["last_metrics"].get("accuracy"), "probe": probe_reward_model(ctx, workdir)}

    kind = "Fact-RM (facts in the prompt)" if factual else "vanilla reward model (no facts)"
    return Stage(f"rm_{name}", kind, run, slot=("reward_models", name))


def _metrics(workdir: Path) -> list[dict[str, Any]]:
    import json

    path = workdir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


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
        paths = write_report(ctx.root, results, {n: r["seconds"] for n, r in records.items()}, model_dirs, world,
                             probe=records.get("probe", {}).get("result"))
        return {k: str(p) for k, p in paths.items()}

    return Stage("report", "write results.json, results.md and figures", run, always=True)


def stages() -> list[Stage]:
    return [
        Stage("world", "write the ShapesWorld", write_world),
        Stage("vision", "vision tower from scratch on the objects its captions name", train(vision_config)),
        Stage("pretrain", "caption pretraining (projector and LLM from scratch)", train(pretrain_config)),
        Stage("sft", "SFT from the pretrained model", train(sft_config)),
        evaluation("sft", load_workdir_model("sft")),
        Stage("pairs", "preference pairs sampled from the SFT model, labelled by the annotator", sample_pairs),
        Stage("probe", "descriptions sampled from the SFT model for the reward-model probe", sample_probe),
        reward_model("vanilla", factual=False),
        reward_model("factual", factual=True),
        Stage("ppo_vanilla", "PPO against the vanilla reward model (RLHF)", train(ppo_config("rm_vanilla"))),
        evaluation("rlhf", load_workdir_model("ppo_vanilla")),
        Stage("ppo_factual", "PPO against the Fact-RM (Fact-RLHF)", train(ppo_config("rm_factual"))),
        evaluation("fact_rlhf", load_workdir_model("ppo_factual")),
        Stage("dpo", "DPO on the sampled preference pairs", train(dpo_config)),
        evaluation("dpo", load_workdir_model("dpo")),
        report(stages),
    ]

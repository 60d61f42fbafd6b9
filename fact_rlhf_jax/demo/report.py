"""The demo's report: `DIR/results.json`, `DIR/results.md` and PNG figures under `DIR/figures/`.

- results.json: {"models": {name: metrics}, "reward_models": {name: {"accuracy"}}, "seconds": S}; only
  what has run is there.
- figures/results.png: one panel per evaluation metric, a bar per model with its 95 % interval.
- figures/training_curves.png: the curves of every stage workdir in DIR whose `config.json` names a stage
  kind listed in `CURVES` (others are skipped), read from its `metrics.jsonl`.
- results.md: the tables, the figures, and sample descriptions of the first eval images by every model,
  next to the image (enlarged copies in figures/samples/), with the objects the annotator found invented.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fact_rlhf_jax.demo.evaluate import METRICS
from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.eval.records import read_jsonl, write_json

MODEL_ORDER = ("sft", "rlhf", "fact_rlhf", "dpo")
REWARD_MODEL_ORDER = ("vanilla", "factual")
LABELS = {
    "hallucination_rate": "hallucination rate (CHAIR-i)",
    "response_hallucination_rate": "responses with a hallucination (CHAIR-s)",
    "coverage": "coverage",
    "pope_f1": "POPE F1",
    "mc_accuracy": "MC accuracy",
    "mmhal_score": "MMHal score (0-6)",
}
# training stage kind (config.json "stage") -> panels [(title, metrics.jsonl keys drawn in it)]
CURVES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "fact_rlhf_jax.demo.vision_stage": [("tag loss", ("loss", "eval/loss")),
                                        ("tag recall", ("recall", "eval/recall"))],
    "sft": [("loss", ("loss", "eval/loss"))],
    "reward": [("accuracy", ("accuracy", "eval/accuracy"))],
    "ppo": [("reward", ("reward", "reward/model")), ("KL to the reference", ("kl_sum_seq",))],
    "dpo": [("loss", ("loss", "eval/loss")), ("accuracy", ("accuracy", "eval/accuracy"))],
}
SAMPLE_IMAGES = 3
SAMPLE_SCALE = 4  # the eval images are tiny; samples are enlarged (nearest neighbour) for the report


def _ordered(names, order) -> list[str]:
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def training_curves(root: Path) -> list[tuple[str, str, dict[str, list[tuple[int, float]]]]]:
    """(stage dir, panel title, {metric key: [(step, value)]}) for every known panel found under `root`."""
    out = []
    for config_path in sorted(root.glob("*/config.json")):
        workdir = config_path.parent
        kind = json.loads(config_path.read_text()).get("stage", "")
        metrics_path = workdir / "metrics.jsonl"
        if kind not in CURVES or not metrics_path.exists():
            continue
        rows = read_jsonl(str(metrics_path))
        for title, keys in CURVES[kind]:
            lines = {k: [(int(r["step"]), float(r[k])) for r in rows if r.get(k) is not None] for k in keys}
            lines = {k: v for k, v in lines.items() if v}
            if lines:
                out.append((workdir.name, title, lines))
    return out


def plot_training_curves(root: Path, path: Path) -> bool:
    panels = training_curves(root)
    if not panels:
        return False
    plt = _pyplot()
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (stage, title, lines) in zip(axes.flat, panels):
        for key, points in lines.items():
            steps, values = zip(*points)
            ax.plot(steps, values, marker="." if len(points) < 30 else None, label=key)
        ax.set_title(f"{stage}: {title}", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_results(models: dict[str, dict[str, Any]], path: Path) -> bool:
    if not models:
        return False
    plt = _pyplot()
    names = _ordered(models, MODEL_ORDER)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(2.6 * len(METRICS), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], METRICS):
        values = [models[n][metric] for n in names]
        lows = [v - models[n][f"{metric}_ci"][0] for n, v in zip(names, values)]
        highs = [models[n][f"{metric}_ci"][1] - v for n, v in zip(names, values)]
        ax.bar(range(len(names)), values, yerr=[lows, highs], capsize=3, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        ax.set_title(LABELS[metric], fontsize=8)
        ax.set_ylim(0, 6 if metric == "mmhal_score" else 1)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(metric: str, value: float, ci: list[float] | None = None) -> str:
    if metric == "mmhal_score":
        text = f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    else:
        text = f"{100 * value:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
    return text


def models_table(models: dict[str, dict[str, Any]]) -> str:
    head = ["model", *(LABELS[m] + ("" if m == "mmhal_score" else " (%)") for m in METRICS), "mean length (words)", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in _ordered(models, MODEL_ORDER):
        m = models[name]
        cells = [name, *(_fmt(k, m[k], m[f"{k}_ci"]) for k in METRICS), f"{m['mean_length']:.1f}", str(m["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sample_section(root: Path, world: World, model_dirs: dict[str, Path]) -> list[str]:
    """Sample descriptions of the first eval images by every evaluated model."""
    from PIL import Image

    from fact_rlhf_jax.shapesworld.annotator import annotate
    from fact_rlhf_jax.shapesworld.scene import load_scenes

    answers = {}
    for name, workdir in model_dirs.items():
        path = workdir / "descriptions.jsonl"
        if path.exists():
            answers[name] = {r["image"]: r for r in read_jsonl(str(path))}
    if not answers:
        return []
    scenes = load_scenes(world.path("scene_graphs"))
    images = sorted(set.intersection(*(set(a) for a in answers.values())))[:SAMPLE_IMAGES]
    lines = ["## Sample descriptions", ""]
    for image in images:
        src = world.path("images") / image
        dst = root / "figures" / "samples" / image
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            im.resize((im.width * SAMPLE_SCALE, im.height * SAMPLE_SCALE), Image.NEAREST).save(dst)
        scene = scenes[image]
        lines += [f"### {image}", "", f"![{image}]({dst.relative_to(root).as_posix()})", "",
                  f"In the image: {', '.join(scene.names)} ({scene.background} background).", ""]
        for name in _ordered(answers, MODEL_ORDER):
            row = answers[name][image]
            invented = annotate(scene, row["text"]).hallucinated
            lines.append(f"- **{name}** ({row['prompt']}): {row['text']}"
                         + (f" *(not in the image: {', '.join(invented)})*" if invented else ""))
        lines.append("")
    return lines


def _best_of_n_cells(best: dict[str, float]) -> str:
    return (f"{100 * best['hallucination_rate']:.1f} | {100 * best['coverage']:.1f} | "
            f"{best['mean_length']:.1f}")


def reward_model_section(reward_models: dict[str, Any], probe: dict[str, Any] | None) -> list[str]:
    """The reward models' held-out accuracy and, where probed, how they rank the SFT model's own samples."""
    lines = ["## Reward models", ""]
    probed = [n for n in _ordered(reward_models, REWARD_MODEL_ORDER) if "probe" in reward_models[n]]
    if not probed:
        lines += ["| reward model | preference accuracy (%) |", "|---|---|"]
        lines += [f"| {n} | {100 * reward_models[n]['accuracy']:.1f} |"
                  for n in _ordered(reward_models, REWARD_MODEL_ORDER)]
        return lines + [""]
    size = f"{probe['samples']} samples of each of {probe['images']} eval images" if probe else "the probe samples"
    lines += [f"Held-out preference accuracy, and the probe ({size}, from the SFT model at T = 1, "
              "`demo/reward_probe.py`): agreement with the annotator's order of two samples of one image, the "
              "correlation of the reward with the number of words and with the number of hallucinated objects "
              "(centred per image), and the favourite sample of each image (best-of-n).", "",
              "| scorer | preference accuracy (%) | agreement (%) | corr. words | corr. hallucinations | "
              "best-of-n CHAIR-i (%) | best-of-n coverage (%) | best-of-n words |", "|---|---|---|---|---|---|---|---|"]
    for n in probed:
        rm, pr = reward_models[n], reward_models[n]["probe"]
        lines.append(f"| {n} | {100 * rm['accuracy']:.1f} | {100 * pr['agreement']:.1f} | {pr['corr_words']:+.2f} | "
                     f"{pr['corr_hallucinations']:+.2f} | {_best_of_n_cells(pr['best_of_n'])} |")
    if probe:
        lines.append(f"| annotator (oracle) | | 100.0 | | | {_best_of_n_cells(probe['oracle'])} |")
        lines.append(f"| one sample, no choice | | | | | {_best_of_n_cells(probe['sample'])} |")
    return lines + [""]


def write_report(root: str | Path, results: dict[str, Any], stage_seconds: dict[str, float],
                 model_dirs: dict[str, Path], world: World | None = None,
                 probe: dict[str, Any] | None = None) -> dict[str, Path]:
    """Writes results.json, results.md and the figures; returns their paths. `probe`: the probe stage's
    baselines (`reward_probe.Probe.baselines`), shown beside the reward models' probe numbers."""
    root = Path(root)
    paths = {"json": root / "results.json", "md": root / "results.md"}
    write_json(str(paths["json"]), results)
    figures = root / "figures"
    lines = ["# Fact-RLHF demo on ShapesWorld", ""]
    if world is not None:
        world_info = world.info
        lines += [f"World: {world_info['num_images']} training images, {world_info['num_eval_images']} held-out "
                  f"eval images, {100 * world_info['noise']:.0f} % of SFT descriptions with invented objects "
                  f"(seed {world_info['seed']}). Total time of the stages: {results['seconds']:.0f} s.", ""]
    models = results.get("models", {})
    if models:
        lines += ["## Models on the held-out eval images", "",
                  "Rates in %, with 95 % bootstrap intervals. Hallucination rates: lower is better.", "",
                  models_table(models), ""]
    reward_models = results.get("reward_models", {})
    if reward_models:
        lines += reward_model_section(reward_models, probe)
    if plot_results(models, figures / "results.png"):
        paths["results_png"] = figures / "results.png"
        lines += ["![results](figures/results.png)", ""]
    if plot_training_curves(root, figures / "training_curves.png"):
        paths["curves_png"] = figures / "training_curves.png"
        lines += ["## Training curves", "", "![training curves](figures/training_curves.png)", ""]
    lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in stage_seconds.items()]
    lines.append("")
    if world is not None:
        lines += _sample_section(root, world, model_dirs)
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths

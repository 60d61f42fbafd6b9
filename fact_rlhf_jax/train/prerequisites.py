"""What a tiny config prepares inside its workdir when it names no data or starting point.

    WORKDIR/shapesworld/   a ShapesWorld (`shapesworld(...)`), written once
    WORKDIR/sft/           a tiny SFT model trained on it (`tiny_sft(...)`), resumed or reused when present
    WORKDIR/reward/        a tiny reward model (`tiny_reward(...)`, the PPO tiny config), likewise

Every piece is reused when it is already there, so rerunning a tiny config never redoes them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import ml_collections

log = logging.getLogger(__name__)


def shapesworld(workdir: str | Path, world: ml_collections.ConfigDict, name: str = "shapesworld") -> dict[str, str]:
    """Writes a ShapesWorld into WORKDIR/<name> once; returns {file key: path} (`write_world`'s keys) + "root"."""
    from fact_rlhf_jax.shapesworld import write_world

    root = Path(workdir) / name
    manifest = root / "world.json"
    if not manifest.exists():
        log.info("writing a ShapesWorld of %d images to %s", int(world.num_images), root)
        write_world(root, num_images=int(world.num_images), seed=int(world.get("seed", 0)),
                    noise=float(world.get("noise", 0.0)), image_size=int(world.get("image_size", 64)),
                    label_noise=world.get("label_noise", None))
    files = json.loads(manifest.read_text())["files"]
    return {"root": str(root), **{k: str(root / v) for k, v in files.items()}}


def sft_split(world_paths: dict[str, str], eval_fraction: float = 0.1) -> dict[str, str]:
    """Splits the world's SFT records into train / eval files once (the last `eval_fraction` held out)."""
    root = Path(world_paths["root"])
    done = root / "sft_split.json"
    if not done.exists():
        records = json.loads(Path(world_paths["sft"]).read_text())
        n_eval = max(1, int(len(records) * float(eval_fraction)))
        (root / "sft_train.json").write_text(json.dumps(records[:-n_eval]))
        (root / "sft_eval.json").write_text(json.dumps(records[-n_eval:]))
        done.write_text(json.dumps({"images": world_paths["images"], "tokenizer": world_paths["tokenizer"],
                                    "train": str(root / "sft_train.json"), "eval": str(root / "sft_eval.json")}))
    return json.loads(done.read_text())


def finished(workdir: str | Path, num_steps: int) -> bool:
    """Whether a training run in `workdir` has a checkpoint at `num_steps` (or later)."""
    from fact_rlhf_jax.train.checkpoint import Checkpointer

    directory = Path(workdir) / "checkpoints"
    if not directory.exists():
        return False
    ckpt = Checkpointer(directory, async_save=False)
    latest = ckpt.latest_step()
    ckpt.close()
    return latest is not None and latest >= num_steps


def run_once(config: ml_collections.ConfigDict, workdir: str | Path) -> str:
    """Trains `config` in `workdir` unless it already finished (a partial run resumes). Returns the workdir."""
    from fact_rlhf_jax.train.loop import run_training

    workdir = Path(workdir)
    if config.num_steps <= 0:
        raise ValueError("prerequisite runs need an explicit num_steps")
    if not finished(workdir, int(config.num_steps)):
        log.info("preparing %s (%s, %d steps)", workdir, config.stage, int(config.num_steps))
        result = run_training(config, workdir)
        if result.preempted:
            raise SystemExit(f"stopped while preparing {workdir}; rerun the same command to resume")
    return str(workdir)


def tiny_sft(workdir: str | Path, world_paths: dict[str, str], *, seed: int = 0,
             overrides: dict | None = None) -> str:
    """The tiny SFT model (`sft.tiny_config()`) trained on the world, in WORKDIR/sft."""
    from fact_rlhf_jax.train import sft

    split = sft_split(world_paths)
    config = sft.tiny_config()
    config.seed = seed
    config.data.shapesworld.num_images = 0
    config.data.train = [(split["train"], split["images"], 1.0)]
    config.data.eval = [(split["eval"], split["images"], 1.0)]
    config.data.tokenizer = split["tokenizer"]
    config.progress_bar = False
    for key, value in (overrides or {}).items():
        _set(config, key, value)
    return run_once(config, Path(workdir) / "sft")


def tiny_reward(workdir: str | Path, world_paths: dict[str, str], sft_dir: str, *, factual: bool = True,
                seed: int = 0, overrides: dict | None = None) -> str:
    """The tiny reward model (`reward.tiny_config()`) on the world's preference pairs, from `sft_dir`, in
    WORKDIR/reward."""
    from fact_rlhf_jax.train import reward

    config = reward.tiny_config(factual=factual)
    config.seed = seed
    config.init.model = sft_dir
    config.data.shapesworld.num_images = 0
    config.data.train = [(world_paths["preference"], world_paths["images"], 1.0)]
    config.data.captions = world_paths["captions"]
    config.progress_bar = False
    for key, value in (overrides or {}).items():
        _set(config, key, value)
    return run_once(config, Path(workdir) / "reward")


def _set(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    node = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    with node.ignore_type():
        node[parts[-1]] = value

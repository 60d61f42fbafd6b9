"""The demo's ShapesWorld: written once into `DIR/world`, with its SFT records split into train / held-out
files (`sft_train.json`, `sft_eval.json`; the held-out records are those of the last training images, so
the SFT eval loss is measured on images the model never trained on)."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class World:
    """A written demo world: `path(key)` is any file `write_world` wrote, by its key in world.json
    (images, tokenizer, scene_graphs, sft, preference, captions, ppo_prompts, pope_random, pope_popular,
    pope_adversarial, mmhal, ...); `sft_train` / `sft_eval` are the demo's SFT split."""

    root: Path

    @functools.cached_property
    def info(self) -> dict:
        return json.loads((self.root / "world.json").read_text())

    def path(self, key: str) -> Path:
        files = self.info["files"]
        if key not in files:
            raise KeyError(f"{self.root / 'world.json'}: no file {key!r}; written: {', '.join(sorted(files))}")
        return self.root / files[key]

    @property
    def sft_train(self) -> Path:
        return self.root / "sft_train.json"

    @property
    def sft_eval(self) -> Path:
        return self.root / "sft_eval.json"

    def eval_images(self) -> list[str]:
        """File names of the held-out eval images, in order."""
        from fact_rlhf_jax.shapesworld.writer import EVAL_ID_OFFSET, image_file

        return [image_file(EVAL_ID_OFFSET + i) for i in range(int(self.info["num_eval_images"]))]


def write_demo_world(root: str | Path, *, train_images: int, eval_images: int, image_size: int, noise: float,
                     seed: int = 0, sft_eval_images: int = 0) -> World:
    """Writes the world and the SFT split; the records of the last `sft_eval_images` training images are
    held out of SFT."""
    from fact_rlhf_jax.shapesworld import write_world

    world = World(Path(root))
    paths = write_world(world.root, num_images=train_images, num_eval_images=eval_images, seed=seed, noise=noise,
                        image_size=image_size)
    records = json.loads(Path(paths["sft"]).read_text())
    images = sorted({r["image"] for r in records})
    held = set(images[len(images) - sft_eval_images:]) if sft_eval_images > 0 else set()
    world.sft_train.write_text(json.dumps([r for r in records if r["image"] not in held]))
    world.sft_eval.write_text(json.dumps([r for r in records if r["image"] in held]))
    return world

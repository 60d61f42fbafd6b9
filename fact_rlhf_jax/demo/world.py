"""The demo's ShapesWorld: written once into `DIR/world`, with its caption (`pretrain.json`) and SFT records
split into train / held-out files (`{pretrain,sft}_{train,eval}.json`; the held-out records are those of the
last training images, so the eval losses are measured on images the model never trained on).

The demo's SFT conversations are long: an image's SFT records (its description conversation and its
question-answer conversation, in a random order) merged into one conversation and extended with `extra_qa`
questions about the scene, as LLaVA-Instruct's conversations are multi-turn. A reward-model input (the
conversation, the response, then the evaluation instruction with its facts) is 250-400 tokens long and its
last token reads the response and the image from hundreds of tokens away; a model trained only on
conversations of ~100 tokens cannot (its description loss more than triples when the description starts at
token 270 instead of 44), while Vicuna, under the original, was trained on 2048-token contexts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class World:
    """A written demo world: `path(key)` is any file `write_world` wrote, by its key in world.json
    (images, tokenizer, scene_graphs, sft, pretrain, preference, captions, ppo_prompts, pope_random,
    pope_popular, pope_adversarial, mmhal, ...); `{pretrain,sft}_{train,eval}` are the demo's splits."""

    root: Path

    @functools.cached_property
    def info(self) -> dict:
        return json.loads((self.root / "world.json").read_text())

    def path(self, key: str) -> Path:
        files = self.info["files"]
        if key not in files:
            raise KeyError(f"{self.root / 'world.json'}: no file {key!r}; written: {', '.join(sorted(files))}")
        return self.root / files[key]

    sft_train = property(lambda self: self.root / "sft_train.json")
    sft_eval = property(lambda self: self.root / "sft_eval.json")
    pretrain_train = property(lambda self: self.root / "pretrain_train.json")
    pretrain_eval = property(lambda self: self.root / "pretrain_eval.json")

    def eval_images(self) -> list[str]:
        """File names of the held-out eval images, in order."""
        from fact_rlhf_jax.shapesworld.writer import EVAL_ID_OFFSET, image_file

        return [image_file(EVAL_ID_OFFSET + i) for i in range(int(self.info["num_eval_images"]))]


def long_conversations(records: list[dict], scene_graphs: dict[str, dict], *, extra_qa: int,
                       rng: random.Random) -> list[dict]:
    """One conversation per image: its records' turns (records in a random order) then `extra_qa` more
    question-answer turns about its scene; the image placeholder on the first human turn only."""
    from fact_rlhf_jax.shapesworld import records as world_records
    from fact_rlhf_jax.shapesworld.scene import Scene

    by_image: dict[str, list[dict]] = {}
    for r in records:
        by_image.setdefault(r["image"], []).append(r)
    out = []
    for image, group in by_image.items():
        rng.shuffle(group)
        turns = [dict(t) for r in group for t in r["conversations"]]
        turns += world_records.qa_turns(Scene.from_json(scene_graphs[image]), rng, extra_qa, first=False)
        for t in turns:
            t["value"] = t["value"].replace("<image>\n", "")
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
        out.append({"id": image.rsplit(".", 1)[0] + "_long", "image": image, "conversations": turns})
    return out


def write_demo_world(root: str | Path, *, train_images: int, eval_images: int, image_size: int, noise: float,
                     label_noise: float = 0.0, seed: int = 0, sft_eval_images: int = 0,
                     extra_qa: int = 0) -> World:
    """Writes the world and the caption / SFT splits; the records of the last `sft_eval_images` training
    images are held out. With `extra_qa` > 0 the SFT splits hold one long conversation per image
    (`long_conversations`)."""
    from fact_rlhf_jax.shapesworld import write_world
    from fact_rlhf_jax.shapesworld.writer import image_file

    world = World(Path(root))
    paths = write_world(world.root, num_images=train_images, num_eval_images=eval_images, seed=seed, noise=noise,
                        label_noise=label_noise, image_size=image_size)
    held = {image_file(i) for i in range(max(0, train_images - sft_eval_images), train_images)}
    for key, train, held_out in (("sft", world.sft_train, world.sft_eval),
                                 ("pretrain", world.pretrain_train, world.pretrain_eval)):
        records = json.loads(Path(paths[key]).read_text())
        if key == "sft" and extra_qa:
            graphs = json.loads(Path(paths["scene_graphs"]).read_text())
            records = long_conversations(records, graphs, extra_qa=extra_qa, rng=random.Random(seed))
        train.write_text(json.dumps([r for r in records if r["image"] not in held]))
        held_out.write_text(json.dumps([r for r in records if r["image"] in held]))
    return world

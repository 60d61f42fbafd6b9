"""`write_world`: generate a whole ShapesWorld (images, scene graphs, every data file and the
tokenizer) into one directory. Same arguments -> byte-identical files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from fact_rlhf_jax.shapesworld import records
from fact_rlhf_jax.shapesworld.render import render
from fact_rlhf_jax.shapesworld.scene import Scene, sample_scene
from fact_rlhf_jax.shapesworld.text import captions as make_captions
from fact_rlhf_jax.shapesworld.tokenizer import save_tokenizer, train_tokenizer

EVAL_ID_OFFSET = 10**9  # eval images are numbered from here, train images from 0
POPE_SPLITS = ("random", "popular", "adversarial")

# Fixed text the models will also see (conversation template, reward prompt, POPE suffix); it is
# part of the tokenizer's training text so these strings encode into few pieces.
TEMPLATE_TEXT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. USER: ASSISTANT:",
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions. USER: ASSISTANT:",
    "USER: Please evaluate the quality of your last response. There are several dimensions you should "
    "consider in your evaluation:\n\n1. Accurate: The AI should provide factual and accurate information "
    "from the image, and refrain from making statements that are not supported by the image or "
    "inconsistent with the image. Specifically, the AI's response should be fully supported by the "
    "combination of the following captions:\n\n2. Helpful: The AI\u2019s response should precisely serve the "
    "user's needs and interests, while grounding the response in the image.\n3. Language Natural: The AI "
    "should employ language that flows smoothly and is free from repetitive or awkward constructs.\n4. "
    "Concise: The AI should efficiently address the task or answer the question, communicating the "
    "necessary information with brevity and clarity.\n\nA good response should be accurate, helpful, "
    "language natural, and concise. ASSISTANT: Following your definitions, the quality score of my last "
    "response is",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
)
# Every conversation carries the template text, but it is written into the corpus only once per string;
# repeating it this often lets BPE merge its words (the vicuna/llava system prompt then encodes into
# about 30 pieces instead of about 95 mostly single characters).
TEMPLATE_REPEATS = 64


def image_file(index: int) -> str:
    """COCO-like 12-digit file name (LLaVA-RLHF's PPO code parses the number back)."""
    return f"{index:012d}.png"


def _scenes(seed: int, split: int, n: int) -> list[Scene]:
    # One generator per image, so image i does not depend on how many images are drawn.
    return [sample_scene(random.Random(f"shapesworld/{seed}/{split}/{i}")) for i in range(n)]


def _dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
    return path


def _dump_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_world(
    out_dir: str | Path,
    *,
    num_images: int,
    seed: int = 0,
    noise: float = 0.1,
    image_size: int = 64,
    num_eval_images: int | None = None,
    label_noise: float | None = None,
    vocab_size: int = 1024,
) -> dict[str, Path]:
    """Write a ShapesWorld into `out_dir` and return the path of everything written.

    num_images: training images (SFT, pretraining, preference pairs and PPO prompts all use them).
    num_eval_images: held-out images for POPE and the MMHal-style file (default max(8, num_images // 4)).
    noise: share of SFT descriptions that mention an object not in the image.
    label_noise: share of preference labels flipped (default: `noise`).
    Keys of the result: images, scene_graphs, sft, sft_hallucinations, pretrain, preference,
    captions, ppo_prompts, pope_random, pope_popular, pope_adversarial, mmhal, tokenizer, world.
    """
    if num_images < 1:
        raise ValueError(f"write_world: num_images must be >= 1, got {num_images}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"write_world: noise must be in [0, 1], got {noise}")
    n_eval = max(8, num_images // 4) if num_eval_images is None else num_eval_images
    label_noise = noise if label_noise is None else label_noise
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)

    train_files = [image_file(i) for i in range(num_images)]
    eval_files = [image_file(EVAL_ID_OFFSET + i) for i in range(n_eval)]
    train_scenes = _scenes(seed, 0, num_images)
    eval_scenes = _scenes(seed, 1, n_eval)
    for files, scenes, split in ((train_files, train_scenes, 0), (eval_files, eval_scenes, 1)):
        for i, (file, scene) in enumerate(zip(files, scenes)):
            pixels_rng = np.random.default_rng([seed, split, i])
            render(scene, image_size, pixels_rng).save(image_dir / file, format="PNG")

    paths: dict[str, Path] = {"images": image_dir}
    graphs = {f: s.to_json() for f, s in zip(train_files + eval_files, train_scenes + eval_scenes)}
    paths["scene_graphs"] = _dump(out / "scene_graphs.json", graphs)

    def stream(name: str) -> random.Random:
        return random.Random(f"shapesworld/{seed}/{name}")

    caption_rng = stream("captions")
    captions = {f: make_captions(s, caption_rng) for f, s in zip(train_files + eval_files, train_scenes + eval_scenes)}

    sft, invented = records.sft_records(train_files, train_scenes, stream("sft"), noise)
    paths["sft"] = _dump(out / "sft.json", sft)
    paths["sft_hallucinations"] = _dump(out / "sft_hallucinations.json", invented)
    paths["pretrain"] = _dump(out / "pretrain.json", records.pretrain_records(train_files, captions, stream("pretrain")))
    preference = records.preference_records(train_files, train_scenes, stream("preference"), label_noise)
    paths["preference"] = _dump(out / "preference.json", preference)
    ppo, facts = records.ppo_prompt_records(train_files, train_scenes, captions, stream("ppo"))
    paths["ppo_prompts"] = _dump(out / "ppo_prompts.json", ppo)
    paths["captions"] = _dump(out / "image_to_caption.json", {**captions, **facts})
    for split in POPE_SPLITS:
        rows = records.pope_records(eval_files, eval_scenes, stream(f"pope_{split}"), split)
        paths[f"pope_{split}"] = _dump_jsonl(out / "pope" / f"shapesworld_pope_{split}.jsonl", rows)
    mmhal = records.mmhal_records(eval_files, eval_scenes, stream("mmhal"))
    paths["mmhal"] = _dump(out / "mmhal" / "shapesworld_mmhal.json", mmhal)

    corpus = list(TEMPLATE_TEXT) * TEMPLATE_REPEATS
    for lst in captions.values():
        corpus += lst
    for rec in sft + preference + ppo:
        corpus += [t["value"] for t in rec["conversations"]]
        if "output_1" in rec:
            corpus += [rec["output_1"]["value"], rec["output_2"]["value"]]
    corpus += [r["question"] + "\n" + r["gt_answer"] for r in mmhal]
    paths["tokenizer"] = save_tokenizer(train_tokenizer(corpus, vocab_size), out / "tokenizer")

    world = {
        "seed": seed,
        "num_images": num_images,
        "num_eval_images": n_eval,
        "noise": noise,
        "label_noise": label_noise,
        "image_size": image_size,
        "vocab_size": vocab_size,
        "train_images": [train_files[0], train_files[-1]],
        "eval_images": [eval_files[0], eval_files[-1]] if eval_files else [],
        "counts": {
            "sft": len(sft),
            "pretrain": num_images,
            "preference": len(preference),
            "ppo_prompts": len(ppo),
            "pope_per_split": len(records.pope_records(eval_files, eval_scenes, random.Random(0), "random")),
            "mmhal": len(mmhal),
        },
        "files": {k: str(p.relative_to(out)) for k, p in paths.items()},
    }
    paths["world"] = _dump(out / "world.json", world)
    return paths

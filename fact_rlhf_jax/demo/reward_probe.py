"""What a reward model rewards: its ranking of the SFT model's own descriptions against the annotator's.

PPO climbs whatever the reward model scores highest among the policy's samples, so the number that predicts
a PPO run is not the held-out preference accuracy (measured on pairs built like the training pairs) but how
the reward model ranks fresh samples of the policy. The probe samples `samples` descriptions (T = 1) from the
SFT model for each of the first `images` eval images (the `probe` stage, `probe/probe.json`) and, for each
reward model, reports:

- `agreement`: of the sample pairs of one image that the annotator orders (`annotator.preference_score`),
  the share the reward model orders the same way (a tie counts half);
- `corr_words`, `corr_hallucinations`: Pearson correlation of the reward with the number of words and with
  the number of hallucinated objects, both centred per image (what a best-of-n choice within an image sees);
- `best_of_n`: CHAIR-i, coverage and mean words of the reward model's favourite sample of each image.

The samples stage reports the same `best_of_n` numbers for the annotator's favourite (`oracle`) and for the
first sample of each image (`sample`), so a reward model reads against both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.shapesworld.annotator import annotate, chair_scores, preference_score
from fact_rlhf_jax.shapesworld.metrics import mean_length
from fact_rlhf_jax.shapesworld.scene import Scene, load_scenes
from fact_rlhf_jax.shapesworld.text import DESCRIBE_PROMPTS

PROBE_FILE = "probe.json"


def sample_descriptions(chat, world: World, out_dir: Path, *, images: int, samples: int, max_new_tokens: int,
                        seed: int = 0) -> list[dict[str, Any]]:
    """[{"image", "question", "texts": [samples]}] for the first `images` eval images, written to probe.json."""
    import jax
    from PIL import Image

    files = world.eval_images()[:images]
    questions = [DESCRIBE_PROMPTS[i % len(DESCRIBE_PROMPTS)] for i in range(len(files))]
    pictures = [Image.open(world.path("images") / f).convert("RGB") for f in files]
    rows = chat.generate_ids([q for q in questions for _ in range(samples)],
                             [p for p in pictures for _ in range(samples)], max_new_tokens=max_new_tokens,
                             temperature=1.0, conv_mode="vicuna_v1", rng=jax.random.key(seed))
    texts = [chat.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]
    probe = [{"image": f, "question": q, "texts": texts[i * samples:(i + 1) * samples]}
             for i, (f, q) in enumerate(zip(files, questions))]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PROBE_FILE).write_text(json.dumps(probe))
    return probe


def load_probe(out_dir: Path) -> list[dict[str, Any]]:
    return json.loads((out_dir / PROBE_FILE).read_text())


def best_of_n(scenes: Sequence[Scene], texts: Sequence[Sequence[str]], choice: Sequence[int]) -> dict[str, float]:
    """CHAIR-i, coverage and mean words of the chosen sample of each image."""
    chosen = [options[k] for options, k in zip(texts, choice, strict=True)]
    scores = chair_scores(list(scenes), chosen)
    return {"hallucination_rate": scores["chair_i"], "coverage": scores["coverage"],
            "mean_length": mean_length(chosen)}


def _centred_corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of [images, samples] arrays after subtracting each image's mean."""
    x = (x - x.mean(axis=1, keepdims=True)).ravel()
    y = (y - y.mean(axis=1, keepdims=True)).ravel()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def rank_report(rewards: np.ndarray, annotator: np.ndarray, words: np.ndarray, hallucinations: np.ndarray,
                scenes: Sequence[Scene], texts: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The probe's numbers for one scorer; every array is float [images, samples]."""
    agree = total = 0.0
    for r, a in zip(rewards, annotator):
        better = a[:, None] > a[None, :]  # [i, j]: the annotator prefers sample i to sample j
        total += better.sum()
        agree += (better & (r[:, None] > r[None, :])).sum() + 0.5 * (better & (r[:, None] == r[None, :])).sum()
    return {"agreement": float(agree / total) if total else float("nan"),
            "corr_words": _centred_corr(rewards, words),
            "corr_hallucinations": _centred_corr(rewards, hallucinations),
            "best_of_n": best_of_n(scenes, texts, rewards.argmax(axis=1).tolist())}


class Probe:
    """The annotator's view of the probe samples, computed once and shared by every scorer."""

    def __init__(self, world: World, probe: list[dict[str, Any]]):
        graphs = load_scenes(world.path("scene_graphs"))
        self.world = world
        self.items = probe
        self.scenes = [graphs[p["image"]] for p in probe]
        self.texts = [p["texts"] for p in probe]
        self.annotator = np.array([[preference_score(s, t) for t in ts] for s, ts in zip(self.scenes, self.texts)],
                                  np.float64)
        self.words = np.array([[len(t.split()) for t in ts] for ts in self.texts], np.float64)
        self.hallucinations = np.array([[len(annotate(s, t).hallucinated) for t in ts]
                                        for s, ts in zip(self.scenes, self.texts)], np.float64)

    def baselines(self) -> dict[str, Any]:
        """best_of_n of the annotator's favourite (`oracle`) and of the first sample (`sample`)."""
        return {"images": len(self.items), "samples": self.annotator.shape[1],
                "oracle": best_of_n(self.scenes, self.texts, self.annotator.argmax(axis=1).tolist()),
                "sample": best_of_n(self.scenes, self.texts, [0] * len(self.items))}

    def report(self, rewards: np.ndarray) -> dict[str, Any]:
        return rank_report(np.asarray(rewards, np.float64), self.annotator, self.words, self.hallucinations,
                           self.scenes, self.texts)

    def reward_model_scores(self, reward_model) -> np.ndarray:
        """[images, samples] rewards of a `scoring.RewardModel` (a Fact-RM gets each image's captions from its own
        captions file, in an order shuffled once per image)."""
        from PIL import Image

        ids, pictures = [], []
        for i, item in enumerate(self.items):
            picture = Image.open(self.world.path("images") / item["image"]).convert("RGB")
            for text in item["texts"]:
                record = {"image": item["image"],
                          "conversations": [{"from": "human", "value": "<image>\n" + item["question"]},
                                            {"from": "gpt", "value": text or "."}]}
                ids.append(reward_model.input_ids(record, np.random.default_rng([0, i])))
                pictures.append(picture)
        return np.asarray(reward_model.score_ids(ids, pictures), np.float64).reshape(self.annotator.shape)

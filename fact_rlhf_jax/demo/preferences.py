"""The demo's preference data, collected as LLaVA-RLHF collected its own: responses sampled from the SFT model
and labelled by (simulated) crowdworkers.

The world's `preference.json` pairs templated descriptions with edited copies (an object added or dropped).
Those are not the mistakes the SFT model makes (it repeats objects, names the wrong colour, miscounts), and a
reward model trained on them is asked, during PPO, to judge text unlike any it saw. So, as the reference's 10k
human-preference pairs were sampled from LLaVA-SFT and labelled by crowdworkers, this stage samples
`samples` responses per prompt from the demo's SFT model (`pairs.make_pairs`, the project's sampler) and lets
the ShapesWorld annotator label them (fewer hallucinated objects first, then more objects covered:
`annotator.preference_score`).

Which two samples of a prompt make its pair (`PairSchedule.pairing`):
- "more_mentions" (default, `length_controlled_chooser`): the preferred response mentions at least as many
  objects as the other; of the pairs meeting that, the largest score difference; prompts with none give no
  pair. A pair then never prefers saying less.
- "same_mentions": the same with exactly as many objects mentioned: length predicts nothing.
- "best_worst" (`pairs.choose_pair`): the best and the worst sample.
Measured (docs/demo.md): the SFT model's shorter samples hallucinate less (the annotator's score correlates
-0.61 with the number of words). With "best_worst" both reward models learned length, not content (scores
correlated -0.90 and -0.69 with words; best-of-16 by either picked answers covering a quarter of the objects or
less) and PPO wrote one-sentence descriptions. With "more_mentions" they learned length the other way (+0.89
and +0.50) and PPO wrote longer descriptions with more hallucinations. The demo's 3-layer decoder learns the
length shortcut either way, not the content. The prompts are the final questions of the world's preference records (its training images: descriptions,
existence and counting questions), asked as first turns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.pairs import Chooser, PairSettings, Prompt, Samples, Scorer, pair_record


@dataclasses.dataclass(frozen=True)
class PairSchedule:
    """On-policy pairs: `prompts` prompts, `samples` responses each at `temperature`, up to `max_new_tokens`;
    `pairing`: "more_mentions" or "same_mentions" (`length_controlled_chooser`), or "best_worst"
    (`pairs.choose_pair`)."""

    prompts: int
    samples: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 128  # sampler rows per call (3-9 % more tokens/s than 64 for the demo model: BENCHMARKS.md)
    pairing: str = "more_mentions"


def prompt_records(world: World, limit: int) -> list[dict[str, Any]]:
    """The first `limit` preference records' final questions as first-turn prompts (the format PPO prompts
    have; the record's reference answer stays as the conversation's placeholder gpt turn)."""
    records = json.loads(world.path("preference").read_text())[:limit]
    out = []
    for r in records:
        question, answer = r["conversations"][-2]["value"], r["conversations"][-1]["value"]
        question = question.replace("<image>\n", "")
        out.append({"id": r["id"], "image": r["image"],
                    "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                      {"from": "gpt", "value": answer}]})
    return out


def annotator_scorer(world: World) -> Scorer:
    """Scores each sample by the ShapesWorld annotator against its image's scene graph."""
    from fact_rlhf_jax.shapesworld.annotator import preference_score
    from fact_rlhf_jax.shapesworld.scene import Scene

    graphs = json.loads(world.path("scene_graphs").read_text())

    def score(prompts: Sequence[Prompt], samples: Samples, settings: PairSettings) -> list[list[float | None]]:
        del settings
        out = []
        for p, prompt_samples in zip(prompts, samples):
            scene = Scene.from_json(graphs[p.record["image"]])
            out.append([float(preference_score(scene, text)) if text else None for text, _ in prompt_samples])
        return out

    return score


def length_controlled_chooser(world: World, *, equal: bool = False) -> Chooser:
    """Of the usable samples of a prompt, the pair (better, worse) with the largest score difference among
    those where the better one mentions at least as many objects as the worse one (`equal`: exactly as many)."""
    from fact_rlhf_jax.shapesworld.annotator import annotate
    from fact_rlhf_jax.shapesworld.scene import Scene

    graphs = json.loads(world.path("scene_graphs").read_text())

    def choose(prompt: Prompt, texts: Sequence[str], scores: Sequence[float | None], usable: Sequence[bool],
               settings: PairSettings) -> tuple[dict | None, str]:
        scene = Scene.from_json(graphs[prompt.record["image"]])
        candidates = [k for k in range(len(texts)) if usable[k] and scores[k] is not None]
        mentions = {k: len(annotate(scene, texts[k]).mentioned) for k in candidates}
        best_gap, pair = settings.min_margin, None
        for better in candidates:
            for worse in candidates:
                gap = scores[better] - scores[worse]
                same = mentions[better] == mentions[worse]
                if gap > best_gap and (same or not equal and mentions[better] > mentions[worse]):
                    best_gap, pair = gap, (better, worse)
        if pair is None:
            return None, "no_length_controlled_pair"
        return pair_record(prompt, texts, scores, *pair, settings), ""

    return choose


def sample_pairs(world: World, policy_dir: str | Path, workdir: Path, schedule: PairSchedule,
                 seed: int = 0) -> dict[str, Any]:
    """Writes `workdir/prompts.json` and `workdir/preference.json` (resumable through its progress file);
    returns `pairs.make_pairs`' summary."""
    from fact_rlhf_jax.inference import ChatModel
    from fact_rlhf_jax.pairs import make_pairs

    choosers = {"more_mentions": length_controlled_chooser, "best_worst": lambda world: None,
                "same_mentions": lambda world: length_controlled_chooser(world, equal=True)}
    if schedule.pairing not in choosers:
        raise ValueError(f"pairing={schedule.pairing!r}: expected one of {sorted(choosers)}")
    workdir.mkdir(parents=True, exist_ok=True)
    prompts = workdir / "prompts.json"
    prompts.write_text(json.dumps(prompt_records(world, schedule.prompts)))
    chat = ChatModel.load(str(policy_dir), batch_size=schedule.batch_size, seed=seed)
    settings = PairSettings(samples=schedule.samples, temperature=schedule.temperature,
                            max_new_tokens=schedule.max_new_tokens, seed=seed)
    return make_pairs(chat, annotator_scorer(world), str(prompts), str(pairs_file(workdir)), settings,
                      image_folder=str(world.path("images")), choose=choosers[schedule.pairing](world))


def pairs_file(workdir: Path) -> Path:
    return workdir / "preference.json"

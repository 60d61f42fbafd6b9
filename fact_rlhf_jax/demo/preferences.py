"""The demo's preference data, collected as LLaVA-RLHF collected its own: responses sampled from the SFT model
and labelled by (simulated) crowdworkers.

The world's `preference.json` pairs templated descriptions with edited copies (an object added or dropped).
Those are not the mistakes the SFT model makes (it repeats objects, names the wrong colour, miscounts), and a
reward model trained on them is asked, during PPO, to judge text unlike any it saw. So, as the reference's 10k
human-preference pairs were sampled from LLaVA-SFT and labelled by crowdworkers, this stage samples
`samples` responses per prompt from the demo's SFT model (`pairs.make_pairs`, the project's sampler) and lets
the ShapesWorld annotator label them (fewer hallucinated objects first, then more objects covered:
`annotator.preference_score`).

Which two samples of a prompt make its pair is controlled for length (`length_controlled_chooser`): the
preferred response must mention at least as many objects as the other. Measured without this rule (best
against worst): shorter SFT samples hallucinate less (the annotator's score correlates -0.61 with the number
of words), so both reward models learned length, not content (their scores correlated -0.90 and -0.69 with
the number of words), best-of-16 by either picked short answers that covered a quarter of the objects or
less, and PPO against them wrote one-sentence descriptions. With the rule, a pair never prefers saying less:
it contrasts responses of equal or growing length that differ in how many of their objects are real. Of the
pairs meeting it, the one with the largest score difference is kept; prompts with none give no pair. The
prompts are the final questions of the world's preference records (its training images: descriptions,
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
    """On-policy pairs: `prompts` prompts, `samples` responses each at `temperature`, up to `max_new_tokens`."""

    prompts: int
    samples: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 64  # sampler rows per call


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


def length_controlled_chooser(world: World) -> Chooser:
    """Of the usable samples of a prompt, the pair (better, worse) with the largest score difference among
    those where the better one mentions at least as many objects as the worse one."""
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
                if gap > best_gap and mentions[better] >= mentions[worse]:
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

    workdir.mkdir(parents=True, exist_ok=True)
    prompts = workdir / "prompts.json"
    prompts.write_text(json.dumps(prompt_records(world, schedule.prompts)))
    chat = ChatModel.load(str(policy_dir), batch_size=schedule.batch_size, seed=seed)
    settings = PairSettings(samples=schedule.samples, temperature=schedule.temperature,
                            max_new_tokens=schedule.max_new_tokens, seed=seed)
    return make_pairs(chat, annotator_scorer(world), str(prompts), str(pairs_file(workdir)), settings,
                      image_folder=str(world.path("images")), choose=length_controlled_chooser(world))


def pairs_file(workdir: Path) -> Path:
    return workdir / "preference.json"

"""On-policy preference pairs: K sampled responses per prompt, scored, best against worst.

    fact-rlhf pairs --policy P --reward RM --prompts PPO.json --samples K --out PREFS.json [--image-folder D]

`make_pairs` takes any scorer (`Scorer`: the K samples of each prompt -> one number each, higher = better).
The command scores with a reward model (`reward_model_scorer`); the demo scores with the ShapesWorld
annotator (`demo/preferences.py`), the simulated crowdworkers who label LLaVA-RLHF's preference data.

For every prompt record of the PPO prompt file (`conversations`: a human turn and a gpt turn, optional
`captions`, `caption_type`, `length_bonus`; read as PPO reads it, `data.prompts`), the policy samples K
responses to the first human turn with the project's sampler (`ChatModel.generate_ids` -> `sampling.generate`,
the training template `vicuna_v1` by default, `temperature`), the reward model scores every response
(`scoring.RewardModel`, the reward input PPO scores; a Fact-RM gets the prompt's facts as PPO gives them,
`data.prompts.prompt_facts`: the `image_to_caption.json` entry, `aok_<image>` for multiple-choice
`caption_type` 2-5, else the record's own `captions`; one fact order per prompt, so its K rewards compare like
with like), and the best and the worst response become one preference record in the LLaVA-RLHF format:

    {...the prompt record's fields, "conversations": [human, gpt], "output_1": {"value": ...},
     "output_2": {"value": ...}, "preference": 1 | 2, "reward_1": r(output_1), "reward_2": r(output_2),
     "prompt_index": i}

`preference` names the higher score; which output slot the better response takes is a coin seeded by
(seed, prompt index). Responses that do not stop within `max_new_tokens` are left out (DPO would train them as
finished answers; `keep_truncated` keeps them), as are empty ones and ones the reward model cannot score; a
prompt with fewer than two distinct usable responses, or whose best and worst rewards differ by no more than
`min_margin`, gives no pair.

Resumable: each prompt's outcome (the pair or why there is none, plus its K samples and rewards) is appended
to `OUT.progress.jsonl` as soon as its chunk of prompts is scored; a rerun skips the prompts found there, and
OUT, a JSON list in prompt order, is rewritten from that file at the end. Prompts are sampled in chunks of
`batch_size // K` (K rows each); chunk c draws from `fold_in(key(seed), first prompt index of c)`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fact_rlhf_jax.data import errors, prompts as ppo_prompts
from fact_rlhf_jax.data.pipeline import with_record
from fact_rlhf_jax.eval.records import JsonlStore, write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PairSettings:
    samples: int
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 896
    conv_mode: str = "vicuna_v1"
    seed: int = 0
    keep_truncated: bool = False
    min_margin: float = 0.0
    limit: int = 0  # > 0: only the first `limit` prompts
    strict: bool = False


@dataclasses.dataclass
class Prompt:
    index: int
    record: dict
    question: str  # the first human turn, as in the file
    answer: str    # the record's own gpt answer to it, or "" (kept as the conversation's placeholder)
    image: Any     # PIL image or None
    caption_type: int = 1


def progress_path(out: str | Path) -> Path:
    return Path(f"{out}.progress.jsonl")


def read_prompt(src, index: int) -> Prompt:
    """Prompt `index` of a source; raises `BadRecordError` naming the file, record and field."""

    def parse(source, rec):
        question, ctype = ppo_prompts.first_question(rec), ppo_prompts.caption_type(rec)
        turns = rec["conversations"]
        second = turns[1] if len(turns) > 1 and isinstance(turns[1], dict) else {}
        answer = second.get("value") if second.get("from") == "gpt" and isinstance(second.get("value"), str) else ""
        image = source.load_image(rec) if source.has_image(rec) else None
        return Prompt(index, rec, question, answer, image, ctype)

    return with_record(src, index, parse)


def choose_pair(prompt: Prompt, texts: Sequence[str], rewards: Sequence[float | None],
                usable: Sequence[bool], settings: PairSettings) -> tuple[dict | None, str]:
    """(preference record, "") for the best and worst usable response, or (None, why not)."""
    candidates = [k for k in range(len(texts)) if usable[k] and rewards[k] is not None]
    if len({texts[k] for k in candidates}) < 2:
        return None, "fewer_than_two_responses"
    best = max(candidates, key=lambda k: rewards[k])
    worst = min(candidates, key=lambda k: rewards[k])
    if not rewards[best] - rewards[worst] > settings.min_margin:
        return None, "margin"
    return pair_record(prompt, texts, rewards, best, worst, settings), ""


def pair_record(prompt: Prompt, texts: Sequence[str], rewards: Sequence[float | None], best: int, worst: int,
                settings: PairSettings) -> dict:
    """The preference record of response `best` over response `worst`; the better one's output slot is a coin
    seeded by (seed, prompt index)."""
    best_second = np.random.default_rng([settings.seed, prompt.index]).random() < 0.5
    first, second = (worst, best) if best_second else (best, worst)
    record = {
        **prompt.record,
        "conversations": [{"from": "human", "value": prompt.question}, {"from": "gpt", "value": prompt.answer}],
        "output_1": {"value": texts[first]},
        "output_2": {"value": texts[second]},
        "preference": 2 if best_second else 1,
        "reward_1": float(rewards[first]),
        "reward_2": float(rewards[second]),
        "prompt_index": prompt.index,
    }
    return record


def sample_chunk(chat, prompts: Sequence[Prompt], settings: PairSettings) -> list[list[tuple[str, bool]]]:
    """K (text, stopped) samples per prompt, drawn from a key fixed by the chunk's first prompt index."""
    k = settings.samples
    questions = [p.question for p in prompts for _ in range(k)]
    images = [p.image for p in prompts for _ in range(k)]
    key = jax.random.fold_in(jax.random.key(settings.seed), prompts[0].index)
    rows = chat.generate_ids(questions, images, max_new_tokens=settings.max_new_tokens,
                             temperature=settings.temperature, top_p=settings.top_p, conv_mode=settings.conv_mode,
                             rng=key)
    # generate_ids drops the stop token: a row that stopped is shorter than max_new_tokens
    out = [(chat.tokenizer.decode(row, skip_special_tokens=True).strip(), len(row) < settings.max_new_tokens)
           for row in rows]
    return [out[i * k:(i + 1) * k] for i in range(len(prompts))]


Samples = Sequence[Sequence[tuple[str, bool]]]  # per prompt: its K (text, stopped)
# (prompts, their samples, settings) -> per prompt, one score per sample (None: not scorable); higher is better
Scorer = Callable[[Sequence[Prompt], Samples, PairSettings], list[list[float | None]]]
# (prompt, texts, scores, usable, settings) -> (preference record, "") or (None, why no pair): `choose_pair`
Chooser = Callable[[Prompt, Sequence[str], Sequence[float | None], Sequence[bool], PairSettings],
                   tuple[dict | None, str]]


def reward_model_scorer(reward_model) -> Scorer:
    """Scores samples with a `scoring.RewardModel` (`score_chunk`)."""
    return lambda prompts, samples, settings: score_chunk(reward_model, prompts, samples, settings)


def score_chunk(reward_model, prompts: Sequence[Prompt], samples: Samples,
                settings: PairSettings) -> list[list[float | None]]:
    """The reward of every sample (None where the reward model cannot score it)."""
    todo, where = [], []
    for p, prompt_samples in zip(prompts, samples):
        for j, (text, _) in enumerate(prompt_samples):
            if not text:
                continue
            record = {**p.record, "conversations": [{"from": "human", "value": p.question},
                                                    {"from": "gpt", "value": text}]}
            facts = ppo_prompts.prompt_facts(p.record, reward_model.captions, p.caption_type)
            try:  # one fact order per prompt: its K rewards see the same instruction
                ids = reward_model.input_ids(record, np.random.default_rng([settings.seed, p.index]), facts=facts)
            except errors.BadRecordError as e:
                log.debug("prompt %d, sample %d not scored: %s", p.index, j, e)
                continue
            todo.append((ids, p.image))
            where.append((p.index, j))
    scores = reward_model.score_ids([ids for ids, _ in todo], [im for _, im in todo]) if todo else []
    rewards = {p.index: [None] * len(s) for p, s in zip(prompts, samples)}
    for (i, j), score in zip(where, scores):
        rewards[i][j] = score
    return [rewards[p.index] for p in prompts]


def make_pairs(chat, score: Scorer, prompts_path: str, out: str, settings: PairSettings,
               image_folder: str | None = None, choose: Chooser | None = None) -> dict:
    """Writes OUT (and its progress file); returns {"prompts", "pairs", "new", "skipped": {reason: n}}.
    `score`: a `Scorer` (a reward model's: `reward_model_scorer`); `choose`: which two samples of a prompt
    become its pair (default `choose_pair`: the best and the worst)."""
    choose = choose or choose_pair
    from fact_rlhf_jax.data.sources import SourceSpec, open_source

    if settings.samples < 2:
        raise ValueError(f"--samples {settings.samples}: a pair needs at least 2 samples per prompt")
    src = open_source(SourceSpec(prompts_path, image_folder or None))
    n = len(src) if settings.limit <= 0 else min(settings.limit, len(src))
    store = JsonlStore(str(progress_path(out)), "prompt_index")
    chunk_size = max(1, chat.batch_size // settings.samples)
    todo = [i for i in range(n) if i not in store]
    new = 0
    try:
        for start in range(0, len(todo), chunk_size):
            prompts = []
            for i in todo[start:start + chunk_size]:
                try:
                    prompts.append(read_prompt(src, i))
                except errors.BadRecordError as e:
                    if settings.strict:
                        raise
                    log.warning("skipped: %s", e)
                    store.add({"prompt_index": i, "skipped": e.reason, "detail": str(e)})
            if not prompts:
                continue
            samples = sample_chunk(chat, prompts, settings)
            rewards = score(prompts, samples, settings)
            for p, prompt_samples, prompt_rewards in zip(prompts, samples, rewards):
                usable = [bool(text) and (stopped or settings.keep_truncated) for text, stopped in prompt_samples]
                pair, why = choose(p, [t for t, _ in prompt_samples], prompt_rewards, usable, settings)
                entry = {"prompt_index": p.index,
                         "samples": [{"text": t, "stopped": s, "reward": r}
                                     for (t, s), r in zip(prompt_samples, prompt_rewards)]}
                entry.update({"pair": pair} if pair is not None else {"skipped": why})
                store.add(entry)
                new += pair is not None
            log.info("pairs: %d of %d prompts done", len(store), n)
    finally:
        store.close()
    entries = [store.records[i] for i in sorted(store.records) if i < n]
    write_json(out, [e["pair"] for e in entries if "pair" in e])
    skipped = collections.Counter(e["skipped"] for e in entries if "skipped" in e)
    return {"prompts": len(entries), "pairs": sum("pair" in e for e in entries), "new": new,
            "skipped": dict(skipped)}

"""One model on the demo world's held-out eval images: every number through the shared harness code.

- descriptions: one greedy description per eval image (the world's description prompts in turn), read by
  the ShapesWorld annotator; `eval.metrics.chair` gives `hallucination_rate` (CHAIR-i, per object mention),
  `response_hallucination_rate` (CHAIR-s) and `coverage`; `mean_length` in words;
- `pope_f1`: the world's three POPE files through `eval.pope` (mean F1 over the splits);
- `mc_accuracy`: one A-D question per eval image from `shapesworld.questions.multiple_choice` (the world
  writes multiple-choice prompts only for training images), seeded by the image name, scored by
  `shapesworld.metrics.multiple_choice_accuracy`;
- `mmhal_score`: the world's MMHal file through `eval.mmhal` with the exact `ShapesWorldJudge`.
Each rate gets a seeded 95 % percentile-bootstrap interval over its items (`<name>_ci`). Answers and
judgements are kept in JSONL files under `out_dir`, so an interrupted evaluation resumes.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.eval import metrics, mmhal, pope
from fact_rlhf_jax.eval.generation import Answerer, GenerationSettings, Prompt, answer_prompts
from fact_rlhf_jax.eval.judge import load_template
from fact_rlhf_jax.eval.records import JsonlStore
from fact_rlhf_jax.shapesworld import questions
from fact_rlhf_jax.shapesworld.annotator import Annotation, annotate
from fact_rlhf_jax.shapesworld.metrics import mean_length, multiple_choice_accuracy
from fact_rlhf_jax.shapesworld.scene import Scene, load_scenes
from fact_rlhf_jax.shapesworld.text import DESCRIBE_PROMPTS
from fact_rlhf_jax.shapesworld.writer import POPE_SPLITS

METRICS = ("hallucination_rate", "response_hallucination_rate", "coverage", "pope_f1", "mc_accuracy",
           "mmhal_score")  # each with a `<name>_ci`; plus mean_length and n


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    batch_size: int = 128  # prompts per generation call
    conv_mode: str = "vicuna_v1"  # the template the demo model was trained with
    description_tokens: int = 160
    pope_tokens: int = 24  # enough for "Yes, there is a red circle in the image."
    mc_tokens: int = 48
    mmhal_tokens: int = 160
    pope_suffix: str = ""  # the SFT data never asks for one-word answers
    resamples: int = 1000
    seed: int = 0

    def generation(self, max_new_tokens: int) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, conv_mode=self.conv_mode,
                                  batch_size=self.batch_size)


def mc_questions(files: list[str], scenes: dict[str, Scene], seed: int = 0) -> list[questions.QA]:
    """One multiple-choice question per image, drawn from a generator seeded by (seed, image)."""
    return [questions.multiple_choice(scenes[f], random.Random(f"demo-mc/{seed}/{f}")) for f in files]


def _answers(prompts: list[Prompt], model: Answerer, path: Path, key: str, settings: GenerationSettings) -> list[str]:
    with JsonlStore(str(path), key) as store:
        answer_prompts(prompts, model, store, settings, show_progress=False)
        return [store.get(p.key)["text"] for p in prompts]


def _with_interval(out: dict[str, Any], name: str, n: int, statistic, settings: EvalSettings) -> None:
    out[name] = statistic(list(range(n)))
    lo, hi = metrics.bootstrap_interval(n, statistic, resamples=settings.resamples, seed=settings.seed)
    out[f"{name}_ci"] = [lo, hi]


def describe(model: Answerer, world: World, out_dir: Path, settings: EvalSettings) -> list[dict[str, Any]]:
    """Greedy descriptions of the eval images: [{"image", "prompt", "text"}] (cached in descriptions.jsonl)."""
    files = world.eval_images()
    prompts = [Prompt(key=f, text=DESCRIBE_PROMPTS[i % len(DESCRIBE_PROMPTS)], image=str(world.path("images") / f))
               for i, f in enumerate(files)]
    texts = _answers(prompts, model, out_dir / "descriptions.jsonl", "image",
                     settings.generation(settings.description_tokens))
    return [{"image": p.key, "prompt": p.text, "text": t} for p, t in zip(prompts, texts)]


def description_metrics(notes: list[Annotation], texts: list[str], settings: EvalSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def chair_of(key):
        return lambda idx: metrics.chair([notes[i].mentioned for i in idx], [notes[i].present for i in idx])[key]

    for name, key in (("hallucination_rate", "chair_i"), ("response_hallucination_rate", "chair_s"),
                      ("coverage", "coverage")):
        _with_interval(out, name, len(notes), chair_of(key), settings)
    out["mean_length"] = mean_length(texts)
    out["n"] = len(texts)
    return out


def pope_metrics(model: Answerer, world: World, out_dir: Path, settings: EvalSettings) -> dict[str, Any]:
    """Mean F1 over the POPE splits (`pope.average`), interval from resampling all questions."""
    per_split, items = {}, []
    for split in POPE_SPLITS:
        qs = pope.load_questions(str(world.path(f"pope_{split}")))
        path = str(out_dir / f"pope_{split}_answers.jsonl")
        pope.generate(qs, model, path, image_dir=str(world.path("images")), prompt_suffix=settings.pope_suffix,
                      settings=settings.generation(settings.pope_tokens), show_progress=False)
        answers = pope.load_answers(path)
        per_split[split] = pope.score(qs, answers, path)
        items += [(split, metrics.parse_pope_answer(answers[str(q.question_id)]), q.label) for q in qs]

    def mean_f1(idx):
        groups: dict[str, tuple[list[bool], list[bool]]] = {}
        for i in idx:
            split, pred, label = items[i]
            preds, labels = groups.setdefault(split, ([], []))
            preds.append(pred)
            labels.append(label)
        return sum(metrics.binary_metrics(p, l)["f1"] for p, l in groups.values()) / len(groups)

    out: dict[str, Any] = {}
    _with_interval(out, "pope_f1", len(items), mean_f1, settings)
    out["pope_f1"] = pope.average(per_split)["f1"]  # the harness's number; equal to mean_f1 of all items
    return out


def mc_metrics(model: Answerer, world: World, scenes: dict[str, Scene], out_dir: Path,
               settings: EvalSettings) -> dict[str, Any]:
    files = world.eval_images()
    qas = mc_questions(files, scenes, settings.seed)
    prompts = [Prompt(key=f, text=qa.question, image=str(world.path("images") / f)) for f, qa in zip(files, qas)]
    answers = _answers(prompts, model, out_dir / "mc_answers.jsonl", "image", settings.generation(settings.mc_tokens))
    letters = [qa.label for qa in qas]
    out: dict[str, Any] = {}
    _with_interval(out, "mc_accuracy", len(files), lambda idx: multiple_choice_accuracy(
        [answers[i] for i in idx], [letters[i] for i in idx])["accuracy"], settings)
    return out


def mmhal_metrics(model: Answerer, world: World, scenes: dict[str, Scene], out_dir: Path,
                  settings: EvalSettings) -> dict[str, Any]:
    from fact_rlhf_jax.shapesworld.judge import ShapesWorldJudge

    mmhal_dir = out_dir / "mmhal"
    responses = mmhal.generate(str(world.path("mmhal")), model, str(mmhal_dir), image_dir=str(world.root),
                               settings=settings.generation(settings.mmhal_tokens), show_progress=False)
    records = mmhal.load_records(responses, need_answers=True)
    judged, _ = mmhal.judge_records(records, ShapesWorldJudge(scenes, str(world.path("scene_graphs"))),
                                    load_template("mmhal_judge.txt"), str(mmhal_dir / "mmhal_judgements.jsonl"),
                                    show_progress=False)
    ratings = [metrics.parse_mmhal_rating(r["judge_response"]) for r in judged]
    types = [r["question_type"] for r in judged]
    out: dict[str, Any] = {}
    _with_interval(out, "mmhal_score", len(judged), lambda idx: metrics.mmhal_summary(
        [ratings[i] for i in idx], [types[i] for i in idx])["overall"]["score"], settings)
    return out


def evaluate_model(model: Answerer, world: World, out_dir: str | Path,
                   settings: EvalSettings = EvalSettings()) -> dict[str, Any]:
    """Every metric of one model (keys: METRICS, their `_ci`, mean_length, n). `model` is a
    `fact_rlhf_jax.inference.ChatModel` or anything with its `answer` method."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes = load_scenes(world.path("scene_graphs"))
    described = describe(model, world, out_dir, settings)
    notes = [annotate(scenes[d["image"]], d["text"]) for d in described]
    result = description_metrics(notes, [d["text"] for d in described], settings)
    result.update(pope_metrics(model, world, out_dir, settings))
    result.update(mc_metrics(model, world, scenes, out_dir, settings))
    result.update(mmhal_metrics(model, world, scenes, out_dir, settings))
    return result

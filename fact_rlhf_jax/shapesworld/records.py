"""ShapesWorld records in the file formats of the real LLaVA-RLHF data (see
`/work/shared/reference/llava_rlhf.md` and docs/shapesworld.md): LLaVA conversations (SFT and
pretraining), preference pairs, `image_to_caption.json`, PPO prompts, POPE questions and an
MMHal-Bench-style file. Each builder takes the scenes and a `random.Random` and returns plain
JSON-ready objects.
"""

from __future__ import annotations

import random
from collections import Counter

from fact_rlhf_jax.shapesworld import questions as qs
from fact_rlhf_jax.shapesworld import text
from fact_rlhf_jax.shapesworld.annotator import annotate, prefer
from fact_rlhf_jax.shapesworld.scene import PLURALS, Scene

IMAGE_TOKEN = "<image>"


def _human(value: str, first: bool = False) -> dict:
    return {"from": "human", "value": f"{IMAGE_TOKEN}\n{value}" if first else value}


def _gpt(value: str) -> dict:
    return {"from": "gpt", "value": value}


def qa_turns(scene: Scene, rng: random.Random, n: int, first: bool) -> list[dict]:
    """`n` random question-answer turn pairs about `scene`; `first`: the first question carries the image."""
    turns = []
    for k in range(n):
        qa = qs.random_question(scene, rng)
        turns += [_human(qa.question, first and k == 0), _gpt(qa.answer)]
    return turns


# ----------------------------------------------------------------------------- SFT / pretraining


def sft_records(
    files: list[str], scenes: list[Scene], rng: random.Random, noise: float
) -> tuple[list[dict], dict[str, list[str]]]:
    """Two LLaVA conversations per image: a detailed description (then one or two questions) and
    a question-answer conversation of two or three turns. With probability `noise` a description
    mentions one or two objects that are not in the image. Returns the records and, for every
    noisy record id, the names of the invented objects."""
    records, invented = [], {}
    for file, scene in zip(files, scenes):
        stem = file.rsplit(".", 1)[0]
        if rng.random() < noise:
            shown, fake = text.hallucinated_scene(scene, rng, extra=rng.choice((1, 1, 2)))
            invented[f"{stem}_desc"] = fake
        else:
            shown = scene
        desc = text.description(shown, rng)
        turns = [_human(rng.choice(text.DESCRIBE_PROMPTS), first=True), _gpt(desc)]
        turns += qa_turns(scene, rng, rng.randint(1, 2), first=False)
        records.append({"id": f"{stem}_desc", "image": file, "conversations": turns})
        if rng.random() < 0.3:
            turns = [_human(rng.choice(text.CAPTION_PROMPTS), first=True), _gpt(text.short_description(scene, rng))]
            turns += qa_turns(scene, rng, rng.randint(1, 2), first=False)
        else:
            turns = qa_turns(scene, rng, rng.randint(2, 3), first=True)
        records.append({"id": f"{stem}_qa", "image": file, "conversations": turns})
    return records, invented


def pretrain_records(files: list[str], captions: dict[str, list[str]], rng: random.Random) -> list[dict]:
    """Projector-pretraining pairs: one caption per image as a one-turn conversation."""
    out = []
    for file in files:
        stem = file.rsplit(".", 1)[0]
        turns = [_human(rng.choice(text.CAPTION_PROMPTS), first=True), _gpt(rng.choice(captions[file]))]
        out.append({"id": f"{stem}_cap", "image": file, "conversations": turns})
    return out


# ----------------------------------------------------------------------------- preference pairs


def _response_pair(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    """(prompt, response_a, response_b) where the two responses differ in hallucinations or in
    coverage, so the annotator has a preference."""
    kind = rng.random()
    if kind < 0.6:
        prompt = rng.choice(text.DESCRIBE_PROMPTS)
        can_drop = len(scene.objects) > 1
        variants = ["faithful", "hallucinated", "hallucinated2"] + (["partial"] * 2 if can_drop else [])
        a, b = rng.sample(variants, 2)
        if {a, b} == {"hallucinated", "hallucinated2"}:
            b = "faithful"

        def render(v: str) -> str:
            if v == "faithful":
                return text.description(scene, rng)
            if v == "partial":
                return text.description(text.partial_scene(scene, rng), rng, state_total=False)
            shown, _ = text.hallucinated_scene(scene, rng, extra=1 if v == "hallucinated" else 2)
            return text.description(shown, rng)

        return prompt, render(a), render(b)
    if kind < 0.8:  # existence: right answer vs the opposite claim
        positive = rng.random() < 0.5
        qa = qs.existence(scene, rng, positive=positive)
        colour, shape = _asked_kind(qa.question)
        if qa.label == "yes":
            wrong = f"No, there is no {colour} {shape} in the image."  # misses a present object
        else:
            wrong = rng.choice((f"Yes, there is {_a(colour)} {colour} {shape} in the image.", f"Yes, {_a(colour)} {colour} {shape} can be seen {rng.choice(('on the left', 'at the top', 'in the center'))}."))
        return qa.question, qa.answer, wrong
    # counting: right count vs one too many
    shape = rng.choice(scene.objects).shape
    n = scene.count(shape=shape)
    q = f"How many {PLURALS[shape]} are in the image?"
    right = f"There {'is one' if n == 1 else f'are {text.number_word(n)}'} {shape if n == 1 else PLURALS[shape]} in the image."
    wrong = f"There are {text.number_word(n + 1)} {PLURALS[shape]} in the image."
    return q, right, wrong


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _asked_kind(question: str) -> tuple[str, str]:
    from fact_rlhf_jax.shapesworld.annotator import find_mentions

    m = find_mentions(question)[0]
    return m.colour, m.shape


def preference_records(
    files: list[str], scenes: list[Scene], rng: random.Random, label_noise: float
) -> list[dict]:
    """One pair per image in the LLaVA-RLHF preference format. The conversation's last gpt turn is
    a faithful reference answer (the reward model replaces it with `output_1` / `output_2`);
    `preference` is the simulated annotator's choice, flipped with probability `label_noise`;
    `hallucination` is 1 when either output mentions an object that is not in the image."""
    out = []
    for file, scene in zip(files, scenes):
        stem = file.rsplit(".", 1)[0]
        history = qa_turns(scene, rng, 1, first=True) if rng.random() < 0.3 else []
        prompt, r1, r2 = _response_pair(scene, rng)
        if rng.random() < 0.5:
            r1, r2 = r2, r1
        pref = prefer(scene, r1, r2)
        if rng.random() < label_noise:
            pref = 3 - pref
        hallucination = int(bool(annotate(scene, r1).hallucinated or annotate(scene, r2).hallucinated))
        reference = text.description(scene, rng) if prompt in text.DESCRIBE_PROMPTS else (r1 if prefer(scene, r1, r2) == 1 else r2)
        conversations = history + [_human(prompt, first=not history), _gpt(reference)]
        out.append(
            {
                "id": f"{stem}_pref",
                "image": file,
                "conversations": conversations,
                "output_1": {"value": r1},
                "output_2": {"value": r2},
                "preference": pref,
                "hallucination": hallucination,
            }
        )
    return out


# ----------------------------------------------------------------------------- captions, PPO prompts


def ppo_prompt_records(
    files: list[str], scenes: list[Scene], captions: dict[str, list[str]], rng: random.Random
) -> tuple[list[dict], dict[str, list[str]]]:
    """One first-turn prompt per image (section 5.1 format): half detailed descriptions
    (`caption_type` 1, `length_bonus` -0.5 so longer answers are rewarded), a fifth A-D multiple
    choice (2-5), a fifth yes/no existence (6 for "no", 7 for "yes"), the rest other questions
    (1); short-answer prompts get `length_bonus` 1.0. Returns the records and the `aok_<file>`
    rationale entries for `image_to_caption.json`."""
    out, facts = [], {}
    for file, scene in zip(files, scenes):
        stem = file.rsplit(".", 1)[0]
        r = rng.random()
        if r < 0.5:
            question, answer, ctype, bonus = rng.choice(text.DESCRIBE_PROMPTS), text.description(scene, rng), qs.GENERAL, -0.5
        else:
            if r < 0.7:
                qa = qs.multiple_choice(scene, rng)
                facts[f"aok_{file}"] = list(qa.rationale)
            elif r < 0.9:
                qa = qs.existence(scene, rng, positive=rng.random() < 0.5)
            else:
                qa = qs.random_question(scene, rng)
                if qa.kind == "multiple_choice":
                    facts[f"aok_{file}"] = list(qa.rationale)
            question, answer, ctype, bonus = qa.question, qa.answer, qa.caption_type, 1.0
        out.append(
            {
                "id": stem,
                "image": file,
                "conversations": [_human(question, first=True), _gpt(answer)],
                "captions": list(captions[file]),
                "caption_type": ctype,
                "length_bonus": bonus,
            }
        )
    return out, facts


# ----------------------------------------------------------------------------- POPE and MMHal


def pope_records(files: list[str], scenes: list[Scene], rng: random.Random, split: str, per_image: int = 3) -> list[dict]:
    """POPE questions ("Is there a <colour> <shape> in the image?"), balanced yes/no per image.
    Negatives: `random` any absent kind; `popular` the absent kinds most frequent over these
    scenes; `adversarial` absent kinds sharing the shape or the colour of a present object."""
    freq = Counter((o.colour, o.shape) for s in scenes for o in s.objects)
    out = []
    for file, scene in zip(files, scenes):
        present = list(dict.fromkeys((o.colour, o.shape) for o in scene.objects))
        positives = rng.sample(present, min(per_image, len(present)))
        absent = text.absent_kinds(scene)
        if split == "random":
            negatives = rng.sample(absent, len(positives))
        elif split == "popular":
            ranked = sorted(absent, key=lambda k: (-freq[k], k))
            negatives = ranked[: len(positives)]
        elif split == "adversarial":
            near = [k for k in absent if any(k[0] == c or k[1] == s for c, s in present)]
            near = rng.sample(near, min(len(near), len(positives)))
            rest = [k for k in absent if k not in near]
            negatives = near + rng.sample(rest, len(positives) - len(near))
        else:
            raise ValueError(f"POPE split must be random, popular or adversarial, got {split!r}")
        items = [(k, "yes") for k in positives] + [(k, "no") for k in negatives]
        rng.shuffle(items)
        for (colour, shape), label in items:
            out.append(
                {
                    "question_id": len(out) + 1,
                    "image": file,
                    "text": f"Is there {_a(colour)} {colour} {shape} in the image?",
                    "label": label,
                }
            )
    return out


MMHAL_TYPES = ("attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other")


def _mmhal_question(kind: str, scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    """(question, gt_answer, topic) of one MMHal question type."""
    objs = list(scene.objects)
    o = rng.choice(objs)
    if kind == "attribute":
        qa = qs.colour(scene, rng) or qs.attribute(scene, rng)
        return qa.question, qa.answer, o.shape
    if kind == "adversarial":  # asks about an absent object as if it were there
        colour, shape = rng.choice(text.absent_kinds(scene))
        q = rng.choice((f"What size is the {colour} {shape}?", f"Where is the {colour} {shape} in the image?"))
        return q, f"There is no {colour} {shape} in the image.", shape
    if kind == "comparison":
        if len(objs) >= 2:
            a, b = rng.sample(objs, 2)
            order = {"small": 0, "medium": 1, "large": 2}
            q = f"Which is larger, the {a.name} or the {b.name}?"
            if order[a.size] == order[b.size]:
                return q, f"The {a.name} and the {b.name} have the same size.", a.shape
            big = a if order[a.size] > order[b.size] else b
            return q, f"The {big.name} is larger.", a.shape
        return f"Is the {o.name} small, medium or large?", f"The {o.name} is {o.size}.", o.shape
    if kind == "counting":
        qa = qs.counting(scene, rng)
        return qa.question, qa.answer, o.shape
    if kind == "relation":
        qa = qs.relation_question(scene, rng) or qs.attribute(scene, rng)
        return qa.question, qa.answer, o.shape
    if kind == "environment":
        noisy = "It is covered with fine pixel noise." if scene.noise > 0 else "It is plain, without noise."
        return "What does the background of the image look like?", f"The background is {scene.background}. {noisy}", "background"
    if kind == "holistic":
        return rng.choice(text.DESCRIBE_PROMPTS), text.description(scene, rng), "scene"
    qa = qs.multiple_choice(scene, rng)
    return qa.question, qa.answer, o.shape


def mmhal_records(files: list[str], scenes: list[Scene], rng: random.Random) -> list[dict]:
    """One MMHal-Bench-style record per image (section 6.1 fields); question types cycle in the
    benchmark's order, so record i has type i mod 8."""
    out = []
    for i, (file, scene) in enumerate(zip(files, scenes)):
        kind = MMHAL_TYPES[i % len(MMHAL_TYPES)]
        question, gt, topic = _mmhal_question(kind, scene, rng)
        out.append(
            {
                "question_type": kind,
                "question_topic": topic,
                "image_id": file.rsplit(".", 1)[0],
                "image_src": file,
                "image_path": f"images/{file}",
                "image_content": scene.names,
                "question": question,
                "gt_answer": gt,
                "model_answer": "",
            }
        )
    return out

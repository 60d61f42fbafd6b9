"""Questions about a scene with their ground-truth answers, of the MMHal-Bench and POPE kinds:
existence (yes/no), counting, colour and other attributes, spatial relations and multiple choice
(A-D with a rationale)."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from fact_rlhf_jax.shapesworld.lexicon import number_word
from fact_rlhf_jax.shapesworld.scene import COLOURS, PLURALS, SHAPES, Scene, SceneObject, relation
from fact_rlhf_jax.shapesworld.text import _cap, absent_kinds, noun_phrase, position_phrase

LETTERS = "ABCD"

# Answer types of the PPO prompt file (`caption_type`, LLaVA-RLHF `AnswerType`).
GENERAL, A_IN_ABCD, NO_IN_YESNO, YES_IN_YESNO = 1, 2, 6, 7


@dataclasses.dataclass(frozen=True)
class QA:
    """One question with its answer.

    kind: existence | counting | colour | attribute | relation | multiple_choice | description
    answer: a full-sentence ground-truth answer (faithful to the scene).
    label: "yes"/"no" for yes/no questions, the letter A-D for multiple choice, else None.
    rationale: facts that justify a multiple-choice answer (for `image_to_caption.json`).
    """

    kind: str
    question: str
    answer: str
    label: str | None = None
    rationale: tuple[str, ...] = ()

    @property
    def caption_type(self) -> int:
        if self.kind == "multiple_choice":
            return A_IN_ABCD + LETTERS.index(self.label)
        if self.label == "no":
            return NO_IN_YESNO
        if self.label == "yes":
            return YES_IN_YESNO
        return GENERAL


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _the(obj: SceneObject, rng: random.Random) -> str:
    return noun_phrase(obj, rng, article="the", size=False)


def existence(scene: Scene, rng: random.Random, *, positive: bool, kind: tuple[str, str] | None = None) -> QA:
    """"Is there a red circle in the image?" about a present object (positive) or an absent kind."""
    if kind is None:
        if positive:
            o = rng.choice(scene.objects)
            kind = (o.colour, o.shape)
        else:
            kind = rng.choice(absent_kinds(scene))
    colour, shape = kind
    thing = f"{colour} {shape}"
    a_thing = _a(thing)
    q = rng.choice(
        (
            f"Is there {a_thing} in the image?",
            f"Does the picture contain {a_thing}?",
            f"Can you see {a_thing} in this image?",
            f"Is {a_thing} present in the picture?",
        )
    )
    n = scene.count(shape=shape, colour=colour)
    if n:
        things = a_thing if n == 1 else f"{number_word(n)} {colour} {PLURALS[shape]}"
        a = f"Yes, there {'is' if n == 1 else 'are'} {things} in the image."
        return QA("existence", q, a, "yes")
    a = rng.choice((f"No, there is no {thing} in the image.", f"No, the image does not contain {a_thing}."))
    return QA("existence", q, a, "no")


def counting(scene: Scene, rng: random.Random) -> QA:
    """How many shapes of a kind (or objects in total) are there."""
    r = rng.random()
    if r < 0.3:
        n = len(scene.objects)
        q = rng.choice(("How many objects are in the image?", "How many shapes can you see?", "Count the objects in the picture."))
        a = f"There {'is' if n == 1 else 'are'} {number_word(n)} {'object' if n == 1 else 'objects'} in the image."
        return QA("counting", q, a)
    shape = rng.choice(scene.objects).shape if r < 0.8 else rng.choice(SHAPES)
    n = scene.count(shape=shape)
    q = rng.choice((f"How many {PLURALS[shape]} are there?", f"How many {PLURALS[shape]} are in the image?", f"Count the {PLURALS[shape]} in the picture."))
    if n == 0:
        a = f"There are no {PLURALS[shape]} in the image."
    elif n == 1:
        a = f"There is one {shape} in the image."
    else:
        a = f"There are {number_word(n)} {PLURALS[shape]} in the image."
    return QA("counting", q, a)


def colour(scene: Scene, rng: random.Random) -> QA | None:
    """"What colour is the star?" about a shape that appears exactly once."""
    shapes = Counter(o.shape for o in scene.objects)
    unique = [o for o in scene.objects if shapes[o.shape] == 1]
    if not unique:
        return None
    o = rng.choice(unique)
    q = rng.choice((f"What colour is the {o.shape}?", f"What color is the {o.shape} in the image?", f"Which colour does the {o.shape} have?"))
    a = rng.choice((f"The {o.shape} is {o.colour}.", f"It is {_a(o.colour)} {o.shape}."))
    return QA("colour", q, a)


def attribute(scene: Scene, rng: random.Random) -> QA:
    """Size or position of an object whose kind appears once."""
    names = Counter(o.name for o in scene.objects)
    unique = [o for o in scene.objects if names[o.name] == 1] or list(scene.objects)
    o = rng.choice(unique)
    if rng.random() < 0.5:
        q = rng.choice((f"What size is the {o.name}?", f"Is the {o.name} small, medium or large?", f"How big is the {o.name}?"))
        a = f"The {o.name} is {o.size}." if o.size != "medium" else f"The {o.name} is medium-sized."
    else:
        q = rng.choice((f"Where is the {o.name}?", f"Where is the {o.name} located in the image?", f"In which part of the picture is the {o.name}?"))
        a = f"The {o.name} is {position_phrase(o, rng)} of the image."
    return QA("attribute", q, a)


_REL_TEXT = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def relation_question(scene: Scene, rng: random.Random) -> QA | None:
    """Yes/no or open question about the spatial relation of two objects whose kinds are unique."""
    names = Counter(o.name for o in scene.objects)
    unique = [o for o in scene.objects if names[o.name] == 1]
    pairs = [(a, b) for a in unique for b in unique if a is not b and relation(a, b)]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    rels = relation(a, b)
    if rng.random() < 0.5:
        rel = rng.choice(rels)
        if rng.random() < 0.5:
            q = f"Is the {a.name} {_REL_TEXT[rel]} the {b.name}?"
            return QA("relation", q, f"Yes, the {a.name} is {_REL_TEXT[rel]} the {b.name}.", "yes")
        asked = _OPPOSITE[rel]
        q = f"Is the {a.name} {_REL_TEXT[asked]} the {b.name}?"
        return QA("relation", q, f"No, the {a.name} is {_REL_TEXT[rel]} the {b.name}.", "no")
    rel = rng.choice(rels)
    others = [o for o in unique if o is not b and rel in relation(o, b)]
    q = f"What is {_REL_TEXT[rel]} the {b.name}?"
    listed = " and ".join(noun_phrase(o, rng, size=False) for o in others)
    verb = "is" if len(others) == 1 else "are"
    return QA("relation", q, f"{_cap(listed)} {verb} {_REL_TEXT[rel]} the {b.name}.")


def multiple_choice(scene: Scene, rng: random.Random) -> QA:
    """A-D question with exactly one right option and a short rationale."""
    shapes = Counter(o.shape for o in scene.objects)
    colours = Counter(o.colour for o in scene.objects)
    kinds = []
    if any(v == 1 for v in shapes.values()):
        kinds.append("colour_of")
    if any(v == 1 for v in colours.values()):
        kinds.append("shape_of")
    kinds.append("count")
    k = rng.choice(kinds)
    if k == "colour_of":
        o = rng.choice([o for o in scene.objects if shapes[o.shape] == 1])
        right = o.colour
        wrong = rng.sample([c for c in COLOURS if c != right], 3)
        question = f"What colour is the {o.shape}?"
        rationale = (f"The image contains {noun_phrase(o, rng, size=False)}.", f"It is the only {o.shape} in the picture.", f"It is located {position_phrase(o, rng)}.")
    elif k == "shape_of":
        o = rng.choice([o for o in scene.objects if colours[o.colour] == 1])
        right = o.shape
        wrong = rng.sample([s for s in SHAPES if s != right], 3)
        question = f"Which shape is {o.colour}?"
        rationale = (f"The only {o.colour} object in the image is {noun_phrase(o, rng, size=False)}.", f"It is {o.size} and sits {position_phrase(o, rng)}.", f"The image has {number_word(len(scene.objects))} objects in total.")
    else:
        n = len(scene.objects)
        right = number_word(n)
        wrong = [number_word(m) for m in rng.sample([m for m in range(1, 7) if m != n], 3)]
        question = "How many objects are in the image?"
        rationale = (f"Counting the shapes gives {number_word(n)}.", "The objects are clearly separated and do not overlap.", f"The background is {scene.background}.")
    options = [right] + wrong
    rng.shuffle(options)
    letter = LETTERS[options.index(right)]
    q = question + "\n" + "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))
    if rng.random() < 0.5:
        a = f"{letter}. {rationale[0]}"
    else:
        a = f"{rationale[0]} So the correct option is {letter}."
    return QA("multiple_choice", q, a, letter, tuple(rationale))


def random_question(scene: Scene, rng: random.Random) -> QA:
    """One question of a random kind (falls back to counting when a kind does not apply)."""
    kind = rng.choice(("existence+", "existence-", "counting", "colour", "attribute", "relation", "multiple_choice"))
    qa: QA | None
    if kind == "existence+":
        qa = existence(scene, rng, positive=True)
    elif kind == "existence-":
        qa = existence(scene, rng, positive=False)
    elif kind == "colour":
        qa = colour(scene, rng)
    elif kind == "attribute":
        qa = attribute(scene, rng)
    elif kind == "relation":
        qa = relation_question(scene, rng)
    elif kind == "multiple_choice":
        qa = multiple_choice(scene, rng)
    else:
        qa = None
    return qa if qa is not None else counting(scene, rng)


__all__ = [
    "QA", "LETTERS", "GENERAL", "A_IN_ABCD", "NO_IN_YESNO", "YES_IN_YESNO",
    "existence", "counting", "colour", "attribute", "relation_question", "multiple_choice", "random_question",
]  # fmt: skip

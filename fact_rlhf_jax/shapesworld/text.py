"""Text about a scene from templates: captions, detailed descriptions and questions with answers.

Every function takes a `random.Random` and draws its template, word order and synonyms from it,
so the same seed gives the same text. Faithful text only states what the scene graph holds; the
hallucinated variants come from describing a scene with objects added or recoloured
(`hallucinated_scene`), the way machine-written instruction data invents objects.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from fact_rlhf_jax.shapesworld.lexicon import COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, number_word
from fact_rlhf_jax.shapesworld.scene import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    relation,
)

SYNONYM_PROB = 0.25  # chance of a non-canonical word for a shape / colour / size

DESCRIBE_PROMPTS = (
    "Describe the image in detail.",
    "What do you see in this picture?",
    "Can you describe what is shown in the image?",
    "Give a detailed description of this image.",
    "Explain the contents of the picture.",
    "What objects are in this image? Describe them.",
    "Describe the following image.",
    "Tell me everything you notice in this image.",
)

CAPTION_PROMPTS = (
    "Describe the image briefly.",
    "Write a short caption for this image.",
    "Summarize the picture in one sentence.",
    "Give a one-line description of the image.",
)

POPE_SUFFIX = "\nAnswer the question using a single word or phrase."


# ----------------------------------------------------------------------------- words


def _shape_word(shape: str, rng: random.Random, plural: bool = False) -> str:
    options = SHAPE_WORDS[shape]
    pick = options[0] if rng.random() >= SYNONYM_PROB else rng.choice(options)
    return pick[1] if plural else pick[0]


def _colour_word(colour: str, rng: random.Random) -> str:
    options = COLOUR_WORDS[colour]
    return options[0] if rng.random() >= SYNONYM_PROB else rng.choice(options)


def _size_word(size: str, rng: random.Random) -> str:
    options = SIZE_WORDS[size]
    return options[0] if rng.random() >= SYNONYM_PROB else rng.choice(options)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(obj: SceneObject, rng: random.Random, *, article: str = "a", size: bool | None = None) -> str:
    """"a small red circle", "the crimson disk", ... `size=None` picks at random whether to say it."""
    with_size = rng.random() < 0.5 if size is None else size
    words = ([_size_word(obj.size, rng)] if with_size else []) + [
        _colour_word(obj.colour, rng),
        _shape_word(obj.shape, rng),
    ]
    phrase = " ".join(words)
    if article == "a":
        return f"{_article(phrase)} {phrase}"
    return f"{article} {phrase}" if article else phrase


def position_phrase(obj: SceneObject, rng: random.Random) -> str:
    """"in the top left corner", "at the bottom", "in the center", ..."""
    pos = obj.position
    if pos == "center":
        return rng.choice(("in the center", "in the middle", "at the center"))
    if " " in pos:  # corners
        return rng.choice((f"in the {pos} corner", f"in the {pos}", f"at the {pos}"))
    if pos in ("left", "right"):
        return rng.choice((f"on the {pos}", f"on the {pos} side", f"at the {pos}"))
    return rng.choice((f"at the {pos}", f"near the {pos}", f"along the {pos}"))


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _groups(scene: Scene) -> list[tuple[str, str, int]]:
    """(colour, shape, count) per kind of object, in order of first appearance."""
    counts = Counter((o.colour, o.shape) for o in scene.objects)
    order = list(dict.fromkeys((o.colour, o.shape) for o in scene.objects))
    return [(c, s, counts[(c, s)]) for c, s in order]


def _group_phrase(colour: str, shape: str, n: int, rng: random.Random) -> str:
    if n == 1:
        phrase = f"{_colour_word(colour, rng)} {_shape_word(shape, rng)}"
        return f"{_article(phrase)} {phrase}"
    return f"{number_word(n)} {_colour_word(colour, rng)} {_shape_word(shape, rng, plural=True)}"


def object_list(scene: Scene, rng: random.Random) -> str:
    """"two red circles, a blue star and a black cross" (groups in random order)."""
    groups = _groups(scene)
    rng.shuffle(groups)
    return _join([_group_phrase(c, s, n, rng) for c, s, n in groups])


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _background_phrase(scene: Scene, rng: random.Random) -> str:
    if scene.noise > 0:
        return rng.choice((f"a noisy {scene.background}", f"a grainy {scene.background}", f"a speckled {scene.background}"))
    return rng.choice((f"a plain {scene.background}", f"a {scene.background}", f"a flat {scene.background}"))


# ----------------------------------------------------------------------------- captions


def captions(scene: Scene, rng: random.Random, k: int = 5) -> list[str]:
    """k different short captions (COCO style), all faithful to the scene."""
    n = len(scene.objects)
    templates = [
        lambda: _cap(object_list(scene, rng)) + ".",
        lambda: f"A picture with {object_list(scene, rng)}.",
        lambda: f"{_cap(object_list(scene, rng))} on {_background_phrase(scene, rng)} background.",
        lambda: f"An image showing {object_list(scene, rng)}.",
        lambda: (
            f"{_cap(number_word(n))} shapes: {object_list(scene, rng)}."
            if n > 1
            else f"A single shape: {object_list(scene, rng)}."
        ),
        lambda: _cap(
            _join([f"{noun_phrase(o, rng, size=False)} {position_phrase(o, rng)}" for o in scene.objects])
        )
        + ".",
        lambda: f"Simple geometric shapes, namely {object_list(scene, rng)}.",
        lambda: f"{_cap(_background_phrase(scene, rng))} background with {object_list(scene, rng)}.",
        lambda: f"A drawing of {object_list(scene, rng)}.",
        lambda: _cap(_join([noun_phrase(o, rng, size=True) for o in scene.objects])) + ".",
    ]
    picks = rng.sample(range(len(templates)), k)
    out: list[str] = []
    for i in picks:
        out.append(templates[i]())
    return out


# ----------------------------------------------------------------------------- descriptions


def _object_sentence(obj: SceneObject, rng: random.Random) -> str:
    np_a = noun_phrase(obj, rng, size=True)
    where = position_phrase(obj, rng)
    forms = (
        f"{_cap(where)} there is {np_a}.",
        f"{_cap(np_a)} sits {where}.",
        f"{_cap(np_a)} appears {where}.",
        f"{_cap(where)}, we can see {np_a}.",
        f"There is {np_a} {where} of the image.",
        f"{_cap(np_a)} is drawn {where}.",
    )
    return rng.choice(forms)


def _relation_sentence(scene: Scene, rng: random.Random) -> str | None:
    names = Counter(o.name for o in scene.objects)
    unique = [o for o in scene.objects if names[o.name] == 1]
    pairs = [(a, b) for a in unique for b in unique if a is not b and relation(a, b)]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    rel = rng.choice(relation(a, b))
    rel_text = {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel)
    return f"{_cap(noun_phrase(a, rng, article='the', size=False))} is {rel_text} {noun_phrase(b, rng, article='the', size=False)}."


def description(scene: Scene, rng: random.Random, *, state_total: bool = True) -> str:
    """A detailed description: an opening sentence, one sentence per object (position, size,
    colour), maybe a spatial relation and a closing remark. `state_total=False` leaves out the
    object count (used for partial descriptions, which omit objects on purpose)."""
    n = len(scene.objects)
    bg = _background_phrase(scene, rng)
    if state_total:
        what = f"{number_word(n)} object{'s' if n > 1 else ''}"
        opening = rng.choice(
            (
                f"The image shows {what} on {bg} background.",
                f"This picture contains {what} drawn on {bg} background.",
                f"In this image, there {'are' if n > 1 else 'is'} {what} placed on {bg} background.",
                f"The scene is made of {what} over {bg} background.",
            )
        )
    else:
        opening = rng.choice(
            (
                f"The image shows some shapes on {bg} background.",
                f"This picture has {bg} background with a few shapes.",
                f"The scene is drawn on {bg} background.",
            )
        )
    objects = list(scene.objects)
    if rng.random() < 0.5:
        rng.shuffle(objects)
    sentences = [opening] + [_object_sentence(o, rng) for o in objects]
    rel = _relation_sentence(scene, rng) if rng.random() < 0.7 else None
    if rel:
        sentences.append(rel)
    if rng.random() < 0.4:
        sentences.append(
            rng.choice(
                (
                    "The composition is simple and uncluttered.",
                    "The shapes are flat and clearly separated.",
                    "Nothing else is visible in the picture.",
                    "The objects do not overlap.",
                )
            )
        )
    return " ".join(sentences)


def short_description(scene: Scene, rng: random.Random) -> str:
    """One-sentence answer to a caption prompt."""
    return captions(scene, rng, k=1)[0]


# ----------------------------------------------------------------------------- hallucinations


def absent_kinds(scene: Scene) -> list[tuple[str, str]]:
    """(colour, shape) kinds that are not in the scene, in a fixed order."""
    present = {(o.colour, o.shape) for o in scene.objects}
    return [(c, s) for s in SHAPES for c in COLOURS if (c, s) not in present]


def hallucinated_scene(scene: Scene, rng: random.Random, *, extra: int = 1) -> tuple[Scene, list[str]]:
    """A copy of `scene` with `extra` objects that are not in it: each either added in a free cell
    or, half of the time when possible, replacing a real object's colour (an attribute
    hallucination, which is also a non-existent object). Returns the new scene and the names of
    the invented objects."""
    objects = list(scene.objects)
    invented: list[str] = []
    untouched = list(range(len(objects)))  # real objects not recoloured yet
    for _ in range(extra):
        kinds = [k for k in absent_kinds(scene) if f"{k[0]} {k[1]}" not in invented]
        colour, shape = rng.choice(kinds)
        free = [c for c in sorted(POSITIONS) if c not in {o.cell for o in objects}]
        if (rng.random() < 0.5 or not free) and untouched:
            # recolour a real object into an absent kind of the same shape if there is one
            i = untouched.pop(rng.randrange(len(untouched)))
            old = objects[i]
            recolours = [c for c, s in absent_kinds(scene) if s == old.shape and f"{c} {s}" not in invented]
            if recolours:
                colour = rng.choice(recolours)
                objects[i] = dataclasses.replace(old, colour=colour)
                invented.append(f"{colour} {old.shape}")
                continue
        cell = rng.choice(free)
        objects.append(SceneObject(shape, colour, rng.choice(SIZES), cell))
        invented.append(f"{colour} {shape}")
    objects.sort(key=lambda o: o.cell)
    return dataclasses.replace(scene, objects=tuple(objects)), invented


def partial_scene(scene: Scene, rng: random.Random) -> Scene:
    """A copy of `scene` with one object removed (needs at least two objects)."""
    objects = list(scene.objects)
    objects.pop(rng.randrange(len(objects)))
    return dataclasses.replace(scene, objects=tuple(objects))

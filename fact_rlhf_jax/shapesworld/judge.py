"""An exact MMHal-Bench judge for ShapesWorld: it reads the scene graph of each record's image instead of
asking a language model, and rates on the MMHal 0-6 scale (`eval.metrics.mmhal_rating`).

For one record (question, human answer `gt_answer`, model answer):
1. Hallucination: the simulated annotator (`shapesworld.annotator.annotate`) finds an object in the
   answer that is not in the scene (an invented object, a wrong colour or shape, one too many of a kind).
2. Informativeness (very 2 / somewhat 1 / not 0):
   - multiple choice (the human answer picks a letter): 2 if the answer picks the same letter, else 0;
   - holistic (descriptions): coverage of the scene's objects by the annotator, 1.0 -> 2, > 0 -> 1, 0 -> 0;
   - other questions: the key terms of the human answer (colours, shapes, sizes, numbers, positions,
     relations, yes / no, background colour and noise, each reduced to its canonical word) against the
     terms of the answer. 2 if every key term is there and no other term of the same kind (a different
     colour, a different number, ...) is; 0 if none is there or the other terms outnumber the found ones;
     else 1.
3. Rating: no hallucination 3 + informativeness, with hallucination informativeness (6 is never given).
The review ends with `Rating: N`, so it is scored by the harness's parser like a real judge's review.
"""

from __future__ import annotations

import os
import re
from typing import Any

from fact_rlhf_jax.eval.metrics import mmhal_rating
from fact_rlhf_jax.shapesworld.annotator import annotate
from fact_rlhf_jax.shapesworld.lexicon import COLOUR_WORDS, NUMBER_WORDS, SHAPE_WORDS, SIZE_WORDS
from fact_rlhf_jax.shapesworld.metrics import parse_choice
from fact_rlhf_jax.shapesworld.scene import BACKGROUNDS, Scene, load_scenes

_WORD = re.compile(r"[a-z]+|\d+")


def _term_table() -> dict[tuple[str, ...], tuple[str, str]]:
    table: dict[tuple[str, ...], tuple[str, str]] = {}
    for name in BACKGROUNDS:  # before colours: "pale blue" is a background, not a blue object
        table[tuple(name.split())] = ("background", name)
    table[("light", "grey")] = ("background", "light gray")
    table[("gray",)] = table[("grey",)] = ("background", "light gray")
    for colour, words in COLOUR_WORDS.items():
        for w in words:
            table.setdefault((w,), ("colour", colour))
    for shape, forms in SHAPE_WORDS.items():
        for singular, plural in forms:
            table[tuple(singular.split())] = table[tuple(plural.split())] = ("shape", shape)
    for size, words in SIZE_WORDS.items():
        for w in words:
            table[tuple(w.replace("-", " ").split())] = ("size", size)
    table.update({("larger",): ("size", "large"), ("bigger",): ("size", "large"), ("smaller",): ("size", "small"),
                  ("same", "size"): ("size", "same")})
    for n, w in NUMBER_WORDS.items():
        table[(w,)] = table[(str(n),)] = ("number", str(n))
    for w, place in (("top", "top"), ("upper", "top"), ("bottom", "bottom"), ("lower", "bottom"), ("left", "left"),
                     ("right", "right"), ("center", "center"), ("centre", "center"), ("middle", "center")):
        table[(w,)] = ("position", place)
    table[("above",)] = ("relation", "above")
    table[("below",)] = ("relation", "below")
    table[("yes",)] = ("answer", "yes")
    table[("no",)] = ("answer", "no")
    table[("noise",)] = table[("noisy",)] = ("texture", "noise")
    table[("without", "noise")] = table[("plain",)] = ("texture", "plain")
    return table


_TERMS = _term_table()
_LONGEST = max(len(k) for k in _TERMS)


def key_terms(text: str) -> set[tuple[str, str]]:
    """(kind, canonical value) of every ShapesWorld fact word in `text`, longest phrase first:
    "The huge crimson disk is at the top" -> {(size, large), (colour, red), (shape, circle), (position, top)}."""
    words = _WORD.findall(text.lower().replace("-", " "))
    out: set[tuple[str, str]] = set()
    i = 0
    while i < len(words):
        for n in range(_LONGEST, 0, -1):
            term = _TERMS.get(tuple(words[i : i + n]))
            if term is not None:
                out.add(term)
                i += n
                break
        else:
            i += 1
    return out


def informativeness(scene: Scene, question_type: str, gt_answer: str, response: str) -> tuple[int, str]:
    """(0 / 1 / 2, why) for not / somewhat / very informative (rules in the module docstring)."""
    letter = parse_choice(gt_answer)
    if letter is not None:
        picked = parse_choice(response)
        return (2 if picked == letter else 0), f"picked option {picked or 'none'}, correct {letter}"
    if question_type == "holistic":
        coverage = annotate(scene, response).coverage
        return (2 if coverage >= 1.0 else 1 if coverage > 0 else 0), f"covers {coverage:.2f} of the objects"
    keys, said = key_terms(gt_answer), key_terms(response)
    if not keys:
        return (2 if response.strip() else 0), "the human answer states no checkable fact"
    found = keys & said
    kinds = {k for k, _ in keys}
    other = {t for t in said - keys if t[0] in kinds}
    why = f"{len(found)} of {len(keys)} key facts, {len(other)} contradicting"
    if not found or len(other) >= len(found):
        return 0, why
    return (2 if found == keys and not other else 1), why


class ShapesWorldJudge:
    """MMHal judge from the scene graphs (`scene_graphs.json` of the world the records were written from)."""

    name = "shapesworld:mmhal-v1"

    def __init__(self, scenes: dict[str, Scene], source: str = "scene graphs"):
        self.scenes = scenes
        self.source = source

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ShapesWorldJudge":
        return cls(load_scenes(path), str(path))

    def scene_of(self, record: dict[str, Any]) -> Scene:
        """The scene of a record's image: by the file name of `image_src`, else `<image_id>.png`."""
        for name in (os.path.basename(str(record.get("image_src") or "")), f"{record.get('image_id')}.png"):
            if name in self.scenes:
                return self.scenes[name]
        raise KeyError(f"{self.source}: no scene graph for image_src {record.get('image_src')!r} / "
                       f"image_id {record.get('image_id')!r}")

    def rate(self, record: dict[str, Any]) -> tuple[int, str]:
        scene = self.scene_of(record)
        response = record["model_answer"]
        hallucinated = annotate(scene, response).hallucinated
        level, why = informativeness(scene, record["question_type"], record["gt_answer"], response)
        rating = mmhal_rating(bool(hallucinated), level)
        words = ("not", "somewhat", "very")[level]
        explanation = (f"Objects not in the image: {', '.join(hallucinated) or 'none'}. "
                       f"Informativeness: {words} ({why}).")
        return rating, explanation

    def review(self, prompt: str, fields: dict[str, Any]) -> str:
        rating, explanation = self.rate(fields)
        return f"{explanation}\nRating: {rating}"

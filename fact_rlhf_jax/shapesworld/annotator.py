"""The simulated annotator: reads any free-text response about a ShapesWorld image, lists the
objects it mentions, says which are hallucinated and prefers the response with fewer
hallucinations (ties broken by coverage), like the LLaVA-RLHF crowdworkers.

How a response is read:
- Text is lower-cased and split into words and punctuation. A mention is a shape word (any
  synonym, singular or plural, see `lexicon.SHAPE_WORDS`) with the colour, size and count words
  among the few words before it ("two small red circles", "a crimson disk"), or a colour right
  after it ("the square is red").
- The words before a shape are read back to the nearest punctuation mark, clause word ("and",
  "with", ...) or earlier shape, at most 4 words. A negation among them ("no", "not",
  "without", ...) means the response says the object is absent: it is not a mention.
- Mentions of the same kind are merged within a response; the claimed number of that kind is
  the largest number stated (a plural without a number claims at least two).
- A colour+shape kind claimed n times names the instances "red circle", "red circle #2", ...;
  instances beyond those in the scene are hallucinated. A shape without a colour refers to the
  scene's objects of that shape (already-mentioned ones first); beyond those it is hallucinated.
- Colour words without a shape ("the red one") and generic nouns ("objects", "shapes") are not
  mentions.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict

from fact_rlhf_jax.eval.metrics import chair
from fact_rlhf_jax.shapesworld.lexicon import (
    CLAUSE_BREAKS,
    COLOUR_WORDS,
    NEGATIONS,
    NUMBER_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
)
from fact_rlhf_jax.shapesworld.scene import Scene, instance_name

_TOKEN = re.compile(r"[a-z][a-z'\-]*|\d+|[.,;:!?()\n]")
_LOOKBACK = 4

_COLOUR_OF = {w: c for c, ws in COLOUR_WORDS.items() for w in ws}
_SIZE_OF = {w: s for s, ws in SIZE_WORDS.items() for w in ws}
_COUNT_OF = {w: n for n, w in NUMBER_WORDS.items() if n > 0} | {"a": 1, "an": 1, "single": 1, "both": 2}
# (tuple of words) -> (shape, is_plural); longest phrases are matched first.
_SHAPE_PHRASES: dict[tuple[str, ...], tuple[str, bool]] = {}
for _shape, _forms in SHAPE_WORDS.items():
    for _sing, _plur in _forms:
        _SHAPE_PHRASES[tuple(_sing.split())] = (_shape, False)
        _SHAPE_PHRASES[tuple(_plur.split())] = (_shape, True)
_MAX_PHRASE = max(len(p) for p in _SHAPE_PHRASES)


@dataclasses.dataclass(frozen=True)
class Mention:
    """One object mention: `count` is the number stated (None: a plural without a number)."""

    shape: str
    colour: str | None
    size: str | None
    count: int | None
    start: int  # word index of the mention's shape word


_COPULAS = frozenset({"is", "are", "looks", "look", "appears", "appear", "seems", "seem"})
_FILLERS = frozenset({"a", "an", "all", "both", "coloured", "colored", "painted", "in", "bright"})


def _predicate_colour(words: list[str], k: int) -> str | None:
    """The colour in "<shape> is [a] red" right after a shape phrase ending before word k."""
    if k >= len(words) or words[k] not in _COPULAS:
        return None
    for w in words[k + 1 : k + 4]:
        if w in _COLOUR_OF:
            return _COLOUR_OF[w]
        if w not in _FILLERS:
            return None
    return None


def find_mentions(response: str) -> list[Mention]:
    """Every affirmative object mention in `response`, in order."""
    words = _TOKEN.findall(response.lower())
    out: list[Mention] = []
    i = 0
    last_shape_end = 0
    while i < len(words):
        match = None
        for n in range(_MAX_PHRASE, 0, -1):
            key = tuple(words[i : i + n])
            if len(key) == n and key in _SHAPE_PHRASES:
                match = (n, *_SHAPE_PHRASES[key])
                break
        if match is None:
            i += 1
            continue
        n, shape, plural = match
        colour = size = count = None
        negated = False
        j = i - 1
        while j >= max(last_shape_end, i - _LOOKBACK):
            w = words[j]
            if not w[0].isalnum() or w in CLAUSE_BREAKS:
                break
            if w in NEGATIONS:
                negated = True
            elif colour is None and w in _COLOUR_OF:
                colour = _COLOUR_OF[w]
            elif size is None and w in _SIZE_OF:
                size = _SIZE_OF[w]
            elif count is None and w in _COUNT_OF:
                count = _COUNT_OF[w]
            elif count is None and w.isdigit():
                count = int(w)
            j -= 1
        if colour is None:
            colour = _predicate_colour(words, i + n)
        if not negated:
            if count is None and not plural:
                count = 1
            out.append(Mention(shape, colour, size, count, i))
        i += n
        last_shape_end = i
    return out


@dataclasses.dataclass(frozen=True)
class Annotation:
    """What the annotator found in one response.

    mentioned: instance names the response claims ("red circle", "red circle #2", "star #2", ...).
    hallucinated: the claimed instances that are not in the scene (a subset of `mentioned`).
    covered: the scene's instance names the response mentions.
    present: all of the scene's instance names.
    """

    mentioned: tuple[str, ...]
    hallucinated: tuple[str, ...]
    covered: tuple[str, ...]
    present: tuple[str, ...]

    @property
    def num_hallucinated(self) -> int:
        return len(self.hallucinated)

    @property
    def coverage(self) -> float:
        return len(self.covered) / len(self.present) if self.present else 0.0


def annotate(scene: Scene, response: str) -> Annotation:
    """Read `response` against `scene` (see the module docstring for the rules)."""
    mentions = find_mentions(response)
    present = scene.instance_names()
    # claimed count per kind: (colour, shape) for coloured mentions, (None, shape) for bare shapes
    claimed: dict[tuple[str | None, str], int] = defaultdict(int)
    for m in mentions:
        if m.count is not None:
            n = m.count
        else:  # "the red circles": all of them, and at least two
            n = max(2, scene.count(shape=m.shape, colour=m.colour))
        claimed[(m.colour, m.shape)] = max(claimed[(m.colour, m.shape)], n)

    mentioned: list[str] = []
    for (colour, shape), n in claimed.items():
        if colour is None:
            continue
        mentioned += [instance_name(f"{colour} {shape}", k) for k in range(1, n + 1)]
    for (colour, shape), n in claimed.items():
        if colour is not None:
            continue
        of_shape = [name for name, o in zip(present, scene.objects) if o.shape == shape]
        already = [x for x in of_shape if x in mentioned]
        fresh = [x for x in of_shape if x not in mentioned]
        refs = (already + fresh)[:n]
        mentioned += [x for x in refs if x not in mentioned]
        mentioned += [instance_name(shape, k) for k in range(len(of_shape) + 1, n + 1)]
    truth = set(present)
    return Annotation(
        mentioned=tuple(mentioned),
        hallucinated=tuple(x for x in mentioned if x not in truth),
        covered=tuple(x for x in present if x in set(mentioned)),
        present=tuple(present),
    )


def prefer(scene: Scene, response_1: str, response_2: str) -> int:
    """1 or 2: the response with fewer hallucinated objects; on a tie the one covering more of the
    scene's objects; on a full tie 1."""
    a1, a2 = annotate(scene, response_1), annotate(scene, response_2)
    if a1.num_hallucinated != a2.num_hallucinated:
        return 1 if a1.num_hallucinated < a2.num_hallucinated else 2
    if len(a1.covered) != len(a2.covered):
        return 1 if len(a1.covered) > len(a2.covered) else 2
    return 1


def chair_scores(scenes: list[Scene], responses: list[str]) -> dict[str, float]:
    """CHAIR-style numbers (`eval.metrics.chair`) of responses against their scenes, with the
    annotator's instance names as the objects."""
    notes = [annotate(s, r) for s, r in zip(scenes, responses, strict=True)]
    return chair([a.mentioned for a in notes], [a.present for a in notes])

"""The simulated annotator: reads any free-text response about a ShapesWorld image, lists the
objects it mentions, says which are hallucinated and prefers the response with fewer
hallucinations (ties broken by coverage), like the LLaVA-RLHF crowdworkers.

How a response is read:
- Text is lower-cased and split into words and punctuation. A mention is a shape word (any
  synonym, singular or plural, see `lexicon.SHAPE_WORDS`) with the colour, size and count words
  among the few words before it ("two small red circles", "a crimson disk"), or a colour or
  size right after it ("the square is red").
- The words before a shape are read back to the nearest punctuation mark, clause word ("and",
  "with", ...) or earlier shape, at most 4 words. A negation among them ("no", "not",
  "without", ...) means the response says the object is absent: it is not a mention.
- Mentions of the same kind within a response are the same object unless they differ in size
  or in the position said with them ("in the top left"), or the later one introduces a new
  object ("a"/"an"/"one"/"another": "a red star and a red star" are two); the
  claimed number of a kind is the largest of the numbers stated (a plural without a number
  claims all of that kind and at least two) and the distinct objects mentioned.
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
    """One object mention: `count` is the number stated (None: a plural without a number);
    `position` the absolute position words said with it (subset of top/bottom/left/right/center);
    `another` whether it was introduced as "another"/"second"/... (a new object)."""

    shape: str
    colour: str | None
    size: str | None
    count: int | None
    start: int  # word index of the mention's shape word
    position: frozenset[str] = frozenset()
    another: bool = False
    indefinite: bool = False  # introduced with "a"/"an"/"one": a new object if its kind was seen


_COPULAS = frozenset({"is", "are", "looks", "look", "appears", "appear", "seems", "seem"})
_FILLERS = frozenset({"a", "an", "all", "both", "coloured", "colored", "painted", "in", "bright", "quite", "very", "rather"})
_POSITION_OF = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom", "left": "left",
                "right": "right", "center": "center", "centre": "center", "middle": "center"}  # fmt: skip
_ANOTHER = frozenset({"another", "second", "third", "fourth", "other"})
_LOOKAHEAD = 8


def _predicate(words: list[str], k: int) -> tuple[str | None, str | None]:
    """(colour, size) in "<shape> is [a] small red" right after a shape phrase ending before word k."""
    colour = size = None
    if k >= len(words) or words[k] not in _COPULAS:
        return None, None
    for w in words[k + 1 : k + 5]:
        if w in _COLOUR_OF and colour is None:
            colour = _COLOUR_OF[w]
        elif w in _SIZE_OF and size is None:
            size = _SIZE_OF[w]
        elif w not in _FILLERS:
            break
    return colour, size


_WHOLE_IMAGE = frozenset({"image", "picture", "scene", "frame", "canvas", "photo"})


def _is_relation(words: list[str], j: int) -> bool:
    """words[j] states a relation to another object ("left of the square", "above", "than"),
    not a place in the image ("top of the image")."""
    w = words[j]
    if w in ("above", "below", "than", "from"):
        return True
    if w == "of":
        nxt = words[j + 1 : j + 3]
        return not (len(nxt) == 2 and nxt[0] in ("the", "this") and nxt[1] in _WHOLE_IMAGE)
    return False


def _position_near(words: list[str], start: int, i: int, k: int) -> frozenset[str]:
    """Absolute position words said with the mention at words[i:k]: those after it up to the
    next punctuation, clause word or shape ("... in the top left corner"), or else those before
    it back to the sentence start or the previous shape, words[start:i] ("In the top left, we
    can see ..."). Empty when the words around it state a relation ("left of ...")."""
    after: set[str] = set()
    for j in range(k, min(len(words), k + _LOOKAHEAD)):
        w = words[j]
        if not w[0].isalnum() or w in CLAUSE_BREAKS or _shape_at(words, j):
            break
        if _is_relation(words, j):
            return frozenset()
        if w in _POSITION_OF:
            after.add(_POSITION_OF[w])
    if after:
        return frozenset(after)
    before: set[str] = set()
    for j in range(i - 1, start - 1, -1):
        w = words[j]
        if w in (".", "!", "?", "\n"):
            break
        if _is_relation(words, j):
            return frozenset()
        if w in _POSITION_OF:
            before.add(_POSITION_OF[w])
    return frozenset(before)


def _shape_at(words: list[str], i: int) -> tuple[int, str, bool] | None:
    """(number of words, shape, is_plural) of a shape phrase starting at word i, or None."""
    for n in range(_MAX_PHRASE, 0, -1):
        key = tuple(words[i : i + n])
        if len(key) == n and key in _SHAPE_PHRASES:
            return (n, *_SHAPE_PHRASES[key])
    return None


def find_mentions(response: str) -> list[Mention]:
    """Every affirmative object mention in `response`, in order."""
    words = _TOKEN.findall(response.lower())
    out: list[Mention] = []
    i = 0
    last_shape_end = 0
    while i < len(words):
        match = _shape_at(words, i)
        if match is None:
            i += 1
            continue
        n, shape, plural = match
        colour = size = count = None
        negated = another = indefinite = False
        j = i - 1
        while j >= max(last_shape_end, i - _LOOKBACK):
            w = words[j]
            if not w[0].isalnum() or w in CLAUSE_BREAKS:
                break
            if w in NEGATIONS:
                negated = True
            elif w in _ANOTHER:
                another = True
            elif colour is None and w in _COLOUR_OF:
                colour = _COLOUR_OF[w]
            elif size is None and w in _SIZE_OF:
                size = _SIZE_OF[w]
            elif count is None and w in _COUNT_OF:
                count = _COUNT_OF[w]
                indefinite = w in ("a", "an", "one")
            elif count is None and w.isdigit():
                count = int(w)
            j -= 1
        p_colour, p_size = _predicate(words, i + n)
        colour = colour or p_colour
        size = size or p_size
        if not negated:
            if count is None and not plural:
                count = 1
            position = _position_near(words, last_shape_end, i, i + n) if count == 1 else frozenset()
            out.append(Mention(shape, colour, size, count, i, position, another, indefinite))
        i += n
        last_shape_end = i
    return out


@dataclasses.dataclass
class _Individual:
    """An object a response talks about, built up from its singular mentions."""

    size: str | None
    position: frozenset[str]

    def compatible(self, m: Mention) -> bool:
        if m.another or m.indefinite:
            return False
        if self.size and m.size and self.size != m.size:
            return False
        return not (self.position and m.position and self.position != m.position)

    def absorb(self, m: Mention) -> None:
        self.size = self.size or m.size
        self.position = self.position or m.position


def claimed_counts(mentions: list[Mention], scene: Scene) -> dict[tuple[str | None, str], int]:
    """How many objects of each kind ((colour, shape), or (None, shape) for bare shapes) a
    response claims: the largest number stated, and at least the number of distinct singular
    mentions (mentions of one kind are the same object unless their size or position differ, or
    the later one is indefinite: "a ...", "another ...")."""
    stated: dict[tuple[str | None, str], int] = defaultdict(int)
    individuals: dict[tuple[str | None, str], list[_Individual]] = defaultdict(list)
    for m in mentions:
        key = (m.colour, m.shape)
        if m.count is None:  # "the red circles": all of them, and at least two
            stated[key] = max(stated[key], 2, scene.count(shape=m.shape, colour=m.colour))
        elif m.count > 1:
            stated[key] = max(stated[key], m.count)
        else:
            group = individuals[key]
            match = next((x for x in group if x.compatible(m)), None)
            if match is None:
                group.append(_Individual(m.size, m.position))
            else:
                match.absorb(m)
    keys = list(dict.fromkeys([(m.colour, m.shape) for m in mentions]))
    return {k: max(stated[k], len(individuals[k])) for k in keys}


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
    claimed = claimed_counts(mentions, scene)

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
    s1, s2 = preference_score(scene, response_1), preference_score(scene, response_2)
    return 2 if s2 > s1 else 1


def preference_score(scene: Scene, response: str) -> int:
    """A number that orders responses as `prefer` does: one more hallucinated object always costs more than
    every object of the scene covered (-hallucinated * (objects + 1) + covered)."""
    a = annotate(scene, response)
    return -a.num_hallucinated * (len(a.present) + 1) + len(a.covered)


def chair_scores(scenes: list[Scene], responses: list[str]) -> dict[str, float]:
    """CHAIR-style numbers (`eval.metrics.chair`) of responses against their scenes, with the
    annotator's instance names as the objects."""
    notes = [annotate(s, r) for s, r in zip(scenes, responses, strict=True)]
    return chair([a.mentioned for a in notes], [a.present for a in notes])

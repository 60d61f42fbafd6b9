"""Words for the things of ShapesWorld: synonyms the text templates draw from and the annotator
recognises. The first entry of each list is the canonical word."""

from __future__ import annotations

# shape -> [(singular, plural), ...]; multi-word synonyms are allowed.
SHAPE_WORDS: dict[str, list[tuple[str, str]]] = {
    "circle": [("circle", "circles"), ("disk", "disks"), ("disc", "discs"), ("dot", "dots"), ("ball", "balls")],
    "square": [("square", "squares"), ("box", "boxes"), ("block", "blocks")],
    "triangle": [("triangle", "triangles"), ("wedge", "wedges")],
    "diamond": [("diamond", "diamonds"), ("rhombus", "rhombi"), ("lozenge", "lozenges")],
    "star": [("star", "stars")],
    "cross": [("cross", "crosses"), ("plus sign", "plus signs")],
}

COLOUR_WORDS: dict[str, list[str]] = {
    "red": ["red", "crimson", "scarlet"],
    "green": ["green", "emerald"],
    "blue": ["blue", "navy", "cobalt"],
    "yellow": ["yellow", "golden"],
    "purple": ["purple", "violet"],
    "orange": ["orange", "amber"],
    "black": ["black", "dark"],
}

SIZE_WORDS: dict[str, list[str]] = {
    "small": ["small", "little", "tiny"],
    "medium": ["medium", "medium-sized", "mid-sized"],
    "large": ["large", "big", "huge"],
}

NUMBER_WORDS: dict[int, str] = {
    0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five",
    6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten",
}  # fmt: skip

# Words that mean "this object is absent" when they come shortly before an object mention.
NEGATIONS: frozenset[str] = frozenset(
    {"no", "not", "without", "nor", "neither", "zero", "none", "never", "isn't", "aren't",
     "don't", "doesn't", "cannot", "can't", "lacks", "absent"}
)  # fmt: skip

# Words that end the few words before an object mention that can modify it.
CLAUSE_BREAKS: frozenset[str] = frozenset({"and", "or", "but", "while", "with", "than", "whereas", "besides"})


def number_word(n: int) -> str:
    return NUMBER_WORDS.get(n, str(n))

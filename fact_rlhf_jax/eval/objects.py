"""Finding object mentions in free text: synonym lists, singularisation, longest-match scanning.

Used by CHAIR (which objects a description mentions) and the offline MMHal rule judge. The rule:
lower-case the text, split it into words on anything that is not a letter or digit, singularise each word
(a fixed irregular table, then `-ies -> -y` for words over four letters, `-sses/-xes/-ches/-shes -> drop -es`,
`-s -> drop` except after `s`/`u`/`i`), then scan left to right taking the longest synonym (up to 3 words) that starts at
each word. Every match is one mention of its canonical name; matched words are consumed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from fact_rlhf_jax.eval.records import EvalDataError

DEFAULT_SYNONYMS = os.path.join(os.path.dirname(__file__), "data", "coco_synonyms.txt")

_IRREGULAR = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
    "geese": "goose", "feet": "foot", "teeth": "tooth", "knives": "knife", "leaves": "leaf",
    "skis": "skis", "scissors": "scissors", "glasses": "glass", "buses": "bus", "calves": "calf",
    "oxen": "ox", "dice": "die", "loaves": "loaf", "wolves": "wolf", "shelves": "shelf",
    "halves": "half", "scarves": "scarf", "olives": "olive", "gloves": "glove",
    "species": "species", "series": "series", "this": "this", "is": "is", "was": "was", "has": "has",
    "its": "its", "as": "as", "his": "his", "us": "us", "bus": "bus", "glass": "glass", "grass": "grass",
    "tv": "tv", "tvs": "tv", "kiwis": "kiwi", "tomatoes": "tomato", "potatoes": "potato",
}

_WORD = re.compile(r"[a-z0-9]+")


def singular(word: str) -> str:
    """Rough English singular of a lower-case word (see the module docstring for the rule)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words_of(text: str) -> list[str]:
    return [singular(w) for w in _WORD.findall(text.lower())]


class ObjectVocabulary:
    """Maps word sequences (synonyms) to canonical object names."""

    def __init__(self, synonyms: dict[str, Iterable[str]]):
        self.canonical: list[str] = []
        self._phrases: dict[tuple[str, ...], str] = {}
        for name, syns in synonyms.items():
            self.canonical.append(name)
            for phrase in [name, *syns]:
                key = tuple(words_of(phrase))
                if key and key not in self._phrases:
                    self._phrases[key] = name
        self.max_len = max((len(k) for k in self._phrases), default=1)

    @classmethod
    def from_file(cls, path: str = DEFAULT_SYNONYMS) -> "ObjectVocabulary":
        """Reads `canonical, synonym, synonym, ...` lines; `#` starts a comment line."""
        synonyms: dict[str, list[str]] = {}
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            raise EvalDataError(f"{path}: synonym list not found") from None
        for i, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split(",") if p.strip()]
            if not parts:
                raise EvalDataError(f"{path}, line {i}: expected 'name, synonym, ...'")
            synonyms.setdefault(parts[0], []).extend(parts[1:])
        return cls(synonyms)

    def canonical_of(self, phrase: str) -> str | None:
        """Canonical name for an object label such as `Fire hydrant`, or None if unknown."""
        return self._phrases.get(tuple(words_of(phrase)))

    def mentions(self, text: str) -> list[str]:
        """Canonical names mentioned in `text`, in order, one entry per mention."""
        words = words_of(text)
        out = []
        i = 0
        while i < len(words):
            for n in range(min(self.max_len, len(words) - i), 0, -1):
                name = self._phrases.get(tuple(words[i : i + n]))
                if name is not None:
                    out.append(name)
                    i += n
                    break
            else:
                i += 1
        return out

    def extended(self, labels: Iterable[str]) -> "ObjectVocabulary":
        """This vocabulary plus each unknown label as its own canonical name."""
        synonyms: dict[str, list[str]] = {name: [] for name in self.canonical}
        for phrase, name in self._phrases.items():
            synonyms[name].append(" ".join(phrase))
        for label in labels:
            if self.canonical_of(label) is None:
                synonyms.setdefault(label.lower(), [])
        return ObjectVocabulary(synonyms)

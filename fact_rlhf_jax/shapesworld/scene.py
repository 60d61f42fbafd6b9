"""ShapesWorld scenes: the vocabulary of the world, scene graphs, and sampling them from a seed.

A scene is 1 to 4 objects on a 3x3 grid of cells (at most one object per cell, so objects never
overlap), each with a shape, a colour and a size, on a background that may carry pixel noise.
The scene graph is the ground truth every text, question and metric is derived from.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "black")
SIZES: tuple[str, ...] = ("small", "medium", "large")

# Plural forms used by templates and recognised by the annotator.
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "star": "stars",
    "cross": "crosses",
}

# RGB of each colour name (objects get a small random jitter around it when drawn).
RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 60),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
    "black": (25, 25, 25),
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "light gray": (205, 205, 205),
    "beige": (228, 216, 190),
    "pale blue": (200, 214, 236),
}

# Grid cells as (row, col) -> position phrase. Row 0 is the top of the image.
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object: `cell` is (row, col) in the 3x3 grid; `jitter` is the offset of its centre from
    the cell centre as a fraction of the cell size, in [-0.1, 0.1] for each of (dy, dx)."""

    shape: str
    colour: str
    size: str
    cell: tuple[int, int]
    jitter: tuple[float, float] = (0.0, 0.0)

    @property
    def name(self) -> str:
        """Canonical object name: "colour shape", e.g. "red circle"."""
        return f"{self.colour} {self.shape}"

    @property
    def position(self) -> str:
        """Position phrase of its grid cell, e.g. "top left"."""
        return POSITIONS[self.cell]

    def to_json(self) -> dict:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "position": self.position,
            "cell": list(self.cell),
            "jitter": [round(j, 4) for j in self.jitter],
        }

    @classmethod
    def from_json(cls, d: dict) -> SceneObject:
        return cls(
            shape=d["shape"],
            colour=d["colour"],
            size=d["size"],
            cell=(int(d["cell"][0]), int(d["cell"][1])),
            jitter=(float(d["jitter"][0]), float(d["jitter"][1])),
        )


@dataclasses.dataclass(frozen=True)
class Scene:
    """Scene graph of one image. Objects are stored in reading order (top row first, left to right)."""

    objects: tuple[SceneObject, ...]
    background: str = "light gray"
    noise: float = 0.0  # std of the per-pixel Gaussian noise in 0..255 units; 0 = plain background

    @property
    def names(self) -> list[str]:
        """Canonical name of every object ("colour shape"), duplicates kept."""
        return [o.name for o in self.objects]

    def instance_names(self) -> list[str]:
        """One unique name per object: the first "red circle" is "red circle", a second one is
        "red circle #2", and so on. These are the ground-truth names CHAIR-style metrics compare
        against."""
        seen: Counter[str] = Counter()
        out = []
        for o in self.objects:
            seen[o.name] += 1
            out.append(instance_name(o.name, seen[o.name]))
        return out

    def count(self, *, shape: str | None = None, colour: str | None = None) -> int:
        return sum(
            1
            for o in self.objects
            if (shape is None or o.shape == shape) and (colour is None or o.colour == colour)
        )

    def to_json(self) -> dict:
        return {
            "objects": [o.to_json() for o in self.objects],
            "background": self.background,
            "noise": self.noise,
        }

    @classmethod
    def from_json(cls, d: dict) -> Scene:
        return cls(
            objects=tuple(SceneObject.from_json(o) for o in d["objects"]),
            background=d["background"],
            noise=float(d["noise"]),
        )


def instance_name(name: str, k: int) -> str:
    """Name of the k-th (1-based) instance of an object kind: "red circle", "red circle #2", ..."""
    return name if k == 1 else f"{name} #{k}"


def relation(a: SceneObject, b: SceneObject) -> list[str]:
    """Spatial relations that hold from a to b, among "left of", "right of", "above", "below"
    (grid cells, so objects in the same column are neither left nor right of each other)."""
    out = []
    if a.cell[1] < b.cell[1]:
        out.append("left of")
    if a.cell[1] > b.cell[1]:
        out.append("right of")
    if a.cell[0] < b.cell[0]:
        out.append("above")
    if a.cell[0] > b.cell[0]:
        out.append("below")
    return out


def sample_scene(
    rng: random.Random,
    *,
    min_objects: int = 1,
    max_objects: int = 4,
    noise_prob: float = 0.5,
    repeat_prob: float = 0.15,
) -> Scene:
    """Draw one scene. `repeat_prob` is the chance that an object copies the colour and shape of an
    earlier one (so counting questions have answers above one); `noise_prob` the chance that the
    background carries pixel noise."""
    n = rng.randint(min_objects, max_objects)
    cells = rng.sample(sorted(POSITIONS), n)
    cells.sort()
    objects = []
    for cell in cells:
        if objects and rng.random() < repeat_prob:
            base = rng.choice(objects)
            shape, colour = base.shape, base.colour
        else:
            shape, colour = rng.choice(SHAPES), rng.choice(COLOURS)
        size = rng.choice(SIZES)
        jitter = (rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1))
        objects.append(SceneObject(shape, colour, size, cell, jitter))
    background = rng.choice(sorted(BACKGROUNDS))
    noise = rng.choice((8.0, 16.0)) if rng.random() < noise_prob else 0.0
    return Scene(objects=tuple(objects), background=background, noise=noise)


def load_scenes(path) -> dict[str, Scene]:
    """Read `scene_graphs.json` (image file name -> scene graph) written by `write_world`."""
    import json

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping image file names to scene graphs")
    out = {}
    for image, graph in data.items():
        try:
            out[image] = Scene.from_json(graph)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(
                f"{path}, image {image!r}: bad scene graph ({e!r}); expected objects with "
                "shape, colour, size, cell, jitter and a background and noise"
            ) from None
    return out

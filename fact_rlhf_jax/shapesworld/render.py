"""Drawing a scene graph as an RGB image with PIL (deterministic given the seed)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from fact_rlhf_jax.shapesworld.scene import BACKGROUNDS, RGB, Scene, SceneObject

# Object extent (half of its bounding box) as a fraction of the cell size.
SIZE_SCALE: dict[str, float] = {"small": 0.22, "medium": 0.32, "large": 0.44}


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of the polygonal shapes around centre (cx, cy) with half-extent r (y grows down)."""
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    if shape == "cross":
        t = r * 0.35
        return [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
            (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
            (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
        ]  # fmt: skip
    raise ValueError(f"unknown polygon shape {shape!r}")


def object_box(obj: SceneObject, image_size: int) -> tuple[float, float, float]:
    """(cx, cy, r): centre and half-extent of the object in pixels."""
    cell = image_size / 3.0
    cy = (obj.cell[0] + 0.5 + obj.jitter[0]) * cell
    cx = (obj.cell[1] + 0.5 + obj.jitter[1]) * cell
    return cx, cy, SIZE_SCALE[obj.size] * cell


def render(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw `scene` as a [image_size, image_size, 3] uint8 RGB image. `rng` supplies the background
    noise and the small per-object colour jitter."""
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    pixels = np.broadcast_to(bg, (image_size, image_size, 3)).copy()
    if scene.noise > 0:
        pixels += rng.normal(0.0, scene.noise, size=pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(RGB[obj.colour], jitter))
        cx, cy, r = object_box(obj, image_size)
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r), fill=fill)
    return image

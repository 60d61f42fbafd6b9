"""Image loading and CLIP preprocessing with LLaVA's pad-to-square.

`preprocess(img, image_size)` = LLaVA `image_aspect_ratio="pad"`: pad the RGB image to a
square with the CLIP mean colour (122, 116, 104) centred, then `CLIPImageProcessor`:
resize the shortest side to `image_size` (PIL bicubic), centre-crop `image_size`²,
scale by 1/255, normalise with the OpenAI CLIP mean/std, channels first.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from fact_rlhf_jax.data import errors

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def background_colour(mean=CLIP_MEAN) -> tuple[int, int, int]:
    """LLaVA's padding colour: `int(255 * m)` per channel -> (122, 116, 104) for CLIP."""
    return tuple(int(255 * m) for m in mean)


def expand_to_square(img: Image.Image, colour) -> Image.Image:
    """Pads the shorter side so the image is centred on a square canvas of `colour`."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new(img.mode, (side, side), colour)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def _resize_shortest(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return img.resize((new_w, new_h), resample=Image.BICUBIC, reducing_gap=None)


def _center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """arr [H, W, C]; pads with zeros first if smaller than `size` (as transformers does)."""
    h, w = arr.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        arr = np.pad(arr, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = arr.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return arr[top : top + size, left : left + size]


def preprocess(
    img: Image.Image,
    image_size: int,
    *,
    pad_to_square: bool = True,
    mean=CLIP_MEAN,
    std=CLIP_STD,
) -> np.ndarray:
    """PIL image -> float32 [3, image_size, image_size]."""
    img = img.convert("RGB")
    if pad_to_square:
        img = expand_to_square(img, background_colour(mean))
    img = _resize_shortest(img, image_size)
    arr = _center_crop(np.asarray(img), image_size)
    arr = arr.astype(np.float32) * np.float32(1 / 255)
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def zeros(image_size: int) -> np.ndarray:
    """The stand-in for a record without an image: float32 [3, image_size, image_size]."""
    return np.zeros((3, image_size, image_size), np.float32)


def load_image(path: str | None = None, data: bytes | None = None) -> Image.Image:
    """Opens and fully decodes an image from a file or bytes; raises BadRecordError on failure."""
    if data is None:
        if not path or not os.path.isfile(path):
            raise errors.BadRecordError(None, None, "image", errors.MISSING_IMAGE, f"no image file at {path}")
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            img.load()
            return img.convert("RGB")
    except Exception as e:  # PIL raises many types for truncated / non-image data
        where = path or "<embedded bytes>"
        raise errors.BadRecordError(None, None, "image", errors.CORRUPT_IMAGE,
                                    f"cannot decode image {where}: {type(e).__name__}: {e}") from None

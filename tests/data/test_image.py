"""Image preprocessing parity with transformers.CLIPImageProcessor (+ LLaVA pad-to-square)."""

import numpy as np
import pytest
from PIL import Image

from fact_rlhf_jax.data import errors
from fact_rlhf_jax.data import image as image_lib


def clip_processor(size):
    from transformers import CLIPImageProcessor

    # CLIPImageProcessor defaults = openai/clip-vit-large-patch14 preprocessing, at our size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@pytest.mark.parametrize("wh, size", [((50, 30), 24), ((31, 61), 24), ((40, 40), 16), ((17, 90), 56)])
def test_parity_with_clip_image_processor(wh, size):
    rng = np.random.default_rng(sum(wh))
    img = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    proc = clip_processor(size)
    # LLaVA: expand2square with tuple(int(x * 255) for x in processor.image_mean), then the processor
    w, h = img.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), tuple(int(x * 255) for x in proc.image_mean))
    square.paste(img, ((side - w) // 2, (side - h) // 2))
    want = proc(square, return_tensors="np")["pixel_values"][0]
    got = image_lib.preprocess(img, size)
    assert got.shape == (3, size, size) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    # without padding: plain CLIP resize + centre crop
    want = proc(img, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(image_lib.preprocess(img, size, pad_to_square=False), want, atol=1e-5)


def test_pad_to_square_by_hand():
    arr = np.full((2, 6, 3), 255, np.uint8)  # 6 wide, 2 high, white
    out = np.asarray(image_lib.expand_to_square(Image.fromarray(arr), image_lib.background_colour()))
    assert out.shape == (6, 6, 3)
    bg = np.array([122, 116, 104], np.uint8)  # int(255 * CLIP mean)
    for row in (0, 1, 4, 5):
        assert (out[row] == bg).all()
    assert (out[2:4] == 255).all()  # centred: offset (6 - 2) // 2 = 2


def test_padding_colour_normalises_to_about_zero():
    img = Image.new("RGB", (10, 4), (255, 255, 255))
    x = image_lib.preprocess(img, 10)
    corner = x[:, 0, 0]
    want = (np.array([122, 116, 104]) / 255 - np.array(image_lib.CLIP_MEAN)) / np.array(image_lib.CLIP_STD)
    np.testing.assert_allclose(corner, want, atol=1e-6)
    assert np.abs(corner).max() < 0.02  # int() truncation leaves it just below the mean


def test_missing_and_corrupt_images(tmp_path):
    with pytest.raises(errors.BadRecordError) as e:
        image_lib.load_image(str(tmp_path / "nope.jpg"))
    assert e.value.reason == errors.MISSING_IMAGE
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(errors.BadRecordError) as e:
        image_lib.load_image(str(bad))
    assert e.value.reason == errors.CORRUPT_IMAGE
    # a truncated PNG is corrupt too
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + 7).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(errors.BadRecordError) as e:
        image_lib.load_image(str(cut))
    assert e.value.reason == errors.CORRUPT_IMAGE
    img = image_lib.load_image(str(good))
    assert img.mode == "RGB" and np.asarray(img)[0, 0, 0] == 7

"""The ShapesWorld tfds array_record builder, read back with as_data_source (no TensorFlow)."""

import json

import numpy as np
from PIL import Image

from fact_rlhf_jax.shapesworld import write_world
from fact_rlhf_jax.shapesworld.tfds_builder import load_records, prepare


def test_tfds_round_trip(tmp_path):
    paths = write_world(tmp_path / "w", num_images=5, seed=3)
    sft = json.loads(paths["sft"].read_text())
    pairs = load_records(tmp_path / "w", "sft")
    assert [r for r, _ in pairs] == sft
    for rec, image in pairs:
        want = np.asarray(Image.open(paths["images"] / rec["image"]).convert("RGB"))
        np.testing.assert_array_equal(image, want)
    pref = load_records(tmp_path / "w", "preference")
    assert [r for r, _ in pref] == json.loads(paths["preference"].read_text())
    builder = prepare(tmp_path / "w", "ppo_prompts")
    assert (tmp_path / "w" / "tfds").is_dir()
    assert builder.info.splits["train"].num_examples == 5

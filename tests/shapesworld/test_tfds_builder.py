"""ShapesWorld through the generic tfds array_record builder and the loader's record source
(as_data_source, no TensorFlow)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from fact_rlhf_jax.shapesworld import write_world
from fact_rlhf_jax.shapesworld.tfds_builder import load_records, prepare


def test_tfds_round_trip(tmp_path):
    paths = write_world(tmp_path / "w", num_images=5, seed=3)
    sft = json.loads(paths["sft"].read_text())
    pairs = load_records(tmp_path / "w", "sft")
    assert sorted((r for r, _ in pairs), key=lambda r: r["id"]) == sorted(sft, key=lambda r: r["id"])
    for rec, image in pairs:
        want = np.asarray(Image.open(paths["images"] / rec["image"]).convert("RGB"))
        np.testing.assert_array_equal(image, want)
    pref = [r for r, _ in load_records(tmp_path / "w", "preference")]
    assert sorted(pref, key=lambda r: r["id"]) == sorted(json.loads(paths["preference"].read_text()), key=lambda r: r["id"])
    prepared = Path(prepare(tmp_path / "w", "ppo_prompts"))
    assert (tmp_path / "w" / "tfds" / "ppo_prompts") in prepared.parents
    assert (prepared / "dataset_info.json").is_file()


def test_sft_loader_reads_world_json_and_tfds(tmp_path):
    """The SFT input pipeline builds batches from ShapesWorld with its own tokenizer, from the
    JSON file and from the prepared tfds dir alike."""
    from transformers import AutoTokenizer

    from fact_rlhf_jax.data.pipeline import build_sft_loader

    paths = write_world(tmp_path / "w", num_images=4, seed=0)
    tok = AutoTokenizer.from_pretrained(str(paths["tokenizer"]))
    for source in ((str(paths["sft"]), str(paths["images"])), prepare(tmp_path / "w", "sft")):
        loader = build_sft_loader([source], tok, image_token_id=3, num_image_tokens=4, image_size=32,
                                  max_length=512, global_batch_size=8, seed=0, num_epochs=1, strict=True,
                                  read_threads=0)
        batch = next(iter(loader))
        assert batch["input_ids"].shape[0] == 8
        assert batch["pixel_values"].shape == (8, 3, 32, 32)
        assert ((batch["input_ids"] == 3).sum(axis=1) == 4).all()
        assert ((batch["labels"] == 2).sum(axis=1) >= 2).all()  # each reply ends with a supervised </s>

"""The tfds array_record builder round trip (no TensorFlow installed)."""

import json

import numpy as np
import pytest

from fact_rlhf_jax.data import pipeline, tfds_data

from .test_pipeline import EXPECTED_BAD, IMG, build, messy_dir  # noqa: F401  (fixture)

pytest.importorskip("tensorflow_datasets")


def rows(batches):
    """Every example as a hashable (input_ids, labels, pixel sum) tuple, order-free."""
    out = []
    for b in batches:
        for r in range(b["input_ids"].shape[0]):
            n = int(b["attention_mask"][r].sum())
            out.append((tuple(b["input_ids"][r, :n]), tuple(b["labels"][r, :n]),
                        round(float(b["pixel_values"][r].sum()), 3)))
    return sorted(out)


def test_prepared_dataset_reads_back_like_the_json(messy_dir, llama_tokenizer, tmp_path):  # noqa: F811
    path = tfds_data.prepare(str(messy_dir / "data.jsonl"), str(messy_dir / "images"), str(tmp_path / "prepared"))
    assert (tmp_path / "prepared" / "llava_sft" / "1.0.0" / "dataset_info.json").exists()
    assert any("array_record" in p.name for p in (tmp_path / "prepared" / "llava_sft" / "1.0.0").iterdir())

    kw = dict(global_batch_size=1, num_epochs=1, max_length=70, shuffle=False)
    from_json = build([(str(messy_dir / "data.jsonl"), str(messy_dir / "images"))], llama_tokenizer, **kw)
    # the prepared dir (or its parent) is a source; no image folder needed any more
    from_tfds = build([(str(tmp_path / "prepared"), None)], llama_tokenizer, **kw)
    a, b = list(from_json), list(from_tfds)
    assert len(a) == len(b) == 5
    assert rows(a) == rows(b)
    assert from_tfds.bad_records == from_json.bad_records == EXPECTED_BAD
    assert path.endswith("1.0.0")
    # the array_record data source gives random access to the stored record JSON
    src = tfds_data.TfdsSource(path)
    assert len(src) == 10
    ids = sorted(src._data[i]["id"].decode() for i in range(len(src)))
    assert "r10" in ids and "r3" in ids

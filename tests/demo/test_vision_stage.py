"""The demo's vision pretraining: tags read from captions, the tag loss against numpy, resumable batches."""

import numpy as np

from fact_rlhf_jax.demo import vision_stage


def test_caption_tags_name_every_coloured_object_any_caption_mentions():
    names = vision_stage.tag_names()
    index = {n: i for i, n in enumerate(names)}
    tags = vision_stage.caption_tags(["A picture with a purple star and a green disk.", "A dark block.",
                                      "Two stars."], index)
    assert len(names) == 42
    assert sorted(names[i] for i in np.flatnonzero(tags)) == ["black square", "green circle", "purple star"]


def test_tag_loss_matches_numpy():
    stage = vision_stage.VisionTagStage.__new__(vision_stage.VisionTagStage)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 42)).astype(np.float32)
    tags = (rng.random((3, 42)) < 0.1).astype(np.float32)
    valid = np.array([1.0, 1.0, 0.0], np.float32)
    stage.tag_logits = lambda params, pixels: logits
    terms = stage.loss({}, {"pixel_values": None, "tags": tags, "valid": valid}, None)

    bce = np.maximum(logits, 0) - logits * tags + np.log1p(np.exp(-np.abs(logits)))
    np.testing.assert_allclose(float(terms.total), bce[:2].sum(), rtol=1e-5)
    assert float(terms.weight) == 2 * 42
    predicted = (logits[:2] > 0)
    hits, n_pred = terms.metrics["precision"]
    assert float(hits) == (predicted & (tags[:2] > 0)).sum() and float(n_pred) == predicted.sum()
    assert float(terms.metrics["recall"][1]) == tags[:2].sum()


def test_batches_resume_where_they_stopped_and_visit_each_image_once_per_epoch():
    pixels = np.arange(10, dtype=np.float32)[:, None]
    tags = np.zeros((10, 1), np.float32)
    first = vision_stage.TagBatches(pixels, tags, batch_size=4, seed=3)
    drawn = [next(first)["pixel_values"][:, 0] for _ in range(5)]
    assert sorted(np.concatenate(drawn)[:10].tolist()) == list(range(10))

    resumed = vision_stage.TagBatches(pixels, tags, batch_size=4, seed=3)
    resumed.set_state({"position": 3})
    np.testing.assert_array_equal(next(resumed)["pixel_values"][:, 0], drawn[3])

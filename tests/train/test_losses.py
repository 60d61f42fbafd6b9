"""SFT loss against a numpy cross-entropy written out here."""

import jax.numpy as jnp
import numpy as np

from fact_rlhf_jax.train.losses import sft_loss_terms


def numpy_token_nll(logits, labels):
    """Per-position NLL of labels[t + 1] given logits[t]; None where unsupervised."""
    B, T, V = logits.shape
    out = [[None] * (T - 1) for _ in range(B)]
    for b in range(B):
        for t in range(T - 1):
            target = labels[b, t + 1]
            if target == -100:
                continue
            row = logits[b, t].astype(np.float64)
            m = row.max()
            log_z = m + np.log(np.exp(row - m).sum())
            out[b][t] = log_z - row[target]
    return out


def test_sft_loss_matches_numpy_shifted_and_masked():
    rng = np.random.default_rng(0)
    B, T, V = 3, 6, 11
    logits = rng.normal(size=(B, T, V)).astype(np.float32) * 3
    labels = rng.integers(0, V, size=(B, T)).astype(np.int32)
    labels[0, :3] = -100          # prompt masked
    labels[1, :] = -100           # nothing supervised in this row
    labels[2, 0] = -100
    labels[2, 4] = -100           # a hole in the middle
    terms = sft_loss_terms(jnp.asarray(logits), jnp.asarray(labels))

    nll = numpy_token_nll(logits, labels)
    flat = [x for row in nll for x in row if x is not None]
    # row 0: targets at positions 3..5 -> 3 tokens; row 2: positions 1,2,3,5 -> 4 tokens
    assert len(flat) == 7
    np.testing.assert_allclose(float(terms.weight), 7)
    np.testing.assert_allclose(float(terms.total), sum(flat), rtol=1e-5)
    s, c = terms.metrics["loss_per_token"]
    np.testing.assert_allclose(float(s) / float(c), np.mean(flat), rtol=1e-5)

    per_seq = [np.mean([x for x in row if x is not None]) for row in nll if any(x is not None for x in row)]
    s, c = terms.metrics["loss_per_sequence"]
    assert float(c) == 2
    np.testing.assert_allclose(float(s) / float(c), np.mean(per_seq), rtol=1e-5)

    correct = sum(
        int(np.argmax(logits[b, t]) == labels[b, t + 1])
        for b in range(B) for t in range(T - 1) if labels[b, t + 1] != -100
    )
    s, c = terms.metrics["accuracy"]
    assert float(s) == correct and float(c) == 7


def test_sft_loss_of_perfect_prediction_is_small_and_of_uniform_is_log_v():
    V = 5
    labels = np.array([[-100, 1, 2, 3]], np.int32)
    uniform = jnp.zeros((1, 4, V))
    terms = sft_loss_terms(uniform, jnp.asarray(labels))
    np.testing.assert_allclose(float(terms.total / terms.weight), np.log(V), rtol=1e-6)
    peaked = np.full((1, 4, V), -30.0, np.float32)
    for t in range(3):
        peaked[0, t, labels[0, t + 1]] = 30.0
    terms = sft_loss_terms(jnp.asarray(peaked), jnp.asarray(labels))
    assert float(terms.total) < 1e-6

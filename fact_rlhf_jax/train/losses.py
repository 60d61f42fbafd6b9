"""Token-level losses shared by the stages (pure functions of logits and labels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import layers as L
from fact_rlhf_jax.train.stage import LossTerms

IGNORE_INDEX = -100


def shifted_token_nll(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Next-token negative log-likelihood.

    logits [B, T, V] (position t predicts token t + 1), labels [B, T] aligned with the inputs,
    `-100` = unsupervised. Returns (nll [B, T-1] zero where unsupervised, valid [B, T-1] bool,
    correct [B, T-1] bool: argmax == target on valid positions).
    """
    # The targets move left instead of the logits: slicing [B, T, V] logits costs a copy forward and a pad of
    # the whole gradient backward; the last position gets no target and is dropped from the [B, T] results.
    logits = logits.astype(jnp.float32)
    targets = jnp.concatenate([labels[:, 1:], jnp.full_like(labels[:, :1], IGNORE_INDEX)], axis=1)
    valid = targets != IGNORE_INDEX
    safe = jnp.where(valid, targets, 0)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, log_z - target_logit, 0.0)
    correct = (L.first_argmax(logits) == safe) & valid
    return nll[:, :-1], valid[:, :-1], correct[:, :-1]


def shifted_token_nll_chunked(hidden: jax.Array, lm_head: jax.Array, labels: jax.Array,
                              chunk: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`shifted_token_nll` from final hidden states, without materialising [B, T, V] logits.

    hidden [B, T, D], lm_head [D, V], labels [B, T]. The sequence is cut into chunks of `chunk` positions;
    each chunk's logits [B, chunk, V] are computed, reduced to NLL / argmax and dropped, and recomputed in
    the backward pass (`jax.checkpoint`), so peak memory holds one chunk of logits instead of all of them.
    """
    h = hidden[:, :-1]
    targets = labels[:, 1:]
    b, t, d = h.shape
    n = -(-t // chunk)
    pad = n * chunk - t
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0))).reshape(b, n, chunk, d).swapaxes(0, 1)
    tg = jnp.pad(targets, ((0, 0), (0, pad)), constant_values=IGNORE_INDEX).reshape(b, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def one_chunk(xs):
        hx, tx = xs
        logits = jnp.einsum("bcd,dv->bcv", hx, lm_head.astype(hx.dtype), preferred_element_type=jnp.float32)
        valid = tx != IGNORE_INDEX
        safe = jnp.where(valid, tx, 0)
        target_logit = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
        nll = jnp.where(valid, jax.nn.logsumexp(logits, axis=-1) - target_logit, 0.0)
        return nll, (L.first_argmax(logits) == safe) & valid

    nll, correct = jax.lax.map(one_chunk, (h, tg))
    nll = nll.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
    correct = correct.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
    return nll, targets != IGNORE_INDEX, correct


def sft_loss_terms(logits: jax.Array, labels: jax.Array) -> LossTerms:
    """Mean cross-entropy over supervised tokens, as sums for exact accumulation.

    total / weight = per-token loss of the (global) batch. Metrics:
      loss_per_token     sum of token NLLs / supervised tokens
      loss_per_sequence  mean over sequences with at least one supervised token of their mean token NLL
      accuracy           argmax next-token accuracy on supervised tokens
    """
    return token_loss_terms(*shifted_token_nll(logits, labels))


def sft_loss_terms_chunked(hidden: jax.Array, lm_head: jax.Array, labels: jax.Array, chunk: int) -> LossTerms:
    """`sft_loss_terms` from hidden states, `chunk` positions of logits at a time."""
    return token_loss_terms(*shifted_token_nll_chunked(hidden, lm_head, labels, chunk))


def token_loss_terms(nll: jax.Array, valid: jax.Array, correct: jax.Array) -> LossTerms:
    """LossTerms (sums over supervised tokens, per-token / per-sequence / accuracy metrics) from per-token NLLs."""
    valid_f = valid.astype(jnp.float32)
    total = nll.sum()
    weight = valid_f.sum()
    seq_tokens = valid_f.sum(axis=1)
    has_tokens = seq_tokens > 0
    seq_mean = nll.sum(axis=1) / jnp.where(has_tokens, seq_tokens, 1.0)
    metrics = {
        "loss_per_token": (total, weight),
        "loss_per_sequence": (jnp.where(has_tokens, seq_mean, 0.0).sum(), has_tokens.astype(jnp.float32).sum()),
        "accuracy": (correct.astype(jnp.float32).sum(), weight),
    }
    return LossTerms(total=total, weight=weight, metrics=metrics)


def pairwise_reward_loss_terms(r1: jax.Array, r2: jax.Array, choice: jax.Array, valid: jax.Array,
                               center_coef: float = 1e-3) -> LossTerms:
    """The reward model's loss on preference pairs (units: pairs).

    r1, r2 float32 [B]: scores of output_1 and output_2; choice [B]: 1 when output_2 is preferred;
    valid [B]: 0 for filler rows. Per batch: mean_b BCE-with-logits(r2 - r1, choice) + center_coef *
    |mean_b(r1 + r2)| (the reference's centering term, on this (micro-)batch's mean). As sums: total =
    sum of BCEs + n * center term, weight = n.
    Metrics: accuracy = mean[(r2 - r1 >= 0) == choice], label_positive_rate = mean(choice),
    mean_score = mean of all 2n scores, bce = mean BCE.
    """
    v = valid.astype(jnp.float32)
    c = choice.astype(jnp.float32)
    logits = (r2 - r1).astype(jnp.float32)
    bce = c * jax.nn.softplus(-logits) + (1.0 - c) * jax.nn.softplus(logits)
    n = v.sum()
    score_sum = (v * (r1 + r2)).sum()
    center = center_coef * jnp.abs(score_sum / jnp.maximum(n, 1.0)) * n
    bce_sum = (v * bce).sum()
    correct = ((logits >= 0).astype(jnp.float32) == c).astype(jnp.float32)
    metrics = {
        "accuracy": ((v * correct).sum(), n),
        "label_positive_rate": ((v * c).sum(), n),
        "mean_score": (score_sum, 2.0 * n),
        "bce": (bce_sum, n),
    }
    return LossTerms(total=bce_sum + center, weight=n, metrics=metrics)

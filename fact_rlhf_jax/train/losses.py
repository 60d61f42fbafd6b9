"""Token-level losses shared by the stages (pure functions of logits and labels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fact_rlhf_jax.train.stage import LossTerms

IGNORE_INDEX = -100


def shifted_token_nll(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Next-token negative log-likelihood.

    logits [B, T, V] (position t predicts token t + 1), labels [B, T] aligned with the inputs,
    `-100` = unsupervised. Returns (nll [B, T-1] zero where unsupervised, valid [B, T-1] bool,
    correct [B, T-1] bool: argmax == target on valid positions).
    """
    logits = logits[:, :-1].astype(jnp.float32)
    targets = labels[:, 1:]
    valid = targets != IGNORE_INDEX
    safe = jnp.where(valid, targets, 0)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, log_z - target_logit, 0.0)
    correct = (jnp.argmax(logits, axis=-1) == safe) & valid
    return nll, valid, correct


def sft_loss_terms(logits: jax.Array, labels: jax.Array) -> LossTerms:
    """Mean cross-entropy over supervised tokens, as sums for exact accumulation.

    total / weight = per-token loss of the (global) batch. Metrics:
      loss_per_token     sum of token NLLs / supervised tokens
      loss_per_sequence  mean over sequences with at least one supervised token of their mean token NLL
      accuracy           argmax next-token accuracy on supervised tokens
    """
    nll, valid, correct = shifted_token_nll(logits, labels)
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

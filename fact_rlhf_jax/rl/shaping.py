"""Per-token rewards of a rollout, as LLaVA-RLHF shapes them (`RLHF/models/ppo_trainer.py`).

    score_b   = RM(image, prompt + response + fact-augmented instruction) + stop_penalty * [no EOS]
    len_b     = (n_b / max_new_tokens) * length_bonus_b            (n_b: response tokens, EOS included)
    kl_bt     = max(log pi(y_t) - log pi_ref(y_t), 0)   ("k1"; "k3": exp(r) - 1 - r with r = ref - logp)
    s_bt      = -kl_coef * kl_bt
    s_b,last += score_b + length_bonus_score * len_b + correct_bonus_score * bonus_b + reward_bias

`last` is the position that carries the sequence reward: the last response token (`token_mask="response"`),
or the last of the max_new_tokens slots as in the reference (`"all"`); with gamma = lambda = 1 both give the
same advantages on response tokens.

Arrays: [B, N] over the N = max_new_tokens response slots; `mask` [B, N] 1 on response tokens.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fact_rlhf_jax.shapesworld.questions import GENERAL, NO_IN_YESNO, YES_IN_YESNO

LETTER_TYPES = {2: "A", 3: "B", 4: "C", 5: "D"}  # caption_type -> the correct option (AnswerType A..D_IN_ABCD)


@dataclasses.dataclass(frozen=True)
class ShapingConfig:
    """The reference's coefficients (13B `train_rl_model.sh`) as defaults."""

    kl_coef: float = 0.1
    kl_estimator: str = "k1"  # "k1": clamped log-ratio; "k3": exp(r) - 1 - r
    stop_penalty: float = -8.0  # added to the score of a response without EOS
    relative_stop_penalty: bool = True  # False: the score of such a response is replaced by stop_penalty
    length_bonus_score: float = -10.0
    correct_bonus_score: float = 2.0
    reward_bias: float = 0.0
    max_new_tokens: int = 896


class ShapedRewards(NamedTuple):
    rewards: jax.Array  # float32 [B, N] per-token rewards (before any scaling)
    kl: jax.Array  # float32 [B, N] the KL estimate per token (0 off the mask)
    score: jax.Array  # float32 [B] reward-model score after the stop penalty
    parts: dict  # float32 [B] each: model, stop, length, symbolic, kl (per-sequence sums)


def kl_estimate(logprobs: jax.Array, ref_logprobs: jax.Array, mask: jax.Array, estimator: str = "k1") -> jax.Array:
    """Per-token KL(pi || pi_ref) estimate on sampled tokens, 0 off the mask. [B, N] -> [B, N]."""
    if estimator == "k1":
        kl = jnp.maximum(logprobs - ref_logprobs, 0.0)
    elif estimator == "k3":
        log_r = ref_logprobs - logprobs
        kl = jnp.exp(log_r) - 1.0 - log_r
    else:
        raise ValueError(f"kl_estimator {estimator!r}: expected k1 or k3")
    return jnp.where(mask > 0, kl, 0.0)


def shape_rewards(rm_score: jax.Array, logprobs: jax.Array, ref_logprobs: jax.Array, mask: jax.Array,
                  has_eos: jax.Array, length_bonus: jax.Array, correct_bonus: jax.Array, last_index: jax.Array,
                  cfg: ShapingConfig) -> ShapedRewards:
    """rm_score [B]; logprobs, ref_logprobs, mask [B, N]; has_eos bool [B]; length_bonus (the prompt's
    multiplier) and correct_bonus (from `symbolic_bonus`) float32 [B]; last_index int32 [B]: where the
    sequence reward lands."""
    mask = mask.astype(jnp.float32)
    kl = kl_estimate(logprobs.astype(jnp.float32), ref_logprobs.astype(jnp.float32), mask, cfg.kl_estimator)
    non_score = -cfg.kl_coef * kl
    no_eos = 1.0 - has_eos.astype(jnp.float32)
    model = rm_score.astype(jnp.float32)
    if cfg.relative_stop_penalty:
        stop = cfg.stop_penalty * no_eos
    else:
        stop = jnp.where(no_eos > 0, cfg.stop_penalty - model, 0.0)
    n = mask.sum(axis=1)
    length = cfg.length_bonus_score * (n / float(cfg.max_new_tokens)) * length_bonus.astype(jnp.float32)
    symbolic = cfg.correct_bonus_score * correct_bonus.astype(jnp.float32)
    sequence = model + stop + length + symbolic + cfg.reward_bias
    at_last = jax.nn.one_hot(last_index, logprobs.shape[1], dtype=jnp.float32)
    rewards = non_score + at_last * sequence[:, None]
    parts = {"model": model, "stop": stop, "length": length, "symbolic": symbolic, "kl": non_score.sum(axis=1)}
    return ShapedRewards(rewards, kl, model + stop, parts)


def symbolic_bonus(text: str, caption_type: int) -> float:
    """The reference's correctness bonus of a decoded response (multiplied by `correct_bonus_score` later).

    caption_type 2-5 (the answer is option A-D): 1.0 if the stripped text starts with "X." or contains
    "correct option is X.", else 0. 6 (the answer is "no"): +0.5 if it starts with "No", -0.5 if with "Yes".
    7 (the answer is "yes") and 1 (general): 0 (the reference leaves "yes" unrewarded to counter yes-bias).
    """
    caption_type = int(caption_type)
    stripped = text.strip()
    if caption_type in LETTER_TYPES:
        letter = LETTER_TYPES[caption_type] + "."
        return 1.0 if stripped.startswith(letter) or ("correct option is " + letter) in text else 0.0
    if caption_type == NO_IN_YESNO:
        return 0.5 if stripped.startswith("No") else -0.5 if stripped.startswith("Yes") else 0.0
    if caption_type in (GENERAL, YES_IN_YESNO):
        return 0.0
    raise ValueError(f"caption_type {caption_type}: expected 1-7")

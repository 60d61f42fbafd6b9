"""Reward shaping, symbolic rewards, GAE, whitening and the PPO losses against numpy written out here."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fact_rlhf_jax.rl import advantages, losses, shaping


def np_gae(rewards, values, mask, gamma, lam):
    """The reference loop (`_estimate_advantage`), with rewards and values zero off the mask."""
    r, v = rewards * mask, values * mask
    b, n = r.shape
    adv = np.zeros((b, n))
    last = np.zeros(b)
    for t in reversed(range(n)):
        next_v = v[:, t + 1] if t < n - 1 else 0.0
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    return adv * mask, (adv + v) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0)])
def test_gae_matches_the_reference_loop(gamma, lam):
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    mask = (np.arange(7)[None] < np.array([[7], [4], [1]])).astype(np.float32)
    want_a, want_ret = np_gae(r, v, mask, gamma, lam)
    a, ret = advantages.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(mask), gamma, lam)
    np.testing.assert_allclose(a, want_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    r = np.array([[0.0, -0.1, 0.2, 3.0]])
    v = np.array([[0.5, 1.0, -2.0, 0.25]])
    a, ret = advantages.gae(jnp.asarray(r), jnp.asarray(v), jnp.ones((1, 4)))
    np.testing.assert_allclose(a, [[3.1 - 0.5, 3.1 - 1.0, 3.2 + 2.0, 3.0 - 0.25]], rtol=1e-6)
    np.testing.assert_allclose(ret, [[3.1, 3.1, 3.2, 3.0]], rtol=1e-6)


def test_whiten_uses_masked_global_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(4, 5))
    mask = (rng.random((4, 5)) < 0.7).astype(np.float32)
    sel = x[mask > 0]
    mean, std = sel.mean(), sel.std()  # biased, as torch's std(unbiased=False)
    np.testing.assert_allclose(advantages.whiten(jnp.asarray(x), jnp.asarray(mask)), (x - mean) / (std + 1e-8) * mask,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(advantages.whiten(jnp.asarray(x), jnp.asarray(mask), shift_mean=False),
                               ((x - mean) / (std + 1e-8) + mean) * mask, rtol=1e-5, atol=1e-6)


def test_reward_shaping_hand_computed_token_by_token():
    """Two responses of N = 4 slots (max_new_tokens 4): the first ends with EOS after 3 tokens, the second
    never stops. Every term written out by hand with the reference's coefficients."""
    cfg = shaping.ShapingConfig(kl_coef=0.1, stop_penalty=-8.0, length_bonus_score=-10.0, correct_bonus_score=2.0,
                                reward_bias=0.5, max_new_tokens=4)
    logp = np.array([[-1.0, -2.0, -0.5, 0.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = np.array([[-1.5, -1.0, -0.75, 0.0], [-0.5, -2.0, -1.0, -3.0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    out = shaping.shape_rewards(jnp.array([1.25, -0.5]), jnp.asarray(logp), jnp.asarray(ref), jnp.asarray(mask),
                                jnp.array([True, False]), jnp.array([1.0, -0.5]), jnp.array([1.0, 0.0]),
                                jnp.array([2, 3]), cfg)
    # row 0: kl = max(logp - ref, 0) = [0.5, 0, 0.25, (pad) 0]; score 1.25 (has EOS);
    #        length -10 * 3/4 * 1.0 = -7.5; symbolic 2 * 1 = 2; bias 0.5 -> sequence reward -3.75 at index 2
    # row 1: kl = [0, 1, 0, 2]; score -0.5 - 8 = -8.5; length -10 * 4/4 * -0.5 = +5; symbolic 0; bias 0.5 -> -3.0
    want_kl = np.array([[0.5, 0.0, 0.25, 0.0], [0.0, 1.0, 0.0, 2.0]])
    want = -0.1 * want_kl
    want[0, 2] += 1.25 - 7.5 + 2.0 + 0.5
    want[1, 3] += -0.5 - 8.0 + 5.0 + 0.0 + 0.5
    np.testing.assert_allclose(out.kl, want_kl, atol=1e-6)
    np.testing.assert_allclose(out.rewards, want, atol=1e-6)
    np.testing.assert_allclose(out.score, [1.25, -8.5], atol=1e-6)
    np.testing.assert_allclose(out.parts["length"], [-7.5, 5.0], atol=1e-6)
    np.testing.assert_allclose(out.parts["kl"], [-0.075, -0.3], atol=1e-6)
    total = sum(out.parts[k] for k in ("model", "stop", "length", "symbolic", "kl")) + cfg.reward_bias
    np.testing.assert_allclose(np.asarray(out.rewards).sum(1), total, atol=1e-6)


def test_absolute_stop_penalty_and_k3():
    cfg = shaping.ShapingConfig(relative_stop_penalty=False, kl_estimator="k3", kl_coef=1.0, length_bonus_score=0.0,
                                correct_bonus_score=0.0, max_new_tokens=2)
    logp, ref = np.array([[-1.0, -2.0]]), np.array([[-2.0, -1.0]])
    out = shaping.shape_rewards(jnp.array([3.0]), jnp.asarray(logp), jnp.asarray(ref), jnp.ones((1, 2)),
                                jnp.array([False]), jnp.zeros(1), jnp.zeros(1), jnp.array([1]), cfg)
    k3 = np.exp(ref - logp) - 1 - (ref - logp)
    np.testing.assert_allclose(out.kl, k3, rtol=1e-6)
    np.testing.assert_allclose(out.score, [-8.0])  # replaced, not added
    np.testing.assert_allclose(out.rewards, [[-k3[0, 0], -k3[0, 1] - 8.0]], rtol=1e-6)


@pytest.mark.parametrize("text,ctype,bonus", [
    ("B. The star is red.", 3, 1.0), ("  B. yes", 3, 1.0), ("So the correct option is B.", 3, 1.0),
    ("A. The star is red.", 3, 0.0), ("The correct option is B", 3, 0.0), ("D.", 5, 1.0),
    ("No, there is none.", 6, 0.5), ("Yes, there is.", 6, -0.5), ("There is no circle.", 6, 0.0),
    ("Yes.", 7, 0.0), ("No.", 7, 0.0), ("Anything", 1, 0.0),
])
def test_symbolic_bonus_follows_the_reference(text, ctype, bonus):
    assert shaping.symbolic_bonus(text, ctype) == bonus


def test_ppo_losses_match_numpy():
    rng = np.random.default_rng(2)
    shape = (3, 6)
    logp, old = rng.normal(-1, 0.3, shape), rng.normal(-1, 0.3, shape)
    adv, ret = rng.normal(size=shape), rng.normal(size=shape)
    v, v_old = rng.normal(size=shape), rng.normal(size=shape)
    ent = rng.random(shape)
    mask = (rng.random(shape) < 0.8).astype(np.float32)
    terms = losses.ppo_loss_terms(*map(jnp.asarray, (logp, old, adv, v, v_old, ret, mask, ent)),
                                  cliprange=0.2, cliprange_value=0.2, vf_coef=0.1)
    ratio = np.exp(logp - old)
    pg1, pg2 = -adv * ratio, -adv * np.clip(ratio, 0.8, 1.2)
    pg = np.maximum(pg1, pg2)
    vc = np.clip(v, v_old - 0.2, v_old + 0.2)
    vf = 0.5 * np.maximum((v - ret) ** 2, (vc - ret) ** 2)
    m = mask > 0
    np.testing.assert_allclose(terms.total / terms.weight, pg[m].mean() + 0.1 * vf[m].mean(), rtol=1e-5)
    got = {k: float(s / c) for k, (s, c) in terms.metrics.items()}
    np.testing.assert_allclose(got["policy_loss"], pg[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["value_loss"], vf[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["clip_frac"], (pg2 > pg1)[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["approx_kl"], (0.5 * (logp - old) ** 2)[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["entropy"], ent[m].mean(), rtol=1e-5)


def test_sample_in_chunks_interleaves_rows_and_keys():
    """8 prompts in chunks of 2: chunk j = rows j, j + 4 with key j of split(rng, 4); the outputs return to
    their rows, and one chunk of everything is a single call with rng itself."""
    from fact_rlhf_jax.rl.rollout import sample_in_chunks

    calls = []

    def sample(rows, key):
        calls.append(rows["ids"].shape[0])
        draw = jax.random.uniform(key, (rows["ids"].shape[0],))
        return {"row": rows["ids"] * 10, "draw": draw}

    rows = {"ids": jnp.arange(8), "other": jnp.ones((8, 3))}
    rng = jax.random.key(3)
    out = sample_in_chunks(sample, rows, rng, 2)
    assert calls == [2, 2, 2, 2]
    np.testing.assert_array_equal(out["row"], np.arange(8) * 10)
    keys = jax.random.split(rng, 4)
    for i in range(8):
        expected = jax.random.uniform(keys[i % 4], (2,))[i // 4]
        np.testing.assert_allclose(out["draw"][i], expected, rtol=0, atol=0)
    whole = sample_in_chunks(sample, rows, rng, 0)
    np.testing.assert_array_equal(whole["draw"], jax.random.uniform(rng, (8,)))
    with pytest.raises(ValueError, match="do not split"):
        sample_in_chunks(sample, rows, rng, 3)

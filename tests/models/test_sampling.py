"""The sampler against transformers `generate`, and its sampling filters against numpy."""

import numpy as np
import torch

import jax
import jax.numpy as jnp

from fact_rlhf_jax import hf, sampling
from fact_rlhf_jax.models import layers as L
from fact_rlhf_jax.models import llava
from tests.models import hf_fixtures as F


def test_greedy_matches_transformers_generate_left_padded(tmp_path):
    ref = F.make_llava(tmp_path, seed=7)
    cfg, params = hf.import_llava(tmp_path)
    rng = np.random.default_rng(0)
    rows = [[1] + [F.IMAGE_TOKEN] * F.NUM_PATCHES + list(rng.integers(3, 90, size=k)) for k in (3, 8, 5)]
    ids, mask = (x.astype(np.int64) for x in sampling.left_pad_prompts(rows, pad_id=0))
    t = ids.shape[1]
    px = rng.normal(size=(3, 3, F.IMAGE_SIZE, F.IMAGE_SIZE)).astype(np.float32)
    n_new = 12
    # Make EOS likely to be hit by some rows: the oracle decides where each row stops.
    with torch.no_grad():
        want = ref.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                            pixel_values=torch.from_numpy(px), max_new_tokens=n_new, do_sample=False,
                            eos_token_id=2, pad_token_id=0)[:, t:].numpy()
    out = sampling.generate(params, cfg, ids, mask, px, max_new_tokens=n_new, temperature=0.0, eos_id=2, pad_id=0)
    got = np.asarray(out.tokens)
    for i in range(3):
        n = int(out.lengths[i])
        np.testing.assert_array_equal(got[i, :n], want[i, :n])
        assert np.all(got[i, n:] == 0)


def test_greedy_logprobs_are_model_logprobs_and_stop_ids_stop(tmp_path):
    F.make_llava(tmp_path, seed=8)
    cfg, params = hf.import_llava(tmp_path)
    ids = np.array([[1] + [F.IMAGE_TOKEN] * F.NUM_PATCHES + [10, 11, 12]], np.int32)
    mask = np.ones_like(ids)
    px = np.random.default_rng(1).normal(size=(1, 3, F.IMAGE_SIZE, F.IMAGE_SIZE)).astype(np.float32)
    out = sampling.generate(params, cfg, ids, mask, px, max_new_tokens=6, eos_id=2)
    toks = np.asarray(out.tokens[0])
    # Recompute every step's log-prob with a plain forward pass over prompt + generated tokens.
    full = np.concatenate([ids[0], toks])[None]
    logits = np.asarray(llava.forward(params, cfg, full, px, np.ones_like(full)).logits[0], np.float64)
    p = ids.shape[1]
    for j in range(6):
        row = logits[p - 1 + j]
        logp = row - np.log(np.exp(row - row.max()).sum()) - row.max()
        assert toks[j] == int(np.argmax(row))
        np.testing.assert_allclose(float(out.logprobs[0, j]), logp[toks[j]], atol=1e-4)
    # Declaring the third generated token a stop id ends the row right there.
    stop = int(toks[2])
    first = int(np.argmax(toks == stop))
    out2 = sampling.generate(params, cfg, ids, mask, px, max_new_tokens=6, eos_id=2, stop_ids=(stop,))
    assert int(out2.lengths[0]) == first + 1
    np.testing.assert_array_equal(np.asarray(out2.tokens[0, : first + 1]), toks[: first + 1])
    assert np.all(np.asarray(out2.tokens[0, first + 1:]) == 0)


def test_bucketing_does_not_change_greedy_output(tmp_path):
    F.make_llava(tmp_path, seed=9)
    cfg, params = hf.import_llava(tmp_path)
    ids = np.array([[1] + [F.IMAGE_TOKEN] * F.NUM_PATCHES + [20, 21, 22, 23]], np.int32)
    px = np.random.default_rng(2).normal(size=(1, 3, F.IMAGE_SIZE, F.IMAGE_SIZE)).astype(np.float32)
    a = sampling.generate(params, cfg, ids, np.ones_like(ids), px, max_new_tokens=5, buckets=None)
    b = sampling.generate(params, cfg, ids, np.ones_like(ids), px, max_new_tokens=5, buckets=(64,))
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_allclose(np.asarray(a.logprobs), np.asarray(b.logprobs), atol=1e-5)


def test_top_k_top_p_filter_against_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 10)).astype(np.float32)
    for top_k, top_p in [(0, 0.5), (3, 1.0), (4, 0.7), (0, 1.0)]:
        got = np.asarray(sampling._filter_logits(jnp.asarray(logits), jnp.float32(top_p), top_k))
        for row, out in zip(logits, got):
            order = np.argsort(-row)
            allowed = set(order[:top_k]) if top_k else set(order)
            cum = 0.0
            nucleus = set()
            kept = [t for t in order if t in allowed]
            kp = np.exp(row[kept] - row[kept].max())
            kp /= kp.sum()
            for tok, pr in zip(kept, kp):
                if cum < top_p:
                    nucleus.add(tok)
                cum += pr
            survivors = set(np.nonzero(out > np.finfo(np.float32).min)[0])
            assert survivors == nucleus, (top_k, top_p)


def test_first_argmax_and_gumbel_draws_equal_jax_argmax_and_categorical():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(6, 300)).astype(np.float32)
    logits[1, [5, 40, 299]] = 9.0  # a tie: the first index wins, as in argmax
    logits[2, :] = -3.0            # all tied
    got = np.asarray(L.first_argmax(jnp.asarray(logits)))
    np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))
    assert got[1] == 5 and got[2] == 0
    # Sampled selection: the same draws as jax.random.categorical with the same key, and log softmax of them.
    for seed in range(4):
        key = jax.random.key(seed)
        token, logp = sampling._select(jnp.asarray(logits), key, jnp.float32(0.7), jnp.float32(1.0), top_k=0,
                                       greedy=False, filtered=False)
        want = np.asarray(jax.random.categorical(key, jnp.asarray(logits) / 0.7, axis=-1))
        np.testing.assert_array_equal(np.asarray(token), want)
        scaled = logits.astype(np.float64) / np.float32(0.7)
        lse = scaled.max(-1) + np.log(np.exp(scaled - scaled.max(-1, keepdims=True)).sum(-1))
        np.testing.assert_allclose(np.asarray(logp), scaled[np.arange(6), want] - lse, rtol=1e-5, atol=1e-5)


def test_sampling_is_deterministic_given_key_and_respects_temperature(tmp_path):
    F.make_llava(tmp_path, seed=10)
    cfg, params = hf.import_llava(tmp_path)
    ids = np.array([[1] + [F.IMAGE_TOKEN] * F.NUM_PATCHES + [30, 31]] * 2, np.int32)
    px = np.random.default_rng(4).normal(size=(2, 3, F.IMAGE_SIZE, F.IMAGE_SIZE)).astype(np.float32)
    kw = dict(max_new_tokens=8, temperature=1.0, rng=jax.random.key(5))
    a = sampling.generate(params, cfg, ids, np.ones_like(ids), px, **kw)
    b = sampling.generate(params, cfg, ids, np.ones_like(ids), px, **kw)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    # Sampled log-probs are log softmax(logits / T) of the sampled tokens: check the first step.
    logits = np.asarray(llava.forward(params, cfg, ids, px, np.ones_like(ids)).logits[:, -1], np.float64)
    for i in range(2):
        row = logits[i]
        logp = row - row.max() - np.log(np.exp(row - row.max()).sum())
        np.testing.assert_allclose(float(a.logprobs[i, 0]), logp[int(a.tokens[i, 0])], atol=1e-4)


def test_prompt_lengths_in_one_bucket_share_one_compile():
    from fact_rlhf_jax.models import config as mcfg

    cfg = mcfg.preset("tiny")
    params = llava.init(cfg, jax.random.key(0))
    px = np.zeros((2, 3, cfg.vision.image_size, cfg.vision.image_size), np.float32)
    before = sampling.sample_tokens._cache_size()
    for extra in (2, 5, 9):  # prompt lengths 7, 10, 14: all in the 32 bucket
        ids = np.array([[1] + [cfg.image_token_id] * cfg.num_image_tokens + [7] * extra] * 2, np.int32)
        sampling.generate(params, cfg, ids, np.ones_like(ids), px, max_new_tokens=3, buckets=(32, 64))
    assert sampling.sample_tokens._cache_size() - before == 1


def test_top_k_one_sampling_equals_greedy(tmp_path):
    from fact_rlhf_jax.models import config as mcfg

    cfg = mcfg.preset("tiny")
    params = llava.init(cfg, jax.random.key(1))
    ids = np.array([[1] + [cfg.image_token_id] * cfg.num_image_tokens + [40, 41, 42]] * 2, np.int32)
    px = np.random.default_rng(7).normal(size=(2, 3, cfg.vision.image_size, cfg.vision.image_size)).astype(np.float32)
    greedy = sampling.generate(params, cfg, ids, np.ones_like(ids), px, max_new_tokens=6, eos_id=-1)
    top1 = sampling.generate(params, cfg, ids, np.ones_like(ids), px, max_new_tokens=6, eos_id=-1,
                             temperature=0.7, top_k=1, top_p=0.9, rng=jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(top1.tokens), np.asarray(greedy.tokens))


def test_left_pad_prompts_against_hand_written_arrays():
    ids, mask = sampling.left_pad_prompts([[5, 6, 7], [8]], pad_id=0, rows=3)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [0, 0, 8], [0, 0, 8]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1], [0, 0, 1]])


def test_cached_decode_fences_each_layers_weights():
    """Each layer of the cached (unrolled) decode passes its weights through an optimization barrier with the
    step's activations: without it the TPU compiler hoisted every layer's fsdp-gathered weights out of the
    decode loop (13B sampler on 64 v5e chips: 25.7 instead of 13.6 GiB per chip, README "Scaling out")."""
    from fact_rlhf_jax.models import config as model_config, llama

    cfg = model_config.preset("tiny").text
    params = llava.init(model_config.preset("tiny"), jax.random.PRNGKey(0))["llm"]
    layers = {**params, "layers": llama.unstack_layers(params["layers"], cfg.num_layers)}
    x = jnp.zeros((2, 1, cfg.hidden_size))
    cache = llama.init_cache(cfg, 2, 8, jnp.float32)
    mask = jnp.ones((2, 1, 8), bool)
    jaxpr = jax.make_jaxpr(lambda p, c: llama.decode(p, cfg, x, jnp.zeros((2, 1), jnp.int32), mask, cache=c,
                                                     cache_index=0))(layers, cache)
    barriers = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    assert len(barriers) == cfg.num_layers
    # the activations and every weight of the layer go through it together
    assert all(len(b.invars) == 1 + len(jax.tree.leaves(layers["layers"][0])) for b in barriers)

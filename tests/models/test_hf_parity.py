"""fp32 parity of our CLIP / LLaMA / LLaVA forward passes with HF transformers (torch), plus export."""

import numpy as np
import pytest
import torch
import transformers as T

import jax.numpy as jnp

from fact_rlhf_jax import hf, sampling
from fact_rlhf_jax.models import clip, llama, llava
from tests.models import hf_fixtures as F

TOL = 1e-4


def _pixels(batch, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 3, F.IMAGE_SIZE, F.IMAGE_SIZE)).astype(np.float32)


def _left_padded_batch(rng):
    """Two rows, different lengths, left padded; image block after BOS in each row."""
    rows = [[1] + [F.IMAGE_TOKEN] * F.NUM_PATCHES + list(rng.integers(3, F.IMAGE_TOKEN - 1, size=n_text))
            for n_text in (5, 9)]
    return sampling.left_pad_prompts(rows, pad_id=0)


def test_clip_hidden_states_match_hf(tmp_path):
    ref = F.make_clip(tmp_path)
    cfg, params = hf.import_clip(tmp_path)
    px = _pixels(2)
    with torch.no_grad():
        out = ref(torch.from_numpy(px), output_hidden_states=True)
    states, pooled = clip.all_hidden_states(params, cfg, jnp.asarray(px))
    assert states.shape[0] == len(out.hidden_states)
    for ours, theirs in zip(states, out.hidden_states):
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=TOL, rtol=0)
    # `forward` runs only the layers needed for the requested hidden state.
    penultimate = clip.forward(params, cfg, jnp.asarray(px), layer=-2)
    np.testing.assert_allclose(np.asarray(penultimate), out.hidden_states[-2].numpy(), atol=TOL, rtol=0)


def test_llama_logits_match_hf(tmp_path):
    ref = F.make_llama(tmp_path)
    cfg, params = hf.import_llama(tmp_path)
    ids = np.random.default_rng(1).integers(0, F.VOCAB, size=(2, 11)).astype(np.int64)
    with torch.no_grad():
        want = ref(torch.from_numpy(ids)).logits.numpy()
    logits, _ = llama.forward(params, cfg, jnp.asarray(ids, jnp.int32))
    np.testing.assert_allclose(np.asarray(logits), want, atol=TOL, rtol=0)


@pytest.mark.parametrize("projector_act", ["gelu", "linear"])
def test_llava_logits_match_hf_left_padded(tmp_path, projector_act):
    ref = F.make_llava(tmp_path, projector_act=projector_act)
    cfg, params = hf.import_llava(tmp_path)
    assert cfg.projector == ("mlp2x_gelu" if projector_act == "gelu" else "linear")
    assert cfg.num_image_tokens == F.NUM_PATCHES and cfg.image_token_id == F.IMAGE_TOKEN
    input_ids, mask = _left_padded_batch(np.random.default_rng(2))
    px = _pixels(2, seed=3)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(input_ids).long(), pixel_values=torch.from_numpy(px),
                   attention_mask=torch.from_numpy(mask).long(),
                   position_ids=torch.from_numpy(positions).long()).logits.numpy()
    out = llava.forward(params, cfg, jnp.asarray(input_ids), jnp.asarray(px), jnp.asarray(mask))
    real = mask.astype(bool)  # padded query positions are garbage on both sides
    np.testing.assert_allclose(np.asarray(out.logits)[real], want[real], atol=TOL, rtol=0)
    assert out.hidden.shape == (*input_ids.shape, cfg.text.hidden_size)


def test_padding_side_does_not_change_real_logits(tmp_path):
    F.make_llava(tmp_path)
    cfg, params = hf.import_llava(tmp_path)
    left_ids, left_mask = _left_padded_batch(np.random.default_rng(4))
    px = _pixels(2, seed=5)
    right_ids = np.zeros_like(left_ids)
    right_mask = np.zeros_like(left_mask)
    for i in range(2):
        n = left_mask[i].sum()
        right_ids[i, :n] = left_ids[i, -n:]
        right_mask[i, :n] = 1
    left = np.asarray(llava.forward(params, cfg, left_ids, px, left_mask).logits)
    right = np.asarray(llava.forward(params, cfg, right_ids, px, right_mask).logits)
    for i in range(2):
        n = left_mask[i].sum()
        np.testing.assert_allclose(left[i, -n:], right[i, :n], atol=TOL, rtol=0)


@pytest.mark.parametrize("projector", ["linear", "mlp2x_gelu"])
def test_export_then_transformers_reload_gives_same_logits(tmp_path, projector):
    import jax

    from fact_rlhf_jax.models import config as mcfg

    cfg = mcfg.preset("tiny", projector=projector)
    params = llava.init(cfg, jax.random.key(0))
    hf.export_llava(cfg, params, tmp_path / "out")
    model = T.LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    n = cfg.num_image_tokens
    ids = np.array([[1] + [cfg.image_token_id] * n + [5, 6, 7, 8]], np.int32)
    mask = np.ones_like(ids)
    px = np.random.default_rng(6).normal(size=(1, 3, cfg.vision.image_size, cfg.vision.image_size)).astype(np.float32)
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids).long(), pixel_values=torch.from_numpy(px),
                     attention_mask=torch.from_numpy(mask).long()).logits.numpy()
    got = np.asarray(llava.forward(params, cfg, ids, px, mask).logits)
    np.testing.assert_allclose(got, want[..., : cfg.text.vocab_size], atol=TOL, rtol=0)
    # And the exported directory imports back to the same parameters.
    cfg2, params2 = hf.import_llava(tmp_path / "out")
    assert cfg2.projector == cfg.projector
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)

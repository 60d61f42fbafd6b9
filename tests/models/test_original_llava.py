"""Original-LLaVA (`LlavaLlamaForCausalLM`) checkpoints: LLaMA weights + `model.mm_projector.*`, CLIP from a
separate directory. Oracle: transformers' LlavaForConditionalGeneration assembled from the same torch modules."""

import numpy as np
import pytest
import torch

from fact_rlhf_jax import hf
from fact_rlhf_jax.inference import ChatModel
from fact_rlhf_jax.models import llava
from tests.models import hf_fixtures as F


def test_original_llava_matches_transformers(tmp_path):
    llm, clip, proj = F.make_original_llava(tmp_path)
    assert hf.is_original_llava_dir(tmp_path / "llm") and not hf.is_llava_dir(tmp_path / "llm")
    with pytest.raises(hf.CheckpointError, match="pass vision_tower"):
        hf.import_llava_original(tmp_path / "llm")
    cfg, params = hf.import_llava_original(tmp_path / "llm", vision_tower=tmp_path / "clip",
                                           image_token_id=F.IMAGE_TOKEN)
    assert cfg.projector == "linear" and cfg.vision_feature_layer == -2

    ref = F.original_as_llava_hf(llm, clip, proj)
    rng = np.random.default_rng(0)
    ids = np.array([[1] + [F.IMAGE_TOKEN] * F.NUM_PATCHES + list(rng.integers(3, 90, size=6))])
    px = rng.normal(size=(1, 3, F.IMAGE_SIZE, F.IMAGE_SIZE)).astype(np.float32)
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(px)).logits.numpy()
    got = np.asarray(llava.forward(params, cfg, ids.astype(np.int32), px).logits)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_original_llava_default_image_token_is_outside_the_vocab(tmp_path):
    F.make_original_llava(tmp_path)
    cfg, params = hf.import_llava_original(tmp_path / "llm", vision_tower=tmp_path / "clip")
    assert cfg.image_token_id == 32000 > cfg.text.vocab_size
    ids = np.array([[1] + [32000] * F.NUM_PATCHES + [5, 6]], np.int32)
    px = np.zeros((1, 3, F.IMAGE_SIZE, F.IMAGE_SIZE), np.float32)
    assert np.isfinite(np.asarray(llava.forward(params, cfg, ids, px).logits)).all()
    # Exporting to llava-hf pads the vocabulary up to the image token with zero rows.
    hf.export_llava(cfg, params, tmp_path / "exported")
    cfg2, params2 = hf.import_llava(tmp_path / "exported")
    assert cfg2.text.vocab_size == 32001 and cfg2.image_token_id == 32000
    got = np.asarray(llava.forward(params2, cfg2, ids, px).logits)[..., : cfg.text.vocab_size]
    np.testing.assert_allclose(got, np.asarray(llava.forward(params, cfg, ids, px).logits), atol=1e-5)


def test_convert_from_original_cli(tmp_path):
    from transformers import AutoTokenizer

    from fact_rlhf_jax.cli import main
    from fact_rlhf_jax.shapesworld import write_world

    F.make_original_llava(tmp_path)
    world = write_world(tmp_path / "world", num_images=8, seed=0, noise=0.0)
    AutoTokenizer.from_pretrained(str(world["tokenizer"])).save_pretrained(str(tmp_path / "llm"))
    out = tmp_path / "hf"
    assert main(["convert", "from-original", "--model", str(tmp_path / "llm"), "--vision-tower",
                 str(tmp_path / "clip"), "--out", str(out)]) == 0
    cfg, params = hf.import_llava_original(tmp_path / "llm", vision_tower=tmp_path / "clip")
    model = ChatModel.load(out)
    assert model.cfg.image_token_id == cfg.image_token_id and model.tokenizer.eos_token_id == 2
    np.testing.assert_array_equal(np.asarray(model.params["llm"]["layers"]["mlp"]["down"]),
                                  np.asarray(params["llm"]["layers"]["mlp"]["down"]))

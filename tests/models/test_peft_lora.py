"""PEFT LoRA adapters and torch scalar heads read by `hf.import_lora` / `hf.import_scalar_head`.

Oracle: tiny random transformers models wrapped with PEFT (fp32), compared on left-padded batches."""

import json

import numpy as np
import peft
import pytest
import torch
import transformers as T
from safetensors.numpy import load_file, save_file

import jax

from fact_rlhf_jax import hf, sampling
from fact_rlhf_jax.models import llama, llava, lora
from fact_rlhf_jax.models.params import shapes_from_specs
from tests.models import hf_fixtures as F

TOL = 1e-4
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# On a LlavaForConditionalGeneration a plain name list would also match CLIP's q/k/v_proj.
LANGUAGE_MODEL_ONLY = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def _wrap(model, targets, *, r=4, alpha=8, rslora=False, seed=0) -> peft.PeftModel:
    """Wraps `model` with a LoRA adapter whose A and B are both random, so every factor shows in the output."""
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, use_rslora=rslora, lora_dropout=0.0)
    wrapped = peft.get_peft_model(model, cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return wrapped


def _text_batch(seed=0):
    rows = [list(np.random.default_rng(seed).integers(3, F.VOCAB, size=n)) for n in (5, 9)]
    return sampling.left_pad_prompts([[1] + r for r in rows], pad_id=0)


def _image_batch(seed=0, image_token=F.IMAGE_TOKEN, vocab=F.VOCAB):
    rng = np.random.default_rng(seed)
    rows = [[1] + [image_token] * F.NUM_PATCHES + list(rng.integers(3, min(vocab, image_token), size=n))
            for n in (4, 7)]
    ids, mask = sampling.left_pad_prompts(rows, pad_id=0)
    px = rng.normal(size=(2, 3, F.IMAGE_SIZE, F.IMAGE_SIZE)).astype(np.float32)
    return ids, mask, px


def _torch_logits(model, ids, mask, px=None) -> np.ndarray:
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    kwargs = {} if px is None else {"pixel_values": torch.from_numpy(px)}
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                     position_ids=torch.from_numpy(positions).long(), **kwargs).logits.numpy()


def _assert_close_on_real_tokens(got, want, mask):
    real = mask.astype(bool)  # padded query positions are garbage on both sides
    np.testing.assert_allclose(np.asarray(got)[real], want[real], atol=TOL, rtol=0)


def _rewrite_adapter(adapter_dir, *, config=None, tensors=None):
    """Edits a saved safetensors adapter: `config(dict)` and `tensors(dict)` mutate in place."""
    if config is not None:
        raw = json.loads((adapter_dir / "adapter_config.json").read_text())
        config(raw)
        (adapter_dir / "adapter_config.json").write_text(json.dumps(raw))
    if tensors is not None:
        t = load_file(str(adapter_dir / "adapter_model.safetensors"))
        tensors(t)
        save_file(t, str(adapter_dir / "adapter_model.safetensors"))


# --------------------------------------------------------------------------------------------------
# LlamaForCausalLM (GQA: 4 heads, 2 kv heads)


@pytest.mark.parametrize("targets,r,alpha,rslora,safetensors", [
    (ALL, 4, 8, False, True),
    (["q_proj", "v_proj"], 3, 16, True, False),   # use_rslora: scale alpha / sqrt(r); a pickled .bin
])
def test_llama_adapter_matches_peft(tmp_path, targets, r, alpha, rslora, safetensors):
    base = F.make_llama(tmp_path / "base")
    wrapped = _wrap(base, targets, r=r, alpha=alpha, rslora=rslora)
    wrapped.save_pretrained(tmp_path / "adapter", safe_serialization=safetensors)
    assert (tmp_path / "adapter" / ("adapter_model.safetensors" if safetensors else "adapter_model.bin")).exists()

    cfg, params = hf.import_llama(tmp_path / "base")
    adapters, scale = hf.import_lora(tmp_path / "adapter", cfg)
    assert scale == pytest.approx(alpha / np.sqrt(r) if rslora else alpha / r)
    # Exactly the tree lora.init builds for these targets (a bare LLaMA: the `layers` subtree).
    ours = tuple(t.removesuffix("_proj") for t in targets)
    want_shapes = jax.tree.map(lambda s: s.shape, shapes_from_specs(lora.text_specs(cfg, r, ours), "float32"))
    assert jax.tree.map(lambda x: x.shape, adapters) == want_shapes

    ids, mask = _text_batch()
    logits, _ = llama.forward(params, cfg, ids, mask, lora=adapters, lora_scale=scale)
    _assert_close_on_real_tokens(logits, _torch_logits(wrapped, ids, mask), mask)
    # The adapter matters: without it the logits are those of the base model.
    with wrapped.disable_adapter():
        base_logits = _torch_logits(wrapped, ids, mask)
    assert np.abs(np.asarray(logits) - base_logits)[mask.astype(bool)].max() > 1e-2


# --------------------------------------------------------------------------------------------------
# llava-hf LlavaForConditionalGeneration (new and old key layouts)


def test_llava_hf_adapter_matches_peft_in_both_layouts(tmp_path):
    base = F.make_llava(tmp_path / "base")
    wrapped = _wrap(base, LANGUAGE_MODEL_ONLY, r=4, alpha=16, seed=1)
    wrapped.save_pretrained(tmp_path / "adapter")
    cfg, params = hf.import_llava(tmp_path / "base")
    adapters, scale = hf.import_lora(tmp_path / "adapter", cfg)
    assert scale == 4.0 and set(adapters) == {"llm"}
    assert set(adapters["llm"]["layers"]["attn"]) == {"q", "k", "v", "o"}

    ids, mask, px = _image_batch()
    out = llava.forward(params, cfg, ids, px, mask, lora=adapters, lora_scale=scale)
    _assert_close_on_real_tokens(out.logits, _torch_logits(wrapped, ids, mask, px), mask)

    # transformers < 4.52 saved the decoder under `language_model.model.`; the same adapter in that layout.
    def old_layout(t):
        for k in list(t):
            t[k.replace("base_model.model.model.language_model.", "base_model.model.language_model.model.")] = t.pop(k)

    _rewrite_adapter(tmp_path / "adapter", tensors=old_layout)
    old, _ = hf.import_lora(tmp_path / "adapter", cfg)
    jax.tree.map(np.testing.assert_array_equal, old, adapters)


def test_adapter_on_the_vision_tower_is_refused(tmp_path):
    base = F.make_llava(tmp_path / "base")
    _wrap(base, ["q_proj", "v_proj"]).save_pretrained(tmp_path / "adapter")  # also matches CLIP's q/v_proj
    cfg, _ = hf.import_llava(tmp_path / "base")
    with pytest.raises(hf.CheckpointError, match=r"adapter_model\.safetensors.*vision_tower.*outside the LLaMA"):
        hf.import_lora(tmp_path / "adapter", cfg)


# --------------------------------------------------------------------------------------------------
# original LLaVA (LlavaLlamaForCausalLM: the LLaVA-RLHF release layout, `base_model.model.model.layers.N`)


def test_original_llava_adapter_matches_peft(tmp_path):
    llm, clip, proj = F.make_original_llava(tmp_path)
    wrapped = _wrap(llm, ALL, r=4, alpha=16, seed=2)
    wrapped.save_pretrained(tmp_path / "adapter", safe_serialization=False)  # the release ships a .bin
    # PEFT wraps the LLaMA here; in the release it wraps LlavaLlamaForCausalLM, whose decoder has the same keys.
    assert any(k.startswith("base_model.model.model.layers.0.") for k in hf.read_state_dict(
        tmp_path / "adapter" / "adapter_model.bin"))
    cfg, params = hf.import_llava_original(tmp_path / "llm", vision_tower=tmp_path / "clip",
                                           image_token_id=F.IMAGE_TOKEN)
    adapters, scale = hf.import_lora(tmp_path / "adapter", cfg)
    ids, mask, px = _image_batch(seed=3)
    got = llava.forward(params, cfg, ids, px, mask, lora=adapters, lora_scale=scale).logits
    ref = F.original_as_llava_hf(wrapped.merge_and_unload(), clip, proj)
    _assert_close_on_real_tokens(got, _torch_logits(ref, ids, mask, px), mask)


def test_named_adapter_directories_are_found(tmp_path):
    """LLaVA-RLHF checkpoints keep the adapter in `<ckpt>/adapter_model/lora_default/`; keys may carry the name."""
    base = F.make_llama(tmp_path / "base")
    wrapped = _wrap(base, ["q_proj"], r=2)
    wrapped.save_pretrained(tmp_path / "ckpt" / "adapter_model" / "lora_default")
    cfg, _ = hf.import_llama(tmp_path / "base")
    want, _ = hf.import_lora(tmp_path / "ckpt" / "adapter_model" / "lora_default", cfg)
    got, _ = hf.import_lora(tmp_path / "ckpt", cfg)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    _rewrite_adapter(tmp_path / "ckpt" / "adapter_model" / "lora_default", tensors=lambda t: t.update(
        {k.replace(".weight", ".lora_default.weight"): t.pop(k) for k in list(t)}))
    named, _ = hf.import_lora(tmp_path / "ckpt", cfg)
    jax.tree.map(np.testing.assert_array_equal, named, want)


# --------------------------------------------------------------------------------------------------
# errors


@pytest.fixture()
def llama_adapter(tmp_path):
    base = F.make_llama(tmp_path / "base")
    _wrap(base, ALL, r=4).save_pretrained(tmp_path / "adapter")
    cfg, _ = hf.import_llama(tmp_path / "base")
    return cfg, tmp_path / "adapter"


Q0 = "base_model.model.model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("edit,match", [
    (dict(tensors=lambda t: t.update({f"{Q0}.lora_A.weight": np.zeros((5, 48), np.float32)})),
     rf"adapter_model\.safetensors: '{Q0}\.lora_A\.weight' has shape \(5, 48\), expected \(4, 48\)"),
    (dict(tensors=lambda t: t.update({f"{Q0}.lora_B.weight": np.zeros((64, 4), np.float32)})),
     r"adapter_model\.safetensors: .*q_proj\.lora_B\.weight' has shape \(64, 4\), expected \(48, 4\)"),
    (dict(tensors=lambda t: t.update({"base_model.model.lm_head.lora_A.weight": np.zeros((4, 48), np.float32)})),
     r"adapter_model\.safetensors: unknown key 'base_model\.model\.lm_head\.lora_A\.weight'"),
    (dict(tensors=lambda t: t.pop("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")),
     r"adapter_model\.safetensors: model\.layers\.1\.mlp\.down_proj\.lora_B\.weight is missing"),
    (dict(tensors=lambda t: t.update({"base_model.model.model.layers.2.mlp.up_proj.lora_A.weight":
                                      np.zeros((4, 48), np.float32)})),
     r"adapter_model\.safetensors: .*layers\.2\.mlp\.up_proj.* is for layer 2, the model has 2"),
    (dict(tensors=lambda t: t.update({f"{Q0}.lora_A.policy.weight": t[f"{Q0}.lora_A.weight"]})),
     r"adapter_model\.safetensors: .* are the same factor"),
    (dict(config=lambda c: c.update(bias="all")), r"adapter_config\.json: bias='all' is not supported"),
    (dict(config=lambda c: c.update(use_dora=True)), r"adapter_config\.json: use_dora=True"),
    (dict(config=lambda c: c.update(rank_pattern={"q_proj": 8})), r"adapter_config\.json: rank_pattern="),
    (dict(config=lambda c: c.update(modules_to_save=["lm_head"])), r"adapter_config\.json: modules_to_save="),
    (dict(config=lambda c: c.update(fan_in_fan_out=True)), r"adapter_config\.json: fan_in_fan_out=True"),
    (dict(config=lambda c: c.update(target_modules=["q_proj", "embed_tokens"])),
     r"adapter_config\.json: target_modules entry 'embed_tokens' cannot be adapted"),
])
def test_bad_adapters_raise_naming_the_file(llama_adapter, edit, match):
    cfg, adapter = llama_adapter
    _rewrite_adapter(adapter, **edit)
    with pytest.raises(hf.CheckpointError, match=match):
        hf.import_lora(adapter, cfg)


# --------------------------------------------------------------------------------------------------
# reward / value heads


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_scalar_head_scores_like_torch_linear(tmp_path, fmt):
    base = F.make_llama(tmp_path / "base")
    cfg, params = hf.import_llama(tmp_path / "base")
    torch.manual_seed(5)
    head = torch.nn.Linear(cfg.hidden_size, 1)
    if fmt == "torch":  # the reference's `reward_head` file: torch.save of the state dict, no suffix
        path = tmp_path / "reward_head"
        torch.save(head.state_dict(), path)
    else:
        from safetensors.torch import save_file as torch_save_file

        path = tmp_path / "value_head.safetensors"
        torch_save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path))
    scalar = hf.import_scalar_head(path)
    assert scalar["w"].shape == (cfg.hidden_size,) and scalar["b"].shape == () and scalar["w"].dtype == np.float32

    ids, mask = _text_batch(seed=4)
    _, hidden = llama.forward(params, cfg, ids, mask)
    ours = np.asarray(hidden[:, -1] @ scalar["w"] + scalar["b"])  # left padded: the last position is real
    with torch.no_grad():
        out = base(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                   position_ids=torch.from_numpy(np.maximum(np.cumsum(mask, 1) - 1, 0)).long(),
                   output_hidden_states=True)
        want = head(out.hidden_states[-1][:, -1]).squeeze(-1).numpy()
    np.testing.assert_allclose(ours, want, atol=TOL, rtol=0)


def test_scalar_head_errors(tmp_path):
    torch.save({"weight": torch.zeros(2, 8), "bias": torch.zeros(2)}, tmp_path / "two_outputs")
    with pytest.raises(hf.CheckpointError, match=r"two_outputs: 'weight' has shape \(2, 8\), expected \[1, D\]"):
        hf.import_scalar_head(tmp_path / "two_outputs")
    torch.save({"reward_head.weight": torch.zeros(1, 8)}, tmp_path / "prefixed")
    with pytest.raises(hf.CheckpointError, match=r"prefixed: expected the state dict of an nn.Linear"):
        hf.import_scalar_head(tmp_path / "prefixed")


# --------------------------------------------------------------------------------------------------
# command line: generate --lora, convert to-hf --model --lora


def _tokenizer(out_dir):
    from transformers import AutoTokenizer

    from fact_rlhf_jax.shapesworld.tokenizer import save_tokenizer, train_tokenizer

    texts = ["There is a red circle and a blue square in the image.", "What is in the image? A green triangle."]
    save_tokenizer(train_tokenizer(texts * 4, vocab_size=300), out_dir)
    return AutoTokenizer.from_pretrained(str(out_dir))


def test_generate_cli_with_lora_answers_like_peft(tmp_path):
    from PIL import Image

    from fact_rlhf_jax.cli import main
    from fact_rlhf_jax.inference import ChatModel

    tok = _tokenizer(tmp_path / "base")  # `<image>` is id 3
    base = F.make_llava(tmp_path / "base", vocab_size=len(tok), image_token=3, seed=4)
    wrapped = _wrap(base, LANGUAGE_MODEL_ONLY, r=4, alpha=16, seed=5)
    wrapped.save_pretrained(tmp_path / "adapter")
    image = Image.fromarray(np.random.default_rng(6).integers(0, 255, size=(40, 30, 3), dtype=np.uint8))
    image.save(tmp_path / "x.png")
    question, n = "What is in the image?", 8
    assert main(["generate", "--model", str(tmp_path / "base"), "--lora", str(tmp_path / "adapter"),
                 "--image", str(tmp_path / "x.png"), "--question", question, "--max-new-tokens", str(n),
                 "--out", str(tmp_path / "answers.jsonl")]) == 0
    got = json.loads((tmp_path / "answers.jsonl").read_text())["text"]

    # Oracle: PEFT's greedy decode on the same prompt tokens and pixels.
    plain = ChatModel.load(tmp_path / "base")
    ids = plain.encode(question, True, "llava_v1")[None].astype(np.int64)
    px = plain.pixels(image.convert("RGB"))[None]

    def peft_answer():
        with torch.no_grad():
            t_ids = torch.from_numpy(ids)
            out = wrapped.generate(input_ids=t_ids, attention_mask=torch.ones_like(t_ids), max_new_tokens=n,
                                   pixel_values=torch.from_numpy(px), do_sample=False, eos_token_id=2, pad_token_id=0)
        new = out[0, ids.shape[1]:].tolist()
        new = new[: new.index(2)] if 2 in new else new
        return new, tok.decode(new, skip_special_tokens=True).strip()

    tokens, want = peft_answer()
    assert len(tokens) > 0 and got == want
    with wrapped.disable_adapter():
        assert peft_answer()[0] != tokens  # the adapter changes the answer


def test_convert_cli_merges_an_adapter_into_an_original_llava(tmp_path):
    from fact_rlhf_jax.cli import main

    llm, clip, proj = F.make_original_llava(tmp_path)
    _tokenizer(tmp_path / "llm")
    wrapped = _wrap(llm, ALL, r=4, alpha=16, seed=7)
    wrapped.save_pretrained(tmp_path / "adapter", safe_serialization=False)
    out = tmp_path / "merged"
    assert main(["convert", "to-hf", "--model", str(tmp_path / "llm"), "--vision-tower", str(tmp_path / "clip"),
                 "--lora", str(tmp_path / "adapter"), "--out", str(out)]) == 0

    exported = T.LlavaForConditionalGeneration.from_pretrained(out).eval()
    image_token = exported.config.image_token_index  # 32000: the original-LLaVA default, outside the vocab
    ref = F.original_as_llava_hf(wrapped.merge_and_unload(), clip, proj)
    ids, mask, px = _image_batch(seed=8)
    want = _torch_logits(ref, ids, mask, px)
    got = _torch_logits(exported, np.where(ids == F.IMAGE_TOKEN, image_token, ids), mask, px)[..., : F.VOCAB]
    _assert_close_on_real_tokens(got, want, mask)

"""Tiny random transformers models (the torch parity oracle), saved with `save_pretrained`."""

from __future__ import annotations

import json

import torch
import transformers as T
from safetensors.torch import save_file

VOCAB = 96
IMAGE_TOKEN = 95
IMAGE_SIZE = 28
PATCH = 14
NUM_PATCHES = (IMAGE_SIZE // PATCH) ** 2


def clip_config() -> T.CLIPVisionConfig:
    return T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32, hidden_act="quick_gelu")


def llama_config(vocab_size: int = VOCAB) -> T.LlamaConfig:
    return T.LlamaConfig(vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                         max_position_embeddings=256, rope_theta=500.0, tie_word_embeddings=False,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial norms and biases so a mistake in any of them shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layrnorm" in name or name.endswith("bias"):
                p.copy_(p + 0.1 * torch.randn(p.shape, generator=g))


def make_llava(path, *, projector_act: str = "gelu", seed: int = 0, vocab_size: int = VOCAB,
               image_token: int = IMAGE_TOKEN) -> T.LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T.LlavaConfig(vision_config=clip_config(), text_config=llama_config(vocab_size),
                        image_token_index=image_token, projector_hidden_act=projector_act, vision_feature_layer=-2,
                        vision_feature_select_strategy="default", image_seq_length=NUM_PATCHES)
    model = T.LlavaForConditionalGeneration(cfg).eval()
    _randomize(model, seed)
    model.save_pretrained(path)
    return model


def make_llama(path, seed: int = 0) -> T.LlamaForCausalLM:
    torch.manual_seed(seed)
    model = T.LlamaForCausalLM(llama_config()).eval()
    _randomize(model, seed)
    model.save_pretrained(path)
    return model


def make_clip(path, seed: int = 0) -> T.CLIPVisionModel:
    torch.manual_seed(seed)
    model = T.CLIPVisionModel(clip_config()).eval()
    _randomize(model, seed)
    model.save_pretrained(path)
    return model


def make_original_llava(tmp_path):
    """An original-LLaVA (`LlavaLlamaForCausalLM`) directory at tmp_path/llm: LLaMA weights +
    `model.mm_projector.*` (linear), CLIP in tmp_path/clip. Returns the torch (llm, clip, projector)."""
    llm = make_llama(tmp_path / "llm", seed=11)
    clip = make_clip(tmp_path / "clip", seed=12)
    torch.manual_seed(13)
    proj = torch.nn.Linear(clip.config.hidden_size, llm.config.hidden_size)
    save_file({"model.mm_projector.weight": proj.weight.detach().contiguous(),
               "model.mm_projector.bias": proj.bias.detach().contiguous()},
              str(tmp_path / "llm" / "mm_projector.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((tmp_path / "llm" / "config.json").read_text())
    cfg.update(architectures=["LlavaLlamaForCausalLM"], mm_vision_tower="openai/clip-vit-large-patch14-336",
               mm_hidden_size=clip.config.hidden_size, mm_vision_select_layer=-2, mm_projector_type="linear",
               mm_use_im_start_end=False, image_aspect_ratio="pad")
    (tmp_path / "llm" / "config.json").write_text(json.dumps(cfg))
    return llm, clip, proj


def original_as_llava_hf(llm, clip, proj) -> T.LlavaForConditionalGeneration:
    """The original checkpoint's model as a transformers LlavaForConditionalGeneration (linear projector =
    linear_1, identity linear_2), image token IMAGE_TOKEN."""
    ref = T.LlavaForConditionalGeneration(T.LlavaConfig(
        vision_config=clip_config(), text_config=llama_config(), image_token_index=IMAGE_TOKEN,
        projector_hidden_act="linear", vision_feature_layer=-2)).eval()
    with torch.no_grad():
        ref.model.language_model.load_state_dict(llm.model.state_dict())
        ref.lm_head.load_state_dict(llm.lm_head.state_dict())
        ref.model.vision_tower.load_state_dict(clip.state_dict())
        ref.model.multi_modal_projector.linear_1.load_state_dict(proj.state_dict())
        ref.model.multi_modal_projector.linear_2.weight.copy_(torch.eye(llm.config.hidden_size))
        ref.model.multi_modal_projector.linear_2.bias.zero_()
    return ref

"""Tiny random transformers models (the torch parity oracle), saved with `save_pretrained`."""

from __future__ import annotations

import torch
import transformers as T

VOCAB = 96
IMAGE_TOKEN = 95
IMAGE_SIZE = 28
PATCH = 14
NUM_PATCHES = (IMAGE_SIZE // PATCH) ** 2


def clip_config() -> T.CLIPVisionConfig:
    return T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32, hidden_act="quick_gelu")


def llama_config() -> T.LlamaConfig:
    return T.LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
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


def make_llava(path, *, projector_act: str = "gelu", seed: int = 0) -> T.LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T.LlavaConfig(vision_config=clip_config(), text_config=llama_config(), image_token_index=IMAGE_TOKEN,
                        projector_hidden_act=projector_act, vision_feature_layer=-2,
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

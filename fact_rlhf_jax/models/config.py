"""Model configurations: frozen dataclasses (hashable, so they can be static jit arguments)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """CLIP ViT vision tower."""

    image_size: int = 224
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    num_channels: int = 3
    layer_norm_eps: float = 1e-5

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """LLaMA-style decoder."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class LlavaConfig:
    """CLIP -> projector -> LLaMA.

    vision_feature_layer: index into CLIP's hidden states ([embeddings, layer1, ..., layerL]); -2 = penultimate.
    projector: "linear" (LLaVA-RLHF) or "mlp2x_gelu" (LLaVA-1.5).
    dtype policy: weights stored in `param_dtype`, matmuls in `compute_dtype`; norms and softmax in float32.
    remat: rematerialise each decoder/vision layer in the backward pass ("none", "full", "dots").
    """

    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    projector: str = "linear"
    vision_feature_layer: int = -2
    image_token_id: int = 32000
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: str = "none"
    attention_impl: str = "xla"  # "xla" (einsum), "dot_product", "cudnn" (GPU), "splash" (TPU): layers.attention

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    def replace(self, **kw) -> "LlavaConfig":
        """dataclasses.replace that also accepts nested `vision={...}` / `text={...}` dicts."""
        for key, cls in (("vision", VisionConfig), ("text", TextConfig)):
            if isinstance(kw.get(key), dict):
                kw[key] = dataclasses.replace(getattr(self, key), **kw[key])
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LlavaConfig":
        d = dict(d)
        d["vision"] = VisionConfig(**d.get("vision", {}))
        d["text"] = TextConfig(**d.get("text", {}))
        return cls(**d)


CLIP_L14_224 = VisionConfig(image_size=224)
CLIP_L14_336 = VisionConfig(image_size=336)
VICUNA_7B = TextConfig(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, num_kv_heads=32)
VICUNA_13B = TextConfig(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40, num_kv_heads=40)

_PRESETS: dict[str, LlavaConfig] = {
    # Test-sized: 4 image tokens, 2 decoder layers, GQA.
    "tiny": LlavaConfig(
        vision=VisionConfig(image_size=28, patch_size=14, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4),
        text=TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                        num_kv_heads=2, max_position_embeddings=512),
        image_token_id=255,
    ),
    # Benchmark-sized (CPU-friendly): 64 image tokens, 8 decoder layers of width 512.
    "small": LlavaConfig(
        vision=VisionConfig(image_size=112, patch_size=14, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=4),
        text=TextConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_layers=8, num_heads=8,
                        num_kv_heads=8, max_position_embeddings=2048),
        image_token_id=31999,
    ),
    # The CPU demo (`fact-rlhf demo`): trained from scratch on 48 px ShapesWorld images. One 16 px patch per
    # cell of the world's 3x3 grid (9 image tokens); a narrow decoder, so a forward pass of 64 x 300 tokens
    # stays well under a second on 2 CPU cores. Set the vocabulary from the world's tokenizer.
    "demo": LlavaConfig(
        vision=VisionConfig(image_size=48, patch_size=16, hidden_size=128, intermediate_size=512, num_layers=2,
                            num_heads=4),
        text=TextConfig(vocab_size=1024, hidden_size=192, intermediate_size=512, num_layers=3, num_heads=4,
                        num_kv_heads=4, max_position_embeddings=512),
        vision_feature_layer=-1,
        image_token_id=3,
    ),
    "llava_7b_224": LlavaConfig(vision=CLIP_L14_224, text=VICUNA_7B, projector="linear",
                                param_dtype="bfloat16", compute_dtype="bfloat16", remat="full"),
    "llava_13b_336": LlavaConfig(vision=CLIP_L14_336, text=VICUNA_13B, projector="linear",
                                 param_dtype="bfloat16", compute_dtype="bfloat16", remat="full"),
}


def preset(name: str, **overrides) -> LlavaConfig:
    try:
        cfg = _PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; choose one of {sorted(_PRESETS)}") from None
    return cfg.replace(**overrides) if overrides else cfg


def preset_names() -> list[str]:
    return sorted(_PRESETS)

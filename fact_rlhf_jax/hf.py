"""Hugging Face interop: read and write safetensors checkpoints of llava-hf, LLaMA and CLIP models.

Supported layouts (key prefixes are detected, so old and new transformers layouts both load):
  original LLaVA / LLaVA-RLHF    `LlavaLlamaForCausalLM`: `model.*` LLaMA + `model.mm_projector.*`, CLIP from
                                 a separate directory (`import_llava_original`)
  LlavaForConditionalGeneration  `model.vision_tower.*` | `vision_tower.vision_model.*`,
                                 `model.multi_modal_projector.*` | `multi_modal_projector.*`,
                                 `model.language_model.*` | `language_model.model.*`, `lm_head.*`
  LlamaForCausalLM               `model.*`, `lm_head.*`
  CLIPVisionModel / CLIPModel    `[vision_model.]embeddings.*`, `[vision_model.]encoder.*`, ...

HF torch Linear weights are [out, in]; ours are [in, out] with heads split out ([in, heads, head_dim]).
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from fact_rlhf_jax.models.config import LlavaConfig, TextConfig, VisionConfig


class CheckpointError(ValueError):
    pass


# --------------------------------------------------------------------------------------------------
# reading


class _Tensors:
    """Lazy access to every tensor of a (possibly sharded) safetensors checkpoint directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.path}: no *.safetensors files (only safetensors checkpoints are supported)")
        self._where: dict[str, Path] = {}
        for f in files:
            with safe_open(str(f), framework="flax") as h:
                for k in h.keys():
                    self._where[k] = f
        self._handles: dict[Path, Any] = {}

    def keys(self) -> list[str]:
        return list(self._where)

    def get(self, key: str) -> np.ndarray:
        if key not in self._where:
            raise CheckpointError(f"{self.path}: tensor {key!r} missing from the checkpoint")
        f = self._where[key]
        if f not in self._handles:
            self._handles[f] = safe_open(str(f), framework="flax")
        return self._handles[f].get_tensor(key)

    def prefix_of(self, suffix: str) -> str | None:
        hits = [k[: -len(suffix)] for k in self._where if k.endswith(suffix)]
        return min(hits, key=len) if hits else None


def _read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"{path}: config.json not found")
    with open(cfg_file) as f:
        return json.load(f)


def _rope_theta(d: dict) -> float:
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", None):
        raise CheckpointError(f"RoPE type {kind!r} is not supported (only the default LLaMA-2 RoPE)")
    return float(params.get("rope_theta", d.get("rope_theta", 10000.0)))


def text_config_from_hf(d: dict) -> TextConfig:
    heads = d["num_attention_heads"]
    return TextConfig(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
        num_layers=d["num_hidden_layers"], num_heads=heads, num_kv_heads=d.get("num_key_value_heads") or heads,
        head_dim=d.get("head_dim") if d.get("head_dim") not in (None, d["hidden_size"] // heads) else None,
        rope_theta=_rope_theta(d), rms_norm_eps=d.get("rms_norm_eps", 1e-6),
        max_position_embeddings=d.get("max_position_embeddings", 4096),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
    )


def vision_config_from_hf(d: dict) -> VisionConfig:
    if d.get("hidden_act", "quick_gelu") != "quick_gelu":
        raise CheckpointError(f"CLIP hidden_act {d.get('hidden_act')!r} is not supported (expected quick_gelu)")
    return VisionConfig(
        image_size=d["image_size"], patch_size=d["patch_size"], hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"], num_channels=d.get("num_channels", 3),
        layer_norm_eps=d.get("layer_norm_eps", 1e-5),
    )


def _stack(t: _Tensors, fmt: str, n: int, convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([convert(np.asarray(t.get(fmt.format(i)))) for i in range(n)])


def _heads_in(h: int):
    """torch [h*hd, d] -> ours [d, h, hd]."""
    return lambda w: w.T.reshape(w.shape[1], h, -1)


def _heads_out(h: int):
    """torch [d, h*hd] -> ours [h, hd, d]."""
    return lambda w: w.T.reshape(h, -1, w.shape[0])


def _load_llama(t: _Tensors, cfg: TextConfig, prefix: str, head_key: str | None) -> dict:
    n, h, kvh = cfg.num_layers, cfg.num_heads, cfg.num_kv_heads
    lp = prefix + "layers.{}."
    T = lambda w: w.T
    ident = lambda w: w
    embed = np.asarray(t.get(prefix + "embed_tokens.weight"))
    if head_key is not None and not cfg.tie_word_embeddings:
        lm_head = np.asarray(t.get(head_key)).T
    else:
        lm_head = embed.T
    return {
        "embed": embed,
        "layers": {
            "attn_norm": _stack(t, lp + "input_layernorm.weight", n, ident),
            "attn": {
                "q": _stack(t, lp + "self_attn.q_proj.weight", n, _heads_in(h)),
                "k": _stack(t, lp + "self_attn.k_proj.weight", n, _heads_in(kvh)),
                "v": _stack(t, lp + "self_attn.v_proj.weight", n, _heads_in(kvh)),
                "o": _stack(t, lp + "self_attn.o_proj.weight", n, _heads_out(h)),
            },
            "mlp_norm": _stack(t, lp + "post_attention_layernorm.weight", n, ident),
            "mlp": {
                "gate": _stack(t, lp + "mlp.gate_proj.weight", n, T),
                "up": _stack(t, lp + "mlp.up_proj.weight", n, T),
                "down": _stack(t, lp + "mlp.down_proj.weight", n, T),
            },
        },
        "norm": np.asarray(t.get(prefix + "norm.weight")),
        "lm_head": lm_head,
    }


def _load_clip(t: _Tensors, cfg: VisionConfig, prefix: str) -> dict:
    n, h = cfg.num_layers, cfg.num_heads
    lp = prefix + "encoder.layers.{}."
    ident = lambda w: w
    T = lambda w: w.T
    bias_heads = lambda b: b.reshape(h, -1)

    def proj_in(name):
        return {"w": _stack(t, lp + f"self_attn.{name}.weight", n, _heads_in(h)),
                "b": _stack(t, lp + f"self_attn.{name}.bias", n, bias_heads)}

    def ln(fmt, stacked=True):
        if stacked:
            return {"scale": _stack(t, fmt + ".weight", n, ident), "bias": _stack(t, fmt + ".bias", n, ident)}
        return {"scale": np.asarray(t.get(fmt + ".weight")), "bias": np.asarray(t.get(fmt + ".bias"))}

    post = prefix + "post_layernorm"
    has_post = post + ".weight" in t.keys()
    d = cfg.hidden_size
    return {
        "patch_embed": np.asarray(t.get(prefix + "embeddings.patch_embedding.weight")).transpose(2, 3, 1, 0),
        "class_embed": np.asarray(t.get(prefix + "embeddings.class_embedding")),
        "pos_embed": np.asarray(t.get(prefix + "embeddings.position_embedding.weight")),
        "pre_norm": ln(prefix + "pre_layrnorm", stacked=False),
        "layers": {
            "ln1": ln(lp + "layer_norm1"),
            "attn": {
                "q": proj_in("q_proj"),
                "k": proj_in("k_proj"),
                "v": proj_in("v_proj"),
                "o": {"w": _stack(t, lp + "self_attn.out_proj.weight", n, _heads_out(h)),
                      "b": _stack(t, lp + "self_attn.out_proj.bias", n, ident)},
            },
            "ln2": ln(lp + "layer_norm2"),
            "mlp": {
                "fc1": {"w": _stack(t, lp + "mlp.fc1.weight", n, T), "b": _stack(t, lp + "mlp.fc1.bias", n, ident)},
                "fc2": {"w": _stack(t, lp + "mlp.fc2.weight", n, T), "b": _stack(t, lp + "mlp.fc2.bias", n, ident)},
            },
        },
        "post_norm": ln(post, stacked=False) if has_post else
        {"scale": np.ones((d,), np.float32), "bias": np.zeros((d,), np.float32)},
    }


def _finish(params: Any, dtype, shardings: Any = None) -> Any:
    cast = lambda x: jnp.asarray(x, dtype=jnp.dtype(dtype))
    if shardings is None:
        return jax.tree.map(cast, params)
    return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x).astype(jnp.dtype(dtype)), s), params, shardings)


def import_llama(path: str | os.PathLike, *, dtype="float32") -> tuple[TextConfig, dict]:
    """Reads a `LlamaForCausalLM` safetensors directory -> (TextConfig, llm params)."""
    path = Path(path)
    cfg = text_config_from_hf(_read_config(path))
    t = _Tensors(path)
    prefix = t.prefix_of("embed_tokens.weight")
    if prefix is None:
        raise CheckpointError(f"{path}: no `embed_tokens.weight`; not a LLaMA checkpoint")
    head = t.prefix_of("lm_head.weight")
    params = _load_llama(t, cfg, prefix, None if head is None else head + "lm_head.weight")
    return cfg, _finish(params, dtype)


def import_clip(path: str | os.PathLike, *, dtype="float32") -> tuple[VisionConfig, dict]:
    """Reads a `CLIPVisionModel` (or full `CLIPModel`) safetensors directory -> (VisionConfig, vision params)."""
    path = Path(path)
    raw = _read_config(path)
    cfg = vision_config_from_hf(raw.get("vision_config", raw))
    t = _Tensors(path)
    prefix = t.prefix_of("embeddings.patch_embedding.weight")
    if prefix is None:
        raise CheckpointError(f"{path}: no `embeddings.patch_embedding.weight`; not a CLIP vision checkpoint")
    return cfg, _finish(_load_clip(t, cfg, prefix), dtype)


def read_llava_config(path: str | os.PathLike, *, dtype="float32", compute_dtype: str | None = None) -> LlavaConfig:
    """The `LlavaConfig` of a llava-hf `LlavaForConditionalGeneration` directory (config.json only, no weights)."""
    path = Path(path)
    raw = _read_config(path)
    for key in ("vision_config", "text_config"):
        if key not in raw:
            raise CheckpointError(f"{path}/config.json: no {key!r}; not a llava-hf LlavaForConditionalGeneration")
    strategy = raw.get("vision_feature_select_strategy", "default")
    if strategy != "default":
        raise CheckpointError(f"{path}: vision_feature_select_strategy {strategy!r} unsupported (LLaVA drops CLS: 'default')")
    layer = raw.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise CheckpointError(f"{path}: vision_feature_layer {layer!r} must be a single int")
    act = raw.get("projector_hidden_act", "gelu")
    projectors = {"linear": "linear", "gelu": "mlp2x_gelu"}
    if act not in projectors:
        raise CheckpointError(f"{path}: projector_hidden_act {act!r} unsupported (gelu or linear)")
    return LlavaConfig(vision=vision_config_from_hf(raw["vision_config"]), text=text_config_from_hf(raw["text_config"]),
                       projector=projectors[act], vision_feature_layer=layer,
                       image_token_id=int(raw.get("image_token_index", raw.get("image_token_id", 32000))),
                       param_dtype=str(jnp.dtype(dtype)), compute_dtype=compute_dtype or str(jnp.dtype(dtype)))


def import_llava(path: str | os.PathLike, *, dtype="float32", param_dtype: str | None = None,
                 compute_dtype: str | None = None, mesh=None, rules=None) -> tuple[LlavaConfig, dict]:
    """Reads a llava-hf `LlavaForConditionalGeneration` safetensors directory -> (LlavaConfig, params).

    With `mesh`, every tensor goes straight to its sharding (no full copy on one device).
    """
    path = Path(path)
    dtype = param_dtype or dtype
    cfg = read_llava_config(path, dtype=dtype, compute_dtype=compute_dtype)
    t = _Tensors(path)
    keys = t.keys()
    proj_prefix = t.prefix_of("multi_modal_projector.linear_1.weight")
    if proj_prefix is None:
        raise CheckpointError(f"{path}: no multi_modal_projector weights")
    pp = proj_prefix + "multi_modal_projector."
    w1 = np.asarray(t.get(pp + "linear_1.weight")).T
    b1 = np.asarray(t.get(pp + "linear_1.bias")) if pp + "linear_1.bias" in keys else np.zeros(w1.shape[1], w1.dtype)
    w2 = np.asarray(t.get(pp + "linear_2.weight")).T
    b2 = np.asarray(t.get(pp + "linear_2.bias")) if pp + "linear_2.bias" in keys else np.zeros(w2.shape[1], w2.dtype)
    if cfg.projector == "linear":
        # A linear projector is exported as linear_2(identity(linear_1 x)); fold linear_2 back in.
        projector = {"w": w1 @ w2, "b": b1 @ w2 + b2}
    else:
        projector = {"fc1": {"w": w1, "b": b1}, "fc2": {"w": w2, "b": b2}}

    llm_prefix = t.prefix_of("embed_tokens.weight")
    vis_prefix = t.prefix_of("embeddings.patch_embedding.weight")
    head = t.prefix_of("lm_head.weight")
    params = {
        "vision": _load_clip(t, cfg.vision, vis_prefix),
        "projector": projector,
        "llm": _load_llama(t, cfg.text, llm_prefix, None if head is None else head + "lm_head.weight"),
    }
    shardings = None
    if mesh is not None:
        from fact_rlhf_jax.models import llava

        shardings = llava.param_shardings(cfg, mesh, rules)
    return cfg, _finish(params, dtype, shardings)


def read_original_llava_config(path: str | os.PathLike, *, vision_tower: str | os.PathLike | None = None,
                               dtype="float32", image_token_id: int = 32000) -> LlavaConfig:
    """The `LlavaConfig` of an original-LLaVA checkpoint (config.json, plus the CLIP tower's when it is separate)."""
    path = Path(path)
    raw = _read_config(path)
    if "mm_vision_tower" not in raw and "mm_hidden_size" not in raw:
        raise CheckpointError(f"{path}/config.json: no mm_vision_tower / mm_hidden_size; not an original LLaVA checkpoint")
    strategy = raw.get("mm_vision_select_feature", "patch")
    if strategy != "patch":
        raise CheckpointError(f"{path}: mm_vision_select_feature {strategy!r} unsupported (LLaVA drops CLS: 'patch')")
    proj_kind = raw.get("mm_projector_type", "linear")
    if proj_kind not in ("linear", "mlp2x_gelu"):
        raise CheckpointError(f"{path}: mm_projector_type {proj_kind!r} unsupported (linear or mlp2x_gelu)")
    if vision_tower is not None:
        clip_raw = _read_config(Path(vision_tower))
        clip_raw = clip_raw.get("vision_config", clip_raw)
    elif raw.get("vision_config"):
        clip_raw = raw["vision_config"]
    else:
        raise CheckpointError(f"{path}: the CLIP tower {raw.get('mm_vision_tower')!r} is not described in the "
                              "checkpoint; pass vision_tower=<local CLIPVisionModel or CLIPModel directory>")
    return LlavaConfig(vision=vision_config_from_hf(clip_raw), text=text_config_from_hf(raw), projector=proj_kind,
                       vision_feature_layer=int(raw.get("mm_vision_select_layer", -2)), image_token_id=image_token_id,
                       param_dtype=str(jnp.dtype(dtype)), compute_dtype=str(jnp.dtype(dtype)))


def import_llava_original(path: str | os.PathLike, *, vision_tower: str | os.PathLike | None = None,
                          dtype="float32", image_token_id: int = 32000) -> tuple[LlavaConfig, dict]:
    """Reads an original-LLaVA (`LlavaLlamaForCausalLM`, haotian-liu/LLaVA and LLaVA-RLHF) checkpoint.

    Those directories hold the LLaMA weights plus `model.mm_projector.*`, and name the CLIP tower in
    `config.json` (`mm_vision_tower`, e.g. "openai/clip-vit-large-patch14-336") instead of always shipping it.
    Pass `vision_tower=` a local `CLIPVisionModel`/`CLIPModel` directory unless the checkpoint includes the
    tower's weights. The image placeholder gets `image_token_id` (default 32000, outside the 32000-token
    vocabulary, like the original's -200 sentinel).
    """
    path = Path(path)
    t = _Tensors(path)
    has_clip = t.prefix_of("embeddings.patch_embedding.weight") is not None
    if not has_clip and vision_tower is None:
        raw = _read_config(path)
        raise CheckpointError(f"{path}: the CLIP tower {raw.get('mm_vision_tower')!r} is not in the checkpoint; "
                              "pass vision_tower=<local CLIPVisionModel or CLIPModel directory>")
    if has_clip and vision_tower is None and not _read_config(path).get("vision_config"):
        raise CheckpointError(f"{path}: the checkpoint includes CLIP weights but no vision_config; pass vision_tower=")
    cfg = read_original_llava_config(path, vision_tower=vision_tower, dtype=dtype, image_token_id=image_token_id)
    clip_t = t if (has_clip and vision_tower is None) else _Tensors(vision_tower)
    pp = (t.prefix_of("mm_projector.weight") or t.prefix_of("mm_projector.0.weight") or "") + "mm_projector."
    if cfg.projector == "linear":
        projector = {"w": np.asarray(t.get(pp + "weight")).T, "b": np.asarray(t.get(pp + "bias"))}
    else:
        projector = {"fc1": {"w": np.asarray(t.get(pp + "0.weight")).T, "b": np.asarray(t.get(pp + "0.bias"))},
                     "fc2": {"w": np.asarray(t.get(pp + "2.weight")).T, "b": np.asarray(t.get(pp + "2.bias"))}}
    if projector.get("w", projector.get("fc1", {}).get("w")).shape[0] != cfg.vision.hidden_size:
        raise CheckpointError(f"{path}: projector input width does not match the CLIP tower's hidden size "
                              f"{cfg.vision.hidden_size}")
    head = t.prefix_of("lm_head.weight")
    params = {
        "vision": _load_clip(clip_t, cfg.vision, clip_t.prefix_of("embeddings.patch_embedding.weight")),
        "projector": projector,
        "llm": _load_llama(t, cfg.text, t.prefix_of("embed_tokens.weight"),
                           None if head is None else head + "lm_head.weight"),
    }
    return cfg, _finish(params, dtype)


# --------------------------------------------------------------------------------------------------
# PEFT LoRA adapters and scalar (reward / value) heads


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat `{name: array}` from a `.safetensors` file or a `torch.save` zip file (`.bin`, `.pt`, no suffix).

    Torch files are read by `torch_zip` (an allow-listed unpickler), so nothing in them is executed.
    """
    from fact_rlhf_jax import torch_zip

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if zipfile.is_zipfile(path):
        try:
            state = torch_zip.load(path)
        except torch_zip.UnsafeCheckpointError as e:
            raise CheckpointError(str(e)) from e
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                                  for k, v in state.items()):
            raise CheckpointError(f"{path}: expected a flat state dict {{name: tensor}}, got {type(state).__name__}")
        return dict(state)
    try:
        with safe_open(str(path), framework="flax") as h:
            return {k: np.asarray(h.get_tensor(k)) for k in h.keys()}
    except Exception as e:  # safetensors raises its own error types for non-safetensors bytes
        raise CheckpointError(f"{path}: neither a torch zip checkpoint nor a safetensors file ({e})") from e


# our projection name -> (group in our tree, HF module under a decoder layer)
_LORA_TARGETS = {"q": ("attn", "self_attn.q_proj"), "k": ("attn", "self_attn.k_proj"),
                 "v": ("attn", "self_attn.v_proj"), "o": ("attn", "self_attn.o_proj"),
                 "gate": ("mlp", "mlp.gate_proj"), "up": ("mlp", "mlp.up_proj"), "down": ("mlp", "mlp.down_proj")}
_LORA_BY_HF_MODULE = {module: ours for ours, (_, module) in _LORA_TARGETS.items()}
_LORA_HF_NAMES = {module.split(".")[1] for _, module in _LORA_TARGETS.values()}  # q_proj, ..., down_proj
# Where the decoder layers sit under PEFT's `base_model.model.`, per layout.
_LORA_DECODER_PREFIXES = ("model.",                  # LlamaForCausalLM, original LLaVA LlavaLlamaForCausalLM
                          "model.language_model.",   # llava-hf LlavaForConditionalGeneration
                          "language_model.model.")   # llava-hf, transformers < 4.52
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<prefix>.*?)layers\.(?P<layer>\d+)\."
                       r"(?P<module>self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)"
                       r"\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$")
# adapter_config.json fields that change what the adapter computes, with the values that leave plain LoRA.
_LORA_PLAIN = {
    "bias": ("none",), "lora_bias": (False, None), "use_dora": (False, None), "fan_in_fan_out": (False, None),
    "modules_to_save": (None, []), "rank_pattern": ({}, None), "alpha_pattern": ({}, None),
    "layers_to_transform": (None, []), "layer_replication": (None, []), "target_parameters": (None, []),
    "trainable_token_indices": (None, {}, []), "alora_invocation_tokens": (None, []), "use_qalora": (False, None),
    "kasa_config": (None, {}), "monteclora_config": (None, {}), "use_bdlora": (None, False, {}),
    "arrow_config": (None, {}),
}


def _adapter_files(adapter_dir: Path) -> tuple[Path, Path]:
    """adapter_config.json and the weights file of a PEFT adapter directory. Like the LLaVA-RLHF code, this also
    looks into `<dir>/adapter_model/` and then into a single named-adapter subdirectory (`lora_default/`)."""
    d = adapter_dir
    for _ in range(2):
        if (d / "adapter_config.json").exists():
            break
        if (d / "adapter_model").is_dir():
            d = d / "adapter_model"
            continue
        named = [s for s in sorted(d.iterdir()) if s.is_dir() and (s / "adapter_config.json").exists()] \
            if d.is_dir() else []
        if len(named) > 1:
            raise CheckpointError(f"{d}: several adapters {[s.name for s in named]}; pass one of their directories")
        if not named:
            break
        d = named[0]
    if not (d / "adapter_config.json").exists():
        raise CheckpointError(f"{adapter_dir}: no adapter_config.json; not a PEFT adapter directory")
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (d / name).exists():
            return d / "adapter_config.json", d / name
    raise CheckpointError(f"{d}: no adapter_model.safetensors or adapter_model.bin")


def _lora_rank_and_scale(raw: dict, config_file: Path) -> tuple[int, float]:
    if raw.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{config_file}: peft_type {raw['peft_type']!r} is not LoRA")
    for field, plain in _LORA_PLAIN.items():
        if field in raw and raw[field] not in plain:
            raise CheckpointError(f"{config_file}: {field}={raw[field]!r} is not supported (plain LoRA needs "
                                  f"{plain[0]!r})")
    targets = raw.get("target_modules")
    if isinstance(targets, list):  # a string is a regex or "all-linear": the tensor keys say what it matched
        for name in targets:
            if name.rsplit(".", 1)[-1] not in _LORA_HF_NAMES:
                raise CheckpointError(f"{config_file}: target_modules entry {name!r} cannot be adapted here (only "
                                      "the LLaMA decoder's q/k/v/o_proj and gate/up/down_proj)")
    rank = raw.get("r")
    if not isinstance(rank, int) or rank <= 0:
        raise CheckpointError(f"{config_file}: r={rank!r}, expected a positive integer")
    alpha = float(raw.get("lora_alpha", 8))
    return rank, alpha / (math.sqrt(rank) if raw.get("use_rslora") else rank)


def import_lora(adapter_dir: str | os.PathLike, cfg: LlavaConfig | TextConfig, *,
                dtype="float32") -> tuple[dict, float]:
    """Reads a PEFT LoRA adapter directory -> (adapters, lora_scale) for `llava.forward` / `llama.forward`.

    `adapter_config.json` gives r, lora_alpha (scale alpha / r, or alpha / sqrt(r) with use_rslora) and the
    targets; `adapter_model.safetensors` or `adapter_model.bin` the factors `lora_A` [r, in], `lora_B` [out, r]
    of the LLaMA decoder in any of the layouts `import_llama` / `import_llava` / `import_llava_original` read.
    With a LlavaConfig the result is `{"llm": {"layers": ...}}` as `models.lora.init` builds it, with a
    TextConfig the `{"layers": ...}` subtree; only the adapted projections appear.
    """
    from fact_rlhf_jax.models import lora

    config_file, weights_file = _adapter_files(Path(adapter_dir))
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e})") from e
    rank, scale = _lora_rank_and_scale(raw, config_file)
    if isinstance(cfg, LlavaConfig):
        text = cfg.text
    elif isinstance(cfg, TextConfig):
        text = cfg
    else:
        raise TypeError(f"cfg must be a LlavaConfig or a TextConfig, got {type(cfg).__name__}")

    found: dict[tuple[str, int, str], tuple[str, np.ndarray]] = {}  # (target, layer, A|B) -> (key, tensor)
    prefixes = set()
    for key, value in read_state_dict(weights_file).items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise CheckpointError(f"{weights_file}: unknown key {key!r} (expected lora_A / lora_B factors of the "
                                  "LLaMA decoder's q/k/v/o_proj and gate/up/down_proj only)")
        if m["prefix"] not in _LORA_DECODER_PREFIXES:
            raise CheckpointError(f"{weights_file}: {key!r} adapts a module outside the LLaMA decoder "
                                  f"({m['prefix']!r}); vision tower and projector adapters are not supported")
        layer = int(m["layer"])
        if layer >= text.num_layers:
            raise CheckpointError(f"{weights_file}: {key!r} is for layer {layer}, the model has {text.num_layers}")
        prefixes.add(m["prefix"])
        slot = (_LORA_BY_HF_MODULE[m["module"]], layer, m["ab"])
        if slot in found:
            raise CheckpointError(f"{weights_file}: {found[slot][0]!r} and {key!r} are the same factor (one adapter "
                                  "per file)")
        found[slot] = (key, value)
    if len(prefixes) != 1:
        raise CheckpointError(f"{weights_file}: " + (f"keys mix the layouts {sorted(prefixes)}" if prefixes
                                                     else "no LoRA tensors"))
    prefix = prefixes.pop()
    listed = raw.get("target_modules") if isinstance(raw.get("target_modules"), list) else []
    # A projection listed in target_modules but absent from the file is reported missing below.
    targets = tuple(t for t in lora.DEFAULT_TARGETS
                    if any(k[0] == t for k in found) or _LORA_TARGETS[t][1].split(".")[1] in listed)

    specs = lora.text_specs(text, rank, targets)["layers"]
    out: dict = {}
    for t in targets:
        group, module = _LORA_TARGETS[t]
        a_shape, b_shape = specs[group][t]["a"].shape[1:], specs[group][t]["b"].shape[1:]  # [*in, r], [r, *out]
        want = {"A": (rank, math.prod(a_shape[:-1])), "B": (math.prod(b_shape[1:]), rank)}
        factors = {"A": [], "B": []}
        for i in range(text.num_layers):
            for ab in ("A", "B"):
                if (t, i, ab) not in found:
                    raise CheckpointError(f"{weights_file}: {prefix}layers.{i}.{module}.lora_{ab}.weight is "
                                          f"missing (every layer of an adapted projection needs both factors)")
                key, w = found[(t, i, ab)]
                if w.shape != want[ab]:
                    raise CheckpointError(f"{weights_file}: {key!r} has shape {w.shape}, expected {want[ab]} "
                                          f"(r={rank} from {config_file.name})")
                factors[ab].append(w.T.reshape(a_shape if ab == "A" else b_shape))
        out.setdefault(group, {})[t] = {"a": np.stack(factors["A"]), "b": np.stack(factors["B"])}
    tree = {"layers": out}
    return _finish({"llm": tree} if isinstance(cfg, LlavaConfig) else tree, dtype), scale


def import_scalar_head(path: str | os.PathLike) -> dict:
    """Reads a reward or value head -> `{"w": float32 [D], "b": float32 []}`; the score is `hidden @ w + b`.

    `path` holds the state dict of a torch `nn.Linear(D, 1)` (`weight` [1, D], `bias` [1]): the reference's
    `reward_head` / `value_head.pt` files (`torch.save`, read without running their pickle) or a safetensors file.
    """
    path = Path(path)
    tensors = read_state_dict(path)
    if set(tensors) != {"weight", "bias"}:
        raise CheckpointError(f"{path}: expected the state dict of an nn.Linear(D, 1) (keys 'weight', 'bias'), "
                              f"found keys {sorted(tensors)}")
    w, b = tensors["weight"], tensors["bias"]
    if w.ndim != 2 or w.shape[0] != 1:
        raise CheckpointError(f"{path}: 'weight' has shape {w.shape}, expected [1, D]")
    if b.shape != (1,):
        raise CheckpointError(f"{path}: 'bias' has shape {b.shape}, expected [1]")
    return {"w": jnp.asarray(w[0].astype(np.float32)), "b": jnp.asarray(b[0].astype(np.float32))}


# --------------------------------------------------------------------------------------------------
# writing


def _np32(x) -> np.ndarray:
    return np.asarray(jax.device_get(x), dtype=np.float32)


def _llama_tensors(p: dict, cfg: TextConfig, prefix: str, head_key: str, vocab_pad: int = 0) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    embed = _np32(p["embed"])
    head = _np32(p["lm_head"]).T
    if vocab_pad:
        embed = np.concatenate([embed, np.zeros((vocab_pad, embed.shape[1]), np.float32)])
        head = np.concatenate([head, np.zeros((vocab_pad, head.shape[1]), np.float32)])
    out[prefix + "embed_tokens.weight"] = embed
    out[prefix + "norm.weight"] = _np32(p["norm"])
    out[head_key] = head
    L = p["layers"]
    for i in range(cfg.num_layers):
        lp = f"{prefix}layers.{i}."
        a = {k: _np32(v[i]) for k, v in L["attn"].items()}
        out[lp + "self_attn.q_proj.weight"] = a["q"].reshape(a["q"].shape[0], -1).T
        out[lp + "self_attn.k_proj.weight"] = a["k"].reshape(a["k"].shape[0], -1).T
        out[lp + "self_attn.v_proj.weight"] = a["v"].reshape(a["v"].shape[0], -1).T
        out[lp + "self_attn.o_proj.weight"] = a["o"].reshape(-1, a["o"].shape[-1]).T
        for name, hf in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            out[lp + f"mlp.{hf}.weight"] = _np32(L["mlp"][name][i]).T
        out[lp + "input_layernorm.weight"] = _np32(L["attn_norm"][i])
        out[lp + "post_attention_layernorm.weight"] = _np32(L["mlp_norm"][i])
    return out


def _clip_tensors(p: dict, cfg: VisionConfig, prefix: str) -> dict[str, np.ndarray]:
    out = {
        prefix + "embeddings.patch_embedding.weight": _np32(p["patch_embed"]).transpose(3, 2, 0, 1),
        prefix + "embeddings.class_embedding": _np32(p["class_embed"]),
        prefix + "embeddings.position_embedding.weight": _np32(p["pos_embed"]),
        prefix + "pre_layrnorm.weight": _np32(p["pre_norm"]["scale"]),
        prefix + "pre_layrnorm.bias": _np32(p["pre_norm"]["bias"]),
        prefix + "post_layernorm.weight": _np32(p["post_norm"]["scale"]),
        prefix + "post_layernorm.bias": _np32(p["post_norm"]["bias"]),
    }
    L = p["layers"]
    for i in range(cfg.num_layers):
        lp = f"{prefix}encoder.layers.{i}."
        for name, hf in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")):
            w = _np32(L["attn"][name]["w"][i])
            out[lp + f"self_attn.{hf}.weight"] = w.reshape(w.shape[0], -1).T
            out[lp + f"self_attn.{hf}.bias"] = _np32(L["attn"][name]["b"][i]).reshape(-1)
        wo = _np32(L["attn"]["o"]["w"][i])
        out[lp + "self_attn.out_proj.weight"] = wo.reshape(-1, wo.shape[-1]).T
        out[lp + "self_attn.out_proj.bias"] = _np32(L["attn"]["o"]["b"][i])
        for ln, hf in (("ln1", "layer_norm1"), ("ln2", "layer_norm2")):
            out[lp + f"{hf}.weight"] = _np32(L[ln]["scale"][i])
            out[lp + f"{hf}.bias"] = _np32(L[ln]["bias"][i])
        for fc in ("fc1", "fc2"):
            out[lp + f"mlp.{fc}.weight"] = _np32(L["mlp"][fc]["w"][i]).T
            out[lp + f"mlp.{fc}.bias"] = _np32(L["mlp"][fc]["b"][i])
    return out


def hf_text_config(cfg: TextConfig, vocab_size: int | None = None) -> dict:
    return {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab_size or cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.dim_per_head, "hidden_act": "silu", "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "max_position_embeddings": cfg.max_position_embeddings, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    }


def hf_vision_config(cfg: VisionConfig) -> dict:
    return {
        "model_type": "clip_vision_model", "image_size": cfg.image_size, "patch_size": cfg.patch_size,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_channels": cfg.num_channels, "layer_norm_eps": cfg.layer_norm_eps, "hidden_act": "quick_gelu",
        "projection_dim": cfg.hidden_size,
    }


def _save(tensors: dict[str, np.ndarray], config: dict, path: Path, dtype) -> None:
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    np_dtype = np.float32 if jnp.dtype(dtype) == jnp.float32 else np.float16 if jnp.dtype(dtype) == jnp.float16 else None
    if np_dtype is None:  # bfloat16: numpy has no native bf16 -> go through torch-free ml_dtypes
        import ml_dtypes

        np_dtype = ml_dtypes.bfloat16
    tensors = {k: np.ascontiguousarray(v.astype(np_dtype)) for k, v in tensors.items()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = dict(config, torch_dtype=str(jnp.dtype(dtype)), dtype=str(jnp.dtype(dtype)))
    with open(path / "config.json", "w") as f:
        json.dump(config, f, indent=2)


def export_llava(cfg: LlavaConfig, params: dict, path: str | os.PathLike, *, dtype="float32") -> Path:
    """Writes a directory that `transformers.LlavaForConditionalGeneration.from_pretrained` loads.

    A linear projector is written as `linear_1 = W`, `projector_hidden_act = "linear"`, `linear_2 = I`.
    If the image token id is outside the vocabulary, the embedding and LM head get zero rows up to it
    (logits of the real vocabulary are unchanged).
    """
    path = Path(path)
    vocab_pad = max(0, cfg.image_token_id + 1 - cfg.text.vocab_size)
    tensors = {}
    tensors.update(_clip_tensors(params["vision"], cfg.vision, "model.vision_tower."))
    tensors.update(_llama_tensors(params["llm"], cfg.text, "model.language_model.", "lm_head.weight", vocab_pad))
    p = params["projector"]
    pp = "model.multi_modal_projector."
    d = cfg.text.hidden_size
    if cfg.projector == "linear":
        tensors[pp + "linear_1.weight"] = _np32(p["w"]).T
        tensors[pp + "linear_1.bias"] = _np32(p["b"])
        tensors[pp + "linear_2.weight"] = np.eye(d, dtype=np.float32)
        tensors[pp + "linear_2.bias"] = np.zeros((d,), np.float32)
        act = "linear"
    else:
        for i, fc in ((1, "fc1"), (2, "fc2")):
            tensors[pp + f"linear_{i}.weight"] = _np32(p[fc]["w"]).T
            tensors[pp + f"linear_{i}.bias"] = _np32(p[fc]["b"])
        act = "gelu"
    config = {
        "model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
        "vision_config": hf_vision_config(cfg.vision),
        "text_config": hf_text_config(cfg.text, cfg.text.vocab_size + vocab_pad),
        "image_token_index": cfg.image_token_id, "image_seq_length": cfg.num_image_tokens,
        "projector_hidden_act": act, "vision_feature_select_strategy": "default",
        "vision_feature_layer": cfg.vision_feature_layer, "multimodal_projector_bias": True,
        "tie_word_embeddings": False,
    }
    _save(tensors, config, path, dtype)
    return path


def export_llama(cfg: TextConfig, params: dict, path: str | os.PathLike, *, dtype="float32") -> Path:
    path = Path(path)
    _save(_llama_tensors(params, cfg, "model.", "lm_head.weight"), hf_text_config(cfg), path, dtype)
    return path


def export_clip(cfg: VisionConfig, params: dict, path: str | os.PathLike, *, dtype="float32") -> Path:
    path = Path(path)
    config = dict(hf_vision_config(cfg), architectures=["CLIPVisionModel"])
    _save(_clip_tensors(params, cfg, "vision_model."), config, path, dtype)
    return path


def _config_if_any(path: str | os.PathLike) -> dict:
    cfg = Path(path) / "config.json"
    if not cfg.exists():
        return {}
    with open(cfg) as f:
        return json.load(f)


def is_llava_dir(path: str | os.PathLike) -> bool:
    """A llava-hf `LlavaForConditionalGeneration` directory."""
    raw = _config_if_any(path)
    return "vision_config" in raw and "text_config" in raw


def is_original_llava_dir(path: str | os.PathLike) -> bool:
    """An original-LLaVA `LlavaLlamaForCausalLM` directory (LLaVA, LLaVA-RLHF releases)."""
    raw = _config_if_any(path)
    return "mm_vision_tower" in raw or "mm_hidden_size" in raw

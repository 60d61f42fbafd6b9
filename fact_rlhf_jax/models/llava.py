"""LLaVA: CLIP features -> projector -> placed at the image-token positions of a LLaMA decoder.

Inputs follow the llava-hf convention: the image token id appears `num_image_tokens` times in
`input_ids`, and the k-th occurrence in a row receives the k-th projected patch feature of that row's image.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fact_rlhf_jax import sharding
from fact_rlhf_jax.models import clip, llama
from fact_rlhf_jax.models import layers as L
from fact_rlhf_jax.models.config import LlavaConfig
from fact_rlhf_jax.models.params import ParamSpec, axes_from_specs, init_from_specs, normal, shapes_from_specs, zeros


class LlavaOutput(NamedTuple):
    logits: jax.Array  # float32 [B, T, V]
    hidden: jax.Array  # [B, T, D], after the final RMSNorm


def projector_specs(cfg: LlavaConfig) -> dict[str, Any]:
    dv, d = cfg.vision.hidden_size, cfg.text.hidden_size
    init = normal(0.02)
    if cfg.projector == "linear":
        return {"w": ParamSpec((dv, d), (None, "embed"), init), "b": ParamSpec((d,), ("embed",), zeros)}
    if cfg.projector == "mlp2x_gelu":
        return {
            "fc1": {"w": ParamSpec((dv, d), (None, "embed"), init), "b": ParamSpec((d,), ("embed",), zeros)},
            "fc2": {"w": ParamSpec((d, d), (None, "embed"), init), "b": ParamSpec((d,), ("embed",), zeros)},
        }
    raise ValueError(f"unknown projector {cfg.projector!r}; expected 'linear' or 'mlp2x_gelu'")


def specs(cfg: LlavaConfig) -> dict[str, Any]:
    return {"vision": clip.specs(cfg.vision), "projector": projector_specs(cfg), "llm": llama.specs(cfg.text)}


def init(cfg: LlavaConfig, rng: jax.Array) -> dict:
    return init_from_specs(specs(cfg), rng, cfg.param_dtype)


def param_axes(cfg: LlavaConfig) -> dict:
    return axes_from_specs(specs(cfg))


def param_shapes(cfg: LlavaConfig) -> dict:
    return shapes_from_specs(specs(cfg), cfg.param_dtype)


def param_shardings(cfg: LlavaConfig, mesh, rules: sharding.Rules | None = None) -> dict:
    return sharding.shardings_for(param_shapes(cfg), param_axes(cfg), mesh, rules or sharding.Rules.create())


def init_sharded(cfg: LlavaConfig, rng: jax.Array, mesh, rules: sharding.Rules | None = None) -> dict:
    """Initialises params directly in their shardings: no device ever holds a full unsharded copy."""
    out = param_shardings(cfg, mesh, rules)
    return jax.jit(lambda key: init(cfg, key), out_shardings=out)(rng)


def project(params: dict, cfg: LlavaConfig, features: jax.Array) -> jax.Array:
    """features [B, P, Dv] -> [B, P, D]."""
    p = params["projector"]
    if cfg.projector == "linear":
        return L.dense(features, p["w"], bias=p["b"])
    h = jax.nn.gelu(L.dense(features, p["fc1"]["w"], bias=p["fc1"]["b"]), approximate=False)
    return L.dense(h, p["fc2"]["w"], bias=p["fc2"]["b"])


def image_features(params: dict, cfg: LlavaConfig, pixel_values: jax.Array) -> jax.Array:
    """pixel_values [B, 3, H, W] -> projected patch features [B, num_image_tokens, D] (CLS dropped)."""
    dtype = jnp.dtype(cfg.compute_dtype)
    hidden = clip.forward(params["vision"], cfg.vision, pixel_values, layer=cfg.vision_feature_layer,
                          dtype=dtype, remat=cfg.remat)
    return project(params, cfg, hidden[:, 1:])


def embed_inputs(params: dict, cfg: LlavaConfig, input_ids: jax.Array, pixel_values: jax.Array | None) -> jax.Array:
    """Token embeddings with image features spliced in at image-token positions: [B, T, D]."""
    dtype = jnp.dtype(cfg.compute_dtype)
    x = llama.embed_tokens(params["llm"], input_ids, dtype)
    if pixel_values is None:
        return x
    feats = L.constrain(image_features(params, cfg, pixel_values).astype(dtype), ("batch", None, "act_embed"))
    is_image = input_ids == cfg.image_token_id
    slot = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, feats.shape[1] - 1)
    spliced = jnp.take_along_axis(feats, slot[..., None], axis=1)
    return jnp.where(is_image[..., None], spliced, x)


def forward(params: dict, cfg: LlavaConfig, input_ids: jax.Array, pixel_values: jax.Array | None,
            attention_mask: jax.Array | None = None, *, lora: dict | None = None,
            lora_scale: float = 1.0) -> LlavaOutput:
    """input_ids [B, T], pixel_values [B, 3, H, W] or None, attention_mask [B, T] -> LlavaOutput.

    `lora` is an adapter pytree for the `llm` weights (see `models.lora`); the base params are untouched.
    """
    hidden = hidden_states(params, cfg, input_ids, pixel_values, attention_mask, lora=lora, lora_scale=lora_scale)
    return LlavaOutput(llama.lm_logits(params["llm"], hidden), hidden)


def hidden_states(params: dict, cfg: LlavaConfig, input_ids: jax.Array, pixel_values: jax.Array | None,
                  attention_mask: jax.Array | None = None, *, lora: dict | None = None,
                  lora_scale: float = 1.0) -> jax.Array:
    """Final hidden states [B, T, D] without the LM head (reward and value heads read these)."""
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    x = embed_inputs(params, cfg, input_ids, pixel_values)
    x = L.constrain(x, ("batch", None, "act_embed"))
    llm_lora = None if lora is None else lora.get("llm")
    hidden, _ = llama.decode(params["llm"], cfg.text, x, llama.positions_from_mask(attention_mask),
                             llama.causal_mask(attention_mask), lora=llm_lora, lora_scale=lora_scale,
                             remat=cfg.remat, attention_impl=cfg.attention_impl)
    return hidden

"""CLIP ViT vision encoder as pure functions (HF `CLIPVisionModel` semantics).

Pre-LayerNorm before the encoder, pre-LN blocks with quick_gelu MLPs, layers stacked on a leading axis
and run under `lax.scan`. LLaVA reads `hidden_states[-2]` (penultimate layer), drops CLS and never
applies the post-LayerNorm; `forward` only runs the layers needed for the requested hidden state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import layers as L
from fact_rlhf_jax.models.config import VisionConfig
from fact_rlhf_jax.models.params import ParamSpec, normal, ones, zeros

INIT = normal(0.02)


def specs(cfg: VisionConfig) -> dict[str, Any]:
    d, m, h, hd, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.head_dim, cfg.num_layers
    p, c = cfg.patch_size, cfg.num_channels
    ln = lambda lead=(): {
        "scale": ParamSpec((*lead, d), (*(("layers",) if lead else ()), "vision_embed"), ones),
        "bias": ParamSpec((*lead, d), (*(("layers",) if lead else ()), "vision_embed"), zeros),
    }
    proj_in = lambda: {
        "w": ParamSpec((n, d, h, hd), ("layers", "vision_embed", "vision_heads", "head_dim"), INIT),
        "b": ParamSpec((n, h, hd), ("layers", "vision_heads", "head_dim"), zeros),
    }
    return {
        "patch_embed": ParamSpec((p, p, c, d), ("patch", "patch", "channels", "vision_embed"), INIT),
        "class_embed": ParamSpec((d,), ("vision_embed",), INIT),
        "pos_embed": ParamSpec((cfg.num_patches + 1, d), (None, "vision_embed"), INIT),
        "pre_norm": ln(),
        "layers": {
            "ln1": ln((n,)),
            "attn": {
                "q": proj_in(),
                "k": proj_in(),
                "v": proj_in(),
                "o": {
                    "w": ParamSpec((n, h, hd, d), ("layers", "vision_heads", "head_dim", "vision_embed"), INIT),
                    "b": ParamSpec((n, d), ("layers", "vision_embed"), zeros),
                },
            },
            "ln2": ln((n,)),
            "mlp": {
                "fc1": {
                    "w": ParamSpec((n, d, m), ("layers", "vision_embed", "vision_mlp"), INIT),
                    "b": ParamSpec((n, m), ("layers", "vision_mlp"), zeros),
                },
                "fc2": {
                    "w": ParamSpec((n, m, d), ("layers", "vision_mlp", "vision_embed"), INIT),
                    "b": ParamSpec((n, d), ("layers", "vision_embed"), zeros),
                },
            },
        },
        "post_norm": ln(),
    }


def embed_patches(params: dict, cfg: VisionConfig, pixel_values: jax.Array, dtype) -> jax.Array:
    """pixel_values [B, C, H, W] -> [B, 1 + num_patches, D] (CLS first, position embeddings added)."""
    b, c, hgt, wid = pixel_values.shape
    p = cfg.patch_size
    gh, gw = hgt // p, wid // p
    x = pixel_values.astype(dtype).reshape(b, c, gh, p, gw, p)
    x = x.transpose(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, p * p * c)
    w = params["patch_embed"].astype(dtype).reshape(p * p * c, -1)
    patches = x @ w
    cls = jnp.broadcast_to(params["class_embed"].astype(dtype), (b, 1, patches.shape[-1]))
    x = jnp.concatenate([cls, patches], axis=1)
    return x + params["pos_embed"].astype(dtype)[None]


def _block(cfg: VisionConfig, x: jax.Array, p: dict) -> jax.Array:
    eps = cfg.layer_norm_eps
    a = p["attn"]
    h = L.layer_norm(x, p["ln1"]["scale"], p["ln1"]["bias"], eps)
    q = L.dense(h, a["q"]["w"], bias=a["q"]["b"])
    k = L.dense(h, a["k"]["w"], bias=a["k"]["b"])
    v = L.dense(h, a["v"]["w"], bias=a["v"]["b"])
    attn = L.attention(q, k, v, None)
    x = x + L.dense(attn, a["o"]["w"], n_in=2, bias=a["o"]["b"])
    h = L.layer_norm(x, p["ln2"]["scale"], p["ln2"]["bias"], eps)
    h = L.quick_gelu(L.dense(h, p["mlp"]["fc1"]["w"], bias=p["mlp"]["fc1"]["b"]))
    x = x + L.dense(h, p["mlp"]["fc2"]["w"], bias=p["mlp"]["fc2"]["b"])
    return L.constrain(x, ("batch", None, "act_embed"))


def _layer_index(cfg: VisionConfig, layer: int) -> int:
    """Index into [embeddings, layer1..layerN]; negative counts from the end like HF hidden_states."""
    idx = layer if layer >= 0 else cfg.num_layers + 1 + layer
    if not 0 <= idx <= cfg.num_layers:
        raise ValueError(f"hidden-state index {layer} out of range for {cfg.num_layers} layers")
    return idx


def forward(params: dict, cfg: VisionConfig, pixel_values: jax.Array, *, layer: int = -2,
            dtype=jnp.float32, remat: str = "none") -> jax.Array:
    """Hidden state `layer` of the encoder (HF `hidden_states[layer]`): [B, 1 + num_patches, D].

    Only the first `layer` blocks are run; the post-LayerNorm is not applied.
    """
    n_run = _layer_index(cfg, layer)
    x = embed_patches(params, cfg, pixel_values, dtype)
    x = L.layer_norm(x, params["pre_norm"]["scale"], params["pre_norm"]["bias"], cfg.layer_norm_eps)
    if n_run == 0:
        return x
    stacked = jax.tree.map(lambda w: w[:n_run], params["layers"])
    step = L.maybe_remat(lambda h, p: (_block(cfg, h, p), None), remat)
    x, _ = jax.lax.scan(step, x, stacked)
    return x


def all_hidden_states(params: dict, cfg: VisionConfig, pixel_values: jax.Array, *, dtype=jnp.float32):
    """(hidden_states [N+1, B, 1+P, D] as in HF, pooled [B, D] = post-LN(CLS of the last layer))."""
    x = embed_patches(params, cfg, pixel_values, dtype)
    x = L.layer_norm(x, params["pre_norm"]["scale"], params["pre_norm"]["bias"], cfg.layer_norm_eps)
    last, states = jax.lax.scan(lambda h, p: (_block(cfg, h, p),) * 2, x, params["layers"])
    states = jnp.concatenate([x[None], states], axis=0)
    pooled = L.layer_norm(last[:, 0], params["post_norm"]["scale"], params["post_norm"]["bias"], cfg.layer_norm_eps)
    return states, pooled

"""LoRA adapters as a separate pytree with the same paths as the weights they adapt.

For a base weight `llm/layers/attn/q` of shape [layers, *in, *out] the adapter is
`{"a": [layers, *in, rank], "b": [layers, rank, *out]}` at `llm/layers/attn/q`; the forward pass adds
`lora_scale * (x . a) . b` (PEFT semantics: `a` Kaiming-uniform, `b` zero, scale = alpha / rank).
Several adapters (policy, reference, value, reward) can share one frozen base.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from fact_rlhf_jax.models import llama
from fact_rlhf_jax.models.config import LlavaConfig, TextConfig
from fact_rlhf_jax.models.params import ParamSpec, axes_from_specs, init_from_specs, shapes_from_specs, zeros

DEFAULT_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_GROUP = {"q": "attn", "k": "attn", "v": "attn", "o": "attn", "gate": "mlp", "up": "mlp", "down": "mlp"}


def _kaiming_uniform(fan_in: int):
    # torch.nn.init.kaiming_uniform_(a=sqrt(5)) as PEFT uses: bound = 1 / sqrt(fan_in).
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype: jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


def specs(cfg: LlavaConfig, rank: int, targets: Sequence[str] = DEFAULT_TARGETS) -> dict:
    return {"llm": text_specs(cfg.text, rank, targets)}


def text_specs(cfg: TextConfig, rank: int, targets: Sequence[str] = DEFAULT_TARGETS) -> dict:
    """Adapters of a bare LLaMA (`llama.forward`'s params): `{"layers": {"attn": ..., "mlp": ...}}`."""
    base = llama.specs(cfg)["layers"]
    out: dict = {}
    for name in targets:
        if name not in llama.PROJECTIONS:
            raise ValueError(f"unknown LoRA target {name!r}; expected some of {tuple(llama.PROJECTIONS)}")
        w: ParamSpec = base[_GROUP[name]][name]
        n_in = llama.PROJECTIONS[name]
        in_shape, out_shape = w.shape[1:1 + n_in], w.shape[1 + n_in:]
        in_axes, out_axes = w.axes[1:1 + n_in], w.axes[1 + n_in:]
        n = w.shape[0]
        out.setdefault(_GROUP[name], {})[name] = {
            "a": ParamSpec((n, *in_shape, rank), ("layers", *in_axes, "lora_rank"), _kaiming_uniform(math.prod(in_shape))),
            "b": ParamSpec((n, rank, *out_shape), ("layers", "lora_rank", *out_axes), zeros),
        }
    return {"layers": out}


def init(cfg: LlavaConfig, rng: jax.Array, *, rank: int = 64, targets: Sequence[str] = DEFAULT_TARGETS,
         dtype="float32") -> dict:
    return init_from_specs(specs(cfg, rank, targets), rng, dtype)


def param_axes(cfg: LlavaConfig, *, rank: int = 64, targets: Sequence[str] = DEFAULT_TARGETS) -> dict:
    return axes_from_specs(specs(cfg, rank, targets))


def param_shapes(cfg: LlavaConfig, *, rank: int = 64, targets: Sequence[str] = DEFAULT_TARGETS, dtype="float32"):
    return shapes_from_specs(specs(cfg, rank, targets), dtype)


def merge(params: dict, adapters: dict, lora_scale: float) -> dict:
    """Returns base params with `scale * a.b` folded into each adapted weight (for export / fast inference)."""
    merged = jax.tree.map(lambda x: x, params)
    layers = merged["llm"]["layers"]
    for group, projs in adapters["llm"]["layers"].items():
        for name, ab in projs.items():
            w = layers[group][name]
            delta = _delta(ab["a"], ab["b"])
            layers[group][name] = (w.astype(jnp.float32) + lora_scale * delta).astype(w.dtype)
    return merged


def _delta(a: jax.Array, b: jax.Array) -> jax.Array:
    """a [L, *in, r], b [L, r, *out] -> [L, *in, *out]."""
    return jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a.astype(jnp.float32), b.astype(jnp.float32))

"""Roofline of a benchmark: the least time its work can take on this machine.

`measure()` finds the machine's two ceilings: the float32 matmul peak (best of a few jitted 2048^3 `jnp.dot`s)
and the memory bandwidth (best of a jitted copy `x + 1` and a sum over a 256 MiB float32 array, bytes moved /
second). A piece of work with F FLOPs that must move at least B bytes cannot take less than max(F / peak,
B / bandwidth): that is its roofline time. Work in phases (a prefill, then one decode step per token) is the
sum of each phase's roofline. `fraction` = roofline / measured: 1.0 would be perfect.

The FLOP and byte counts below are the model's necessary work, not what an implementation happens to do:
matmuls (2 FLOPs per multiply-add) and attention over the keys a query may actually see; bytes are the
weights read once per pass, the KV cache read per decode step and, for training, gradients and AdamW state.
Activations are left out of the byte counts (they may stay in cache), so rooflines are lower bounds.

All timed benchmark scripts print `os.getloadavg()` beside their numbers: on a shared machine the measured
times, and the ceilings themselves, move with the load.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp

F32 = 4


@dataclasses.dataclass(frozen=True)
class Machine:
    peak_flops: float      # float32 FLOP/s (best 2048^3 matmul)
    bandwidth: float       # bytes/s (best of copy and reduction)
    copy_bandwidth: float  # bytes/s of `x + 1` (read + write)
    sum_bandwidth: float   # bytes/s of `jnp.sum(x)` (read)
    load_avg: tuple[float, float, float]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _best_seconds(fn, x, *rest, repeats: int, chain: bool = False) -> float:
    """Best wall time of fn(x, *rest); with `chain` each call's output is the next call's x (fn donates x)."""
    x = jax.block_until_ready(fn(x, *rest)) if chain else (jax.block_until_ready(fn(x, *rest)), x)[1]
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(x, *rest))
        best = min(best, time.perf_counter() - t)
        x = out if chain else x
    return best


def measure(n: int = 2048, mem_mib: int = 256, repeats: int = 5) -> Machine:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    peak = 2 * n**3 / _best_seconds(jax.jit(jnp.dot), a, b, repeats=repeats)
    x = jnp.ones((mem_mib * 2**20 // F32,), jnp.float32)
    size = x.size * F32
    total = size / _best_seconds(jax.jit(jnp.sum), x, repeats=repeats)
    # in place (donated): a fresh output buffer would time the kernel's page faults, not memory bandwidth
    copy = 2 * size / _best_seconds(jax.jit(lambda v: v + 1.0, donate_argnums=0), x, repeats=repeats, chain=True)
    return Machine(peak, max(copy, total), copy, total, os.getloadavg())


@dataclasses.dataclass(frozen=True)
class Work:
    """FLOPs and the least bytes one phase of a benchmark must move."""

    flops: float
    bytes: float

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.bytes + other.bytes)

    def seconds(self, m: Machine) -> float:
        return max(self.flops / m.peak_flops, self.bytes / m.bandwidth)


def roofline(phases: list[Work], m: Machine) -> dict:
    """The roofline of work done in phases that run one after another (each bound by its own ceiling)."""
    total = sum(phases, Work(0.0, 0.0))
    seconds = sum(p.seconds(m) for p in phases)
    compute = sum(p.flops / m.peak_flops for p in phases if p.flops / m.peak_flops >= p.bytes / m.bandwidth)
    return {"seconds": seconds, "flops": total.flops, "bytes": total.bytes,
            "compute_bound_share": compute / seconds if seconds else 0.0}


def against(measured_s: float, roof: dict) -> dict:
    """A measured time beside its roofline."""
    return {"measured_s": measured_s, "roofline_s": roof["seconds"], "fraction": roof["seconds"] / measured_s}


# --------------------------------------------------------------------------------------------------
# the LLaVA model's work


def decoder_params(t) -> dict[str, int]:
    """Matmul weights of the decoder (TextConfig): per layer, all layers, LM head."""
    d, hd = t.hidden_size, t.dim_per_head
    per_layer = d * hd * (2 * t.num_heads + 2 * t.num_kv_heads) + 3 * d * t.intermediate_size
    return {"per_layer": per_layer, "layers": t.num_layers * per_layer, "lm_head": d * t.vocab_size}


def vision_params(v) -> int:
    return v.num_layers * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)


def vision_forward(cfg, images: int, weight_bytes: int = F32) -> Work:
    """CLIP forward on `images` images (patches + CLS) and the projector."""
    v = cfg.vision
    p = v.num_patches + 1
    flops = images * (2 * vision_params(v) * p + 4 * v.num_layers * p * p * v.hidden_size
                      + 2 * v.hidden_size * cfg.text.hidden_size * v.num_patches)
    return Work(flops, weight_bytes * (vision_params(v) + v.hidden_size * cfg.text.hidden_size))


def decoder_forward(t, rows: int, new: int, context: float, *, logits_rows: int | None = None,
                    weight_bytes: int = F32, cache_bytes: int = F32) -> Work:
    """A decoder pass over `new` tokens per row that attend to `context` keys on average (causal prefill of T
    tokens: (T + 1) / 2), with logits for `logits_rows` positions per row (default: all `new`). Bytes: every
    weight once, and the keys and values of the context (read from a cache when new < context)."""
    w = decoder_params(t)
    logits = new if logits_rows is None else logits_rows
    tokens = rows * new
    flops = 2 * w["layers"] * tokens + 4 * t.num_layers * tokens * context * t.num_heads * t.dim_per_head
    flops += 2 * w["lm_head"] * rows * logits
    kv = 2 * t.num_layers * rows * t.num_kv_heads * t.dim_per_head * cache_bytes
    weights = w["layers"] + (w["lm_head"] if logits else 0)
    return Work(flops, weight_bytes * weights + kv * (context if new < context else new))


def generate_phases(cfg, batch: int, prompt: int, new_tokens: int, *, images: bool = True) -> list[Work]:
    """Greedy generation: vision tower, prefill of `prompt` tokens (logits of the last only), then one decode step
    per further token over a growing context."""
    t = cfg.text
    phases = [vision_forward(cfg, batch)] if images else []
    phases.append(decoder_forward(t, batch, prompt, (prompt + 1) / 2, logits_rows=1))
    phases += [decoder_forward(t, batch, 1, prompt + i) for i in range(1, new_tokens)]
    return phases


def train_forward_backward(cfg, rows: int, seq: int, *, trained: int, base_trained: bool = True,
                           logits_rows: int | None = None, weight_bytes: int = F32) -> Work:
    """Forward + backward of the LLaVA decoder (plus a frozen vision forward) over rows x seq tokens, with
    `trained` trained parameters. FLOPs: the decoder forward x3 when the base weights are trained (activation
    and weight gradients), x2 when only small adapters are (LoRA: activation gradients only), and the frozen
    vision forward; logits for `logits_rows` positions per row (default all; 0 for a value model). Bytes:
    weights read in both passes, the trained parameters' gradients written and read, and AdamW reading params,
    gradients and two moments and writing params and moments."""
    fwd = decoder_forward(cfg.text, rows, seq, (seq + 1) / 2, logits_rows=logits_rows)
    w = decoder_params(cfg.text)
    moved = weight_bytes * 2 * (w["layers"] + w["lm_head"]) + F32 * (2 + 7) * trained
    return Work((3 if base_trained else 2) * fwd.flops, moved) + vision_forward(cfg, rows)

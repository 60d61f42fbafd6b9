"""A tiny stand-in stage for the loop tests: an MLP next-token model with logical axes.

Independent of the LLaVA model so checkpoint / resume / accumulation / sharding tests only
exercise the loop. The data teach `next token = (token + 1) % vocab`, so the loss falls.
Env `TOY_SLOW_FROM=k`: every batch from index k on takes `TOY_SLOW_SECONDS` (default 0.5 s)
(lets subprocess tests signal a run while it is in the middle of training).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fact_rlhf_jax.train.defaults import base_config
from fact_rlhf_jax.train.losses import sft_loss_terms
from fact_rlhf_jax.train.stage import Stage

VOCAB, WIDTH, HIDDEN, SEQ = 16, 8, 16, 8


def toy_params(rng):
    k1, k2, k3 = jax.random.split(rng, 3)
    return {
        "embed": jax.random.normal(k1, (VOCAB, WIDTH)) * 0.5,
        "frozen_scale": jnp.ones((WIDTH,)) * 1.5,
        "mlp": {"w_in": jax.random.normal(k2, (WIDTH, HIDDEN)) / np.sqrt(WIDTH),
                "w_out": jax.random.normal(k3, (HIDDEN, VOCAB)) / np.sqrt(HIDDEN)},
    }


TOY_AXES = {
    "embed": ("vocab", "embed"),
    "frozen_scale": ("embed",),
    "mlp": {"w_in": ("embed", "mlp"), "w_out": ("mlp", None)},
}


def toy_logits(params, input_ids):
    """input_ids [B, T] -> logits [B, T, V]."""
    x = params["embed"][input_ids] * params["frozen_scale"]
    h = jnp.tanh(x @ params["mlp"]["w_in"])
    return h @ params["mlp"]["w_out"]


def toy_batch(seed: int, index: int, rows: int, process_index: int = 0) -> dict[str, np.ndarray]:
    """Deterministic batch `index`: counting sequences, right padding, first token unsupervised."""
    rng = np.random.default_rng([seed, process_index, index])
    start = rng.integers(0, VOCAB, size=(rows, 1))
    ids = (start + np.arange(SEQ)[None]) % VOCAB
    lengths = rng.integers(3, SEQ + 1, size=rows)
    mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, 0).astype(np.int32)
    labels = np.where(mask == 1, ids, -100).astype(np.int32)
    labels[:, 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class ToyIterator:
    def __init__(self, seed, rows, process_index):
        self.seed, self.rows, self.process_index, self.index = seed, rows, process_index, 0
        self.slow_from = int(os.environ.get("TOY_SLOW_FROM", "-1"))
        self.slow_seconds = float(os.environ.get("TOY_SLOW_SECONDS", "0.5"))

    def __iter__(self):
        return self

    def __next__(self):
        if 0 <= self.slow_from <= self.index:
            time.sleep(self.slow_seconds)
        batch = toy_batch(self.seed, self.index, self.rows, self.process_index)
        self.index += 1
        return batch

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = int(state["index"])


class ToyStage(Stage):
    name = "toy"

    def __init__(self, config=None):
        self.config = config

    def init_params(self, rng):
        return toy_params(rng)

    def param_axes(self):
        return TOY_AXES

    def loss(self, params, batch, rng):
        return sft_loss_terms(toy_logits(params, batch["input_ids"]), batch["labels"])

    def train_data(self, *, process_index, process_count, batch_size, seed):
        return ToyIterator(seed, batch_size, process_index)

    def eval_data(self, *, process_index, process_count, batch_size):
        return iter([toy_batch(10_000, i, batch_size, process_index) for i in range(2)])


def build_stage(config, workdir):
    return ToyStage(config)


def toy_config(**overrides) -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "tests.train.toy_stage"
    c.batch_size = 8
    c.num_steps = 6
    c.trainable = (".*",)
    c.frozen = ("frozen_scale",)
    c.optim.lr = 0.05
    c.optim.warmup_steps = 1
    c.checkpoint.every = 2
    c.checkpoint.keep = 10
    c.log_every = 1
    c.progress_bar = False
    c.tensorboard = False
    c.mesh = ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2))
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


def get_config(arg=None):
    return toy_config()

"""The DPO test config (a tiny run on the `tiny_world_and_sft` fixture) and a stage for subprocess tests.

Used as a config file too: `fact-rlhf train --config tests/train/dpo_fixtures.py --workdir W
--config.init.model=SFT --config.data.train="[(PREFS, IMAGES, 1.0)]"`. Env `DPO_SLOW_FROM=k`: every training
batch from index k on takes `DPO_SLOW_SECONDS` (default 1.0) longer, so a test can signal the run mid-way.
"""

from __future__ import annotations

import os
import time

import ml_collections

from fact_rlhf_jax.train import dpo, prerequisites


def dpo_test_config(sft: str = "", world: dict | None = None, **overrides) -> ml_collections.ConfigDict:
    c = dpo.default_config()
    c.stage = "tests.train.dpo_fixtures"
    c.init.model = sft
    if world is not None:
        c.data.train = [(world["preference"], world["images"], 1.0)]
    c.data.eval_size = 4
    c.data.max_text_length = 192
    c.data.length_buckets = ()  # one padded length: one compile
    c.data.read_threads = 0
    c.lora.rank = 4
    c.lora.alpha = 8.0
    c.batch_size = 8
    c.num_steps = 6
    c.optim.lr = 1e-2
    c.optim.warmup_steps = 1
    c.optim.eps = 1e-3  # far above float noise: runs on other meshes / process counts stay comparable
    c.checkpoint.every = 2
    c.checkpoint.keep = 10
    c.log_every = 1
    c.eval_every = -1
    c.progress_bar = False
    c.tensorboard = False
    c.mesh = ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2))
    for key, value in overrides.items():
        prerequisites._set(c, key, value)
    return c


class _SlowIterator:
    def __init__(self, inner, slow_from: int, seconds: float):
        self.inner, self.slow_from, self.seconds, self.index = inner, slow_from, seconds, 0

    def __iter__(self):
        return self

    def __next__(self):
        if 0 <= self.slow_from <= self.index:
            time.sleep(self.seconds)
        self.index += 1
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


class SlowDPOStage(dpo.DPOStage):
    def train_data(self, **kwargs):
        inner = super().train_data(**kwargs)
        slow_from = int(os.environ.get("DPO_SLOW_FROM", "-1"))
        return _SlowIterator(inner, slow_from, float(os.environ.get("DPO_SLOW_SECONDS", "1.0"))) if slow_from >= 0 else inner


def build_stage(config, workdir):
    return SlowDPOStage(config, workdir)


def get_config(arg=None):
    return dpo_test_config()

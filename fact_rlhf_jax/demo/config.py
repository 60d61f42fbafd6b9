"""Sizes and stage configs of `fact-rlhf demo`: one `DemoSettings` for the real run, one for `--smoke`."""

from __future__ import annotations

import dataclasses

import ml_collections

from fact_rlhf_jax.demo.evaluate import EvalSettings
from fact_rlhf_jax.demo.world import World


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """World size, SFT schedule and evaluation size of one demo run."""

    # world
    train_images: int
    eval_images: int
    sft_eval_images: int  # training images whose SFT records are held out (SFT eval loss)
    image_size: int
    noise: float  # share of SFT descriptions that mention an object not in the image
    seed: int = 0
    # model: a preset of models/config.py plus overrides (nested `text` / `vision` dicts)
    preset: str = "demo"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    max_text_length: int = 200
    # SFT
    sft_steps: int = 600
    sft_batch: int = 32
    sft_lr: float = 3e-3
    sft_warmup: int = 30
    # evaluation
    eval: EvalSettings = EvalSettings()


FULL = DemoSettings(train_images=2000, eval_images=200, sft_eval_images=50, image_size=48, noise=0.2)
SMOKE = DemoSettings(train_images=64, eval_images=16, sft_eval_images=8, image_size=48, noise=0.2,
                     sft_steps=12, sft_batch=8, sft_warmup=2,
                     eval=EvalSettings(batch_size=16, description_tokens=48, mmhal_tokens=48, mc_tokens=24,
                                       pope_tokens=16, resamples=200))


def sft_config(world: World, s: DemoSettings) -> ml_collections.ConfigDict:
    """The SFT stage on the demo world: everything trains from scratch, the vision tower included."""
    from fact_rlhf_jax.train.sft_config import sft_base

    c = sft_base()
    c.model.preset = s.preset
    c.model.overrides = dict(s.model_overrides)
    c.model.vocab_from_tokenizer = True
    c.model.image_token_from_tokenizer = True
    c.trainable = ("vision/.*", "projector/.*", "llm/.*")
    c.data.train = [(str(world.sft_train), str(world.path("images")), 1.0)]
    c.data.eval = [(str(world.sft_eval), str(world.path("images")), 1.0)] if s.sft_eval_images else []
    c.data.tokenizer = str(world.path("tokenizer"))
    c.data.template = "vicuna_v1"
    c.data.max_text_length = s.max_text_length
    c.data.read_threads = 0
    c.seed = s.seed
    c.batch_size = s.sft_batch
    c.grad_accum = 1
    c.num_steps = s.sft_steps
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.optim.lr = s.sft_lr
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = s.sft_warmup
    c.optim.end_lr_ratio = 0.05
    c.optim.weight_decay = 0.0
    c.checkpoint.every = max(1, s.sft_steps // 4)
    c.checkpoint.keep = 1
    c.log_every = max(1, min(20, s.sft_steps // 10))
    c.eval_every = max(1, s.sft_steps // 4)
    c.eval_batches = -1
    c.progress_bar = False
    c.tensorboard = False
    return c

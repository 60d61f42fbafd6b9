"""Sizes and stage configs of `fact-rlhf demo`: one `DemoSettings` for the real run, one for `--smoke`."""

from __future__ import annotations

import dataclasses

import ml_collections

from fact_rlhf_jax.demo.evaluate import EvalSettings
from fact_rlhf_jax.demo.world import World


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One training stage: updates, global batch, peak lr (linear warmup, cosine decay to 5 %), text tokens."""

    steps: int
    batch: int
    lr: float
    warmup: int
    max_text_length: int


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """World size, model, training schedules and evaluation of one demo run."""

    # world
    train_images: int
    eval_images: int
    sft_eval_images: int  # training images held out of pretraining and SFT (the SFT eval loss)
    image_size: int
    noise: float  # share of SFT descriptions that mention an object not in the image
    # the two training stages (captions with the plain template, then SFT)
    pretrain: Schedule
    sft: Schedule
    seed: int = 0
    # model: a preset of models/config.py plus overrides (nested `text` / `vision` dicts)
    preset: str = "demo"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    eval: EvalSettings = EvalSettings()


FULL = DemoSettings(
    train_images=2000, eval_images=200, sft_eval_images=50, image_size=48, noise=0.2,
    pretrain=Schedule(steps=800, batch=32, lr=3e-3, warmup=30, max_text_length=48),
    sft=Schedule(steps=400, batch=16, lr=3e-3, warmup=20, max_text_length=128),
)
SMOKE = DemoSettings(
    train_images=64, eval_images=16, sft_eval_images=8, image_size=48, noise=0.2,
    pretrain=Schedule(steps=6, batch=8, lr=3e-3, warmup=1, max_text_length=48),
    sft=Schedule(steps=8, batch=8, lr=3e-3, warmup=1, max_text_length=128),
    eval=EvalSettings(batch_size=16, description_tokens=48, mmhal_tokens=48, mc_tokens=24, pope_tokens=16,
                      resamples=200),
)


def _training_config(world: World, s: DemoSettings, schedule: Schedule) -> ml_collections.ConfigDict:
    """The SFT stage's config on the demo world, everything trainable (the vision tower from scratch)."""
    from fact_rlhf_jax.train.sft import default_config as sft_base

    c = sft_base()
    c.model.preset = s.preset
    c.model.overrides = dict(s.model_overrides)
    c.model.vocab_from_tokenizer = True
    c.model.image_token_from_tokenizer = True
    c.trainable = ("vision/.*", "projector/.*", "llm/.*")
    c.data.tokenizer = str(world.path("tokenizer"))
    c.data.max_text_length = schedule.max_text_length
    c.data.read_threads = 0
    c.seed = s.seed
    c.batch_size = schedule.batch
    c.grad_accum = 1
    c.num_steps = schedule.steps
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.optim.lr = schedule.lr
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = schedule.warmup
    c.optim.end_lr_ratio = 0.05
    c.optim.weight_decay = 0.0
    c.checkpoint.every = max(1, schedule.steps // 4)
    c.checkpoint.keep = 1
    c.log_every = max(1, min(20, schedule.steps // 10))
    c.eval_every = max(1, schedule.steps // 2)
    c.eval_batches = -1
    c.progress_bar = False
    c.tensorboard = False
    return c


def pretrain_config(world: World, s: DemoSettings) -> ml_collections.ConfigDict:
    """Stage 1 of LLaVA on the demo world: one caption per training image with the `plain` template
    (`<image>caption`), so nearly every supervised token depends on the image."""
    c = _training_config(world, s, s.pretrain)
    c.data.train = [(str(world.pretrain_train), str(world.path("images")), 1.0)]
    c.data.eval = [(str(world.pretrain_eval), str(world.path("images")), 1.0)] if s.sft_eval_images else []
    c.data.template = "plain"
    return c


def sft_config(world: World, s: DemoSettings, init_from: str = "") -> ml_collections.ConfigDict:
    """SFT on the world's conversations (`vicuna_v1`), starting from the params of `init_from` (a workdir)."""
    c = _training_config(world, s, s.sft)
    c.data.train = [(str(world.sft_train), str(world.path("images")), 1.0)]
    c.data.eval = [(str(world.sft_eval), str(world.path("images")), 1.0)] if s.sft_eval_images else []
    c.data.template = "vicuna_v1"
    c.init.params_from = init_from
    return c

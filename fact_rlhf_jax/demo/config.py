"""Sizes and stage configs of `fact-rlhf demo`: one `DemoSettings` for the real run, one for `--smoke`."""

from __future__ import annotations

import dataclasses

import ml_collections

from fact_rlhf_jax.demo.evaluate import EvalSettings
from fact_rlhf_jax.demo.preferences import PairSchedule
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
class PPOSchedule:
    """One PPO run: `steps` rollouts of `rollout` prompts, each updated over in minibatches of `minibatch` for
    `epochs` passes; LoRA `rank` on the policy (and on the value model, copied from the reward model's)."""

    steps: int
    rollout: int
    minibatch: int
    epochs: int
    lr: float
    max_new_tokens: int
    kl_coef: float = 0.1
    rank: int = 16


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """The reward-model probe (`demo/reward_probe.py`): `samples` descriptions (T = 1, up to `max_new_tokens`) from
    the SFT model for each of the first `images` eval images, ranked by every reward model."""

    images: int = 100
    samples: int = 8
    max_new_tokens: int = 96


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """World size, model, training schedules and evaluation of one demo run."""

    # world
    train_images: int
    eval_images: int
    sft_eval_images: int  # training images held out of pretraining and SFT (the SFT eval loss)
    image_size: int
    noise: float  # share of SFT descriptions that mention an object not in the image
    # SFT conversations: an image's records merged into one, plus this many questions about the scene, so the
    # model reads its image and earlier turns across the ~400 tokens of a reward-model input (demo/world.py)
    sft_extra_qa: int
    # the three training stages of the SFT model: the vision tower on caption tags, captions with the plain
    # template (vision frozen), then SFT (everything trains)
    vision: Schedule
    pretrain: Schedule
    sft: Schedule
    # RLHF: preference pairs sampled from the SFT model and labelled by the annotator (`pairs`,
    # demo/preferences.py); both reward models (vanilla and factual) train on them with `reward`, PPO runs
    # twice with `ppo`, DPO on the same pairs with `dpo`
    pairs: PairSchedule
    reward: Schedule
    ppo: PPOSchedule
    dpo: Schedule
    label_noise: float = 0.0  # share of preference labels flipped
    reward_eval_pairs: int = 200  # preference pairs held out of reward-model training (their accuracy is reported)
    reward_rank: int = 32
    dpo_beta: float = 0.1
    seed: int = 0
    # model: a preset of models/config.py plus overrides (nested `text` / `vision` dicts)
    preset: str = "demo"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    eval: EvalSettings = EvalSettings()
    probe: ProbeSettings = ProbeSettings()


REFERENCE_MAX_NEW_TOKENS = 896  # LLaVA-RLHF's PPO responses (reference section 5)

FULL = DemoSettings(
    train_images=4000, eval_images=200, sft_eval_images=50, image_size=48, noise=0.2, sft_extra_qa=8,
    vision=Schedule(steps=2000, batch=64, lr=1e-3, warmup=50, max_text_length=0),
    pretrain=Schedule(steps=800, batch=32, lr=3e-3, warmup=30, max_text_length=48),
    sft=Schedule(steps=250, batch=16, lr=3e-3, warmup=20, max_text_length=448),
    # the RLHF stages are sized so that the run stays under 15 minutes on 2 vCPUs when the machine is ~20 % slower
    # than its best (13-14 min measured; docs/demo.md "third stop")
    pairs=PairSchedule(prompts=1700, samples=4),
    reward=Schedule(steps=56, batch=16, lr=2e-3, warmup=5, max_text_length=512),
    ppo=PPOSchedule(steps=24, rollout=32, minibatch=16, epochs=2, lr=1e-3, max_new_tokens=96),
    dpo=Schedule(steps=48, batch=16, lr=5e-4, warmup=5, max_text_length=256),
    probe=ProbeSettings(images=64),
)
SMOKE = DemoSettings(
    train_images=64, eval_images=16, sft_eval_images=8, image_size=48, noise=0.2, sft_extra_qa=8,
    vision=Schedule(steps=4, batch=8, lr=1e-3, warmup=1, max_text_length=0),
    pretrain=Schedule(steps=6, batch=8, lr=3e-3, warmup=1, max_text_length=48),
    sft=Schedule(steps=8, batch=8, lr=3e-3, warmup=1, max_text_length=448),
    pairs=PairSchedule(prompts=64, samples=4, max_new_tokens=24, batch_size=32),
    # batches of 8: they split over the 8 fake devices of the test suite
    reward=Schedule(steps=3, batch=8, lr=2e-3, warmup=1, max_text_length=512),
    ppo=PPOSchedule(steps=2, rollout=8, minibatch=8, epochs=1, lr=1e-3, max_new_tokens=24, rank=4),
    dpo=Schedule(steps=2, batch=8, lr=5e-4, warmup=1, max_text_length=256),
    reward_eval_pairs=8, reward_rank=4,
    eval=EvalSettings(batch_size=16, description_tokens=48, mmhal_tokens=48, mc_tokens=24, pope_tokens=16,
                      resamples=200),
    probe=ProbeSettings(images=4, samples=2, max_new_tokens=24),
)


def _common(c: ml_collections.ConfigDict, s: DemoSettings, schedule: Schedule | PPOSchedule,
            warmup: int) -> ml_collections.ConfigDict:
    """What every demo training stage shares: one process over every local device, cosine to 5 %, quiet logs."""
    c.seed = s.seed
    c.batch_size = schedule.batch if isinstance(schedule, Schedule) else schedule.rollout
    c.grad_accum = 1
    c.num_steps = schedule.steps
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.optim.lr = schedule.lr
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = warmup
    c.optim.end_lr_ratio = 0.05
    c.optim.weight_decay = 0.0
    c.checkpoint.every = max(1, schedule.steps // 4)
    c.checkpoint.keep = 1
    c.log_every = max(1, min(20, schedule.steps // 10))
    c.progress_bar = False
    c.tensorboard = False
    return c


def _training_config(world: World, s: DemoSettings, schedule: Schedule) -> ml_collections.ConfigDict:
    """The base of the demo's model-training stages on the demo world (each stage sets what trains)."""
    from fact_rlhf_jax.train.sft import default_config as sft_base

    c = sft_base()
    c.model.preset = s.preset
    c.model.overrides = dict(s.model_overrides)
    c.model.vocab_from_tokenizer = True
    c.model.image_token_from_tokenizer = True
    c.data.tokenizer = str(world.path("tokenizer"))
    c.data.max_text_length = schedule.max_text_length
    c.data.read_threads = 0
    _common(c, s, schedule, schedule.warmup)
    c.eval_every = max(1, schedule.steps // 2)
    c.eval_batches = -1
    return c


def vision_config(world: World, s: DemoSettings) -> ml_collections.ConfigDict:
    """The vision tower from scratch on the colour-shape names of each training image's captions
    (`demo/vision_stage.py`); the images held out of SFT are held out here too (`eval/precision`, `eval/recall`)."""
    from fact_rlhf_jax.demo import vision_stage
    from fact_rlhf_jax.shapesworld.writer import image_file

    c = _training_config(world, s, s.vision)
    c.stage = "fact_rlhf_jax.demo.vision_stage"
    c.trainable = vision_stage.TRAINABLE
    c.data.captions = str(world.path("captions"))
    c.data.images = str(world.path("images"))
    c.data.held_out = [image_file(i) for i in range(s.train_images - s.sft_eval_images, s.train_images)]
    c.optim.clip_norm = 1.0
    return c


def pretrain_config(world: World, s: DemoSettings, init_from: str = "") -> ml_collections.ConfigDict:
    """Stage 1 of LLaVA on the demo world: one caption per training image with the `plain` template
    (`<image>caption`), so nearly every supervised token depends on the image; the vision tower of `init_from`
    (the vision stage's workdir) stays frozen, as CLIP does in LLaVA."""
    c = _training_config(world, s, s.pretrain)
    c.trainable = ("projector/.*", "llm/.*")
    c.init.params_from = init_from
    c.data.train = [(str(world.pretrain_train), str(world.path("images")), 1.0)]
    c.data.eval = [(str(world.pretrain_eval), str(world.path("images")), 1.0)] if s.sft_eval_images else []
    c.data.template = "plain"
    return c


def sft_config(world: World, s: DemoSettings, init_from: str = "") -> ml_collections.ConfigDict:
    """SFT on the world's conversations (`vicuna_v1`), starting from the params of `init_from` (a workdir); the
    vision tower stays frozen, as CLIP does in LLaVA's SFT (trained here, its held-out descriptions hallucinated
    more: docs/demo.md)."""
    c = _training_config(world, s, s.sft)
    c.trainable = ("projector/.*", "llm/.*")
    c.data.train = [(str(world.sft_train), str(world.path("images")), 1.0)]
    c.data.eval = [(str(world.sft_eval), str(world.path("images")), 1.0)] if s.sft_eval_images else []
    c.data.template = "vicuna_v1"
    c.init.params_from = init_from
    return c


def reward_config(world: World, s: DemoSettings, sft_dir: str, pairs: str, *,
                  factual: bool) -> ml_collections.ConfigDict:
    """A reward model (LoRA + scalar head on the frozen SFT model) on the preference file `pairs`: the
    Fact-RM (`factual`: the instruction lists the image's captions) or the vanilla one (no facts)."""
    from fact_rlhf_jax.train import reward

    c = _common(reward.default_config(), s, s.reward, s.reward.warmup)
    c.reward.prompt = "fact_rlhf" if factual else "vanilla"
    c.init.model = sft_dir
    c.num_epochs = 100.0  # `steps` decides; the pairs repeat when they run out
    c.data.train = [(pairs, str(world.path("images")), 1.0)]
    c.data.captions = str(world.path("captions"))
    c.data.eval_size = s.reward_eval_pairs
    c.data.max_text_length = s.reward.max_text_length
    # inputs are ~300-450 tokens: fine buckets instead of padding everything to 512 (attention is quadratic)
    c.data.length_buckets = tuple(range(64, s.reward.max_text_length + 1, 64))
    c.data.read_threads = 0
    c.lora.rank = s.reward_rank
    c.lora.alpha = float(s.reward_rank)
    c.optim.clip_norm = 1.0
    c.eval_every = s.reward.steps  # the held-out accuracy once, at the end
    return c


def ppo_config(world: World, s: DemoSettings, sft_dir: str, reward_dir: str) -> ml_collections.ConfigDict:
    """PPO of a LoRA policy on the SFT model against the reward model in `reward_dir`, on the world's PPO
    prompts (descriptions, yes/no, counting and multiple choice, with the reference's symbolic rewards)."""
    from fact_rlhf_jax.train import ppo

    p = s.ppo
    c = _common(ppo.default_config(), s, p, 2)
    c.init.policy = sft_dir
    c.init.reward = reward_dir
    c.data.train = [(str(world.path("ppo_prompts")), str(world.path("images")), 1.0)]
    c.data.captions = str(world.path("captions"))
    c.data.query_len = 64
    c.data.instruction_length = 256  # the evaluation instruction with the facts: ~130 + ~100 tokens
    c.data.read_threads = 0
    c.ppo.step_batch_size = p.minibatch
    c.ppo.noptepochs = p.epochs
    c.ppo.max_new_tokens = p.max_new_tokens
    c.ppo.kl_coef = p.kl_coef
    # rewards unscaled: x10 (the reference) makes the fresh value head's loss dominate the shared gradient clip
    c.ppo.reward_scale = 1.0
    # the length term is -10 * n / max_new_tokens * length_bonus: scaled so one response token earns what it
    # earns under the reference's 896 new tokens (at 96, the reference's -10 pays 9x more per token and the
    # length term outweighs the reward model)
    c.ppo.length_bonus_score = -10.0 * p.max_new_tokens / REFERENCE_MAX_NEW_TOKENS
    c.ppo.save_rollouts_every = max(1, p.steps // 3)
    c.lora.rank = p.rank
    c.lora.alpha = float(p.rank)
    c.num_epochs = 100.0  # `steps` decides; the prompt stream repeats when it runs out
    c.log_every = 1
    return c


def dpo_config(world: World, s: DemoSettings, sft_dir: str, pairs: str) -> ml_collections.ConfigDict:
    """DPO of a LoRA policy on the SFT model against the frozen SFT model, on the preference file `pairs`."""
    from fact_rlhf_jax.train import dpo

    c = _common(dpo.default_config(), s, s.dpo, s.dpo.warmup)
    c.init.model = sft_dir
    c.num_epochs = 100.0
    c.data.train = [(pairs, str(world.path("images")), 1.0)]
    c.data.eval_size = s.reward_eval_pairs
    c.data.max_text_length = s.dpo.max_text_length
    c.data.length_buckets = tuple(range(64, s.dpo.max_text_length + 1, 64))
    c.data.read_threads = 0
    c.dpo.beta = s.dpo_beta
    c.lora.rank = s.reward_rank
    c.lora.alpha = float(s.reward_rank)
    c.eval_every = s.dpo.steps
    return c

"""The 7B-224 and 13B-336 SFT configs carry the reference recipe (shared/reference/llava_rlhf.md, 2.2)."""

import re

import pytest

from fact_rlhf_jax import config as config_lib
from fact_rlhf_jax.models import config as mcfg


@pytest.mark.parametrize("path,preset,image_size,width", [
    ("configs/sft/llava_7b_224.py", "llava_7b_224", 224, 4096),
    ("configs/sft/llava_13b_336.py", "llava_13b_336", 336, 5120),
])
def test_reference_sft_recipe(path, preset, image_size, width):
    c = config_lib.load(path)
    assert c.model.preset == preset
    m = mcfg.preset(preset)
    assert m.vision.image_size == image_size and m.text.hidden_size == width and m.projector == "linear"
    assert m.vision_feature_layer == -2 and m.num_image_tokens == (image_size // 14) ** 2
    assert (c.optim.lr, c.num_epochs, c.batch_size, c.data.max_text_length) == (2e-5, 3.0, 128, 1280)
    assert (c.optim.schedule, c.optim.warmup_ratio, c.optim.weight_decay) == ("cosine", 0.03, 0.0)
    assert c.data.template == "vicuna_v1"
    trains = lambda p: any(re.fullmatch(r, p) for r in c.trainable)
    assert trains("projector/w") and trains("llm/layers/attn/q") and not trains("vision/layers/attn/q/w")


@pytest.mark.parametrize("path,preset", [("configs/sft/policy_init_7b_224.py", "llava_7b_224"),
                                         ("configs/sft/policy_init_13b_336.py", "llava_13b_336")])
def test_reference_policy_init_recipe(path, preset):
    """Section 4: LoRA r64/alpha16 on the 7 projections of the SFT model, lr 1e-4, 1 epoch, batch 128, cosine 3 %."""
    c = config_lib.load(path)
    assert c.model.preset == preset and c.init.params_from
    assert (c.lora.rank, c.lora.alpha, tuple(c.lora.targets)) == (64, 16.0, ("q", "k", "v", "o", "gate", "up", "down"))
    assert (c.optim.lr, c.num_epochs, c.batch_size, c.optim.schedule, c.optim.warmup_ratio) == \
        (1e-4, 1.0, 128, "cosine", 0.03)
    assert tuple(c.trainable) == ("lora/.*",) and "reward10k-aokvqa5k" in c.data.train[0][0]


@pytest.mark.parametrize("path", ["configs/rm/llava_7b_224.py", "configs/rm/llava_13b_336.py"])
def test_reference_reward_model_recipe(path):
    """Section 3.3: LoRA r64/alpha16 + head, lr 2e-5 constant after warmup, 32 pairs/step, clip 0.3, eval and
    save every 50 steps, stop at step 200, Fact-RLHF prompt with image_to_caption.json, 500 held out (seed 42)."""
    c = config_lib.load(path)
    assert c.stage == "reward" and (c.lora.rank, c.lora.alpha) == (64, 16.0)
    assert (c.optim.lr, c.optim.schedule, c.batch_size, c.optim.clip_norm, c.optim.weight_decay) == \
        (2e-5, "constant", 32, 0.3, 0.0)
    assert (c.num_steps, c.checkpoint.every, c.eval_every) == (200, 50, 50)
    assert c.reward.prompt == "fact_rlhf" and c.data.captions.endswith("image_to_caption.json")
    assert (c.data.eval_size, c.data.split_seed, c.data.max_text_length) == (500, 42, 2048)
    assert c.reward.center_coef == 1e-3 and tuple(c.trainable) == ("lora/.*", "head/.*")


@pytest.mark.parametrize("path", ["configs/ppo/llava_7b_224.py", "configs/ppo/llava_13b_336.py"])
def test_reference_ppo_recipe(path):
    """Section 5: rollout 512, step 256, 2 PPO epochs, 4 data epochs, lr 3e-5 cosine with 5 warmup steps, 896
    new tokens at T=1, KL 0.1 (k1), -8 without EOS, length -10, symbolic +2, rewards x10, gamma = lambda = 1,
    clips 0.2, vf_coef 0.1, grad clip 1.0, prompts up to 128 tokens."""
    c = config_lib.load(path)
    p = c.ppo
    assert (c.batch_size, p.step_batch_size, p.noptepochs, c.num_epochs) == (512, 256, 2, 4.0)
    assert (c.optim.lr, c.optim.schedule, c.optim.warmup_steps, c.optim.clip_norm) == (3e-5, "cosine", 5, 1.0)
    assert (p.max_new_tokens, p.temperature, p.top_p, c.data.query_len) == (896, 1.0, 1.0, 128)
    assert (p.kl_coef, p.kl_estimator, p.stop_penalty, p.relative_stop_penalty) == (0.1, "k1", -8.0, True)
    assert (p.length_bonus_score, p.correct_bonus_score, p.reward_scale, p.whiten_rewards) == (-10.0, 2.0, 10.0, False)
    assert (p.gamma, p.lam, p.cliprange, p.cliprange_value, p.vf_coef) == (1.0, 1.0, 0.2, 0.2, 0.1)
    assert p.whiten_advantages and tuple(p.extra_stop_ids) == () and c.init.policy and c.init.reward
    assert 256 % c.grad_accum == 0 and "ppo50k" in c.data.train[0][0]

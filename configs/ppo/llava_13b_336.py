"""Fact-RLHF PPO of the 13B CLIP-336 policy with the 13B Fact-RM (reference 13b-v1.5-336 `train_rl_model.sh`).

All four roles (policy, reference, value, reward) share one frozen bf16 13B base.

  fact-rlhf train --config configs/ppo/llava_13b_336.py --workdir gs://.../ppo_13b \
      --config.init.policy=gs://.../policy_init_13b --config.init.reward=gs://.../rm_13b

The recipe is `reference_ppo` in common.py. On 64 TPU v5e chips (16 GiB each) it fits with a row per chip in
every pass and the rollouts sampled 256 prompts at a time (README, "The RLHF recipes"; same update):

  --config.grad_accum=4 --config.ppo.scoring_batch_size=64 --config.ppo.rollout_chunk_size=256
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("ppo_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    return common.reference_ppo("runs/policy_init_13b", "runs/rm_13b", policy_preset="llava_13b_336",
                                reward_preset="llava_13b_336", rollout_rows_per_pass=32)

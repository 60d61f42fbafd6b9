"""Fact-RLHF PPO of the 7B CLIP-224 policy with the 13B CLIP-336 Fact-RM (reference 7b-v1.5-224 `train_rl_model.sh`).

Two frozen bf16 bases: the 7B one under the policy and the reference, the 13B one under the value model and the
reward model; each role's image is preprocessed at its tower's size (224 / 336 px).

  fact-rlhf train --config configs/ppo/llava_7b_224.py --workdir gs://.../ppo_7b \
      --config.init.policy=gs://.../policy_init_7b --config.init.reward=gs://.../rm_13b

The recipe is `reference_ppo` in common.py.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("ppo_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    return common.reference_ppo("runs/policy_init_7b", "runs/rm_13b", policy_preset="llava_7b_224",
                                reward_preset="llava_13b_336", rollout_rows_per_pass=64)

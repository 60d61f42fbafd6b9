"""Tiny PPO with Fact-RLHF rewards on CPU: a ShapesWorld, the tiny SFT model (the policy) and a tiny Fact-RM
are prepared inside the workdir (reused when present).

fact-rlhf train --config configs/ppo/tiny.py --workdir /tmp/ppo_tiny
"""

from fact_rlhf_jax.train import ppo


def get_config(arg=None):
    return ppo.tiny_config()

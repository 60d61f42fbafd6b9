"""Tiny SFT on CPU: a ShapesWorld written into the workdir, the `tiny` LLaVA, a few dozen steps.

fact-rlhf train --config configs/sft/tiny.py --workdir /tmp/sft_tiny

The recipe lives in the package (`fact_rlhf_jax.train.sft.tiny_config`) because the tiny reward-model, PPO
and DPO configs train this model as their starting point.
"""

from fact_rlhf_jax.train import sft


def get_config(arg=None):
    return sft.tiny_config()

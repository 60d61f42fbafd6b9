"""Tiny Fact-RM on CPU: a ShapesWorld (label noise 0) and a tiny SFT model prepared inside the workdir.

fact-rlhf train --config configs/rm/tiny.py --workdir /tmp/rm_tiny                 # Fact-RM (facts in the prompt)
fact-rlhf train --config configs/rm/tiny.py:vanilla --workdir /tmp/rm_tiny_vanilla # the same without facts

The world, the SFT model and every training setting are the same for both; only the instruction differs.
The recipe lives in the package (`fact_rlhf_jax.train.reward.tiny_config`): the tiny PPO config trains it too.
"""

from fact_rlhf_jax.train import reward


def get_config(arg=None):
    arg = arg or "factual"
    if arg not in ("factual", "vanilla"):
        raise ValueError(f"configs/rm/tiny.py: argument {arg!r}; expected factual or vanilla")
    return reward.tiny_config(factual=arg == "factual")

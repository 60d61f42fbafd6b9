"""Tiny Fact-RM on CPU: a ShapesWorld (label noise 0) and a tiny SFT model prepared inside the workdir.

fact-rlhf train --config configs/rm/tiny.py --workdir /tmp/rm_tiny                 # Fact-RM (facts in the prompt)
fact-rlhf train --config configs/rm/tiny.py:vanilla --workdir /tmp/rm_tiny_vanilla # the same without facts

The world, the SFT model and every training setting are the same for both; only the instruction differs.
"""

from fact_rlhf_jax.train import reward


def get_config(arg=None):
    arg = arg or "factual"
    if arg not in ("factual", "vanilla"):
        raise ValueError(f"configs/rm/tiny.py: argument {arg!r}; expected factual or vanilla")
    c = reward.default_config()
    c.reward.prompt = "fact_rlhf" if arg == "factual" else "vanilla"
    c.data.shapesworld.num_images = 2000
    c.data.shapesworld.image_size = 56
    c.data.shapesworld.label_noise = 0.0
    c.data.eval_size = 200
    c.data.max_text_length = 512
    c.data.read_threads = 0
    c.lora.rank = 32
    c.lora.alpha = 32.0
    c.batch_size = 32
    c.num_steps = 300
    c.optim.lr = 2e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 10
    c.optim.clip_norm = 1.0
    c.mesh.fsdp = -1
    c.checkpoint.every = 100
    c.checkpoint.keep = 2
    c.log_every = 10
    c.eval_every = 100
    return c

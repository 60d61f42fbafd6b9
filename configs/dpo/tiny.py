"""Tiny DPO on CPU: a ShapesWorld (label noise 0) and a tiny SFT model prepared inside the workdir.

fact-rlhf train --config configs/dpo/tiny.py --workdir /tmp/dpo_tiny            # LoRA policy on the frozen SFT model
fact-rlhf train --config configs/dpo/tiny.py:full --workdir /tmp/dpo_tiny_full  # full fine-tuning of the LLM
fact-rlhf train --config configs/dpo/tiny.py:ipo --workdir /tmp/dpo_tiny_ipo    # IPO loss, LoRA

In ShapesWorld's pairs the preferred answer is the more faithful one. On 2 CPU cores a run takes a few minutes (the
world and the 40-step SFT model included); after 60 steps the implicit-reward accuracy on the 64 held-out pairs
(`eval/accuracy` in metrics.jsonl) is about 0.7 for all three variants, with the held-out loss below its start
(log 2 for DPO, 0.25 for IPO). The tiny SFT model is weak (28-px images): larger learning rates make the DPO
policy drift into degenerate text, which `fact-rlhf generate --model WORKDIR` shows.
"""

from fact_rlhf_jax.train import dpo

VARIANTS = ("lora", "full", "ipo")


def get_config(arg=None):
    arg = arg or "lora"
    if arg not in VARIANTS:
        raise ValueError(f"configs/dpo/tiny.py: argument {arg!r}; expected one of {VARIANTS}")
    c = dpo.default_config()
    c.init.preset = "tiny"  # `fact-rlhf plan` without the prepared SFT model
    c.data.shapesworld.num_images = 600
    c.data.shapesworld.image_size = 56
    c.data.shapesworld.label_noise = 0.0
    c.data.eval_size = 64
    c.data.max_text_length = 192
    c.data.length_buckets = (64, 128)
    c.data.read_threads = 0
    c.lora.rank = 8
    c.lora.alpha = 16.0
    c.dpo.beta = 0.1
    c.batch_size = 16
    c.num_steps = 60
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 5
    c.optim.weight_decay = 0.0
    if arg == "full":
        c.lora.rank = 0
        c.trainable = ("llm/.*",)
        c.optim.lr = 1e-4
    if arg == "ipo":
        c.dpo.loss = "ipo"
        c.dpo.average_log_probs = True  # per-token means, as TRL's IPO: h is in nats per token
        c.dpo.beta = 1.0  # target h = 1 / (2 beta) = 0.5
        c.optim.lr = 1e-3
    c.mesh.fsdp = -1
    c.checkpoint.every = 30
    c.checkpoint.keep = 2
    c.log_every = 5
    c.eval_every = 30
    return c

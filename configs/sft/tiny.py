"""Tiny SFT on CPU: a ShapesWorld written into the workdir, the `tiny` LLaVA, a few dozen steps.

fact-rlhf train --config configs/sft/tiny.py --workdir /tmp/sft_tiny
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sft_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    c = common.sft_base()
    c.model.preset = "tiny"
    c.model.vocab_from_tokenizer = True  # the ShapesWorld tokenizer's vocabulary
    c.model.image_token_from_tokenizer = True
    c.data.shapesworld.num_images = 48
    c.data.shapesworld.image_size = 56
    c.data.max_text_length = 192
    c.data.read_threads = 0
    c.batch_size = 8
    c.grad_accum = 1
    c.num_steps = 40
    c.mesh.fsdp = -1  # every local device (1 on a plain CPU)
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 4
    c.optim.weight_decay = 0.0
    c.checkpoint.every = 20  # two checkpoints per run (20, 40)
    c.checkpoint.keep = 2
    c.log_every = 5
    c.eval_every = 20
    c.eval_batches = 4
    return c

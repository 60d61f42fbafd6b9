"""Stage 0: projector pretraining (reference `SFT/scripts/*/pretrain.sh`).

Only the linear projector trains (CLIP and Vicuna frozen) on BLIP-LAION-CC-SBU-558k captions with
the `plain` template (`<image>` + caption + newline); lr 2e-3, 1 epoch, global batch 128, cosine,
3 % warmup, no weight decay, model max length 2048.

  fact-rlhf train --config configs/sft/pretrain_projector.py:7b --workdir DIR \
    --config.init.hf_llm=/path/to/vicuna-7b-v1.5 --config.init.hf_clip=/path/to/clip-vit-large-patch14
  (argument: 7b -> llava_7b_224 (default), 13b -> llava_13b_336, tiny -> ShapesWorld on CPU)
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sft_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

PRESETS = {"7b": "llava_7b_224", "13b": "llava_13b_336", "tiny": "tiny"}


def get_config(arg=None):
    arg = arg or "7b"
    if arg not in PRESETS:
        raise ValueError(f"pretrain_projector.py: argument {arg!r}; expected one of {sorted(PRESETS)}")
    c = common.sft_base()
    c.model.preset = PRESETS[arg]
    c.trainable = ("projector/.*",)
    c.data.template = "plain"
    c.data.train = [("data/llava_pretrain/blip_laion_cc_sbu_558k.json", "data/llava_pretrain/images", 1.0)]
    c.data.tokenizer = "checkpoints/vicuna-7b-v1.5" if arg == "7b" else "checkpoints/vicuna-13b-v1.5"
    c.data.max_text_length = 2048
    c.batch_size = 128
    c.grad_accum = 1
    c.num_epochs = 1.0
    c.optim.lr = 2e-3
    c.optim.warmup_ratio = 0.03
    c.optim.weight_decay = 0.0
    c.checkpoint.every = 1000
    c.checkpoint.keep = 1
    if arg == "tiny":
        c.model.vocab_from_tokenizer = True
        c.model.image_token_from_tokenizer = True
        c.data.shapesworld.num_images = 48
        c.data.max_text_length = 128
        c.data.read_threads = 0
        c.batch_size = 8
        c.num_steps = 20
        c.checkpoint.every = 10
        c.log_every = 5
    return c

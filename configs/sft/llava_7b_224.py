"""LLaVA-SFT+ 7B, CLIP ViT-L/14 at 224 px (reference `SFT/scripts/7b-v1.5-224/sft.sh`).

Full fine-tune of projector + Vicuna-7B v1.5, CLIP frozen; lr 2e-5, 3 epochs, global batch 128,
cosine with 3 % warmup, no weight decay, max length 1280 text tokens (the image counts as one),
bfloat16 weights and compute, rematerialised layers. Start from the projector-pretraining run:

  fact-rlhf train --config configs/sft/llava_7b_224.py --workdir gs://.../sft7b \
    --config.init.params_from=gs://.../pretrain7b \
    --config.data.tokenizer=/path/to/vicuna-7b-v1.5

or from HF weights with --config.init.hf_llm=/path/to/vicuna-7b-v1.5
--config.init.hf_clip=/path/to/clip-vit-large-patch14 (then the projector starts random).
The mixture is `mix-llava-sft90k-vqav2_83k-okvqa_16k-flickr_23k.json`.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sft_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    return common.reference_sft("llava_7b_224", "checkpoints/vicuna-7b-v1.5", grad_accum=4)  # 32 sequences per pass

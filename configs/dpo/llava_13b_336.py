"""DPO of LLaVA-SFT+ 13B (CLIP ViT-L/14, 336 px) on LLaVA-RLHF's 10k human preference pairs, LoRA on a bf16 base.

  fact-rlhf train --config configs/dpo/llava_13b_336.py --workdir gs://.../dpo13b \
    --config.init.model.path=/ckpt/LLaVA-RLHF-13b-v1.5-336/sft_model \
    --config.init.model.vision_tower=/ckpt/clip-vit-large-patch14-336

The recipe and where each number comes from: configs/dpo/common.py (the same as the 7B config; only the
starting point differs).
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("dpo_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    return common.reference_dpo("checkpoints/LLaVA-RLHF-13b-v1.5-336/sft_model",
                                "checkpoints/clip-vit-large-patch14-336", "llava_13b_336")

"""DPO of LLaVA-SFT+ 7B (CLIP ViT-L/14, 224 px) on LLaVA-RLHF's 10k human preference pairs, LoRA on a bf16 base.

  fact-rlhf train --config configs/dpo/llava_7b_224.py --workdir gs://.../dpo7b \
    --config.init.model.path=/ckpt/LLaVA-RLHF-7b-v1.5-224/sft_model \
    --config.init.model.vision_tower=/ckpt/clip-vit-large-patch14

The recipe and where each number comes from: configs/dpo/common.py. Iterative (on-policy) rounds: sample
pairs from this run with `fact-rlhf pairs --policy WORKDIR --reward RM ...` and train the next round with
`--config.init.model.path=WORKDIR --config.data.train="[('PREFS.json', 'IMAGES', 1.0)]"` (a workdir ignores
the config's `vision_tower`).
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("dpo_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    return common.reference_dpo("checkpoints/LLaVA-RLHF-7b-v1.5-224/sft_model", "checkpoints/clip-vit-large-patch14",
                                "llava_7b_224")

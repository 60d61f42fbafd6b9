"""The Fact-RLHF reward model on the 13B SFT model (reference `train_reward_model.sh`; see common.py).

  fact-rlhf train --config configs/rm/llava_13b_336.py --workdir gs://.../rm_13b \
      --config.init.model=gs://.../sft_13b
Vanilla (no facts): --config.reward.prompt=vanilla. The released LLaVA-RLHF reward model is the 13B one; the
paper's 7B-policy run pairs it with the 7B policy (configs/ppo/llava_7b_224.py).
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("rm_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    return common.reference_rm("runs/sft_13b", "llava_13b_336", grad_accum=4)

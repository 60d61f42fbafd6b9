"""RL policy initialisation for the 7B recipe (reference `RLHF/scripts/7b-v1.5-224/initialize_policy_model.sh`).

  fact-rlhf train --config configs/sft/policy_init_7b_224.py --workdir gs://.../policy_init_7b \
      --config.init.params_from=gs://.../sft_7b

See `reference_policy_init` in common.py for the recipe.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sft_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    return common.reference_policy_init("llava_7b_224", "checkpoints/vicuna-7b-v1.5", "runs/sft_7b", grad_accum=4)

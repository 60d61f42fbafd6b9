"""RL policy initialisation for the 13B recipe (reference `RLHF/scripts/13b-v1.5-336/initialize_policy_model.sh`).

  fact-rlhf train --config configs/sft/policy_init_13b_336.py --workdir gs://.../policy_init_13b \
      --config.init.params_from=gs://.../sft_13b

See `reference_policy_init` in common.py for the recipe.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("sft_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    return common.reference_policy_init("llava_13b_336", "checkpoints/vicuna-13b-v1.5", "runs/sft_13b", grad_accum=4)

"""Evaluation config: POPE (object-existence yes/no questions). See docs/eval.md.

Run: fact-rlhf eval pope --config configs/eval/pope.py [--config.KEY=VALUE ...]
"""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({'checkpoint': '',
 'image_dir': '',
 'batch_size': 16,
 'max_new_tokens': 64,
 'temperature': 0.2,
 'conv_mode': 'llava_v1',
 'prompt_suffix': '\nAnswer the question using a single word or phrase.'})

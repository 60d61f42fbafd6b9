"""Evaluation config: CHAIR object hallucination of image descriptions. See docs/eval.md.

Run: fact-rlhf eval chair --config configs/eval/chair.py [--config.KEY=VALUE ...]
"""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({'checkpoint': '',
 'image_dir': '',
 'batch_size': 8,
 'max_new_tokens': 512,
 'temperature': 0.0,
 'conv_mode': 'llava_v1',
 'prompt': 'Please describe this image in detail.',
 'num_images': 500,
 'synonyms': ''})

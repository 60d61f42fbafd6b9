"""Evaluation config: MMHal-Bench (96 questions, judged 0-6). See docs/eval.md.

Run: fact-rlhf eval mmhal --config configs/eval/mmhal.py [--config.KEY=VALUE ...]
"""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({'checkpoint': '',
 'image_dir': '',
 'batch_size': 8,
 'max_new_tokens': 1024,
 'temperature': 0.0,
 'conv_mode': 'llava_v1',
 'judge_template': 'mmhal_judge.txt',
 'judge': {'kind': 'chat',
           'base_url': '',
           'model': '',
           'api_key_env': 'OPENAI_API_KEY',
           'temperature': 0.0,
           'max_tokens': 1024,
           'timeout_s': 60.0,
           'max_retries': 5,
           'backoff_s': 2.0,
           'backoff_max_s': 60.0,
           'retry_unparsed': 2}})

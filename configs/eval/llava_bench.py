"""Evaluation config: LLaVA-Bench COCO (qa90, relative score against reference answers). See docs/eval.md.

Run: fact-rlhf eval llava-bench --config configs/eval/llava_bench.py [--config.KEY=VALUE ...]
"""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({'checkpoint': '',
 'image_dir': '',
 'batch_size': 8,
 'max_new_tokens': 1024,
 'temperature': 0.2,
 'conv_mode': 'llava_v1',
 'judge_template': 'llava_bench_judge.txt',
 'judge_rules': 'llava_bench_rules.json',
 'judge_system': 'You are a helpful and precise assistant for checking the quality of the answer.',
 'judge': {'kind': 'chat',
           'base_url': '',
           'model': '',
           'api_key_env': 'OPENAI_API_KEY',
           'temperature': 0.2,
           'max_tokens': 1024,
           'timeout_s': 60.0,
           'max_retries': 5,
           'backoff_s': 2.0,
           'backoff_max_s': 60.0,
           'retry_unparsed': 2}})

"""LLaVA-Bench COCO (qa90, relative score against reference answers). See docs/eval.md.

fact-rlhf eval llava-bench --config configs/eval/llava_bench.py --questions qa90_questions.jsonl \
    --references qa90_gpt4_answer.jsonl --context caps_boxes_coco2014_val_80.jsonl --checkpoint CKPT --image-dir val2014/
"""

import ml_collections


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.checkpoint = ""
    c.tokenizer = ""  # empty: the tokenizer files in the checkpoint
    c.seed = 0  # sampling seed
    c.image_dir = ""
    c.batch_size = 8
    c.max_new_tokens = 1024
    c.temperature = 0.2
    c.conv_mode = "llava_v1"
    c.judge_template = "llava_bench_judge.txt"
    c.judge_rules = "llava_bench_rules.json"  # the [System] instruction per category
    c.judge_system = "You are a helpful and precise assistant for checking the quality of the answer."
    j = c.judge = ml_collections.ConfigDict()  # same keys as in mmhal.py
    j.kind = "chat"  # only the chat judge exists for LLaVA-Bench
    j.base_url = ""  # empty: $FACT_RLHF_JUDGE_BASE_URL or $OPENAI_BASE_URL
    j.model = ""  # empty: $FACT_RLHF_JUDGE_MODEL
    j.api_key_env = "OPENAI_API_KEY"
    j.temperature = 0.2  # the reference judges at 0.2
    j.max_tokens = 1024
    j.timeout_s = 60.0
    j.max_retries = 5
    j.backoff_s = 2.0
    j.backoff_max_s = 60.0
    j.retry_unparsed = 2  # ask again when the first line does not hold two scores
    return c

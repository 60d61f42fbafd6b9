"""MMHal-Bench (96 questions, judged 0-6). See docs/eval.md.

fact-rlhf eval mmhal --config configs/eval/mmhal.py --template response_template.json --checkpoint CKPT \
    --image-dir mmhal_images/ --config.judge.model=gpt-4-0613
"""

import ml_collections


def judge_config(temperature):
    j = ml_collections.ConfigDict()
    j.kind = "chat"  # "chat": OpenAI-compatible endpoint; "rule" / "shapesworld": offline judges (MMHal only)
    j.base_url = ""  # empty: $FACT_RLHF_JUDGE_BASE_URL or $OPENAI_BASE_URL, e.g. https://api.openai.com/v1
    j.model = ""  # empty: $FACT_RLHF_JUDGE_MODEL
    j.api_key_env = "OPENAI_API_KEY"  # environment variable holding the key (else $FACT_RLHF_JUDGE_API_KEY)
    j.temperature = temperature
    j.max_tokens = 1024
    j.timeout_s = 60.0
    j.max_retries = 5  # per request; waits backoff_s * 2**attempt, at most backoff_max_s
    j.backoff_s = 2.0
    j.backoff_max_s = 60.0
    j.retry_unparsed = 2  # ask again when the review has no parsable rating/scores
    return j


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.checkpoint = ""
    c.tokenizer = ""  # empty: the tokenizer files in the checkpoint
    c.seed = 0  # sampling seed
    c.image_dir = ""
    c.batch_size = 8
    c.max_new_tokens = 1024  # the reference's eval_mmhal.sh
    c.temperature = 0.0  # greedy
    c.conv_mode = "llava_v1"
    c.judge_template = "mmhal_judge.txt"  # packaged template, or a path to your own
    c.judge = judge_config(0.0)
    c.judge.scene_graphs = ""  # ShapesWorld scene_graphs.json, for judge.kind = "shapesworld" (exact offline judge)
    return c

"""POPE (object-existence yes/no questions). See docs/eval.md.

fact-rlhf eval pope --config configs/eval/pope.py --questions coco_pope_random.jsonl --checkpoint CKPT \
    --image-dir val2014/ [--config.temperature=0.0]
"""

import ml_collections


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.checkpoint = ""  # or --checkpoint
    c.tokenizer = ""  # empty: the tokenizer files in the checkpoint
    c.seed = 0  # sampling seed
    c.image_dir = ""  # or --image-dir
    c.batch_size = 16  # a multiple of the mesh's data-parallel size
    c.max_new_tokens = 64  # the reference's short_eval
    c.temperature = 0.2  # the reference samples at 0.2 (model_vqa default); 0 = greedy
    c.conv_mode = "llava_v1"
    c.prompt_suffix = "\nAnswer the question using a single word or phrase."
    return c

"""CHAIR object hallucination of image descriptions. See docs/eval.md.

fact-rlhf eval chair --config configs/eval/chair.py --truth instances_val2014.json --checkpoint CKPT --image-dir val2014/
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
    c.max_new_tokens = 512
    c.temperature = 0.0
    c.conv_mode = "llava_v1"
    c.prompt = "Please describe this image in detail."
    c.num_images = 500  # the first N image file names in sorted order; 0 = every image with ground truth
    c.synonyms = ""  # "canonical, synonym, ..." lines; empty = the packaged COCO list
    return c

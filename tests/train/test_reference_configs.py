"""The 7B-224 and 13B-336 SFT configs carry the reference recipe (shared/reference/llava_rlhf.md, 2.2)."""

import re

import pytest

from fact_rlhf_jax import config as config_lib
from fact_rlhf_jax.models import config as mcfg


@pytest.mark.parametrize("path,preset,image_size,width", [
    ("configs/sft/llava_7b_224.py", "llava_7b_224", 224, 4096),
    ("configs/sft/llava_13b_336.py", "llava_13b_336", 336, 5120),
])
def test_reference_sft_recipe(path, preset, image_size, width):
    c = config_lib.load(path)
    assert c.model.preset == preset
    m = mcfg.preset(preset)
    assert m.vision.image_size == image_size and m.text.hidden_size == width and m.projector == "linear"
    assert m.vision_feature_layer == -2 and m.num_image_tokens == (image_size // 14) ** 2
    assert (c.optim.lr, c.num_epochs, c.batch_size, c.data.max_text_length) == (2e-5, 3.0, 128, 1280)
    assert (c.optim.schedule, c.optim.warmup_ratio, c.optim.weight_decay) == ("cosine", 0.03, 0.0)
    assert c.data.template == "vicuna_v1"
    trains = lambda p: any(re.fullmatch(r, p) for r in c.trainable)
    assert trains("projector/w") and trains("llm/layers/attn/q") and not trains("vision/layers/attn/q/w")

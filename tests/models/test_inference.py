"""ChatModel: loading an HF directory, and batched answers equal one-at-a-time answers."""

import numpy as np
import pytest
from PIL import Image

import jax

from fact_rlhf_jax import hf
from fact_rlhf_jax.inference import ChatModel
from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import llava


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    from fact_rlhf_jax.shapesworld import write_world

    root = tmp_path_factory.mktemp("chat")
    paths = write_world(root / "world", num_images=12, seed=0, noise=0.0)
    tok = AutoTokenizer.from_pretrained(str(paths["tokenizer"]))
    cfg = mcfg.preset("tiny", text={"vocab_size": len(tok)}, image_token_id=tok.convert_tokens_to_ids("<image>"))
    params = llava.init(cfg, jax.random.key(3))
    out = root / "model"
    hf.export_llava(cfg, params, out)
    tok.save_pretrained(str(out))
    return out


def test_batched_answers_equal_single_answers(model_dir):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size=(40, 30, 3), dtype=np.uint8)) for _ in range(3)]
    questions = ["What is in the image?", "Is there a red circle in the image? Answer yes or no.", "Describe it."]
    batched = ChatModel.load(model_dir, batch_size=4)
    single = ChatModel.load(model_dir, batch_size=1)
    a = batched.generate_ids(questions, images, max_new_tokens=6)
    b = single.generate_ids(questions, images, max_new_tokens=6)
    assert a == b
    assert all(len(x) > 0 for x in a)
    texts = batched.answer(questions, images, max_new_tokens=6)
    assert texts == [batched.tokenizer.decode(x, skip_special_tokens=True).strip() for x in a]


def test_text_only_question_and_bad_path(model_dir, tmp_path):
    model = ChatModel.load(model_dir, batch_size=2)
    assert len(model.answer(["Hello?"], [None], max_new_tokens=3)) == 1
    with pytest.raises(FileNotFoundError, match="neither a llava-hf checkpoint"):
        ChatModel.load(tmp_path)

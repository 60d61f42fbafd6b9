"""`fact-rlhf eval pope` generate mode with a tiny random LLaVA saved as an HF directory."""

import json

import numpy as np
import pytest
from PIL import Image

inference = pytest.importorskip("fact_rlhf_jax.inference")

from fact_rlhf_jax.cli import main  # noqa: E402

from .fakes import write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import jax
    from transformers import AutoTokenizer

    from fact_rlhf_jax import hf
    from fact_rlhf_jax.models import config as mcfg
    from fact_rlhf_jax.models import llava
    from fact_rlhf_jax.shapesworld import write_world

    root = tmp_path_factory.mktemp("e2e")
    paths = write_world(root / "world", num_images=4, seed=0, noise=0.0)
    tok = AutoTokenizer.from_pretrained(str(paths["tokenizer"]))
    cfg = mcfg.preset("tiny", text={"vocab_size": len(tok)}, image_token_id=tok.convert_tokens_to_ids("<image>"))
    out = root / "model"
    hf.export_llava(cfg, llava.init(cfg, jax.random.key(1)), out)
    tok.save_pretrained(str(out))
    return out


def test_pope_generate_with_a_tiny_model(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)).save(tmp_path / "img" / name)
    texts = ["Is there a red circle in the image?", "Is there a blue square in the image?", "Is there a green star in the image?"]
    questions = write_jsonl(tmp_path / "coco_pope_random.jsonl", [
        {"question_id": i, "image": "ab"[i % 2] + ".png", "text": t, "label": "yes" if i % 2 else "no"}
        for i, t in enumerate(texts)])
    out = tmp_path / "out"
    code = main(["eval", "pope", "--questions", questions, "--checkpoint", str(model_dir), "--image-dir", str(tmp_path / "img"),
                 "--out-dir", str(out), "--config.batch_size=2", "--config.max_new_tokens=4", "--config.temperature=0",
                 "--no-progress"])
    assert code == 0
    got = [json.loads(x) for x in (out / "pope_random_answers.jsonl").read_text().splitlines()]
    assert [g["question_id"] for g in got] == [0, 1, 2]

    # oracle: the same model asked directly, one question at a time, greedy
    suffix = "\nAnswer the question using a single word or phrase."
    model = inference.ChatModel.load(model_dir, batch_size=2)
    expected = [
        model.answer([t + suffix], [Image.open(tmp_path / "img" / ("ab"[i % 2] + ".png")).convert("RGB")],
                     max_new_tokens=4, temperature=0.0)[0]
        for i, t in enumerate(texts)
    ]
    assert [g["text"] for g in got] == expected
    rows = json.loads((out / "results.json").read_text())["pope"]["results"]
    assert rows["random"]["n"] == 3

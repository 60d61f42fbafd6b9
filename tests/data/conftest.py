"""Fixtures for the data tests: a real LLaMA-layout tokenizer and a tiny LLaVA dataset on disk."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image


def sentencepiece_model_path() -> str:
    mistral_common = pytest.importorskip("mistral_common")
    path = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    if not os.path.isfile(path):
        pytest.skip("mistral_common wheel lacks data/tokenizer.model.v1")
    return path


@pytest.fixture(scope="session")
def sp_model_path():
    return sentencepiece_model_path()


@pytest.fixture(scope="session")
def llama_tokenizer(tmp_path_factory, sp_model_path):
    """transformers LLaMA tokenizer built from the real sentencepiece model (via a tokenizer dir)."""
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("llama_tok")
    shutil.copy(sp_model_path, d / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(str(d))
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    assert len(tok) == 32000
    return tok


@pytest.fixture(scope="session")
def sp(sp_model_path):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=sp_model_path)


def write_image(path, size=(20, 12), seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def make_record(i, image=None, question="What is in the picture?", answer=None):
    rec = {
        "id": f"r{i}",
        "conversations": [
            {"from": "human", "value": ("<image>\n" if image else "") + f"{question} #{i}"},
            {"from": "gpt", "value": answer or f"It shows item number {i}."},
        ],
    }
    if image:
        rec["image"] = image
    return rec


@pytest.fixture
def llava_dir(tmp_path):
    """tmp dir with images/ (6 PNGs) and data.json (10 records: 6 with images, 4 text-only)."""
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for i in range(10):
        name = None
        if i < 6:
            name = f"img{i}.png"
            write_image(images / name, size=(16 + 2 * i, 12 + i), seed=i)
        records.append(make_record(i, image=name))
    (tmp_path / "data.json").write_text(json.dumps(records))
    return tmp_path

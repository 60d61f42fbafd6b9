"""The ShapesWorld tokenizer loads with AutoTokenizer and behaves like a LLaMA tokenizer."""

import json
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoTokenizer

from fact_rlhf_jax.shapesworld.tokenizer import save_tokenizer, train_tokenizer

TEXTS = [
    "A small red circle sits in the top left corner.",
    "There are two blue squares and a yellow star in the image.",
    "Is there a green triangle in the image? No, there is no green triangle in the image.",
] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer(TEXTS, vocab_size=600), d)
    return AutoTokenizer.from_pretrained(str(d))


def test_special_ids_and_padding(tok):
    assert tok.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<image>"]) == [0, 1, 2, 3]
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    assert tok.convert_ids_to_tokens([4, 4 + 0x41, 259]) == ["<0x00>", "<0x41>", "<0xFF>"]
    assert 360 < len(tok) <= 600


def test_bos_prepended_no_eos_and_template_specials(tok):
    ids = tok("a red circle")["input_ids"]
    assert ids[0] == 1 and ids.count(1) == 1 and 2 not in ids
    text = "A chat. USER: <image>\nIs there a red circle? ASSISTANT: Yes.</s>USER: Why? ASSISTANT: No.</s>"
    ids = tok(text)["input_ids"]
    assert ids[-1] == 2 and ids.count(2) == 2 and ids.count(3) == 1
    assert tok.convert_ids_to_tokens(ids).count("</s>") == 2


@pytest.mark.parametrize(
    "text",
    [
        "A small red circle sits in the top left corner.",
        "Words it never saw: quixotic zebra, 42 + 7 = 49!",
        "Tabs\tand\nnewlines  and double  spaces.",
        "Caf\u00e9 na\u00efve \u2014 \u2603 emoji \U0001f600",
    ],
)
def test_round_trip(tok, text):
    ids = tok(text)["input_ids"]
    assert 0 not in ids  # byte fallback: nothing is unknown
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_learned_pieces_are_words_of_the_world(tok):
    # frequent words of the training text become single pieces with the sentencepiece space mark
    pieces = tok.convert_ids_to_tokens(tok("a red circle in the image")["input_ids"][1:])
    assert pieces == ["\u2581a", "\u2581red", "\u2581circle", "\u2581in", "\u2581the", "\u2581image"]


def test_training_is_deterministic_across_processes(tmp_path):
    code = (
        "import sys; from fact_rlhf_jax.shapesworld.tokenizer import train_tokenizer;"
        f"t = train_tokenizer({TEXTS!r}, vocab_size=400); sys.stdout.write(t.to_str())"
    )
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["model"]["byte_fallback"] is True


def test_works_with_the_sft_tokenisation(tok):
    from fact_rlhf_jax.data.conversation import IGNORE_INDEX, tokenize_conversations

    conv = [{"from": "human", "value": "<image>\nIs there a red circle?"}, {"from": "gpt", "value": "Yes, there is a red circle."}]
    out = tokenize_conversations(conv, tok, has_image=True, image_token_id=3, num_image_tokens=4)
    ids, labels = out.input_ids, out.labels
    assert ids[0] == 1 and ids[-1] == 2 and (ids == 3).sum() == 4
    supervised = ids[labels != IGNORE_INDEX]
    assert tok.decode(supervised, skip_special_tokens=True) == "Yes, there is a red circle."
    assert supervised[-1] == 2
    assert np.all(labels[: out.image_span[1]] == IGNORE_INDEX)

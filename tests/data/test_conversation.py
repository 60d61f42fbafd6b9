"""Templates, turn-by-turn tokenisation and the SFT label mask (real LLaMA sentencepiece model)."""

import numpy as np
import pytest

from fact_rlhf_jax.data import conversation as conv
from fact_rlhf_jax.data import errors

IMG = 32000  # an id outside the 32000-piece vocab, as in llava-hf
N_IMG = 3

SYSTEM_PIECES = [
    "▁A", "▁chat", "▁between", "▁a", "▁curious", "▁user", "▁and", "▁an", "▁artificial", "▁intelligence",
    "▁assistant", ".", "▁The", "▁assistant", "▁gives", "▁helpful", ",", "▁detailed", ",", "▁and", "▁polite",
    "▁answers", "▁to", "▁the", "▁user", "'", "s", "▁questions", ".",
]


def pieces(sp, ids):
    out = []
    for i in ids:
        i = int(i)
        out.append("<IMG>" if i == IMG else sp.id_to_piece(i))
    return out


def test_hand_checked_mask_example(llama_tokenizer, sp):
    """Two rounds with an image, vicuna_v1. Every token and its supervision written out by hand."""
    record = [
        {"from": "human", "value": "Name it.\n<image>"},  # LLaVA moves <image> to the front
        {"from": "gpt", "value": "A cat."},
        {"from": "human", "value": "Color?"},
        {"from": "gpt", "value": "Black."},
    ]
    tok = conv.tokenize_conversations(record, llama_tokenizer, has_image=True, template="vicuna_v1",
                                      image_token_id=IMG, num_image_tokens=N_IMG)
    # (piece, supervised)
    expected = (
        [("<s>", False)]
        + [(p, False) for p in SYSTEM_PIECES]
        + [("▁US", False), ("ER", False), (":", False), ("▁", False)]  # "USER: " chunk ends in its own "▁"
        + [("<IMG>", False)] * N_IMG
        + [("▁", False), ("<0x0A>", False), ("Name", False), ("▁it", False), (".", False)]
        + [("▁ASS", False), ("IST", False), ("ANT", False), (":", False)]
        + [("▁A", True), ("▁cat", True), (".", True), ("</s>", True)]
        + [("▁US", False), ("ER", False), (":", False), ("▁Color", False), ("?", False)]
        + [("▁ASS", False), ("IST", False), ("ANT", False), (":", False)]
        + [("▁Black", True), (".", True), ("</s>", True)]
    )
    assert pieces(sp, tok.input_ids) == [p for p, _ in expected]
    assert tok.input_ids.dtype == np.int32 and tok.labels.dtype == np.int32
    supervised = [bool(x != -100) for x in tok.labels]
    assert supervised == [s for _, s in expected]
    np.testing.assert_array_equal(tok.labels[tok.labels != -100], tok.input_ids[tok.labels != -100])
    assert tok.input_ids[0] == 1 and list(tok.input_ids).count(2) == 2
    start = 1 + len(SYSTEM_PIECES) + 4
    assert tok.image_span == (start, start + N_IMG)


# --- the reference, written out: LLaVA's tokenizer_image_token + FastChat's preprocess_v1 mask ------


def reference_ids(sp, prompt, image_id=IMG, n_image=1):
    """Legacy LLaMA tokenisation of a whole prompt: chunks between <image>/</s> each get sp.encode."""
    ids = [1]
    for k, chunk in enumerate(prompt.split("<image>")):
        if k:
            ids += [image_id] * n_image
        for j, sub in enumerate(chunk.split("</s>")):
            if j:
                ids.append(2)
            ids += sp.encode(sub) if sub else []
    return ids


def reference_v1_labels(sp, prompt, has_image):
    """FastChat/LLaVA `preprocess_v1` mask on the unexpanded ids (image = one position)."""
    ids = reference_ids(sp, prompt)
    target = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    target[:cur] = [-100]
    for rou in prompt.split("</s>"):
        if rou == "":
            break
        parts = rou.split(sep)
        assert len(parts) == 2
        parts[0] += sep
        round_len = len(reference_ids(sp, rou))
        instruction_len = len(reference_ids(sp, parts[0])) - 2
        target[cur : cur + instruction_len] = [-100] * instruction_len
        cur += round_len
    target[cur:] = [-100] * (len(target) - cur)
    assert cur == len(ids), "tokenization mismatch in the oracle itself"
    return ids, target


def expand(ids, labels):
    out_ids, out_labels = [], []
    for i, l in zip(ids, labels):
        if i == IMG:
            out_ids += [IMG] * N_IMG
            out_labels += [-100] * N_IMG
        else:
            out_ids.append(i)
            out_labels.append(l)
    return out_ids, out_labels


CONVERSATIONS = [
    ([("<image>\nWhat is shown here?", "A red bus on a street, next to a tree.")], True),
    ([("<image>\nDescribe it.", "Two dogs.\nOne is brown."), ("Why?", "Because\tthey play!"),
      ("And then, what happens?", "They sleep (tired).")], True),
    ([("Tell me a joke about 3 cats.", "Cats can't tell jokes; they're too cool.")], False),
    ([("<image>\n", "It's 12:30, lunch time — café?")], True),
]


@pytest.mark.parametrize("template", ["vicuna_v1", "llava_v1"])
@pytest.mark.parametrize("case", range(len(CONVERSATIONS)))
def test_pieces_equal_whole_string_reference(llama_tokenizer, sp, template, case):
    pairs, has_image = CONVERSATIONS[case]
    prompt = conv.render(template, pairs)
    ids, labels = expand(*reference_v1_labels(sp, prompt, has_image))
    tok = conv.tokenize_pairs(pairs, llama_tokenizer, template=template, image_token_id=IMG, num_image_tokens=N_IMG)
    assert tok.input_ids.tolist() == ids
    assert tok.labels.tolist() == labels
    # the transformers tokenizer on the whole string agrees too (legacy LLaMA behaviour)
    hf = [1]
    for k, chunk in enumerate(prompt.split("<image>")):
        if k:
            hf += [IMG] * N_IMG
        hf += llama_tokenizer(chunk, add_special_tokens=False).input_ids
    assert tok.input_ids.tolist() == hf


@pytest.mark.parametrize("reply", [" leading space", "  two leading spaces", "trailing space ", "\ttab", "\nnewline"])
def test_whitespace_edges_equal_whole_string_tokenizer(llama_tokenizer, reply):
    """Replies with odd whitespace: pieces still equal the transformers tokenizer on the whole string.

    (The transformers LLaMA tokenizer itself differs from raw sentencepiece on runs of spaces,
    so the oracle here is the tokenizer we tokenise with.)
    """
    pairs = [("<image>\nQ", reply), ("Again?", reply)]
    prompt = conv.render("vicuna_v1", pairs)
    hf = [1]
    for k, chunk in enumerate(prompt.split("<image>")):
        if k:
            hf += [IMG] * N_IMG
        hf += llama_tokenizer(chunk, add_special_tokens=False).input_ids
    tok = conv.tokenize_pairs(pairs, llama_tokenizer, image_token_id=IMG, num_image_tokens=N_IMG)
    assert tok.input_ids.tolist() == hf
    # the supervised tokens are exactly the two replies and their </s>
    reply_ids = tok.input_ids[tok.labels != -100].tolist()
    assert reply_ids.count(2) == 2 and reply_ids[-1] == 2
    assert llama_tokenizer.decode(reply_ids[: reply_ids.index(2)]).strip() == reply.strip()


def test_render_matches_llava_strings():
    pairs = [("<image>\nQ1", "A1"), ("Q2", "A2")]
    sys_user = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                "helpful, detailed, and polite answers to the user's questions.")
    assert conv.render("vicuna_v1", pairs) == sys_user + " USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>"
    sys_human = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the human's questions.")
    assert conv.render("llava_v1", [("Q", None)]) == sys_human + " USER: Q ASSISTANT:"
    assert conv.render("plain", [("<image>\nignored", "a caption")]) == "<image>a caption\n"


def test_plain_template_matches_preprocess_plain(llama_tokenizer, sp):
    record = [{"from": "human", "value": "Describe briefly.\n<image>"}, {"from": "gpt", "value": "A cat on a mat."}]
    tok = conv.tokenize_conversations(record, llama_tokenizer, has_image=True, template="plain",
                                      image_token_id=IMG, num_image_tokens=N_IMG)
    # reference: "<image>" + caption + "\n"; mask the first len(tokenizer_image_token("<image>")) = 2 positions
    ids = reference_ids(sp, "<image>A cat on a mat.\n")
    labels = [-100, -100] + ids[2:]
    ids, labels = expand(ids, labels)
    assert tok.input_ids.tolist() == ids
    assert tok.labels.tolist() == labels
    assert pieces(sp, tok.input_ids) == ["<s>"] + ["<IMG>"] * N_IMG + ["▁A", "▁cat", "▁on", "▁a", "▁mat", ".", "<0x0A>"]
    assert [x != -100 for x in tok.labels] == [False] * (1 + N_IMG) + [True] * 7  # "\n" supervised, no </s>


def test_encode_prompt_ends_with_assistant_tag(llama_tokenizer, sp):
    ids = conv.encode_prompt("What is this?", llama_tokenizer, has_image=True, template="llava_v1",
                             image_token_id=IMG, num_image_tokens=N_IMG)
    prompt = conv.render("llava_v1", [("<image>\nWhat is this?", None)])
    assert ids.tolist() == expand(reference_ids(sp, prompt), reference_ids(sp, prompt))[0]
    assert pieces(sp, ids)[-4:] == ["▁ASS", "IST", "ANT", ":"]


# --- truncation -------------------------------------------------------------------------------------


def test_truncation_cuts_only_trailing_text(llama_tokenizer):
    pairs = [("<image>\nQ?", "word " * 40)]
    full = conv.tokenize_pairs(pairs, llama_tokenizer, image_token_id=IMG, num_image_tokens=N_IMG)
    limit = full.image_span[1] + 12  # prompt after the image is ~9 tokens: a few reply tokens remain
    cut = conv.tokenize_pairs(pairs, llama_tokenizer, image_token_id=IMG, num_image_tokens=N_IMG, max_length=limit)
    assert len(cut.input_ids) == limit
    np.testing.assert_array_equal(cut.input_ids, full.input_ids[:limit])
    np.testing.assert_array_equal(cut.labels, full.labels[:limit])
    assert (cut.labels != -100).any()


def test_truncation_never_cuts_the_image(llama_tokenizer):
    pairs = [("<image>\nQ?", "A.")]
    full = conv.tokenize_pairs(pairs, llama_tokenizer, image_token_id=IMG, num_image_tokens=N_IMG)
    with pytest.raises(errors.BadRecordError) as e:
        conv.tokenize_pairs(pairs, llama_tokenizer, image_token_id=IMG, num_image_tokens=N_IMG,
                            max_length=full.image_span[1] - 1)
    assert e.value.reason == errors.TOO_LONG
    # the image fits but no reply token does: also too long
    with pytest.raises(errors.BadRecordError) as e:
        conv.tokenize_pairs(pairs, llama_tokenizer, image_token_id=IMG, num_image_tokens=N_IMG,
                            max_length=full.image_span[1] + 2)
    assert e.value.reason == errors.TOO_LONG


# --- record validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "turns, has_image, reason, field",
    [
        ("not a list", False, errors.BAD_JSON, "conversations"),
        ([{"from": "human", "value": 3}], False, errors.BAD_JSON, "conversations[0]"),
        ([{"from": "robot", "value": "x"}], False, errors.BAD_JSON, "conversations[0]"),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], False, errors.BAD_JSON,
         "conversations[1].from"),
        ([{"from": "human", "value": "only a question"}], False, errors.NO_ASSISTANT_TURN, "conversations"),
        ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "  "}], False, errors.EMPTY_TEXT,
         "conversations[1].value"),
        ([{"from": "human", "value": ""}, {"from": "gpt", "value": "a"}], False, errors.EMPTY_TEXT,
         "conversations[0].value"),
        ([{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}], False, errors.MISSING_IMAGE,
         "conversations[0].value"),
    ],
)
def test_conversation_validation(turns, has_image, reason, field):
    with pytest.raises(errors.BadRecordError) as e:
        conv.conversation_pairs(turns, has_image)
    assert e.value.reason == reason
    assert e.value.field == field


def test_conversation_normalisation():
    turns = [
        {"from": "gpt", "value": "leading reply is dropped"},
        {"from": "human", "value": "first"},
        {"from": "gpt", "value": "one"},
        {"from": "human", "value": "look: <image> here"},
        {"from": "gpt", "value": "two"},
        {"from": "human", "value": "unanswered"},
    ]
    assert conv.conversation_pairs(turns, has_image=True) == [("first", "one"), ("<image>\nlook:  here", "two")]
    # an image without a placeholder goes to the first question
    turns = [{"from": "human", "value": " q "}, {"from": "gpt", "value": "a"}]
    assert conv.conversation_pairs(turns, has_image=True) == [("<image>\nq", "a")]


def test_bad_record_error_message_names_file_record_field():
    e = errors.BadRecordError(None, None, "image", errors.MISSING_IMAGE, "no image file at x.png")
    e = e.with_context("data/train.json", "000123")
    msg = str(e)
    assert "data/train.json" in msg and "000123" in msg and "'image'" in msg and "missing_image" in msg

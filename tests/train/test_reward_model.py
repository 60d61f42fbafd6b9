"""Reward model: the exact reward input, the score position, LoRA on the fly, the loss, the preference loader."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fact_rlhf_jax.data import errors, preference, reward_input
from fact_rlhf_jax.models import config as mcfg, heads, llava, lora, reward
from fact_rlhf_jax.train.losses import pairwise_reward_loss_terms
from tests.data.conftest import llama_tokenizer, sp, sp_model_path  # noqa: F401 (fixtures)
from tests.data.test_conversation import reference_ids

IMG, N_IMG = 32000, 3

RECORD = {
    "id": "r1", "image": "000000000001.jpg",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat is on the table?"},
        {"from": "gpt", "value": "A reference answer that gets replaced."},
    ],
    "output_1": {"value": "A red apple and a knife."},
    "output_2": {"value": "A red apple, a knife and a cat."},
    "preference": 2,
}
FACTS = ["An apple on a wooden table.", "A knife next to a red apple.", "Fruit and a knife."]

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
INSTRUCTION_HEAD = ("USER: Please evaluate the quality of your last response. There are several dimensions you "
                    "should consider in your evaluation:\n\n1. Accurate: The AI should provide factual and accurate "
                    "information from the image, and refrain from making statements that are not supported by the "
                    "image or inconsistent with the image. ")
INSTRUCTION_TAIL = ("2. Helpful: The AI\u2019s response should precisely serve the user's needs and interests, while "
                    "grounding the response in the image.\n3. Language Natural: The AI should employ language that "
                    "flows smoothly and is free from repetitive or awkward constructs.\n4. Concise: The AI should "
                    "efficiently address the task or answer the question, communicating the necessary information "
                    "with brevity and clarity.\n\nA good response should be accurate, helpful, language natural, and "
                    "concise. ASSISTANT: Following your definitions, the quality score of my last response is")


def reference_string(response: str, facts: list[str] | None) -> str:
    """The reference's string, filled by hand: conv.get_prompt() + " " + prompt.format(...) + "</s>"."""
    facts_text = ""
    if facts is not None:
        facts_text = ("Specifically, the AI's response should be fully supported by the combination of the following "
                      "captions:\n" + "".join(f"  - {f}\n" for f in facts))
    if facts is not None:  # "...with the image. {factual_prompt}\n2. Helpful..."
        instruction = INSTRUCTION_HEAD + facts_text + "\n" + INSTRUCTION_TAIL
    else:  # "...with the image.\n2. Helpful..."
        instruction = INSTRUCTION_HEAD[:-1] + "\n" + INSTRUCTION_TAIL
    return (f"{SYSTEM} USER: <image>\nWhat is on the table? ASSISTANT: {response}</s> " + instruction + "</s>")


def test_instruction_files_are_the_reference_prompts():
    fact = reward_input.load_instruction("fact_rlhf")
    assert fact == INSTRUCTION_HEAD + "{factual_prompt}\n" + INSTRUCTION_TAIL
    assert reward_input.load_instruction("vanilla") == INSTRUCTION_HEAD[:-1] + "\n" + INSTRUCTION_TAIL


@pytest.mark.parametrize("factual", [True, False])
def test_reward_input_text_is_byte_equal_to_the_hand_filled_reference(factual):
    template = reward_input.load_instruction("fact_rlhf" if factual else "vanilla")
    rng = np.random.default_rng([7, 3])
    order = reward_input.shuffled(FACTS, np.random.default_rng([7, 3]))
    assert sorted(order) == sorted(FACTS)
    pairs = [("<image>\nWhat is on the table?", RECORD["output_2"]["value"])]
    text = reward_input.render(pairs, reward_input.instruction(template, reward_input.shuffled(FACTS, rng)))
    want = reference_string(RECORD["output_2"]["value"], order if factual else None)
    assert text + "</s>" == want


def test_reward_input_ids_equal_legacy_sentencepiece_on_the_whole_string(llama_tokenizer, sp):
    """Token for token the reference: tokenizer_image_token(whole string) with the final </s> dropped; the
    legacy tokenizer keeps a lone "▁" between </s> and "USER:"."""
    for factual in (True, False):
        template = reward_input.load_instruction("fact_rlhf" if factual else "vanilla")
        for key in ("output_1", "output_2"):
            ids = reward_input.build(RECORD, RECORD[key]["value"], template, llama_tokenizer, has_image=True,
                                     image_token_id=IMG, num_image_tokens=1, facts=FACTS, rng=None)
            want = reference_ids(sp, reference_string(RECORD[key]["value"], FACTS if factual else None))[:-1]
            assert ids.tolist() == want
            eos = ids.tolist().index(2)
            assert ids[eos + 1] == sp.piece_to_id("\u2581")
            assert sp.decode(ids[-6:].tolist()).endswith("my last response is")


def test_factual_prompt_needs_facts_and_records_can_carry_their_own():
    template = reward_input.load_instruction("fact_rlhf")
    with pytest.raises(errors.BadRecordError) as e:
        reward_input.instruction(template, None)
    assert e.value.reason == errors.MISSING_FACTS
    assert reward_input.facts_for({**RECORD, "captions": ["own"]}, {"000000000001.jpg": FACTS}) == ["own"]
    assert reward_input.facts_for(RECORD, {"000000000001.jpg": FACTS}) == FACTS
    assert reward_input.facts_for(RECORD, {"x": FACTS}) is None
    assert reward_input.instruction(reward_input.load_instruction("vanilla"), None).endswith("response is")


# --- model --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    cfg = mcfg.preset("tiny")
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = llava.init(cfg, k1)
    adapter = lora.init(cfg, k2, rank=4)
    adapter = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(k3, x.shape), adapter)  # B != 0: it matters
    head = heads.init(cfg.text.hidden_size, k3)
    return cfg, params, adapter, head


def test_score_is_read_at_the_last_real_token_under_left_and_right_padding(tiny):
    cfg, params, adapter, head = tiny
    rng = np.random.default_rng(0)
    lengths = [9, 5, 7]
    rows = [np.concatenate([[1], [cfg.image_token_id] * cfg.num_image_tokens, rng.integers(4, 200, n)])
            for n in lengths]
    t = max(len(r) for r in rows)
    left = np.zeros((3, t), np.int32); lmask = np.zeros_like(left)
    right = np.zeros_like(left); rmask = np.zeros_like(left)
    for i, r in enumerate(rows):
        left[i, t - len(r):], lmask[i, t - len(r):] = r, 1
        right[i, :len(r)], rmask[i, :len(r)] = r, 1
    px = jnp.asarray(rng.normal(size=(3, 3, 28, 28)), jnp.float32)
    s_left = reward.scores(params, cfg, left, px, lmask, adapter=adapter, head=head, lora_scale=0.5)
    s_right = reward.scores(params, cfg, right, px, rmask, adapter=adapter, head=head, lora_scale=0.5)
    np.testing.assert_allclose(s_left, s_right, atol=1e-4)
    # and it is the head applied to that row's last token, computed alone without padding
    for i, r in enumerate(rows):
        h = llava.hidden_states(params, cfg, r[None], px[i:i + 1], np.ones((1, len(r)), np.int32), lora=adapter,
                                lora_scale=0.5)
        np.testing.assert_allclose(s_left[i], heads.apply(head, h[0, -1]), atol=1e-4)
    assert heads.last_token_index(jnp.asarray(lmask)).tolist() == [t - 1] * 3
    assert heads.last_token_index(jnp.asarray(rmask)).tolist() == [n + 1 + cfg.num_image_tokens - 1 for n in lengths]


def test_lora_on_the_fly_equals_merged_weights(tiny):
    cfg, params, adapter, head = tiny
    ids = np.concatenate([[1], [cfg.image_token_id] * cfg.num_image_tokens, np.arange(10, 22)])[None].repeat(2, 0)
    mask = np.ones_like(ids)
    px = jnp.ones((2, 3, 28, 28))
    fly = reward.scores(params, cfg, ids, px, mask, adapter=adapter, head=head, lora_scale=0.25)
    merged = reward.scores(lora.merge(params, adapter, 0.25), cfg, ids, px, mask, adapter=None, head=head,
                           lora_scale=1.0)
    np.testing.assert_allclose(fly, merged, atol=1e-5)
    plain = reward.scores(params, cfg, ids, px, mask, adapter=None, head=head, lora_scale=1.0)
    assert not np.allclose(fly, plain, atol=1e-3)


def test_heads_init_like_the_reference():
    h = heads.init(100, jax.random.key(1))
    assert h["w"].dtype == jnp.float32 and float(h["b"]) == 0.0
    assert float(jnp.abs(h["w"]).max()) <= 0.1 and float(jnp.abs(h["w"]).std()) > 0.02
    z = heads.init(100, jax.random.key(1), zero=True)
    assert not np.any(np.asarray(z["w"])) and float(z["b"]) == 0.0


def test_pairwise_loss_matches_numpy():
    rng = np.random.default_rng(3)
    r1, r2 = rng.normal(size=6), rng.normal(size=6)
    choice = np.array([1, 0, 1, 1, 0, 0])
    valid = np.array([1, 1, 1, 1, 1, 0])
    terms = pairwise_reward_loss_terms(jnp.asarray(r1), jnp.asarray(r2), jnp.asarray(choice), jnp.asarray(valid))
    v = valid > 0
    x, c = (r2 - r1)[v], choice[v]
    sig = 1 / (1 + np.exp(-x))
    bce = -(c * np.log(sig) + (1 - c) * np.log(1 - sig))
    want = bce.mean() + 1e-3 * abs((r1 + r2)[v].mean())
    np.testing.assert_allclose(terms.total / terms.weight, want, rtol=1e-5)
    got = {k: float(s / n) for k, (s, n) in terms.metrics.items()}
    np.testing.assert_allclose(got["accuracy"], ((x >= 0) == c).mean())
    np.testing.assert_allclose(got["label_positive_rate"], c.mean())
    np.testing.assert_allclose(got["mean_score"], np.concatenate([r1[v], r2[v]]).mean(), rtol=1e-5)
    assert float(terms.weight) == 5


# --- data ---------------------------------------------------------------------------------------------

def test_split_rows_is_seeded_and_disjoint():
    train, held = preference.split_rows(50, 8, 42)
    assert len(held) == 8 and len(train) == 42
    assert not set(train[:, 1]) & set(held[:, 1]) and set(train[:, 1]) | set(held[:, 1]) == set(range(50))
    assert (preference.split_rows(50, 8, 42)[1] == held).all()
    assert not (preference.split_rows(50, 8, 43)[1] == held).all()


def test_preference_loader_batches_pairs_and_counts_bad_records(tmp_path, llama_tokenizer):
    from PIL import Image

    Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / "000000000001.jpg")
    records = [dict(RECORD, id=f"p{i}", preference=1 + i % 2) for i in range(6)]
    records[2] = dict(records[2], preference=3)
    records[4] = dict(records[4], image="000000000009.jpg")  # no facts for it: skipped as missing_facts
    (tmp_path / "pref.json").write_text(json.dumps(records))
    captions = {"000000000001.jpg": FACTS}
    loader = preference.build_preference_loader(
        [(str(tmp_path / "pref.json"), str(tmp_path), 1.0)], llama_tokenizer,
        template_text=reward_input.load_instruction("fact_rlhf"), captions=captions, image_token_id=IMG,
        num_image_tokens=N_IMG, image_size=28, max_length=1024, global_batch_size=2, seed=5, shuffle=False,
        num_epochs=1, read_threads=0)
    batches = list(iter(loader))
    assert len(batches) == 2  # 4 good pairs
    b = batches[0]
    assert b["input_ids"].shape[:2] == (2, 2) and b["input_ids"].shape == b["attention_mask"].shape
    assert b["pixel_values"].shape == (2, 3, 28, 28)
    assert (b["attention_mask"][:, :, -1] == 1).all()  # left-padded
    assert b["choice"].tolist() == [0, 1] and b["valid"].tolist() == [1, 1]
    assert loader.bad_records == {"bad_label": 1, "missing_facts": 1}
    # the two outputs of a pair get their own shuffle, the same again for the same stream position
    first = list(iter(loader))[0]
    np.testing.assert_array_equal(first["input_ids"], b["input_ids"])

"""`fact-rlhf pairs`: K samples per prompt, reward-model labels, best vs worst as preference records; resumable."""

import json
from pathlib import Path

import numpy as np
import pytest

from fact_rlhf_jax import cli
from fact_rlhf_jax.data import prompts
from fact_rlhf_jax.pairs import PairSettings, Prompt, choose_pair, progress_path


PROMPT = Prompt(7, {"id": "q7", "image": "x.png", "caption_type": 1}, "<image>\nWhat is it?", "A ball.", None)


def test_choose_pair_takes_the_best_and_worst_usable_response():
    texts = ["a", "b", "c", "d"]
    rewards = [0.5, 3.0, -1.0, 9.0]
    usable = [True, True, True, False]  # the highest reward did not stop: left out
    settings = PairSettings(samples=4, seed=0)
    pair, why = choose_pair(PROMPT, texts, rewards, usable, settings)
    assert why == ""
    p = pair["preference"]
    assert pair[f"output_{p}"]["value"] == "b" and pair[f"reward_{p}"] == 3.0
    assert pair[f"output_{3 - p}"]["value"] == "c" and pair[f"reward_{3 - p}"] == -1.0
    assert pair["conversations"] == [{"from": "human", "value": "<image>\nWhat is it?"},
                                     {"from": "gpt", "value": "A ball."}]
    assert pair["id"] == "q7" and pair["caption_type"] == 1 and pair["prompt_index"] == 7
    # the slot of the better response is a seeded coin: both slots occur over prompts
    slots = {choose_pair(Prompt(i, {}, "q", "a", None), texts, rewards, usable, settings)[0]["preference"]
             for i in range(20)}
    assert slots == {1, 2}


def test_choose_pair_needs_two_distinct_responses_and_a_margin():
    settings = PairSettings(samples=3, min_margin=0.5)
    assert choose_pair(PROMPT, ["a", "a", "b"], [1.0, 2.0, None], [True] * 3, settings) == (None, "fewer_than_two_responses")
    assert choose_pair(PROMPT, ["a", "b", "c"], [1.0, 1.2, 1.4], [True] * 3, settings) == (None, "margin")
    assert choose_pair(PROMPT, ["a", "b", "c"], [1.0, 1.2, 1.6], [True] * 3, settings)[0] is not None


def pairs_argv(world, sft, rm, out, *extra):
    return ["pairs", "--policy", sft, "--reward", rm, "--prompts", world["ppo_prompts"], "--image-folder",
            world["images"], "--samples", "3", "--out", str(out), "--limit", "6", "--max-new-tokens", "8",
            "--batch-size", "6", "--seed", "3", *extra]


def test_pairs_end_to_end_then_a_rerun_adds_nothing(tmp_path, tiny_models):
    from PIL import Image
    from transformers import AutoTokenizer

    from fact_rlhf_jax.data.dpo_pairs import build_dpo_loader
    from fact_rlhf_jax.scoring import RewardModel

    world, sft = tiny_models["world"], tiny_models["sft"]
    out = tmp_path / "prefs.json"
    argv = pairs_argv(world, sft, tiny_models["reward"], out, "--keep-truncated")
    assert cli.main(argv) == 0
    records = json.loads(out.read_text())
    progress = {e["prompt_index"]: e for e in map(json.loads, progress_path(out).read_text().splitlines())}
    assert sorted(progress) == list(range(6))
    assert [r["prompt_index"] for r in records] == sorted(i for i, e in progress.items() if "pair" in e)
    assert len(records) >= 4
    prompt_records = json.loads(Path(world["ppo_prompts"]).read_text())
    assert any(r["caption_type"] in prompts.MULTIPLE_CHOICE_TYPES for r in prompt_records[:6])  # aok_ facts in use
    rm = RewardModel.load(tiny_models["reward"])
    for rec in records:
        entry = progress[rec["prompt_index"]]
        assert len(entry["samples"]) == 3
        p = rec["preference"]
        assert p in (1, 2)
        best, worst = rec[f"reward_{p}"], rec[f"reward_{3 - p}"]
        scored = {s["text"]: s["reward"] for s in entry["samples"] if s["reward"] is not None}
        assert best > worst and best == max(scored.values()) and worst == min(scored.values())
        assert scored[rec[f"output_{p}"]["value"]] == best and scored[rec[f"output_{3 - p}"]["value"]] == worst
        source = prompt_records[rec["prompt_index"]]
        assert rec["id"] == source["id"] and rec["caption_type"] == source["caption_type"]
        assert [t["from"] for t in rec["conversations"]] == ["human", "gpt"]
        # the reward is the reward model's score of that response, given the prompt's facts as PPO gives them
        # (same fact order: seed, prompt index)
        scored_record = {**rec, "conversations": [rec["conversations"][0],
                                                  {"from": "gpt", "value": rec[f"output_{p}"]["value"]}]}
        facts = prompts.prompt_facts(source, rm.captions, source["caption_type"])
        ids = rm.input_ids(scored_record, np.random.default_rng([3, rec["prompt_index"]]), facts=facts)
        if source["caption_type"] in prompts.MULTIPLE_CHOICE_TYPES:  # the A-OKVQA rationale, not the captions
            assert facts == rm.captions["aok_" + source["image"]] and facts != source["captions"]
        image = Image.open(Path(world["images"]) / rec["image"]).convert("RGB")
        np.testing.assert_allclose(rm.score_ids([ids], [image])[0], best, rtol=1e-4, atol=1e-4)

    # the file is DPO training data as it stands
    tok = AutoTokenizer.from_pretrained(world["tokenizer"])
    image_id = tok.convert_tokens_to_ids("<image>")
    loader = build_dpo_loader([(str(out), world["images"], 1.0)], tok, image_token_id=image_id, num_image_tokens=4,
                              image_size=28, max_length=256, global_batch_size=len(records), seed=0, shuffle=False,
                              num_epochs=1, read_threads=0, strict=True)
    batch = next(iter(loader))
    assert batch["valid"].sum() == len(records)

    before = (out.read_bytes(), progress_path(out).read_bytes())
    assert cli.main(argv) == 0
    assert (out.read_bytes(), progress_path(out).read_bytes()) == before


def test_pairs_leave_out_responses_that_never_stopped(tmp_path, tiny_models):
    world, sft = tiny_models["world"], tiny_models["sft"]
    out = tmp_path / "prefs.json"
    assert cli.main(pairs_argv(world, sft, tiny_models["reward"], out)) == 0
    entries = [json.loads(line) for line in progress_path(out).read_text().splitlines()]
    stopped = [s["stopped"] for e in entries for s in e["samples"]]
    assert any(stopped) and not all(stopped)  # the tiny policy stops sometimes within 8 tokens
    for entry in entries:
        usable = {s["text"] for s in entry["samples"] if s["stopped"] and s["text"] and s["reward"] is not None}
        if "pair" in entry:
            assert {entry["pair"]["output_1"]["value"], entry["pair"]["output_2"]["value"]} <= usable
        else:
            assert entry["skipped"] == "fewer_than_two_responses" and len(usable) < 2

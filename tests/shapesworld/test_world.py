"""write_world: determinism by seed, the images against their scene graphs, the files through the
readers the real data uses, and the generated text against the annotator."""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fact_rlhf_jax.shapesworld import write_world
from fact_rlhf_jax.shapesworld.annotator import annotate, prefer
from fact_rlhf_jax.shapesworld.render import render
from fact_rlhf_jax.shapesworld.scene import BACKGROUNDS, RGB, Scene, SceneObject, load_scenes


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    paths = write_world(root, num_images=24, seed=7, noise=0.3, label_noise=0.0)
    return root, paths


def test_same_seed_same_bytes_other_seed_other_bytes(world, tmp_path):
    root, _ = world
    again = write_world(tmp_path / "again", num_images=24, seed=7, noise=0.3, label_noise=0.0)
    other = write_world(tmp_path / "other", num_images=24, seed=8, noise=0.3, label_noise=0.0)
    assert _digest(root) == _digest(tmp_path / "again")
    assert len(_digest(root)) > 24
    a, b = _digest(root), _digest(tmp_path / "other")
    assert a.keys() == b.keys()
    assert a["images/000000000000.png"] != b["images/000000000000.png"]
    assert a["sft.json"] != b["sft.json"]
    assert set(again) == set(other)


def test_images_match_scene_graphs(world):
    root, paths = world
    scenes = load_scenes(paths["scene_graphs"])
    assert len(scenes) == 24 + 8  # default eval images: max(8, 24 // 4)
    for file, scene in list(scenes.items())[:10]:
        img = np.asarray(Image.open(root / "images" / file).convert("RGB")).astype(int)
        assert img.shape == (64, 64, 3)
        assert 1 <= len(scene.objects) <= 4
        for o in scene.objects:
            # the pixel at the cell centre (+ jitter) is the object's colour, up to the +-12 jitter
            cy = int((o.cell[0] + 0.5 + o.jitter[0]) * 64 / 3)
            cx = int((o.cell[1] + 0.5 + o.jitter[1]) * 64 / 3)
            assert np.abs(img[cy, cx] - np.array(RGB[o.colour])).max() <= 12, (file, o)


def test_render_background_and_noise():
    scene = Scene((SceneObject("square", "blue", "large", (1, 1)),), background="beige", noise=0.0)
    img = np.asarray(render(scene, 48, np.random.default_rng(0))).astype(int)
    assert (img[0, 0] == BACKGROUNDS["beige"]).all()  # corners are empty cells
    assert (img[47, 47] == BACKGROUNDS["beige"]).all()
    noisy = np.asarray(render(Scene(scene.objects, "beige", 16.0), 48, np.random.default_rng(0))).astype(int)
    assert 8 < (noisy[:8, :8] - np.array(BACKGROUNDS["beige"])).std() < 24


def test_sft_loads_through_llava_reader_and_noise_is_real(world):
    from fact_rlhf_jax.data.sources import read_llava_json
    from fact_rlhf_jax.data.conversation import conversation_pairs

    root, paths = world
    src = read_llava_json(str(paths["sft"]), str(paths["images"]))
    assert len(src) == 48  # two conversations per image
    scenes = load_scenes(paths["scene_graphs"])
    invented = json.loads(paths["sft_hallucinations"].read_text())
    assert 0 < len(invented) < 24
    for i in range(len(src)):
        rec = src.record(i)
        assert rec["conversations"][0]["value"].startswith("<image>\n")
        assert src.load_image(rec).size == (64, 64)
        pairs = conversation_pairs(rec["conversations"], src.has_image(rec))
        assert len(pairs) >= 2
        scene = scenes[rec["image"]]
        for _, answer in pairs:
            found = annotate(scene, answer).hallucinated
            if rec["id"] in invented and answer == pairs[0][1]:
                # a noisy description names each invented object (maybe more than once)
                assert {h.split(" #")[0] for h in found} == set(invented[rec["id"]]), (rec["id"], answer)
            else:
                assert found == (), (rec["id"], answer)


def test_preference_file(world):
    root, paths = world
    scenes = load_scenes(paths["scene_graphs"])
    records = json.loads(paths["preference"].read_text())
    assert len(records) == 24
    wins = 0
    for r in records:
        assert set(r) == {"id", "image", "conversations", "output_1", "output_2", "preference", "hallucination"}
        assert r["conversations"][0]["from"] == "human" and r["conversations"][-1]["from"] == "gpt"
        assert r["conversations"][0]["value"].startswith("<image>\n")
        assert r["preference"] in (1, 2)
        scene = scenes[r["image"]]
        a1, a2 = annotate(scene, r["output_1"]["value"]), annotate(scene, r["output_2"]["value"])
        # label_noise=0: the preferred output has fewer hallucinations, or as few and more coverage
        good, bad = (a1, a2) if r["preference"] == 1 else (a2, a1)
        assert (good.num_hallucinated, -len(good.covered)) < (bad.num_hallucinated, -len(bad.covered))
        wins += good.num_hallucinated < bad.num_hallucinated
        assert r["hallucination"] == int(bool(a1.hallucinated or a2.hallucinated))
    assert wins > 0


def test_label_noise_flips_labels(tmp_path):
    clean = write_world(tmp_path / "c", num_images=40, seed=1, label_noise=0.0)
    flipped = write_world(tmp_path / "f", num_images=40, seed=1, label_noise=1.0)
    a = json.loads(clean["preference"].read_text())
    b = json.loads(flipped["preference"].read_text())
    assert [r["output_1"] for r in a] == [r["output_1"] for r in b]
    assert all(x["preference"] + y["preference"] == 3 for x, y in zip(a, b))


def test_ppo_prompts_and_captions(world):
    root, paths = world
    captions = json.loads(paths["captions"].read_text())
    prompts = json.loads(paths["ppo_prompts"].read_text())
    assert len(prompts) == 24
    for p in prompts:
        assert len(p["conversations"]) == 2
        assert p["conversations"][0]["value"].startswith("<image>\n")
        assert len(p["captions"]) == 5 and len(set(p["captions"])) == 5
        assert p["captions"] == captions[p["image"]]
        assert p["caption_type"] in range(1, 8)
        assert isinstance(p["length_bonus"], float)
        answer = p["conversations"][1]["value"]
        if 2 <= p["caption_type"] <= 5:  # multiple choice: the reference answer earns the bonus
            letter = "ABCD"[p["caption_type"] - 2]
            assert answer.startswith(f"{letter}.") or f"correct option is {letter}." in answer
            assert len(captions["aok_" + p["image"]]) == 3
        if p["caption_type"] == 6:
            assert answer.startswith("No")
        if p["caption_type"] == 7:
            assert answer.startswith("Yes")
    scenes = load_scenes(paths["scene_graphs"])
    for file, caps in captions.items():
        if not file.startswith("aok_"):
            assert all(annotate(scenes[file], c).hallucinated == () for c in caps), file
            assert all(annotate(scenes[file], c).coverage == 1.0 for c in caps), file


def test_pope_and_mmhal_load_through_eval_readers(world):
    from fact_rlhf_jax.eval import mmhal, pope
    from fact_rlhf_jax.shapesworld.annotator import find_mentions

    root, paths = world
    scenes = load_scenes(paths["scene_graphs"])
    for split in ("random", "popular", "adversarial"):
        qs = pope.load_questions(str(paths[f"pope_{split}"]))
        assert sum(q.label for q in qs) * 2 == len(qs)  # balanced
        for q in qs:
            [m] = find_mentions(q.text)
            assert (scenes[q.image].count(shape=m.shape, colour=m.colour) > 0) == q.label
            if split == "adversarial" and not q.label:
                kinds = {(o.colour, o.shape) for o in scenes[q.image].objects}
                near = any(m.colour == c or m.shape == s for c, s in kinds)
                assert near or len(kinds) * 2 > 13  # near misses first
    records = mmhal.load_records(str(paths["mmhal"]), need_answers=False)
    assert [r["question_type"] for r in records[:8]] == list(mmhal_types())
    for r in records:
        assert mmhal.image_path(r, str(root), "test").endswith(r["image_src"])
        assert mmhal.image_path(r, str(root / "images"), "test").endswith(r["image_src"])
        assert r["image_content"] == scenes[r["image_src"]].names


def mmhal_types():
    return ("attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other")


def test_cli_writes_world(tmp_path):
    from fact_rlhf_jax.cli import main

    assert main(["shapesworld", "--out", str(tmp_path / "w"), "--images", "6", "--seed", "2", "--noise", "0.5"]) == 0
    world = json.loads((tmp_path / "w" / "world.json").read_text())
    assert world["num_images"] == 6 and world["noise"] == 0.5 and world["seed"] == 2
    assert (tmp_path / "w" / "images" / "000000000005.png").is_file()
    assert (tmp_path / "w" / "tokenizer" / "tokenizer.json").is_file()


def test_tokenizer_merges_the_conversation_template(world):
    # the system prompt is in every conversation: its words must be pieces, not single characters
    from transformers import AutoTokenizer

    from fact_rlhf_jax.data.conversation import render

    _, paths = world
    tok = AutoTokenizer.from_pretrained(str(paths["tokenizer"]))
    for template in ("vicuna_v1", "llava_v1"):
        prompt = render(template, [("Describe the image in detail.", None)])
        assert len(tok(prompt)["input_ids"]) < 45, template

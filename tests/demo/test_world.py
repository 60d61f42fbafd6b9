"""The demo world's long SFT conversations: one per image, every turn of its records kept plus the extra questions,
the image placeholder on the first human turn only."""

import json
import random

from fact_rlhf_jax.demo.world import long_conversations, write_demo_world


def test_long_conversations_merge_each_images_records(tmp_path):
    world = write_demo_world(tmp_path / "w", train_images=6, eval_images=8, image_size=48, noise=0.0,
                             sft_eval_images=2)
    records = json.loads(world.path("sft").read_text())
    graphs = json.loads(world.path("scene_graphs").read_text())
    long = long_conversations([dict(r) for r in records], graphs, extra_qa=3, rng=random.Random(0))
    assert sorted(r["image"] for r in long) == sorted({r["image"] for r in records})
    for conv in long:
        turns = conv["conversations"]
        own = [r for r in records if r["image"] == conv["image"]]
        assert len(turns) == sum(len(r["conversations"]) for r in own) + 2 * 3
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
        original = {t["value"].replace("<image>\n", "") for r in own for t in r["conversations"]}
        assert original <= {t["value"].replace("<image>\n", "") for t in turns}


def test_demo_world_writes_long_sft_splits(tmp_path):
    world = write_demo_world(tmp_path / "w", train_images=6, eval_images=8, image_size=48, noise=0.0,
                             sft_eval_images=2, extra_qa=2)
    train, held = (json.loads(p.read_text()) for p in (world.sft_train, world.sft_eval))
    assert len(train) == 4 and len(held) == 2
    assert {r["image"] for r in train}.isdisjoint({r["image"] for r in held})

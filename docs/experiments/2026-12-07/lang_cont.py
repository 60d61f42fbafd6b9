"""Text-only continuation of the demo's SFT model on documents of the world's text: one per training image, its
(possibly noisy) SFT description and its five captions ("  - caption" lines), in a random order, plain template,
the LLM only. usage: lang_cont.py DEMO_DIR OUT_WORKDIR STEPS"""
import dataclasses
import json
import random
import sys
from pathlib import Path

from fact_rlhf_jax.demo import config as C
from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.train.loop import run_training

demo, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
world = World(demo / "world")
sft = json.loads(world.path("sft").read_text())
caps = json.loads(world.path("captions").read_text())
held = {r["image"] for r in json.loads(world.sft_eval.read_text())}
rng = random.Random(0)
docs = []
for r in sft:
    if not r["id"].endswith("_desc") or r["image"] in held:
        continue
    desc = r["conversations"][1]["value"]
    c = list(caps[r["image"]])
    rng.shuffle(c)
    block = "\n".join("  - " + x for x in c)
    doc = desc + "\n" + block if rng.random() < 0.5 else block + "\n" + desc
    # the plain template ignores the human turn's text; it only has to be non-empty for a record without an image
    docs.append({"id": r["id"] + "_doc", "conversations": [{"from": "human", "value": "document"},
                                                          {"from": "gpt", "value": doc}]})
out.mkdir(parents=True, exist_ok=True)
(out.parent / "docs.json").write_text(json.dumps(docs))
s = dataclasses.replace(C.FULL, sft=C.Schedule(steps=steps, batch=32, lr=1e-3, warmup=10, max_text_length=256))
c = C.sft_config(world, s, init_from=str(demo / "sft"))
c.data.train = [(str(out.parent / "docs.json"), str(world.path("images")), 1.0)]
c.data.eval = []
c.data.template = "plain"
c.trainable = ("llm/.*",)
c.eval_every = -1
print(run_training(c, str(out)).step)

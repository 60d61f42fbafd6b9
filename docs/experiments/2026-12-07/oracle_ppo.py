"""PPO's ceiling: the demo's PPO with the annotator's preference score added as the symbolic bonus of description
prompts (caption_type 1), so it dominates the reward model. usage: oracle_ppo.py OUT_DIR STEPS pref|sym DEMO_DIR [KL_COEF [LENGTH_BONUS_SCORE]]"""
import hashlib, json, sys
from pathlib import Path
import numpy as np
from PIL import Image
from fact_rlhf_jax.demo import config as C
from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.data import image as image_lib
from fact_rlhf_jax.rl import shaping
from fact_rlhf_jax.shapesworld.annotator import annotate, preference_score
from fact_rlhf_jax.shapesworld.scene import load_scenes
from fact_rlhf_jax.train import ppo
from fact_rlhf_jax.train.loop import run_training
import dataclasses

out = Path(sys.argv[1]); steps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
MODE = sys.argv[3] if len(sys.argv) > 3 else "pref"
base = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("/tmp/exp/base")
world = World(base / "world")
scenes = load_scenes(world.path("scene_graphs"))
prompts = json.loads(world.path("ppo_prompts").read_text())
by_hash = {}
for r in prompts:
    px = image_lib.preprocess(Image.open(world.path("images") / r["image"]).convert("RGB"), 48, pad_to_square=True)
    by_hash[hashlib.sha1(np.asarray(px, np.float32).tobytes()).hexdigest()] = r["image"]
queue = []
orig_bonus = shaping.symbolic_bonus

def bonus(text, ctype):
    image = queue.pop(0)
    if int(ctype) != 1 or image is None:
        return orig_bonus(text, ctype)
    if MODE == "sym":
        a = annotate(scenes[image], text)
        return float(len(a.covered) - len(a.hallucinated))
    return float(preference_score(scenes[image], text))

shaping.symbolic_bonus = bonus
orig_call = ppo.PPOStep.__call__

def call(self, state, host_batch):
    queue.clear()
    for px in host_batch["pixel_values"]:
        queue.append(by_hash.get(hashlib.sha1(np.asarray(px, np.float32).tobytes()).hexdigest()))
    print("matched", sum(q is not None for q in queue), "of", len(queue), flush=True)
    return orig_call(self, state, host_batch)

ppo.PPOStep.__call__ = call
kl = float(sys.argv[5]) if len(sys.argv) > 5 else C.FULL.ppo.kl_coef
s = dataclasses.replace(C.FULL, ppo=dataclasses.replace(C.FULL.ppo, steps=steps, kl_coef=kl))
c = C.ppo_config(world, s, str(base / "sft"), str(base / "rm_vanilla"))
if len(sys.argv) > 6:  # e.g. -10: the reference's length term, unscaled to the demo's 96 new tokens
    c.ppo.length_bonus_score = float(sys.argv[6])
print(run_training(c, str(out / "ppo")).step)
from fact_rlhf_jax.demo.evaluate import evaluate_model
from fact_rlhf_jax.inference import ChatModel
r = evaluate_model(ChatModel.load(out / "ppo", batch_size=64), world, out / "eval", s.eval)
print(json.dumps({k: v for k, v in r.items() if not k.endswith("_ci")}))

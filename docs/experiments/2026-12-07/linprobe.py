"""Is hallucination linearly readable from the frozen base's last-token state of the reward input?
usage: linprobe.py RM_DIR SAMPLES_JSON DEMO_DIR"""
import json, sys
from pathlib import Path
import numpy as np
import jax, jax.numpy as jnp
from PIL import Image
from fact_rlhf_jax.scoring import RewardModel
from fact_rlhf_jax.models import llava, heads
from fact_rlhf_jax import sampling
from fact_rlhf_jax.data import image as image_lib
from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.shapesworld.annotator import annotate
from fact_rlhf_jax.shapesworld.scene import Scene

rm = RewardModel.load(sys.argv[1], batch_size=32)
use_adapter = False
samples = json.loads(Path(sys.argv[2]).read_text())
world = World(Path(sys.argv[3]) / "world")
graphs = json.loads(world.path("scene_graphs").read_text()); caps = json.loads(world.path("captions").read_text())
ids, ims, y, words, cov = [], [], [], [], []
for i, s in enumerate(samples):
    im = image_lib.preprocess(Image.open(world.path("images") / s["image"]).convert("RGB"), rm.cfg.vision.image_size)
    sc = Scene.from_json(graphs[s["image"]])
    for t in s["texts"]:
        rec = {"image": s["image"], "conversations": [{"from": "human", "value": "<image>\n" + s["question"]}, {"from": "gpt", "value": t or "."}]}
        ids.append(rm.input_ids(rec, np.random.default_rng([0, i]), facts=caps[s["image"]])); ims.append(im)
        a = annotate(sc, t); y.append(len(a.hallucinated)); words.append(len(t.split())); cov.append(len(a.covered))

@jax.jit
def feats(x, px, mask):
    h = llava.hidden_states(rm.base, rm.cfg, x, px, mask, lora=rm.adapter if use_adapter else None, lora_scale=rm.lora_scale)
    return heads.at_last_token(h, mask)

F = []
for st in range(0, len(ids), 32):
    chunk = [list(r) for r in ids[st:st + 32]]
    x, mask = sampling.left_pad_prompts(chunk, 0, 32)
    x, mask = sampling.left_pad(x, mask, 512, 0)
    px = np.stack([ims[min(st + j, len(ims) - 1)] for j in range(32)])
    F.append(np.asarray(feats(x, px, mask))[: len(chunk)])
F = np.concatenate(F); y = np.array(y, float); words = np.array(words, float); cov = np.array(cov, float)
n = len(y); tr = np.arange(n) < int(0.7 * n); te = ~tr
def ridge(X, t, lam=1.0):
    X1 = np.c_[X, np.ones(len(X))]
    w = np.linalg.solve(X1[tr].T @ X1[tr] + lam * np.eye(X1.shape[1]), X1[tr].T @ t[tr])
    p = X1 @ w
    return np.corrcoef(p[te], t[te])[0, 1]
Fz = (F - F[tr].mean(0)) / (F[tr].std(0) + 1e-6)
for lam in (1.0, 30.0, 300.0):
    print(f"lam {lam}: r(hall) {ridge(Fz, y, lam):.2f}  r(words) {ridge(Fz, words, lam):.2f}  r(cov) {ridge(Fz, cov, lam):.2f}  r(hall | words): {ridge(np.c_[Fz, words], y, lam):.2f} vs words only {ridge(words[:, None], y, lam):.2f}")

"""Diagnostics: K samples per eval image (description prompts) from a policy; each reward model's ranking of
them against the annotator. usage: bon.py DEMO_DIR POLICY_DIR K N [RM_DIR ...]"""
import json, sys
from pathlib import Path
import numpy as np
import jax
from PIL import Image

demo, policy, K, N = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rms = sys.argv[5:]
from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.shapesworld import text
from fact_rlhf_jax.shapesworld.annotator import annotate, preference_score
from fact_rlhf_jax.shapesworld.scene import Scene

world = World(demo / "world")
graphs = json.loads(world.path("scene_graphs").read_text())
caps = json.loads(world.path("captions").read_text())
files = world.eval_images()[:N]
cache = demo / f"samples_{Path(policy).name}_{K}_{N}.json"
if cache.exists():
    samples = json.loads(cache.read_text())
else:
    from fact_rlhf_jax.inference import ChatModel
    chat = ChatModel.load(policy, batch_size=64, seed=0)
    qs = [text.DESCRIBE_PROMPTS[i % len(text.DESCRIBE_PROMPTS)] for i in range(N)]
    ims = [Image.open(world.path("images") / f).convert("RGB") for f in files]
    rows = chat.generate_ids([q for q in qs for _ in range(K)], [im for im in ims for _ in range(K)],
                             max_new_tokens=96, temperature=1.0, conv_mode="vicuna_v1", rng=jax.random.key(1))
    texts = [chat.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]
    samples = [{"image": f, "question": q, "texts": texts[i * K:(i + 1) * K]} for i, (f, q) in enumerate(zip(files, qs))]
    cache.write_text(json.dumps(samples))

def stats(choice):
    ment = hall = cov = pres = 0
    for s, k in zip(samples, choice):
        a = annotate(Scene.from_json(graphs[s["image"]]), s["texts"][k])
        ment += len(a.mentioned); hall += len(a.hallucinated); cov += len(a.covered); pres += len(a.present)
    return f"CHAIR-i {100*hall/max(ment,1):.1f} cov {100*cov/pres:.1f} words {np.mean([len(s['texts'][k].split()) for s,k in zip(samples,choice)]):.1f}"

ann = [[preference_score(Scene.from_json(graphs[s["image"]]), t) for t in s["texts"]] for s in samples]
nh = [[len(annotate(Scene.from_json(graphs[s["image"]]), t).hallucinated) for t in s["texts"]] for s in samples]
words = [[len(t.split()) for t in s["texts"]] for s in samples]
print("greedy-free T=1 first sample:", stats([0] * len(samples)))
print("oracle best:", stats([int(np.argmax(a)) for a in ann]))
print("fewest halluc, then most words:", stats([max(range(K), key=lambda k: (-nh[i][k], words[i][k])) for i in range(len(samples))]))
print("annotator corr words", np.corrcoef(np.ravel(ann), np.ravel(words))[0, 1])
from fact_rlhf_jax.scoring import RewardModel
for rm_dir in rms:
    rm = RewardModel.load(rm_dir, batch_size=32)
    ids, ims = [], []
    for i, s in enumerate(samples):
        im = Image.open(world.path("images") / s["image"]).convert("RGB")
        for t in s["texts"]:
            rec = {"image": s["image"], "conversations": [{"from": "human", "value": "<image>\n" + s["question"]},
                                                          {"from": "gpt", "value": t or "."}]}
            ids.append(rm.input_ids(rec, np.random.default_rng([0, i]), facts=caps[s["image"]]))
            ims.append(im)
    sc = np.array(rm.score_ids(ids, ims)).reshape(len(samples), K)
    right = total = 0
    for i in range(len(samples)):
        for a in range(K):
            for b in range(K):
                if ann[i][a] > ann[i][b]:
                    total += 1; right += sc[i][a] > sc[i][b]
    # within-prompt centered correlations
    c = lambda x: (np.asarray(x, float) - np.asarray(x, float).mean(1, keepdims=True)).ravel()
    print(f"{rm_dir}: pair acc {right/total:.3f} ({total}), corr words {np.corrcoef(c(sc), c(words))[0,1]:+.2f}, "
          f"corr nhall {np.corrcoef(c(sc), c(nh))[0,1]:+.2f}, corr ann {np.corrcoef(c(sc), c(ann))[0,1]:+.2f}; best-of-{K}: {stats(sc.argmax(1))}")

"""Where a demo run's greedy descriptions hallucinate: by the position of the mention, how many hallucinated mentions
repeat a colour + shape already named (the annotator calls the second "orange star #2"), CHAIR with those mentions
dropped, and the number of objects the opening sentence claims against the true one.
usage: repeats.py DEMO eval_sft [eval_rlhf ...]"""
import collections, json, re, sys
from fact_rlhf_jax.eval.metrics import chair
from fact_rlhf_jax.shapesworld.annotator import annotate
from fact_rlhf_jax.shapesworld.scene import load_scenes

NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
run = sys.argv[1]
scenes = load_scenes(f"{run}/world/scene_graphs.json")
for sub in sys.argv[2:]:
    rows = [json.loads(line) for line in open(f"{run}/{sub}/descriptions.jsonl")]
    mentioned, present, kept, hallucinated, repeats = [], [], [], 0, 0
    by_position = collections.defaultdict(lambda: [0, 0])
    claims = collections.Counter()
    for r in rows:
        a = annotate(scenes[r["image"]], r["text"])
        mentioned.append(a.mentioned)
        present.append(a.present)
        kept.append(tuple(m for m in a.mentioned if "#" not in m))
        hallucinated += len(a.hallucinated)
        repeats += sum("#" in h for h in a.hallucinated)
        for k, m in enumerate(a.mentioned):
            by_position[k][0] += 1
            by_position[k][1] += m in a.hallucinated
        said = re.search(r"\b(one|two|three|four|five|six) objects?\b", r["text"])
        claims[(len(scenes[r["image"]].objects), NUMBERS[said.group(1)] if said else None)] += 1
    c, d = chair(mentioned, present), chair(kept, present)
    print(f"{sub}: CHAIR-i {c['chair_i']:.3f} coverage {c['coverage']:.3f}; hallucinated mentions {hallucinated}, "
          f"repeats of a named kind {repeats}; repeats dropped: CHAIR-i {d['chair_i']:.3f} coverage {d['coverage']:.3f}")
    print("  hallucinated share by mention position:",
          {k: f"{h / n:.2f} of {n}" for k, (n, h) in sorted(by_position.items())})
    print("  (objects, claimed):", sorted(claims.items(), key=lambda x: (x[0][0], x[0][1] or 0)))

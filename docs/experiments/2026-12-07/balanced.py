"""All pairs of a prompt's samples with different annotator scores, subsampled so that the preferred response is
the longer one (in words) in half of them. usage: balanced.py SRC_PAIRS_DIR DST_PAIRS_DIR"""
import json, sys, random
from pathlib import Path
from fact_rlhf_jax.pairs import PairSettings, Prompt, pair_record

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
prompts = json.loads((src / "prompts.json").read_text())
settings = PairSettings(samples=4, max_new_tokens=96)
longer, shorter = [], []
for line in (src / "preference.json.progress.jsonl").read_text().splitlines():
    e = json.loads(line)
    if "samples" not in e:
        continue
    rec = prompts[e["prompt_index"]]
    p = Prompt(e["prompt_index"], rec, rec["conversations"][0]["value"], rec["conversations"][1]["value"], None)
    ss = [s for s in e["samples"] if s["text"] and s["stopped"]]
    texts = [s["text"] for s in ss]; r = [s["reward"] for s in ss]
    seen = set()
    for a in range(len(ss)):
        for b in range(len(ss)):
            if r[a] > r[b] and (texts[a], texts[b]) not in seen:
                seen.add((texts[a], texts[b]))
                wa, wb = len(texts[a].split()), len(texts[b].split())
                if wa == wb:
                    continue
                (longer if wa > wb else shorter).append(pair_record(p, texts, r, a, b, settings))
rng = random.Random(0)
n = min(len(longer), len(shorter))
pairs = rng.sample(longer, n) + rng.sample(shorter, n)
rng.shuffle(pairs)
dst.mkdir(parents=True, exist_ok=True)
(dst / "prompts.json").write_text(json.dumps(prompts))
(dst / "preference.json").write_text(json.dumps(pairs))
(dst / "done.json").write_text(json.dumps({"seconds": 0, "result": {"pairs": len(pairs)}}))
print(len(pairs), "pairs")

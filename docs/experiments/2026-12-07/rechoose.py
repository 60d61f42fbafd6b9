"""Re-pair a pairs stage's progress file with another chooser. usage: rechoose.py SRC_PAIRS_DIR DST_PAIRS_DIR WORLD PAIRING"""
import json, sys
from pathlib import Path
from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.demo.preferences import length_controlled_chooser
from fact_rlhf_jax.pairs import PairSettings, Prompt, choose_pair

src, dst, world, pairing = Path(sys.argv[1]), Path(sys.argv[2]), World(Path(sys.argv[3])), sys.argv[4]
choose = {"same_mentions": length_controlled_chooser(world, equal=True), "more_mentions": length_controlled_chooser(world),
          "best_worst": choose_pair}[pairing]
prompts = json.loads((src / "prompts.json").read_text())
settings = PairSettings(samples=4, max_new_tokens=96)
dst.mkdir(parents=True, exist_ok=True)
(dst / "prompts.json").write_text(json.dumps(prompts))
out, pairs = [], []
for line in (src / "preference.json.progress.jsonl").read_text().splitlines():
    e = json.loads(line)
    if "samples" not in e:
        out.append(e); continue
    rec = prompts[e["prompt_index"]]
    p = Prompt(e["prompt_index"], rec, rec["conversations"][0]["value"], rec["conversations"][1]["value"], None)
    texts = [s["text"] for s in e["samples"]]
    usable = [bool(s["text"]) and s["stopped"] for s in e["samples"]]
    pair, why = choose(p, texts, [s["reward"] for s in e["samples"]], usable, settings)
    e = {k: v for k, v in e.items() if k not in ("pair", "skipped")}
    e.update({"pair": pair} if pair else {"skipped": why})
    out.append(e)
    if pair:
        pairs.append(pair)
(dst / "preference.json.progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in out))
(dst / "preference.json").write_text(json.dumps(pairs))
print(len(pairs), "pairs of", len(out))

"""Greedy captions of the eval images from a caption-pretraining stage (the `plain` template, first line of each
answer), CHAIR and the hallucinated share by mention position. usage: captions.py DEMO pretrain [N]"""
import collections, sys
from pathlib import Path
from PIL import Image
from fact_rlhf_jax.demo.world import World
from fact_rlhf_jax.eval import metrics
from fact_rlhf_jax.inference import ChatModel
from fact_rlhf_jax.shapesworld.annotator import annotate
from fact_rlhf_jax.shapesworld.scene import load_scenes

run, stage = Path(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
world = World(run / "world")
model = ChatModel.load(run / stage, tokenizer=world.path("tokenizer"), batch_size=64)
files = world.eval_images()[:n]
scenes = load_scenes(world.path("scene_graphs"))
images = [Image.open(world.path("images") / f).convert("RGB") for f in files]
texts = [t.strip().split("\n")[0] for t in model.answer([""] * len(files), images, max_new_tokens=48, conv_mode="plain")]
notes = [annotate(scenes[f], t) for f, t in zip(files, texts)]
print(metrics.chair([a.mentioned for a in notes], [a.present for a in notes]))
by_position = collections.defaultdict(lambda: [0, 0])
for a in notes:
    for k, m in enumerate(a.mentioned):
        by_position[k][0] += 1
        by_position[k][1] += m in a.hallucinated
print("hallucinated share by mention position:", {k: f"{h / c:.2f} of {c}" for k, (c, h) in sorted(by_position.items())})

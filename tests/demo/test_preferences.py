"""The demo's on-policy preference pairs: prompts from the world's preference records, samples labelled by
the annotator, pairs controlled for length."""

import json

import pytest

from fact_rlhf_jax.demo.preferences import annotator_scorer, length_controlled_chooser, prompt_records
from fact_rlhf_jax.demo.world import write_demo_world
from fact_rlhf_jax.pairs import PairSettings, make_pairs
from fact_rlhf_jax.shapesworld.annotator import annotate
from fact_rlhf_jax.shapesworld.scene import Scene


class ScriptedChat:
    """Stands in for `ChatModel` where the sampler is not under test: row r of a call answers with
    script[question][r % K] (each prompt's K rows are consecutive)."""

    batch_size = 8

    def __init__(self, script, k):
        self.script, self.k = script, k
        self.tokenizer = self

    def generate_ids(self, questions, images, **kw):
        return [[(q.replace("<image>", "").strip(), j % self.k)] for j, q in enumerate(questions)]

    def decode(self, row, skip_special_tokens=True):
        q, j = row[0]
        return self.script[q][j]


def test_prompts_are_the_preference_records_final_questions(tmp_path):
    world = write_demo_world(tmp_path / "w", train_images=6, eval_images=8, image_size=48, noise=0.0)
    records = json.loads(world.path("preference").read_text())
    prompts = prompt_records(world, 4)
    assert len(prompts) == 4
    for p, r in zip(prompts, records):
        human, gpt = p["conversations"]
        assert p["image"] == r["image"]
        assert human["value"] == "<image>\n" + r["conversations"][-2]["value"].replace("<image>\n", "")
        assert gpt["value"] == r["conversations"][-1]["value"]


@pytest.mark.parametrize("equal", [False, True])
def test_pairs_never_prefer_saying_less(tmp_path, equal):
    """Pairs contrast a faithful answer with a hallucinated one of the same length; a prompt whose only better
    answers say less gives no pair."""
    world = write_demo_world(tmp_path / "w", train_images=6, eval_images=8, image_size=48, noise=0.0)
    graphs = json.loads(world.path("scene_graphs").read_text())
    prompts = prompt_records(world, 3)
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    script = {}
    for n, p in enumerate(prompts):
        scene = Scene.from_json(graphs[p["image"]])
        first = scene.objects[0]
        absent = next(f"{c} {sh}" for c in ("red", "blue", "green", "purple", "yellow", "orange", "black")
                      for sh in ("circle", "square", "star", "cross") if scene.count(colour=c, shape=sh) == 0)
        faithful = f"There is a {first.colour} {first.shape}."
        wrong = f"There is a {absent}."
        many = "There is a red star, a blue star, a green star and a purple star."
        question = p["conversations"][0]["value"].replace("<image>", "").strip()
        # prompt 2: the only better answer says nothing -> no pair
        script[question] = (["Nothing.", many, "Nothing.", many] if n == 2 else [many, faithful, "Nothing.", wrong])
    out = tmp_path / "pairs.json"
    summary = make_pairs(ScriptedChat(script, 4), annotator_scorer(world), str(tmp_path / "prompts.json"), str(out),
                         PairSettings(samples=4, max_new_tokens=8), image_folder=str(world.path("images")),
                         choose=length_controlled_chooser(world, equal=equal))
    assert summary["pairs"] == 2 and summary["skipped"] == {"no_length_controlled_pair": 1}
    for pair in json.loads(out.read_text()):
        scene = Scene.from_json(graphs[pair["image"]])
        better = annotate(scene, pair[f"output_{pair['preference']}"]["value"])
        worse = annotate(scene, pair[f"output_{3 - pair['preference']}"]["value"])
        assert not better.hallucinated and len(better.covered) == 1
        assert len(worse.mentioned) == 1 and len(worse.hallucinated) == 1


def test_same_mentions_pairs_answers_of_equal_length(tmp_path):
    from fact_rlhf_jax.pairs import Prompt
    from fact_rlhf_jax.shapesworld.annotator import preference_score

    world = write_demo_world(tmp_path / "w", train_images=12, eval_images=8, image_size=48, noise=0.0)
    graphs = json.loads(world.path("scene_graphs").read_text())
    image = next(k for k, g in graphs.items() if len(Scene.from_json(g).objects) >= 2)
    scene = Scene.from_json(graphs[image])
    a, b = scene.objects[:2]
    absent = next(f"{c} {sh}" for c in ("red", "blue", "green", "purple", "yellow", "orange", "black")
                  for sh in ("circle", "square", "star", "cross") if scene.count(colour=c, shape=sh) == 0)
    texts = [f"There is a {a.colour} {a.shape} and a {b.colour} {b.shape}.", f"There is a {absent}.",
             f"There is a {a.colour} {a.shape}."]
    scores = [float(preference_score(scene, t)) for t in texts]
    prompt = Prompt(0, {"image": image}, "Describe the image.", "", None)
    settings = PairSettings(samples=3)
    picked = {}
    for equal in (False, True):
        pair, _ = length_controlled_chooser(world, equal=equal)(prompt, texts, scores, [True] * 3, settings)
        picked[equal] = {pair["output_1"]["value"], pair["output_2"]["value"]}
    assert picked[False] == {texts[0], texts[1]}  # two objects right against one wrong: the largest gap
    assert picked[True] == {texts[2], texts[1]}   # one object each

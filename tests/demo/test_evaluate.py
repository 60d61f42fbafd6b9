"""demo.evaluate on a small world with scripted answerers: a faithful one scores perfectly, one that
invents an object in every description has the hallucination rate worked out by hand, and a rerun answers
nothing again."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from fact_rlhf_jax.demo.evaluate import METRICS, EvalSettings, evaluate_model, mc_questions
from fact_rlhf_jax.demo.world import World, write_demo_world
from fact_rlhf_jax.shapesworld.scene import load_scenes
from fact_rlhf_jax.shapesworld.text import DESCRIBE_PROMPTS, absent_kinds

SETTINGS = EvalSettings(batch_size=8, resamples=200)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_demo_world(tmp_path_factory.mktemp("w"), train_images=8, eval_images=10, image_size=48, noise=0.0,
                            sft_eval_images=2)


class ScriptedAnswerer:
    """Answers from the scene graph of the image it is shown (found by its pixels)."""

    def __init__(self, world: World, invent: bool = False):
        self.scenes = load_scenes(world.path("scene_graphs"))
        files = world.eval_images()
        self.by_pixels = {self._key(Image.open(world.path("images") / f).convert("RGB")): f for f in files}
        self.mc = {(f, qa.question): qa.label for f, qa in zip(files, mc_questions(files, self.scenes))}
        records = json.loads(world.path("mmhal").read_text())
        self.mmhal = {(r["image_src"], r["question"]): r["gt_answer"] for r in records}
        self.invent = invent
        self.calls = 0

    @staticmethod
    def _key(image):
        return np.asarray(image).tobytes()

    def answer(self, questions, images, *, max_new_tokens, temperature, conv_mode):
        self.calls += 1
        assert temperature == 0.0 and conv_mode == "vicuna_v1"
        return [self._one(q, self.by_pixels[self._key(im)]) for q, im in zip(questions, images)]

    def _one(self, question, image):
        scene = self.scenes[image]
        if question in DESCRIBE_PROMPTS:  # descriptions, and MMHal's holistic questions
            text = " ".join(f"There is a {o.colour} {o.shape}." for o in scene.objects)
            if self.invent:
                colour, shape = absent_kinds(scene)[0]
                text += f" There is a {colour} {shape}."
            return text
        if (image, question) in self.mmhal:
            return self.mmhal[(image, question)]
        if (image, question) in self.mc:
            return f"{self.mc[(image, question)]}."
        m = re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", question)
        if m:
            return "Yes." if scene.count(colour=m.group(1), shape=m.group(2)) else "No."
        raise AssertionError(f"unexpected question {question!r}")


def test_faithful_answers_score_perfectly_and_rerun_reuses_answers(world, tmp_path):
    model = ScriptedAnswerer(world)
    m = evaluate_model(model, world, tmp_path, SETTINGS)
    expected = {"hallucination_rate": 0.0, "response_hallucination_rate": 0.0, "coverage": 1.0, "pope_f1": 1.0,
                "mc_accuracy": 1.0, "mmhal_score": 5.0}
    for name, value in expected.items():
        assert m[name] == pytest.approx(value), name
        assert m[f"{name}_ci"] == pytest.approx([value, value]), name
    assert set(m) == {*METRICS, *(f"{k}_ci" for k in METRICS), "mean_length", "n"}
    assert m["n"] == 10
    assert model.calls > 0
    rerun = ScriptedAnswerer(world)
    assert evaluate_model(rerun, world, tmp_path, SETTINGS) == m
    assert rerun.calls == 0  # every answer and judgement came from the files


def test_one_invented_object_per_description(world, tmp_path):
    m = evaluate_model(ScriptedAnswerer(world, invent=True), world, tmp_path, SETTINGS)
    scenes = load_scenes(world.path("scene_graphs"))
    objects = sum(len(scenes[f].objects) for f in world.eval_images())
    assert m["hallucination_rate"] == pytest.approx(10 / (objects + 10))
    assert m["response_hallucination_rate"] == 1.0 and m["coverage"] == 1.0
    lo, hi = m["hallucination_rate_ci"]
    assert lo <= m["hallucination_rate"] <= hi and lo < hi
    # "There is a <colour> <shape>." per object (5 words) plus the invented one
    words = sum(5 * len(scenes[f].objects) + 5 for f in world.eval_images())
    assert m["mean_length"] == pytest.approx(words / 10)
    assert m["pope_f1"] == 1.0  # only the descriptions changed

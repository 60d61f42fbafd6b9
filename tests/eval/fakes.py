"""Test doubles and hand-made benchmark files shared by the eval tests."""

from __future__ import annotations

import json
import os


class FakeAnswerer:
    """Answers from a dict question -> answer (default "yes"); records every call; can fail on call k."""

    def __init__(self, answers=None, fail_on_call=None):
        self.answers = answers or {}
        self.calls = []
        self.fail_on_call = fail_on_call

    def answer(self, questions, images, *, max_new_tokens, temperature, conv_mode):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("simulated crash")
        self.calls.append(
            {"questions": list(questions), "images": [None if im is None else im.size for im in images],
             "max_new_tokens": max_new_tokens, "temperature": temperature, "conv_mode": conv_mode}
        )
        return [self.answers.get(q, "yes") for q in questions]


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f)
    return str(path)


def write_images(folder, names, size=(8, 6)):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for name in names:
        Image.new("RGB", size, (200, 10, 10)).save(os.path.join(folder, name))
    return str(folder)


MMHAL_TYPES = ["attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other"]


def mmhal_record(i, image_content, question, gt_answer, model_answer=""):
    return {
        "question_type": MMHAL_TYPES[i % 8],
        "question_topic": "outdoor",
        "image_id": f"img{i}",
        "image_src": f"https://example.invalid/photos/img{i}_o.jpg",
        "image_content": image_content,
        "question": question,
        "gt_answer": gt_answer,
        "model_answer": model_answer,
    }

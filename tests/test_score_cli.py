"""`fact-rlhf score`: a released-style reward model (base + PEFT adapter + reward_head) scores like PEFT + torch,
a trained reward-model workdir scores like its own scoring function, and reruns continue instead of redoing."""

import json

import numpy as np
import torch

from fact_rlhf_jax.cli import main
from fact_rlhf_jax.data import image as image_lib, reward_input
from tests.models import hf_fixtures as F
from tests.models.test_peft_lora import LANGUAGE_MODEL_ONLY, _tokenizer, _wrap


def write_records(tmp_path, records):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


RECORDS = [
    {"id": "r0", "image": "a.png", "captions": ["A red circle.", "One circle, red.", "A red disk on gray."],
     "conversations": [{"from": "human", "value": "<image>\nWhat is in the image?"},
                       {"from": "gpt", "value": "There is a red circle in the image."}]},
    {"image": "a.png", "captions": ["A red circle."],
     "conversations": [{"from": "human", "value": "<image>\nWhat is in the image?"},
                       {"from": "gpt", "value": "A blue square and a red circle."}]},
    {"id": "no-facts", "image": "a.png",
     "conversations": [{"from": "human", "value": "<image>\nWhat is in the image?"},
                       {"from": "gpt", "value": "A red circle."}]},
]


def test_released_reward_model_scores_like_peft_and_a_torch_head(tmp_path):
    tok = _tokenizer(tmp_path / "base")
    base = F.make_llava(tmp_path / "base", vocab_size=len(tok), image_token=3, seed=1)
    wrapped = _wrap(base, LANGUAGE_MODEL_ONLY, r=4, alpha=16, seed=2)
    wrapped.save_pretrained(tmp_path / "adapter")
    torch.manual_seed(3)
    head = torch.nn.Linear(base.config.text_config.hidden_size, 1)
    torch.save(head.state_dict(), tmp_path / "reward_head")
    records = write_records(tmp_path, RECORDS)
    args = ["score", "--model", str(tmp_path / "base"), "--lora", str(tmp_path / "adapter"), "--head",
            str(tmp_path / "reward_head"), "--records", str(records), "--out", str(tmp_path / "scored.jsonl"),
            "--image-folder", str(tmp_path), "--batch-size", "2"]
    assert main(args) == 0
    scored = [json.loads(l) for l in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["line"] for r in scored] == [1, 2]  # the record without facts is reported and skipped
    assert all(isinstance(r["reward"], float) for r in scored) and scored[0]["id"] == "r0"

    # oracle: the same reward input (facts shuffled with the seed of each line) through PEFT, head at the last token
    template = reward_input.load_instruction("fact_rlhf")
    from PIL import Image

    px = image_lib.preprocess(Image.open(tmp_path / "a.png"), F.IMAGE_SIZE)[None]
    for line, record in zip((1, 2), RECORDS[:2]):
        ids = reward_input.build(record, record["conversations"][-1]["value"], template, tok, has_image=True,
                                 image_token_id=3, num_image_tokens=F.NUM_PATCHES, facts=record["captions"],
                                 rng=np.random.default_rng([0, line]))
        with torch.no_grad():
            out = wrapped(input_ids=torch.from_numpy(ids[None]).long(), pixel_values=torch.from_numpy(px),
                          output_hidden_states=True)
            want = float(head(out.hidden_states[-1][:, -1]).squeeze())
        np.testing.assert_allclose(scored[line - 1]["reward"], want, atol=1e-4)

    before = (tmp_path / "scored.jsonl").read_text()
    assert main(args) == 0
    assert (tmp_path / "scored.jsonl").read_text() == before  # nothing scored twice


def test_workdir_reward_model_scores_like_its_scoring_function(tiny_models, tmp_path):
    import jax

    from fact_rlhf_jax import pretrained
    from fact_rlhf_jax.models import reward
    from fact_rlhf_jax.scoring import RewardModel

    world = tiny_models["world"]
    image = sorted(__import__("os").listdir(world["images"]))[0]
    records = [dict(r, image=image) for r in RECORDS[:2]]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["score", "--model", tiny_models["reward"], "--records", str(path), "--out",
                 str(tmp_path / "s.jsonl"), "--image-folder", world["images"]]) == 0
    got = [json.loads(l)["reward"] for l in (tmp_path / "s.jsonl").read_text().splitlines()]

    model = pretrained.load(tiny_models["reward"])
    rm = RewardModel.load(tiny_models["reward"])
    from PIL import Image

    for line, record in enumerate(records, 1):
        ids = rm.input_ids(record, np.random.default_rng([0, line]))
        px = image_lib.preprocess(Image.open(f"{world['images']}/{image}"), model.cfg.vision.image_size)[None]
        want = reward.scores(model.params, model.cfg, ids[None], px, np.ones((1, len(ids)), np.int32),
                             adapter=model.adapter, head=model.head, lora_scale=model.lora_scale)
        np.testing.assert_allclose(got[line - 1], float(jax.device_get(want)[0]), atol=1e-4)

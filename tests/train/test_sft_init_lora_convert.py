"""The paths from one run to the next: a trained workdir -> `convert to-hf` -> LoRA SFT initialised from
that HF directory (`init.hf_llava`), whose frozen base must stay bit-identical while the adapters train."""

import numpy as np
import pytest

import jax

from fact_rlhf_jax import config as config_lib
from fact_rlhf_jax import hf
from fact_rlhf_jax.cli import main as cli_main
from fact_rlhf_jax.inference import ChatModel
from fact_rlhf_jax.train.loop import run_training

FAST = [("num_steps", "3"), ("checkpoint.every", "3"), ("eval_every", "0"), ("progress_bar", "false"),
        ("data.shapesworld.num_images", "24")]


@pytest.fixture(scope="module")
def full_ft_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("full")
    run_training(config_lib.load("configs/sft/tiny.py", FAST), work)
    return work


def test_convert_to_hf_gives_the_same_answers(full_ft_run, tmp_path):
    out = tmp_path / "hf"
    assert cli_main(["convert", "to-hf", "--workdir", str(full_ft_run), "--out", str(out)]) == 0
    from_workdir = ChatModel.load(full_ft_run, batch_size=2)
    from_hf = ChatModel.load(out, batch_size=2)
    from PIL import Image

    files = sorted((full_ft_run / "shapesworld" / "images").glob("*.png"))[:2]
    images = [Image.open(f).convert("RGB") for f in files]
    questions = ["Describe the image.", "How many shapes are there?"]
    assert from_workdir.generate_ids(questions, images, max_new_tokens=5) == \
        from_hf.generate_ids(questions, images, max_new_tokens=5)


def test_lora_sft_from_hf_llava_keeps_the_base_frozen(full_ft_run, tmp_path):
    hf_dir = tmp_path / "hf"
    assert cli_main(["convert", "to-hf", "--workdir", str(full_ft_run), "--out", str(hf_dir)]) == 0
    _, start = hf.import_llava(hf_dir)
    work = tmp_path / "lora"
    cfg = config_lib.load("configs/sft/tiny.py", FAST + [
        ("lora.rank", "4"), ("trainable", "('lora/.*',)"), ("init.hf_llava", str(hf_dir)), ("optim.lr", "1e-2")])
    run_training(cfg, work)
    trained = ChatModel.load(work)
    assert trained.lora is not None and trained.lora_scale == pytest.approx(16.0 / 4)
    for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(trained.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    b_norms = [float(np.abs(np.asarray(ab["b"])).max())
               for group in trained.lora["llm"]["layers"].values() for ab in group.values()]
    assert min(b_norms) > 0.0  # every adapter moved away from its zero init

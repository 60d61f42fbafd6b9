"""The SFT step on the real (tiny) LLaVA: sharded equals single-device; the tiny config trains."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fact_rlhf_jax import sharding as shd
from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import llava
from fact_rlhf_jax.train import optim
from fact_rlhf_jax.train import state as state_lib
from fact_rlhf_jax.train.losses import sft_loss_terms
from fact_rlhf_jax.train.stage import Stage
from fact_rlhf_jax.train.step import jit_train_step, make_train_step
from fact_rlhf_jax.train.trainable import trainable_mask

CFG = mcfg.preset("tiny")


class TinyLlavaSFT(Stage):
    """The SFT loss on `llava.forward` without the data pipeline (fixed batches below)."""

    def init_params(self, rng):
        return llava.init(CFG, rng)

    def param_axes(self):
        return llava.param_axes(CFG)

    def loss(self, params, batch, rng):
        out = llava.forward(params, CFG, batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
        return sft_loss_terms(out.logits, batch["labels"])


def sft_batch(rows=8, length=16):
    rng = np.random.default_rng(0)
    n_img = CFG.num_image_tokens
    ids = rng.integers(3, CFG.text.vocab_size - 1, size=(rows, length)).astype(np.int32)
    ids[:, 0] = 1
    ids[:, 1:1 + n_img] = CFG.image_token_id
    lengths = rng.integers(n_img + 4, length + 1, size=rows)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, 0)
    labels = np.where(mask == 1, ids, -100)
    labels[:, : n_img + 3] = -100  # BOS, image block and a prompt token unsupervised
    pixels = rng.normal(size=(rows, 3, CFG.vision.image_size, CFG.vision.image_size)).astype(np.float32)
    pixels[-1] = 0.0  # a text-only row
    return {"input_ids": ids, "attention_mask": mask, "labels": labels.astype(np.int32), "pixel_values": pixels}


def setup(mesh):
    stage = TinyLlavaSFT()
    cfg = optim.default_optim_config()
    # eps large next to the gradients keeps the first AdamW update smooth in the gradient (with a tiny eps
    # it is lr * sign(grad), whose sign is float noise wherever a gradient is ~0)
    cfg.lr, cfg.warmup_steps, cfg.eps = 1e-2, 0, 1e-3
    opt, schedule = optim.make_optimizer(cfg, 10)
    shape = jax.eval_shape(stage.init_params, jax.random.PRNGKey(0))
    mask = trainable_mask(shape, ["projector/.*", "llm/.*"])
    rules = shd.Rules.create()
    state, shardings = state_lib.create_state(stage, opt, mask, jax.random.PRNGKey(0), mesh, rules)
    step = make_train_step(stage.loss, opt, schedule, mask, grad_accum=1, mesh=mesh, rules=rules)
    return state, shardings, step


@pytest.fixture(scope="module")
def single_device_step():
    """(state, metrics) after one step on one device."""
    batch = sft_batch()
    one = shd.single_device_mesh()
    state1, sh1, step1 = setup(one)
    replicated = jax.tree.map(lambda _: jax.sharding.NamedSharding(one, jax.sharding.PartitionSpec()), batch)
    out = jit_train_step(step1, sh1, replicated, one)(state1, jax.tree.map(jnp.asarray, batch))
    return jax.device_get(out)


@pytest.mark.parametrize("mesh_shape", [dict(data=2, fsdp=2, tensor=2), dict(data=1, fsdp=2, tensor=4)])
def test_sft_step_sharded_equals_single_device(mesh_shape, single_device_step):
    batch = sft_batch()
    ref_state, ref_metrics = single_device_step

    mesh = shd.make_mesh(mesh_shape)
    state, shardings, step = setup(mesh)
    init = jax.device_get(state["params"])  # the state is donated to the step
    gbatch = shd.host_local_to_global(batch, mesh)
    new_state, metrics = jit_train_step(step, shardings, jax.tree.map(lambda x: x.sharding, gbatch), mesh)(state, gbatch)

    np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(ref_metrics["grad_norm"]), rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6),
                 new_state["params"], ref_state["params"])
    # CLIP frozen: unchanged bit for bit; projector trained
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 new_state["params"]["vision"], init["vision"])
    assert not np.allclose(np.asarray(new_state["params"]["projector"]["w"]), np.asarray(init["projector"]["w"]))
    # weights really are split over the mesh
    q = new_state["params"]["llm"]["layers"]["attn"]["q"]
    assert len(q.sharding.device_set) == 8 and q.addressable_shards[0].data.size < q.size


def test_tiny_config_trains_with_falling_loss_and_checkpoints(tmp_path):
    from fact_rlhf_jax import config as config_lib
    from fact_rlhf_jax.train.loop import run_training

    cfg = config_lib.load("configs/sft/tiny.py", [("num_steps", "20"), ("checkpoint.every", "10"),
                                                  ("eval_every", "10"), ("progress_bar", "false")])
    result = run_training(cfg, tmp_path)
    assert result.step == 20
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] - 0.5
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [10, 20] and "eval/loss_per_sequence" in evals[0]
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20]
    assert json.loads((tmp_path / "bad_records.json").read_text())["total"] == 0
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 20
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())

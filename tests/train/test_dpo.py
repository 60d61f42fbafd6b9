"""DPO: the loss variants, the response-only sequence log-prob, the reference log-probs computed once (also over
two processes), resume after SIGKILL, and one sharded step equal to the single-device step."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fact_rlhf_jax.data import errors
from fact_rlhf_jax.data.dpo_pairs import build_dpo_loader, last_reply_labels, response_sequence
from fact_rlhf_jax.train.dpo import dpo_loss_terms, sequence_logps
from fact_rlhf_jax.train.loop import run_training
from tests.data.conftest import llama_tokenizer, sp, sp_model_path  # noqa: F401 (fixtures)
from tests.data.test_conversation import reference_ids
from tests.train.dpo_fixtures import SlowDPOStage, dpo_test_config
from tests.train.test_resume import assert_bitwise_equal, wait_for_checkpoint

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


# --- the loss ---------------------------------------------------------------------------------------


def numpy_log_sigmoid(x):
    return -np.log1p(np.exp(-x))


@pytest.mark.parametrize("loss,eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0)])
def test_loss_variants_match_numpy(loss, eps):
    rng = np.random.default_rng(1)
    policy = rng.normal(-40.0, 5.0, size=(7, 2))
    reference = policy + rng.normal(0.0, 2.0, size=(7, 2))
    valid = np.array([1, 1, 1, 0, 1, 1, 1])
    beta = 0.3
    terms = dpo_loss_terms(jnp.asarray(policy), jnp.asarray(reference), jnp.asarray(valid), beta=beta, loss=loss,
                           label_smoothing=eps)

    v = valid > 0
    pw, pl, rw, rl = policy[v, 0], policy[v, 1], reference[v, 0], reference[v, 1]
    h = (pw - rw) - (pl - rl)
    if loss == "sigmoid":  # −(1 − ε) log σ(βh) − ε log σ(−βh)
        per_pair = -(1 - eps) * numpy_log_sigmoid(beta * h) - eps * numpy_log_sigmoid(-beta * h)
    else:  # (h − 1/(2β))²
        per_pair = (h - 1 / (2 * beta)) ** 2
    np.testing.assert_allclose(float(terms.total / terms.weight), per_pair.mean(), rtol=1e-5)
    assert float(terms.weight) == v.sum()
    got = {k: float(s / n) for k, (s, n) in terms.metrics.items()}
    chosen, rejected = beta * (pw - rw), beta * (pl - rl)
    np.testing.assert_allclose(got["accuracy"], (chosen > rejected).mean())
    np.testing.assert_allclose(got["rewards_chosen"], chosen.mean(), rtol=1e-5)
    np.testing.assert_allclose(got["rewards_rejected"], rejected.mean(), rtol=1e-5)
    np.testing.assert_allclose(got["margin"], (chosen - rejected).mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["logps_chosen"], pw.mean(), rtol=1e-6)
    np.testing.assert_allclose(got["logps_rejected"], pl.mean(), rtol=1e-6)


def test_policy_equal_to_reference_gives_log_two():
    x = jnp.asarray([[-10.0, -12.0], [-3.0, -1.0]])
    terms = dpo_loss_terms(x, x, jnp.ones(2), beta=0.1)
    np.testing.assert_allclose(float(terms.total / terms.weight), np.log(2.0), rtol=1e-6)


# --- response tokens ----------------------------------------------------------------------------------

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
RECORD = {
    "id": "p1", "image": "x.png",
    "conversations": [
        {"from": "human", "value": "<image>\nHow many apples are there?"},
        {"from": "gpt", "value": "There are two apples."},
        {"from": "human", "value": "Describe the table."},
        {"from": "gpt", "value": "Replaced by the outputs."},
    ],
    "output_1": {"value": "A wooden table with two red apples."},
    "output_2": {"value": "A glass table with a cat."},
    "preference": 2,
}
IMG = 32000


def test_labels_cover_exactly_the_last_reply_and_its_eos(llama_tokenizer, sp):
    response = RECORD["output_1"]["value"]
    prefix = (f"{SYSTEM} USER: <image>\nHow many apples are there? ASSISTANT: There are two apples.</s>"
              "USER: Describe the table. ASSISTANT:")
    full = prefix + " " + response + "</s>"
    want_ids = reference_ids(sp, full, IMG, 1)
    n_prompt = len(reference_ids(sp, prefix, IMG, 1))
    assert want_ids[:n_prompt] == reference_ids(sp, prefix, IMG, 1)
    want_labels = [-100] * n_prompt + want_ids[n_prompt:]  # "▁A ▁wooden ... ." and </s>
    assert want_labels[-1] == 2 and sp.decode(want_ids[n_prompt:-1]) == response

    ids, labels = response_sequence(RECORD, response, llama_tokenizer, has_image=True, template="vicuna_v1",
                                    image_token_id=IMG, num_image_tokens=1, max_length=None)
    assert ids.tolist() == want_ids
    assert labels.tolist() == want_labels

    # a cut keeps the response's first tokens; a cut before the response makes the pair unusable
    ids_cut, labels_cut = response_sequence(RECORD, response, llama_tokenizer, has_image=True, template="vicuna_v1",
                                            image_token_id=IMG, num_image_tokens=1, max_length=n_prompt + 2)
    assert labels_cut.tolist() == want_labels[:n_prompt + 2]
    with pytest.raises(errors.BadRecordError) as e:
        response_sequence(RECORD, response, llama_tokenizer, has_image=True, template="vicuna_v1",
                          image_token_id=IMG, num_image_tokens=1, max_length=n_prompt)
    assert e.value.reason == errors.TOO_LONG


def test_last_reply_labels_keeps_the_last_run_only():
    labels = np.array([-100, -100, 5, 6, 2, -100, -100, 7, 8, 9, 2, -100])
    assert last_reply_labels(labels).tolist() == [-100] * 7 + [7, 8, 9, 2, -100]


def test_sequence_logp_sums_the_response_positions_only():
    from fact_rlhf_jax.models import config as mcfg, llava

    cfg = mcfg.preset("tiny")
    params = jax.jit(lambda key: llava.init(cfg, key))(jax.random.key(0))
    rng = np.random.default_rng(0)
    t = 14
    ids = rng.integers(3, 200, size=(2, 2, t)).astype(np.int32)
    ids[:, :, 1:1 + cfg.num_image_tokens] = cfg.image_token_id
    mask = np.ones_like(ids)
    mask[1, 1, -3:] = 0  # right padding on one sequence
    labels = np.full_like(ids, -100)
    labels[:, :, 9:] = ids[:, :, 9:]
    labels[1, 1, -3:] = -100
    pixels = rng.normal(size=(2, 3, 28, 28)).astype(np.float32)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels}
    logps, tokens = jax.jit(lambda p, b: sequence_logps(p, cfg, b))(params, batch)
    # the oracle: log-softmax of the same model's logits, summed by hand over the labelled positions
    flat = lambda x: x.reshape(4, t)
    logits = jax.jit(lambda p: llava.forward(p, cfg, flat(ids), np.repeat(pixels, 2, axis=0), flat(mask)).logits)(params)
    logp = np.asarray(jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)).reshape(2, 2, t, -1)
    for b in range(2):
        for j in range(2):
            positions = [p for p in range(1, t) if labels[b, j, p] != -100]
            want = sum(logp[b, j, p - 1, ids[b, j, p]] for p in positions)
            np.testing.assert_allclose(float(logps[b, j]), want, rtol=1e-5)
            assert float(tokens[b, j]) == len(positions) == (2 if (b, j) == (1, 1) else 5)


# --- training runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tiny_models, tmp_path_factory):
    """An in-process DPO run of STEPS steps (LoRA on the tiny SFT model): (workdir, stage, final state)."""
    workdir = tmp_path_factory.mktemp("dpo_uninterrupted")
    config = dpo_test_config(tiny_models["sft"], tiny_models["world"], num_steps=STEPS)
    stage = SlowDPOStage(config, str(workdir))
    result = run_training(config, workdir, stage)
    assert result.step == STEPS
    return workdir, stage, jax.device_get(result.state)


def metric_lines(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_run_starts_at_the_reference_and_logs_dpo_metrics(uninterrupted):
    workdir, _, state = uninterrupted
    lines = metric_lines(workdir)
    first = lines[0]
    assert first["step"] == 1
    # the fresh adapter (B = 0) is the reference: h = 0 on every pair
    np.testing.assert_allclose(first["loss"], np.log(2.0), atol=1e-4)
    np.testing.assert_allclose(first["margin"], 0.0, atol=1e-4)
    for key in ("accuracy", "rewards_chosen", "rewards_rejected", "margin", "logps_chosen", "logps_rejected"):
        assert key in first
    final_eval = [l for l in lines if "eval/loss" in l]
    assert [l["step"] for l in final_eval] == [STEPS]
    assert {"eval/accuracy", "eval/margin", "eval/rewards_chosen", "eval/rewards_rejected"} <= set(final_eval[0])
    assert set(state["params"]) == {"lora"}  # only the adapter is in the state; the base is never trained


def test_reference_logps_are_computed_once_and_stay_constant(uninterrupted, tiny_models):
    workdir, stage, _ = uninterrupted
    assert stage.reference_passes == 1  # one preference file (the held-out pairs are rows of it)
    tables = list((workdir / "reference_logps").glob("*.npz"))
    assert len(tables) == 1
    table = np.load(tables[0])["logps"]
    assert table.shape == (48, 2) and not np.isnan(table).any()

    # every training batch carries exactly the stored numbers for its pairs, whatever the step
    loader = stage._loader_for(stage.train_sources, stage.train_rows, process_index=0, process_count=1,
                               batch_size=8, seed=5, shuffle=True, num_epochs=None)
    it = iter(loader)
    for _ in range(4):
        batch = next(it)
        np.testing.assert_array_equal(batch["ref_logps"], table[batch["record"][:, 1]])

    # the reference is the starting model itself: a fresh pass in another workdir gives the same numbers
    config = dpo_test_config(tiny_models["sft"], tiny_models["world"])
    fresh = SlowDPOStage(config, str(workdir.parent / "fresh_reference"))
    from fact_rlhf_jax import sharding as shd
    from fact_rlhf_jax.train.loop import make_rules

    mesh = shd.make_mesh(dict(config.mesh))
    fresh.train_data(process_index=0, process_count=1, batch_size=8, seed=0)
    fresh.frozen_params(mesh, make_rules(config))
    assert fresh.reference_passes == 1
    np.testing.assert_array_equal(fresh._tables[stage.train_sources[0][0]], table)


def test_full_fine_tuning_starts_from_the_reference(tiny_models, tmp_path):
    config = dpo_test_config(tiny_models["sft"], tiny_models["world"], num_steps=1,
                             **{"lora.rank": 0, "trainable": ("llm/.*",), "data.eval_size": 0})
    stage = SlowDPOStage(config, str(tmp_path))
    result = run_training(config, tmp_path, stage)
    assert stage.reference_passes == 1 and set(result.state["params"]) == {"vision", "projector", "llm"}
    np.testing.assert_allclose(metric_lines(tmp_path)[0]["loss"], np.log(2.0), atol=1e-4)
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["base"] is None and card["adapter"] is None and card["params_path"] == ""


def start_cli(workdir: Path, world: dict, sft: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_DEFAULT_MATMUL_PRECISION="highest", DPO_SLOW_FROM="3", DPO_SLOW_SECONDS="1.0",
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "fact_rlhf_jax", "train", "--config", str(REPO / "tests/train/dpo_fixtures.py"),
           "--workdir", str(workdir), f"--config.num_steps={STEPS}", f"--config.init.model={sft}",
           f"--config.data.train=[('{world['preference']}', '{world['images']}', 1.0)]"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, uninterrupted, tiny_models):
    _, _, want = uninterrupted
    world, sft = tiny_models["world"], tiny_models["sft"]
    proc = start_cli(tmp_path, world, sft)
    wait_for_checkpoint(tmp_path, 2, proc, timeout=400.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert max(l["step"] for l in metric_lines(tmp_path) if "loss" in l) < STEPS  # it really was cut short

    table = next((tmp_path / "reference_logps").glob("*.npz"))  # written before the first step
    before = table.read_bytes()

    config = dpo_test_config(sft, world, num_steps=STEPS)
    stage = SlowDPOStage(config, str(tmp_path))
    resumed = run_training(config, tmp_path, stage)
    assert resumed.step == STEPS
    assert stage.reference_passes == 0 and table.read_bytes() == before  # read back, not run again
    assert_bitwise_equal(resumed.state, want)


def test_two_process_run_computes_the_same_reference(tmp_path, uninterrupted, tiny_models):
    """`--distributed` with two processes of 4 devices: each host feeds its share of the reference pass (the
    9-pair eval file gives one host a batch more than the other), every host ends with the whole table, equal
    to the one-process table, and the first step sees the policy equal to the reference on both hosts."""
    from tests.train.multiprocess import env, free_port, wait_all

    _, stage, _ = uninterrupted
    world, sft = tiny_models["world"], tiny_models["sft"]
    eval_file = tmp_path / "eval9.json"
    eval_file.write_text(json.dumps(json.loads(Path(world["preference"]).read_text())[:9]))
    workdir = tmp_path / "run"
    port = free_port()
    cmd = [sys.executable, "-m", "fact_rlhf_jax", "train", "--config", str(REPO / "tests/train/dpo_fixtures.py"),
           "--workdir", str(workdir), "--config.num_steps=2", f"--config.init.model={sft}",
           f"--config.data.train=[('{world['preference']}', '{world['images']}', 1.0)]",
           f"--config.data.eval=[('{eval_file}', '{world['images']}', 1.0)]", "--distributed"]
    wait_all([subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(
        4, JAX_DEFAULT_MATMUL_PRECISION="highest", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))) for pid in range(2)])

    tables = {json.loads(p.with_suffix(".json").read_text())["data"]["file"]: np.load(p)["logps"]
              for p in (workdir / "reference_logps").glob("*.npz")}
    one_process = stage._tables[stage.train_sources[0][0]]
    np.testing.assert_allclose(tables[str(Path(world["preference"]).absolute())], one_process, rtol=1e-5)
    np.testing.assert_allclose(tables[str(eval_file.absolute())], one_process[:9], rtol=1e-5)
    lines = metric_lines(workdir)
    np.testing.assert_allclose(lines[0]["loss"], np.log(2.0), atol=1e-4)
    assert any("eval/accuracy" in l for l in lines)


def test_dpo_run_is_a_model_for_generate(uninterrupted):
    from fact_rlhf_jax.inference import ChatModel

    workdir, _, state = uninterrupted
    chat = ChatModel.load(workdir, batch_size=2)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), chat.lora,
                 state["params"]["lora"])
    assert chat.lora_scale == 2.0
    answers = chat.answer(["Describe the image."], [None], max_new_tokens=4)
    assert len(answers) == 1 and isinstance(answers[0], str)


# --- sharding -----------------------------------------------------------------------------------------


def one_step(stage, batch, mesh_shape):
    """(params after one DPO step, metrics) on a mesh of `mesh_shape`."""
    from fact_rlhf_jax import pretrained, sharding as shd
    from fact_rlhf_jax.train import optim, state as state_lib
    from fact_rlhf_jax.train.loop import make_rules
    from fact_rlhf_jax.train.step import jit_train_step, make_train_step
    from fact_rlhf_jax.train.trainable import trainable_mask

    mesh = shd.make_mesh(mesh_shape) if mesh_shape else shd.single_device_mesh()
    rules = make_rules(stage.config)
    cfg = optim.default_optim_config()
    cfg.lr, cfg.warmup_steps, cfg.eps = 1e-2, 0, 1e-3
    opt, schedule = optim.make_optimizer(cfg, 10)
    shape = jax.eval_shape(stage.init_params, jax.random.PRNGKey(0))
    mask = trainable_mask(shape, ["lora/.*"])
    state, shardings = state_lib.create_state(stage, opt, mask, jax.random.PRNGKey(0), mesh, rules)
    # a non-zero adapter, so that the step's gradients reach both LoRA factors
    state["params"] = jax.tree.map(lambda x, s: jax.device_put(x + 0.05 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), s),
                                   state["params"], shardings["params"])
    frozen = {"base": pretrained.load(stage.source, mesh=mesh, rules=rules).merged_params()}
    step = make_train_step(stage.loss, opt, schedule, mask, grad_accum=1, mesh=mesh, rules=rules)
    gbatch = shd.host_local_to_global(batch, mesh)
    jitted = jit_train_step(step, shardings, jax.tree.map(lambda x: x.sharding, gbatch), mesh, frozen)
    new_state, metrics = jitted(state, gbatch)
    return jax.device_get(new_state["params"]), jax.device_get(metrics), new_state


def test_dpo_step_sharded_equals_single_device(tiny_models, tmp_path):
    config = dpo_test_config(tiny_models["sft"], tiny_models["world"])
    stage = SlowDPOStage(config, str(tmp_path))
    loader = build_dpo_loader(stage.train_sources, stage.tokenizer, image_token_id=stage.model_cfg.image_token_id,
                              num_image_tokens=stage.model_cfg.num_image_tokens,
                              image_size=stage.model_cfg.vision.image_size, max_length=stage.max_length,
                              global_batch_size=8, seed=0, length_buckets=(), read_threads=0)
    batch = next(iter(loader))
    batch["ref_logps"] = batch["ref_logps"] - np.random.default_rng(0).uniform(0, 3, size=(8, 2)).astype(np.float32)

    single, single_metrics, _ = one_step(stage, batch, None)
    sharded, metrics, live = one_step(stage, batch, dict(data=2, fsdp=2, tensor=2))
    for key in ("loss", "grad_norm", "accuracy", "margin"):
        np.testing.assert_allclose(float(metrics[key]), float(single_metrics[key]), rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), sharded, single)
    a = live["params"]["lora"]["llm"]["layers"]["mlp"]["up"]["b"]
    assert len(a.sharding.device_set) == 8 and a.addressable_shards[0].data.size < a.size


# --- configs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["configs/dpo/llava_7b_224.py", "configs/dpo/llava_13b_336.py"])
def test_reference_dpo_recipe(path):
    from fact_rlhf_jax import config as config_lib

    c = config_lib.load(path, [("init.model.path", "/ckpt/round0")])
    assert c.stage == "dpo" and c.init.model.path == "/ckpt/round0" and c.init.model.vision_tower
    assert (c.lora.rank, c.lora.alpha, c.init.param_dtype) == (64, 16.0, "bfloat16")
    assert set(c.lora.targets) == {"q", "k", "v", "o", "gate", "up", "down"} and tuple(c.trainable) == ("lora/.*",)
    assert (c.dpo.loss, c.dpo.beta, c.dpo.label_smoothing, c.dpo.average_log_probs) == ("sigmoid", 0.1, 0.0, False)
    assert (c.optim.lr, c.optim.schedule, c.optim.warmup_ratio, c.optim.weight_decay) == (1e-5, "cosine", 0.05, 0.01)
    assert (c.batch_size, c.num_epochs, c.data.max_text_length, c.data.eval_size) == (8, 2.0, 2048, 500)
    assert c.data.train[0][0].endswith("llava_7b_v1_preference.json") and c.data.template == "vicuna_v1"


def test_tiny_config_variants():
    from fact_rlhf_jax import config as config_lib

    lora, full, ipo = (config_lib.load(f"configs/dpo/tiny.py:{v}") for v in ("lora", "full", "ipo"))
    assert lora.lora.rank > 0 and lora.data.shapesworld.num_images > 0 and not lora.init.model
    assert full.lora.rank == 0 and tuple(full.trainable) == ("llm/.*",)
    assert ipo.dpo.loss == "ipo" and ipo.dpo.average_log_probs
    with pytest.raises(ValueError, match="expected one of"):
        config_lib.load("configs/dpo/tiny.py:ppo")

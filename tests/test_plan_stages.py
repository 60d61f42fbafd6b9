"""`fact-rlhf plan` for every stage: the hooks' programs on tiny configs (compiled once each), abstract frozen
weights equal to what training loads, and the 7B / 13B recipes building and lowering their programs."""

import math

import jax
import numpy as np
import pytest

from fact_rlhf_jax import cli, plan
from fact_rlhf_jax import config as config_lib
from fact_rlhf_jax import sharding as shd
from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import heads, llava, lora
from fact_rlhf_jax.train import dpo, ppo, reward
from fact_rlhf_jax.train.loop import make_rules

MESH = {"data": 2, "fsdp": 2, "tensor": 2}
TARGET_CPU8 = dict(kind_name="tpu-v4", num_devices=8, backend="cpu")


def _plan(path, *overrides):
    config = config_lib.load(path, [tuple(o.removeprefix("--config.").split("=", 1)) for o in overrides])
    return plan.make_plan(config, MESH, plan.make_target(**TARGET_CPU8), config_name=path)


def _bytes(shapes, axes, mesh_shape=MESH):
    """Per-device bytes of abstract `shapes` placed by the default rules on a mesh of `mesh_shape`."""
    mesh = shd.make_mesh(mesh_shape, devices=jax.devices()[:math.prod(mesh_shape.values())])
    placed = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                          shd.shardings_for(shapes, axes, mesh, shd.Rules.create()))
    return plan.shard_bytes(placed)


def _llava_bytes(preset="tiny", mesh_shape=MESH):
    cfg = mcfg.preset(preset)
    return _bytes(llava.param_shapes(cfg), llava.param_axes(cfg), mesh_shape)


def _lora_bytes(rank, preset="tiny", mesh_shape=MESH):
    cfg = mcfg.preset(preset)
    targets = ("q", "k", "v", "o", "gate", "up", "down")
    return _bytes(lora.param_shapes(cfg, rank=rank, targets=targets), lora.param_axes(cfg, rank=rank, targets=targets),
                  mesh_shape)


def _head_bytes(preset="tiny", mesh_shape=MESH):
    return _bytes(heads.param_shapes(mcfg.preset(preset).text.hidden_size), heads.param_axes(), mesh_shape)


def _check_arguments(program):
    # XLA's arguments are the exact groups (minus what a program never reads) plus the step / rng scalars
    unread = program.resident_bytes.get("unread inputs", 0)
    extra = program.argument_bytes - (sum(program.exact_bytes.values()) - unread)
    assert 0 <= extra <= 16, (program.name, extra)


def test_policy_init_lora_sft_takes_the_frozen_base_as_an_input():
    result = _plan("configs/sft/tiny.py", "--config.lora.rank=8", "--config.init.params_from=runs/not_here",
                   "--config.trainable=('lora/.*',)")
    (step,) = result.programs
    assert step.exact_bytes["frozen weights"] == _llava_bytes()
    assert step.exact_bytes["parameters"] == _lora_bytes(8)
    assert 0 <= step.exact_bytes["optimizer state"] - 2 * _lora_bytes(8) <= 16  # Adam's two moments + step counts
    assert "LoRA r8 on a frozen tiny" in step.description
    _check_arguments(step)
    assert step.alias_bytes >= step.exact_bytes["parameters"] + step.exact_bytes["optimizer state"]  # donated


def test_reward_model_plan():
    result = _plan("configs/rm/tiny.py", "--config.batch_size=8", "--config.data.max_text_length=64")
    (step,) = result.programs
    cfg = mcfg.preset("tiny")
    length = 64 - 1 + cfg.num_image_tokens
    assert f"8 pairs x 2 x {length} tokens" in step.description
    assert step.exact_bytes["frozen weights"] == _llava_bytes()
    assert step.exact_bytes["parameters"] == _lora_bytes(32) + _head_bytes()
    # rows split over data x fsdp = 4: input_ids + attention_mask [8, 2, T] int32, pixels [8, 3, H, W] f32, choice, valid
    size = cfg.vision.image_size
    assert step.exact_bytes["batch"] == (2 * 2 * 2 * length * 4 + 2 * 3 * size * size * 4 + 2 * 4 + 2 * 4)
    _check_arguments(step)
    assert result.fits


def test_dpo_plan_has_the_reference_pass_and_the_step():
    result = _plan("configs/dpo/tiny.py", "--config.batch_size=8", "--config.data.max_text_length=64")
    reference_pass, step = result.programs
    assert (reference_pass.name, step.name) == ("reference_pass", "train_step")
    assert reference_pass.exact_bytes["reference weights"] == _llava_bytes()
    assert step.exact_bytes["frozen weights"] == _llava_bytes()
    assert step.exact_bytes["parameters"] == _lora_bytes(8)
    assert reference_pass.alias_bytes == 0 and "forward only" in reference_pass.description
    # forward only vs forward + backward of the same pairs (8 rows each): the step does at least twice the matmuls
    assert step.flops > 2 * reference_pass.flops
    for program in result.programs:
        _check_arguments(program)


@pytest.fixture(scope="module")
def tiny_ppo_plan():
    return _plan("configs/ppo/tiny.py", "--config.batch_size=16", "--config.ppo.step_batch_size=8",
                 "--config.ppo.max_new_tokens=8", "--config.data.query_len=16", "--config.data.instruction_length=32",
                 "--config.init.reward_preset=small")


def test_ppo_plan_has_sampler_scoring_and_update(tiny_ppo_plan):
    sample, score, update = tiny_ppo_plan.programs
    assert [p.name for p in tiny_ppo_plan.programs] == ["sample", "score", "update"]
    assert "two bases (policy, reward model)" in sample.description  # tiny policy, small reward model
    # the frozen weights: policy base + reference adapter, reward base + reward adapter + head
    frozen = (_llava_bytes("tiny") + _lora_bytes(16, "tiny") + _llava_bytes("small") + _lora_bytes(16, "small")
              + _head_bytes("small"))
    for program in (sample, score, update):
        assert program.exact_bytes["frozen weights"] == frozen
        _check_arguments(program)
    # the sampler never reads the reward model's base: jit drops it, the plan still counts it as held
    assert sample.resident_bytes["unread inputs"] >= _llava_bytes("small")
    assert sample.resident_bytes["optimizer state"] == update.exact_bytes["optimizer state"]
    assert sample.peak_bytes >= sample.argument_bytes + sum(sample.resident_bytes.values())
    assert "while loop is counted 7 times" in " ".join(sample.flop_notes)
    # the update donates parameters and optimizer state
    assert update.alias_bytes >= update.exact_bytes["parameters"] + update.exact_bytes["optimizer state"]


def test_ppo_plan_rejects_micro_batches_that_do_not_split(capsys):
    code = cli.main(["plan", "--config", "configs/ppo/tiny.py", "--mesh", "fsdp=8", "--backend", "cpu",
                     "--config.ppo.step_batch_size=16", "--config.grad_accum=4"])
    assert code == 2
    assert "ppo.step_batch_size / grad_accum = 16 / 4" in capsys.readouterr().err
    code = cli.main(["plan", "--config", "configs/ppo/tiny.py", "--mesh", "fsdp=8", "--backend", "cpu",
                     "--config.ppo.rollout_chunk_size=12"])  # 12 prompts per pass split over 8 devices: no
    assert code == 2
    assert "ppo.rollout_chunk_size = 12" in capsys.readouterr().err


def test_a_source_that_is_not_here_needs_a_preset(capsys):
    code = cli.main(["plan", "--config", "configs/rm/llava_7b_224.py", "--mesh", "fsdp=8", "--backend", "cpu",
                     "--config.init.preset="])
    assert code == 2 and "config.init.preset names no model preset" in capsys.readouterr().err


# --- the abstract frozen weights are what training loads ------------------------------------------


def _layout(tree):
    return jax.tree.map(lambda x: (x.shape, np.dtype(x.dtype), x.sharding), tree)


@pytest.fixture(scope="module")
def mesh_and_rules():
    mesh = shd.make_mesh(MESH)
    return mesh, make_rules(reward.default_config())


def test_abstract_frozen_equals_the_loaded_weights(tiny_models, tmp_path, mesh_and_rules):
    from tests.train.test_ppo import ppo_config

    mesh, rules = mesh_and_rules
    world = tiny_models["world"]
    rm = reward.tiny_config()
    rm.init.model = tiny_models["sft"]
    rm.data.shapesworld.num_images = 0
    rm.data.train = [(world["preference"], world["images"], 1.0)]
    rm.data.captions = world["captions"]
    rm.data.eval_size = 8
    config = ppo_config(tiny_models)
    for stage, planned in [(reward.RewardStage(rm, str(tmp_path / "rm")), reward.RewardStage.for_planning(rm)),
                           (ppo.PPOStage(config, str(tmp_path / "ppo")), ppo.PPOStage.for_planning(config))]:
        # readable sources: planning describes them as training does (the tiny SFT model's tokenizer vocabulary)
        assert _layout(planned.abstract_frozen(mesh, rules)) == _layout(stage.frozen_params(mesh, rules))
    assert planned.shared_base and "reward_base" not in planned.abstract_frozen(mesh, rules)


# --- the 7B and 13B recipes -------------------------------------------------------------------------

RECIPES = {
    "configs/sft/policy_init_7b_224.py": ["train_step"],
    "configs/sft/policy_init_13b_336.py": ["train_step"],
    "configs/rm/llava_7b_224.py": ["train_step"],
    "configs/rm/llava_13b_336.py": ["train_step"],
    "configs/dpo/llava_7b_224.py": ["reference_pass", "train_step"],
    "configs/dpo/llava_13b_336.py": ["reference_pass", "train_step"],
    "configs/ppo/llava_7b_224.py": ["sample", "score", "update"],
    "configs/ppo/llava_13b_336.py": ["sample", "score", "update"],
}


@pytest.mark.parametrize("path", sorted(RECIPES))
def test_reference_recipes_build_and_lower_their_programs(path):
    """Lowering only (compiling a 13B program takes minutes): shapes, shardings and frozen inputs are consistent."""
    config = config_lib.load(path)
    mesh = shd.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
    programs = plan.programs_for(config, mesh, make_rules(config))
    assert [p.name for p in programs] == RECIPES[path]
    fsdp8 = {"data": 1, "fsdp": 8, "tensor": 1}
    if path.startswith("configs/ppo/"):  # policy base + reference adapter; reward base (unless shared) + adapter + head
        policy, rm = config.init.policy_preset, config.init.reward_preset
        expected = (_llava_bytes(policy, fsdp8) + _lora_bytes(64, policy, fsdp8) + _lora_bytes(64, rm, fsdp8)
                    + _head_bytes(rm, fsdp8) + (_llava_bytes(rm, fsdp8) if policy != rm else 0))
    else:  # the frozen (or reference) LLaVA
        expected = _llava_bytes(config.model.preset if "sft" in path else config.init.preset, fsdp8)
    for program in programs:
        program.jitted.trace(*program.args).lower()
        assert plan.shard_bytes(program.inputs.get("frozen weights", program.inputs.get("reference weights"))) == expected

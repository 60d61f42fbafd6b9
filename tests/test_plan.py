"""`fact-rlhf plan`: per-device bytes from the shardings, fits, mesh checks, FLOP counting, the stage registry."""

import math

import jax
import jax.numpy as jnp
import pytest

from fact_rlhf_jax import cli, plan
from fact_rlhf_jax import config as config_lib
from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import llava

TINY = "configs/sft/tiny.py"
MESH = {"data": 2, "fsdp": 2, "tensor": 2}

# The default rules written out: which mesh axis splits a parameter dimension of this logical name.
_FSDP = {"embed", "vision_embed"}
_TENSOR = {"mlp", "heads", "kv_heads", "vocab", "vision_mlp", "vision_heads"}


def _hand_shard_bytes(shape, axes, fsdp, tensor):
    n = math.prod(shape)
    for dim, name in zip(shape, axes):
        split = fsdp if name in _FSDP else tensor if name in _TENSOR else 1
        assert dim % split == 0  # every tiny dimension divides by 2
        n //= split
    return 4 * n  # float32


@pytest.fixture(scope="module")
def tiny_plan():
    config = config_lib.load(TINY)
    target = plan.make_target("tpu-v4", 8, backend="cpu")
    return plan.make_plan(config, MESH, target, config_name=TINY)


def test_parameter_bytes_are_the_shard_sizes(tiny_plan):
    cfg = mcfg.preset("tiny")
    shapes = jax.tree.leaves(llava.param_shapes(cfg))
    axes = jax.tree.leaves(llava.param_axes(cfg), is_leaf=lambda x: isinstance(x, tuple))
    expected = sum(_hand_shard_bytes(s.shape, a, fsdp=2, tensor=2) for s, a in zip(shapes, axes))
    (train_step,) = tiny_plan.programs
    assert train_step.name == "train_step"
    assert train_step.exact_bytes["parameters"] == expected
    # A dimension that does not divide stays whole: llm/embed [256, 64] is 256 x 64 / 4 floats per device.
    assert _hand_shard_bytes((256, 64), ("vocab", "embed"), 2, 2) == 256 * 64 * 4 // 4
    # XLA's buffer assignment agrees: arguments = params + optimizer state + batch + step (int32) + rng (2 x uint32).
    exact = sum(train_step.exact_bytes.values())
    assert train_step.argument_bytes == exact + 4 + 8
    assert train_step.alias_bytes > 0  # the state is donated
    assert train_step.peak_bytes >= train_step.argument_bytes + train_step.temp_bytes - train_step.alias_bytes
    assert tiny_plan.hosts == 2 and tiny_plan.backend == "cpu"


def test_flops_count_every_scan_iteration(tiny_plan):
    def f(x, w):
        y, _ = jax.lax.scan(lambda c, wi: (jnp.tanh(c @ wi), None), x, w)
        return y

    jaxpr = jax.make_jaxpr(f)(jnp.zeros((4, 8)), jnp.zeros((3, 8, 8)))
    flops, notes = plan.jaxpr_flops(jaxpr.jaxpr)
    assert flops == 3 * 2 * 4 * 8 * 8 and notes == []

    conv = jax.make_jaxpr(lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), "VALID"))(
        jnp.zeros((2, 3, 8, 8)), jnp.zeros((5, 3, 2, 2)))
    assert plan.jaxpr_flops(conv.jaxpr)[0] == 2 * (2 * 5 * 4 * 4) * (3 * 2 * 2)
    # The SFT step: at least 6 x (trained LLM matmul weights) x tokens (forward + backward of the decoder).
    (train_step,) = tiny_plan.programs
    assert train_step.flops > 6 * (2 * 4 * 64 * 16 * 2 + 2 * 3 * 64 * 128) * 8 * 195
    assert train_step.flops_per_device == pytest.approx(train_step.flops / 8)


def test_cli_fits_against_the_device_memory(capsys, tiny_plan):
    peak_gib = tiny_plan.peak_bytes / plan.GIB
    small = cli.main(["plan", "--config", TINY, "--mesh", "data=2,fsdp=2,tensor=2", "--backend", "cpu",
                      "--memory-gib", str(peak_gib / 2)])
    out = capsys.readouterr().out
    assert small == 1 and "fits: NO" in out and "program train_step" in out and "CPU backend" in out
    assert f"{tiny_plan.programs[0].exact_bytes['parameters'] / 2**20:.2f} MiB" in out
    # The same program against more memory than its peak fits (no second compile needed for the check).
    import dataclasses

    roomy = dataclasses.replace(tiny_plan, hbm_bytes=int(tiny_plan.peak_bytes * 1.01))
    assert roomy.fits and not dataclasses.replace(tiny_plan, hbm_bytes=tiny_plan.peak_bytes - 1).fits


def test_mesh_that_does_not_divide_the_batch_is_rejected(capsys):
    code = cli.main(["plan", "--config", TINY, "--mesh", "data=2,fsdp=2,tensor=2", "--backend", "cpu",
                     "--config.batch_size=6"])
    err = capsys.readouterr().err
    assert code == 2
    assert "mesh data=2,fsdp=2,tensor=2 does not fit the batch" in err
    assert "micro-batch of 6 rows" in err and "4 data-parallel devices" in err


@pytest.mark.parametrize("text,message", [
    ("data=2,pipeline=4", "expected comma-separated AXIS=SIZE"),
    ("fsdp=-1", "sizes must be >= 1"),
    ("fsdp=two", "not an integer"),
])
def test_bad_mesh_text(text, message):
    with pytest.raises(ValueError, match=message):
        plan.parse_mesh(text)
    assert plan.parse_mesh("fsdp=4") == {"data": 1, "fsdp": 4, "tensor": 1}


def test_stage_without_a_plan_hook_is_named():
    config = config_lib.load(TINY)
    config.stage = "tests.train.toy_stage"
    with pytest.raises(NotImplementedError, match="has no plan_programs"):
        plan.programs_for(config, None, None)


def test_tpu_slice_names():
    assert plan.tpu_topology_name(plan.DEVICE_KINDS["tpu-v4"], 16) == "v4:2x2x4"
    assert plan.tpu_topology_name(plan.DEVICE_KINDS["tpu-v5e"], 8) == "v5e:2x4"
    with pytest.raises(ValueError, match="no slice of 12 chips"):
        plan.tpu_topology_name(plan.DEVICE_KINDS["tpu-v5p"], 12)


needs_libtpu = pytest.mark.skipif(not plan.libtpu_available(), reason="libtpu not installed (pip install -e '.[tpu]')")


@needs_libtpu
def test_tpu_compiler_plan_without_a_tpu():
    config = config_lib.load(TINY)
    target = plan.make_target("tpu-v5e", 4, backend="tpu")
    assert target.topology == "v5e:2x2" and len(target.devices) == 4
    result = plan.make_plan(config, {"data": 1, "fsdp": 4, "tensor": 1}, target, config_name=TINY)
    assert result.backend == "tpu" and result.fits and result.programs[0].working_bytes > 0


@needs_libtpu
def test_tpu_compiler_refusing_a_program_means_it_does_not_fit(capsys):
    # 131072 rows of [195, 256] float32 logits alone are 24 GiB: more than a v5e chip's 16 GiB.
    code = cli.main(["plan", "--config", TINY, "--device", "tpu-v5e", "--mesh", "fsdp=1", "--backend", "tpu",
                     "--config.batch_size=131072"])
    out = capsys.readouterr().out
    assert code == 1 and "RESOURCE_EXHAUSTED" in out and "fits: NO (train_step: out of device memory" in out


def test_flops_of_a_shard_map_body_count_every_shard():
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((4,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    f = jax.shard_map(lambda a, b: a @ b, mesh=mesh, in_specs=(P("x"), P()), out_specs=P("x"))
    jaxpr = jax.make_jaxpr(f)(jnp.zeros((8, 16)), jnp.zeros((16, 4)))
    assert plan.jaxpr_flops(jaxpr.jaxpr) == (2 * 8 * 16 * 4, [])


def test_a_program_called_several_times_per_step_counts_every_call():
    """PPO's sampler runs once per rollout chunk: 3 calls of a [4, 16] @ [16, 8] matmul are 3 x 2 * 4 * 16 * 8."""
    args = (jax.ShapeDtypeStruct((4, 16), jnp.float32), jax.ShapeDtypeStruct((16, 8), jnp.float32))
    matmul = jax.jit(lambda a, b: a @ b)
    once = plan.measure(plan.Program("mm", "", matmul, args, {}), 1)
    thrice = plan.measure(plan.Program("mm", "", matmul, args, {}, calls=3), 1)
    assert once.flops == 2 * 4 * 16 * 8
    assert thrice.flops == 3 * once.flops and thrice.peak_bytes == once.peak_bytes
    assert any("3 times" in n for n in thrice.flop_notes)

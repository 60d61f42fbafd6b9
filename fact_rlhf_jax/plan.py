"""Ahead-of-time plans: does a config fit a device kind on a mesh, and what will it run.

Each stage module supplies `plan_programs(config, mesh, rules) -> list[Program]`: the jitted programs a run
of that stage executes (SFT: one train step; PPO: sampler, scoring pass, update), applied to abstract,
sharded inputs (`jax.ShapeDtypeStruct`). Nothing is allocated: no weights are loaded, no data file or
tokenizer is read; shapes come from the config (model preset, global batch / grad_accum, max lengths).
`make_plan` compiles every program for a mesh of devices of one kind and reads back, per device:

- exact bytes of each named input group (parameters, optimizer state, batch) from its shardings;
- XLA's buffer assignment (`compiled.memory_analysis()`): arguments, outputs, donated (aliased) bytes,
  temporaries (activations, gradients, workspace) and the peak;
- FLOPs: matmul / convolution FLOPs counted on the program's jaxpr with every scan's trip count, and
  XLA's `compiled.cost_analysis()` (which counts each loop body once, so it is far lower for scanned layers).

Which compiler: TPU kinds compile with the real TPU compiler for a slice topology when libtpu is
installed (`pip install -e ".[tpu]"`; compile-only devices, works on any x86 machine): those numbers are
what the chips would hold. Otherwise, and always for GPU kinds, programs compile for N simulated CPU
devices; the CPU backend computes bfloat16 matmuls in float32, so its temporaries overstate bfloat16 runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

GIB = 2**30


# --- device kinds -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeviceKind:
    name: str
    hbm_gib: float  # memory of one device (TPU chip / GPU)
    platform: str  # "tpu" or "gpu"
    devices_per_host: int
    peak_tflops: float  # dense bfloat16 matmul peak of one device (vendor figure)
    tpu_family: str = ""  # libtpu topology prefix
    tpu_chip_config: str = "default"  # "megacore": one device per chip with two TensorCores


DEVICE_KINDS: dict[str, DeviceKind] = {
    "tpu-v4": DeviceKind("tpu-v4", 32, "tpu", 4, 275, "v4", "megacore"),
    "tpu-v5e": DeviceKind("tpu-v5e", 16, "tpu", 4, 197, "v5e", "default"),
    "tpu-v5p": DeviceKind("tpu-v5p", 95, "tpu", 4, 459, "v5", "megacore"),
    "h100": DeviceKind("h100", 80, "gpu", 8, 989),
    "a100-80g": DeviceKind("a100-80g", 80, "gpu", 8, 312),
}

# chips -> slice shape (the ones Cloud TPU sells, plus 1 and 2 chips for small tests)
_TPU_SHAPES_3D = {1: "1x1x1", 2: "1x2x1", 4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4",
                  128: "4x4x8", 256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_TPU_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


def tpu_topology_name(kind: DeviceKind, num_chips: int) -> str:
    shapes = _TPU_SHAPES_2D if kind.tpu_family == "v5e" else _TPU_SHAPES_3D
    if num_chips not in shapes:
        raise ValueError(f"{kind.name}: no slice of {num_chips} chips; slices have {sorted(shapes)} chips")
    return f"{kind.tpu_family}:{shapes[num_chips]}"


def libtpu_available() -> bool:
    from jax._src import xla_bridge

    return xla_bridge.get_tpu_library_path() is not None


@contextlib.contextmanager
def _quiet_native_stderr():
    """libtpu prints warnings about the missing TPU VM metadata straight to fd 2; show them only on failure."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            os.write(2, tmp.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tpu_compile_devices(kind: DeviceKind, num_chips: int) -> tuple[list, str]:
    """Compile-only devices of a TPU slice of `num_chips` chips (needs libtpu, not a TPU) and the topology name."""
    from jax.experimental import topologies

    name = tpu_topology_name(kind, num_chips)
    # Only compiling: let several planning processes (and a run on this host) load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    dims = [int(d) for d in name.split(":")[1].split("x")] + [1]
    per_host = tuple(min(d, b) for d, b in zip(dims[:3], (2, 2, 1)))
    wrap = tuple(d >= 4 for d in dims[:3]) if len(dims) == 4 and min(dims[:3]) >= 4 else (False, False, False)
    with _quiet_native_stderr():
        topo = topologies.get_topology_desc(name, "tpu", chip_config_name=kind.tpu_chip_config,
                                            chips_per_host_bounds=per_host, num_slices=1, wrap=wrap)
    return list(topo.devices), name


def cpu_devices(n: int) -> list:
    devices = jax.devices("cpu")
    if len(devices) < n:
        raise RuntimeError(
            f"planning on the CPU backend needs {n} CPU devices, this process has {len(devices)}; run "
            f"`fact-rlhf plan` (it sets jax_num_cpu_devices before JAX starts) or set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n}")
    return devices[:n]


@dataclasses.dataclass
class Target:
    """The devices programs compile for and how they were obtained."""

    kind: DeviceKind
    devices: list
    backend: str  # "tpu" (the real TPU compiler, compile-only devices) or "cpu" (simulated devices)
    topology: str  # e.g. "v4:2x2x4", or "8 simulated CPU devices"
    hosts: int
    hbm_bytes: int


def make_target(kind_name: str, num_devices: int, backend: str = "auto", memory_gib: float | None = None) -> Target:
    """`backend`: "auto" (TPU compiler for TPU kinds when libtpu is installed, else CPU), "tpu" or "cpu"."""
    if kind_name not in DEVICE_KINDS:
        raise ValueError(f"unknown device kind {kind_name!r}; expected one of {sorted(DEVICE_KINDS)}")
    kind = DEVICE_KINDS[kind_name]
    if backend == "auto":
        backend = "tpu" if kind.platform == "tpu" and libtpu_available() else "cpu"
    if backend == "tpu":
        if kind.platform != "tpu":
            raise ValueError(f"--backend tpu compiles for TPU slices; {kind.name} is a GPU")
        if not libtpu_available():
            raise RuntimeError("--backend tpu needs libtpu: pip install -e '.[tpu]' (works without a TPU)")
        devices, topology = tpu_compile_devices(kind, num_devices)
        hosts = len({d.process_index for d in devices})
    elif backend == "cpu":
        devices = cpu_devices(num_devices)
        topology = f"{num_devices} simulated CPU devices"
        hosts = max(1, num_devices // kind.devices_per_host)
    else:
        raise ValueError(f"backend {backend!r}: expected auto, tpu or cpu")
    memory = kind.hbm_gib if memory_gib is None else memory_gib
    return Target(kind, devices, backend, topology, hosts, int(memory * GIB))


# --- programs -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Program:
    """One jitted program of a stage, ready to lower on abstract inputs.

    `inputs` names groups of the abstract arguments (e.g. "parameters", "optimizer state", "batch") whose
    exact per-device bytes the plan reports; their leaves are `jax.ShapeDtypeStruct`s with shardings.
    `resident` names buffers that stay on the devices while the program runs without being its arguments
    (PPO's optimizer state during sampling); their bytes are added to the program's peak. `while_trips`: the
    most iterations a `while` loop of the program runs (the sampler: one per new token), for the FLOP count.
    `calls`: how many times one step runs the program (PPO's sampler: once per rollout chunk); the step's
    FLOPs count it that many times, its memory once.
    """

    name: str
    description: str
    jitted: Callable
    args: tuple
    inputs: dict[str, Any]
    resident: dict[str, Any] = dataclasses.field(default_factory=dict)
    while_trips: int = 0
    calls: int = 1


def parse_mesh(text: str) -> dict[str, int]:
    """"data=1,fsdp=8,tensor=2" -> {"data": 1, "fsdp": 8, "tensor": 2} (missing axes are 1)."""
    from fact_rlhf_jax.sharding import MESH_AXES

    out = {a: 1 for a in MESH_AXES}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in MESH_AXES:
            raise ValueError(f"--mesh {text!r}: expected comma-separated AXIS=SIZE with AXIS in {MESH_AXES}")
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"--mesh {text!r}: size of {key!r} is not an integer") from None
        if out[key] < 1:
            raise ValueError(f"--mesh {text!r}: sizes must be >= 1 (no -1: the plan needs the device count)")
    return out


def stage_module(config):
    from fact_rlhf_jax.train.stage import STAGES

    name = config.stage
    if name not in STAGES and "." not in name:
        raise ValueError(f"config.stage={name!r}: unknown stage; expected one of {sorted(STAGES)} or a module path")
    return importlib.import_module(STAGES.get(name, name))


def programs_for(config, mesh, rules) -> list[Program]:
    """The stage's programs from its module's `plan_programs(config, mesh, rules)` hook."""
    module = stage_module(config)
    hook = getattr(module, "plan_programs", None)
    if hook is None:
        raise NotImplementedError(f"stage {config.stage!r} ({module.__name__}) has no plan_programs(config, mesh, "
                                  "rules) hook; see fact_rlhf_jax/plan.py")
    return hook(config, mesh, rules)


class AbstractTrainState(NamedTuple):
    """The loop's train state as abstract arrays with shardings, and what built it."""

    state: dict
    shardings: dict
    optimizer: Any
    schedule: Callable
    mask: Any


def abstract_train_state(stage, config, mesh, rules) -> AbstractTrainState:
    """The state `run_training` creates for `stage` (optimizer state over the trainable leaves), unallocated."""
    from fact_rlhf_jax.train import state as state_lib
    from fact_rlhf_jax.train.optim import make_optimizer
    from fact_rlhf_jax.train.trainable import trainable_mask

    steps = int(config.num_steps) if int(config.num_steps) > 0 else 1000  # the schedule's length: shapes ignore it
    optimizer, schedule = make_optimizer(config.optim, steps, updates_per_step=stage.updates_per_step)
    rng = jax.random.PRNGKey(int(config.seed))
    mask = trainable_mask(jax.eval_shape(stage.init_params, rng), tuple(config.trainable),
                          tuple(config.get("frozen", ()) or ()))
    state, shardings = state_lib.abstract_state(stage, optimizer, mask, rng, mesh, rules)
    return AbstractTrainState(state, shardings, optimizer, schedule, mask)


def collated_spec(collate: Callable[[list], Mapping[str, np.ndarray]], example: Mapping, rows: int
                  ) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch of `rows` rows that `collate` makes: its keys, dtypes and trailing shapes taken from
    collating one `example` (a loader's filler; collate with the longest bucket only, so it pads to the
    longest length), its leading dimension set to `rows`."""
    one = collate([example])
    return {k: jax.ShapeDtypeStruct((rows, *np.shape(v)[1:]), np.asarray(v).dtype) for k, v in one.items()}


def sharded_batch(batch: Mapping[str, jax.ShapeDtypeStruct], mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """A global batch spec with rows split over (data, fsdp), as `host_local_to_global` places it."""
    from fact_rlhf_jax import sharding as shd

    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shd.batch_sharding(mesh, len(v.shape)))
            for k, v in batch.items()}


def train_step_program(stage, config, mesh, rules, batch: Mapping[str, jax.ShapeDtypeStruct],
                       description: str) -> Program:
    """The shared loop's donated train step (`train/step.py`) on abstract state and batch, as the loop jits it,
    with the stage's frozen weights (`Stage.abstract_frozen`) as its third argument when it has any.

    `batch`: the GLOBAL batch (`config.batch_size` rows) without shardings; rows are split over (data, fsdp).
    """
    from fact_rlhf_jax.train.step import jit_step_with_frozen, make_train_step

    train = abstract_train_state(stage, config, mesh, rules)
    batch = sharded_batch(batch, mesh)
    frozen = stage.abstract_frozen(mesh, rules)
    step = make_train_step(stage.loss, train.optimizer, train.schedule, train.mask, grad_accum=int(config.grad_accum),
                           mesh=mesh, rules=rules)
    frozen_sh = None if frozen is None else jax.tree.map(lambda x: x.sharding, frozen)
    jitted = jit_step_with_frozen(step, train.shardings, {k: v.sharding for k, v in batch.items()}, mesh, frozen_sh)
    inputs = {"parameters": train.state["params"], "optimizer state": train.state["opt_state"], "batch": batch}
    args = (train.state, batch)
    if frozen is not None:
        inputs["frozen weights"] = frozen
        args += (frozen,)
    return Program("train_step", description, jitted, args, inputs)


# --- measuring ----------------------------------------------------------------------------------


def shard_bytes(tree: Any) -> int:
    """Bytes one device holds of a pytree of sharded abstract arrays (the largest shard of each leaf)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _sub_jaxprs(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def _eqn_flops(eqn) -> float:
    name = eqn.primitive.name
    if name == "dot_general":
        lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
        (lc, rc), (lb, _) = eqn.params["dimension_numbers"]
        contract, batch = math.prod(lhs[d] for d in lc), math.prod(lhs[d] for d in lb)
        lhs_free = math.prod(lhs) // (contract * batch)
        rhs_free = math.prod(rhs) // (contract * batch)
        return 2.0 * batch * contract * lhs_free * rhs_free
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out = eqn.outvars[0].aval.shape
        out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
        return 2.0 * math.prod(out) * math.prod(rhs) / out_features
    return 0.0


def _manual_devices(eqn, notes: list[str]) -> int:
    mesh = eqn.params.get("mesh")
    axes = next((eqn.params[k] for k in ("manual_axes", "newly_manual_axes", "axis_names") if k in eqn.params), None)
    try:
        return math.prod(dict(mesh.shape)[a] for a in axes)
    except (AttributeError, KeyError, TypeError):
        notes.append("a shard_map body is counted for one shard (its mesh axes could not be read)")
        return 1


def jaxpr_flops(jaxpr, while_trips: int = 0) -> tuple[float, list[str]]:
    """Matmul + convolution FLOPs of a jaxpr with scans multiplied by their length.

    Returns (flops, notes); a `while` loop body is counted `while_trips` times (an upper bound the caller
    knows), or once when that is 0; either way it is noted.
    """
    notes: list[str] = []

    def count(jp) -> float:
        total = 0.0
        for eqn in jp.eqns:
            total += _eqn_flops(eqn)
            name = eqn.primitive.name
            subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
            if not subs:
                continue
            if name == "cond":
                total += max(count(j) for j in subs)
                continue
            inner = sum(count(j) for j in subs)
            if name == "scan":
                inner *= eqn.params["length"]
            elif name == "while" and while_trips:
                inner = count(eqn.params["cond_jaxpr"].jaxpr) + while_trips * count(eqn.params["body_jaxpr"].jaxpr)
                notes.append(f"a while loop is counted {while_trips} times, its most iterations (an upper bound)")
            elif name == "while":
                notes.append("a while loop is counted once (its trip count is not known before running)")
            elif name == "shard_map":  # the body sees one shard: scale by the devices along its manual axes
                inner *= _manual_devices(eqn, notes)
            total += inner
        return total

    return count(jaxpr), notes


@dataclasses.dataclass
class ProgramPlan:
    name: str
    description: str
    exact_bytes: dict[str, int]  # per device, from the shardings
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int  # XLA's temp_size_in_bytes (the TPU compiler may place part of them elsewhere: see working_bytes)
    code_bytes: int
    peak_bytes: int  # the compiled program's peak plus the resident buffers
    flops: float  # whole step, all devices (jaxpr count)
    flops_per_device: float
    xla_flops_per_device: float  # cost_analysis(): each loop body once
    flop_notes: list[str]
    out_of_memory: str = ""  # the compiler's message when it refused the program for exceeding device memory
    resident_bytes: dict[str, int] = dataclasses.field(default_factory=dict)  # per device, not arguments

    @property
    def working_bytes(self) -> int:
        """Activations, gradients and workspace live at the peak: peak - resident buffers - arguments - outputs
        that are not donated."""
        compiled_peak = self.peak_bytes - sum(self.resident_bytes.values())
        return max(self.temp_bytes, compiled_peak - self.argument_bytes - (self.output_bytes - self.alias_bytes))


@dataclasses.dataclass
class Plan:
    config: str
    stage: str
    mesh: dict[str, int]
    device: str
    backend: str
    topology: str
    hosts: int
    hbm_bytes: int
    peak_tflops: float
    programs: list[ProgramPlan]

    @property
    def peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.programs)

    @property
    def fits(self) -> bool:
        return not any(p.out_of_memory for p in self.programs) and self.peak_bytes <= self.hbm_bytes

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for out, program in zip(d["programs"], self.programs):
            out["working_bytes"] = program.working_bytes
        d.update(peak_bytes=self.peak_bytes, fits=self.fits)
        return d


def measure(program: Program, num_devices: int) -> ProgramPlan:
    traced = program.jitted.trace(*program.args)
    flops, notes = jaxpr_flops(traced.jaxpr.jaxpr, program.while_trips)
    if program.calls > 1:
        flops *= program.calls
        notes.append(f"the step calls this program {program.calls} times; FLOPs count every call")
    exact = {k: shard_bytes(v) for k, v in program.inputs.items()}
    resident = {k: shard_bytes(v) for k, v in program.resident.items()}
    try:
        compiled = traced.lower().compile()
    except jax.errors.JaxRuntimeError as e:
        # The TPU compiler refuses a program whose buffers exceed the chip's memory (the CPU backend never does).
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return ProgramPlan(program.name, program.description, exact, 0, 0, 0, 0, 0, 0, flops, flops / num_devices,
                           0.0, notes, out_of_memory=str(e).strip().splitlines()[0], resident_bytes=resident)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    args, out, alias, temp = (mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.alias_size_in_bytes,
                              mem.temp_size_in_bytes)
    # jit drops arguments a program never reads (PPO's sampler: the value adapter, the reward model's base);
    # they stay on the devices all the same
    unread = sum(exact.values()) - args
    if unread > 0:
        resident["unread inputs"] = unread
    peak = getattr(mem, "peak_memory_in_bytes", 0) or (args + out - alias + temp)
    return ProgramPlan(
        name=program.name, description=program.description,
        exact_bytes=exact,
        argument_bytes=args, output_bytes=out, alias_bytes=alias, temp_bytes=temp,
        code_bytes=mem.generated_code_size_in_bytes,
        peak_bytes=max(peak, args + out - alias + temp) + sum(resident.values()),
        flops=flops, flops_per_device=flops / num_devices, xla_flops_per_device=float(cost.get("flops", 0.0)),
        flop_notes=notes, resident_bytes=resident)


def make_plan(config, mesh_shape: Mapping[str, int], target: Target, config_name: str = "") -> Plan:
    """Compiles the stage's programs for `target` on a mesh of `mesh_shape` and measures them."""
    from fact_rlhf_jax import sharding as shd
    from fact_rlhf_jax.train.loop import check_batch_layout, make_rules

    n = math.prod(mesh_shape.values())
    if n != len(target.devices):
        raise ValueError(f"mesh {dict(mesh_shape)} has {n} devices, the target {len(target.devices)}")
    mesh = shd.make_mesh(dict(mesh_shape), devices=target.devices)
    try:
        check_batch_layout(config, mesh, target.hosts)
    except ValueError as e:
        raise ValueError(f"mesh {_mesh_text(mesh_shape)} does not fit the batch of {config_name or 'the config'}: {e}; "
                         "choose data * fsdp dividing batch_size / grad_accum (or change --config.grad_accum)") from None
    rules = make_rules(config)
    programs = [measure(p, n) for p in programs_for(config, mesh, rules)]
    return Plan(config=config_name, stage=str(config.stage), mesh=dict(mesh_shape), device=target.kind.name,
                backend=target.backend, topology=target.topology, hosts=target.hosts,
                hbm_bytes=target.hbm_bytes, peak_tflops=target.kind.peak_tflops, programs=programs)


# --- report -------------------------------------------------------------------------------------


def format_bytes(b: float) -> str:
    return f"{b / GIB:.2f} GiB" if b >= GIB / 10 else f"{b / 2**20:.2f} MiB"


def backend_note(plan: Plan) -> str:
    if plan.backend == "tpu":
        return (f"TPU compiler (libtpu), slice {plan.topology}, compile-only devices: the buffer sizes are what "
                "the chips would hold")
    return (f"CPU backend, {plan.topology}: shardings and collectives as on the target, but XLA:CPU computes "
            "bfloat16 matmuls in float32, so temporaries overstate bfloat16 programs (parameter and optimizer "
            "bytes are exact)")


def _mesh_text(mesh: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in mesh.items())


def format_plan(plan: Plan) -> str:
    mesh = _mesh_text(plan.mesh)
    n = math.prod(plan.mesh.values())
    lines = [
        f"plan {plan.config} (stage {plan.stage}) on {plan.device} x {n} (mesh {mesh}, {plan.hosts} host"
        f"{'s' if plan.hosts > 1 else ''}), {format_bytes(plan.hbm_bytes)} per device",
        f"compiled by: {backend_note(plan)}",
    ]
    for p in plan.programs:
        lines += ["", f"program {p.name}: {p.description}", "  per device:"]
        rows = [(f"{k} (exact, from shardings)", v) for k, v in p.exact_bytes.items()]
        rows += [(f"{k} (held, not an argument)", v) for k, v in p.resident_bytes.items()]
        if not p.out_of_memory:
            rows += [("compiled arguments", p.argument_bytes), ("compiled outputs", p.output_bytes),
                     ("  of which donated (reuse arguments)", p.alias_bytes),
                     ("activations and temporaries", p.working_bytes),
                     ("peak" + (" (with the held buffers)" if p.resident_bytes else ""), p.peak_bytes)]
        lines += [f"    {label:<44}{format_bytes(v):>12}" for label, v in rows]
        if p.out_of_memory:
            lines.append(f"  the compiler refused it for this device's memory: {p.out_of_memory}")
        xla = f"{p.xla_flops_per_device:.3e} per device (each loop body once)" if not p.out_of_memory else "n/a"
        lines.append(f"  FLOPs per step: {p.flops:.3e} matmul FLOPs ({p.flops_per_device:.3e} per device; jaxpr "
                     f"count, scans x trip count); XLA cost_analysis {xla}")
        lines.append(f"  compute-bound floor: {p.flops_per_device / (plan.peak_tflops * 1e12):.2f} s per step at "
                     f"{plan.peak_tflops:g} TFLOP/s per device (bfloat16 peak; real steps are slower)")
        lines += [f"  note: {note}" for note in dict.fromkeys(p.flop_notes)]
    if plan.device in DEVICE_KINDS and DEVICE_KINDS[plan.device].platform == "gpu":
        lines += ["", "note: JAX preallocates XLA_PYTHON_CLIENT_MEM_FRACTION of each GPU (default 0.75: "
                  f"{format_bytes(0.75 * plan.hbm_bytes)} here); launch/gpu_multinode.sh sets 0.9 ({format_bytes(0.9 * plan.hbm_bytes)})"]
    refused = [p.name for p in plan.programs if p.out_of_memory]
    if refused:
        lines += ["", f"fits: NO ({', '.join(refused)}: out of device memory at compile time)"]
    else:
        lines += ["", f"fits: {'yes' if plan.fits else 'NO'} (peak {format_bytes(plan.peak_bytes)} of "
                  f"{format_bytes(plan.hbm_bytes)}, {100 * plan.peak_bytes / plan.hbm_bytes:.0f} %)"]
    return "\n".join(lines)

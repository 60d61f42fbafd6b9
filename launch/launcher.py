"""Launch any `fact-rlhf` command line on a Cloud TPU VM slice, a multi-node GPU cluster or one machine.

Standard library only, so it runs from a plain checkout on a workstation. The shell scripts next to it
(`tpu_vm.sh`, `gpu_multinode.sh`, `local.sh`) are thin entry points:

  launcher.py tpu-vm create|setup|run|delete ...
  launcher.py gpu slurm|ssh|node ...
  launcher.py local ...

Everything after `--` is the fact-rlhf command line (`train --config ... --workdir ... --config.x=y`),
passed through unchanged except that `--distributed` is added to `train` when more than one process runs.
With `--dry-run` the commands are printed, one per line in `shlex.join` form, and nothing runs; commands on
one line group run one after another, commands that start processes on several hosts run in parallel.

Multi-process runs find each other through `jax.distributed` (`fact_rlhf_jax/distributed.py`): TPU slices
and SLURM jobs are discovered by JAX itself; elsewhere each process gets JAX_COORDINATOR_ADDRESS
(host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTED_COMMANDS = ("train",)  # fact-rlhf commands that take --distributed
# Overlap collectives with compute; let JAX take 90 % of each GPU's memory instead of its default 75 %.
GPU_DEFAULT_ENV = ("XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9")
DEFAULT_PORT = 12355


class LaunchError(ValueError):
    pass


# --- the fact-rlhf command line -------------------------------------------------------------------


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Launcher options before `--`, the fact-rlhf command line after it."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def fact_rlhf_args(command: list[str], num_processes: int, always_distributed: bool = False) -> list[str]:
    if not command:
        raise LaunchError("give the fact-rlhf command line after --, e.g. -- train --config FILE --workdir DIR")
    command = list(command)
    if command[0] == "fact-rlhf":
        command = command[1:]
    multi = num_processes > 1 or always_distributed
    if multi and command[0] in DISTRIBUTED_COMMANDS and "--distributed" not in command:
        command.insert(1, "--distributed")
    return command


def workdir_of(command: list[str]) -> str | None:
    for i, item in enumerate(command):
        if item == "--workdir" and i + 1 < len(command):
            return command[i + 1]
        if item.startswith("--workdir="):
            return item.split("=", 1)[1]
    return None


def env_items(env: list[str]) -> list[str]:
    for item in env:
        if "=" not in item or not item.split("=", 1)[0]:
            raise LaunchError(f"--env {item!r}: expected NAME=VALUE")
    return list(env)


def remote_shell(directory: str, env: list[str], command: list[str]) -> str:
    """`cd DIR && env K=V ... COMMAND` as one shell string for ssh; DIR may start with ~."""
    cd = directory if directory.startswith("~") and " " not in directory else shlex.quote(directory)
    run = shlex.join((["env", *env] if env else []) + command)
    return f"cd {cd} && {run}"


def coordinator_env(coordinator: str, num: int, index: int) -> list[str]:
    return [f"JAX_COORDINATOR_ADDRESS={coordinator}", f"JAX_NUM_PROCESSES={num}", f"JAX_PROCESS_ID={index}"]


# --- Cloud TPU VM -----------------------------------------------------------------------------------


def _gcloud_tpu(verb: str, operands: list[str], opts) -> list[str]:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, *operands, f"--zone={opts.zone}"]
    return cmd + ([f"--project={opts.project}"] if opts.project else [])


def _on_all_workers(opts, shell: str) -> list[str]:
    return _gcloud_tpu("ssh", [opts.name], opts) + ["--worker=all", f"--command={shell}"]


def _copy_to_all_workers(opts, source: str, recurse: bool = False) -> list[str]:
    operands = (["--recurse"] if recurse else []) + [source, f"{opts.name}:{opts.dir}/"]
    return _gcloud_tpu("scp", operands, opts) + ["--worker=all"]


def tpu_create(opts) -> list[list[str]]:
    version = opts.version or ("v2-alpha-tpuv5-lite" if opts.accelerator.startswith("v5litepod")
                               else "tpu-ubuntu2204-base")
    cmd = _gcloud_tpu("create", [opts.name], opts) + [f"--accelerator-type={opts.accelerator}", f"--version={version}"]
    return [cmd + (["--spot"] if opts.spot else [])]


def tpu_setup(opts) -> list[list[str]]:
    """Every worker: the code (git checkout at a ref, or a wheel + configs/), a venv, `pip install .[tpu]`."""
    d, py = opts.dir, opts.python
    venv = f"{py} -m venv .venv && .venv/bin/pip install -q -U pip"
    if opts.repo:
        ref = shlex.quote(opts.ref)
        shell = (f"set -e; [ -d {d}/.git ] || git clone -q {shlex.quote(opts.repo)} {d}; cd {d}; "
                 f"git fetch -q origin {ref}; git checkout -q --detach FETCH_HEAD; {venv}; "
                 ".venv/bin/pip install -q -e \".[tpu]\"")
        return [_on_all_workers(opts, shell)]
    wheel = opts.wheel
    name = wheel.rstrip("/").rsplit("/", 1)[-1]
    if not name.endswith(".whl"):
        raise LaunchError(f"--wheel {wheel}: expected a .whl file (python -m build --wheel)")
    fetch = f" && gcloud storage cp {shlex.quote(wheel)} {d}/" if wheel.startswith("gs://") else ""
    cmds = [_on_all_workers(opts, f"mkdir -p {d}{fetch}")]
    if not wheel.startswith("gs://"):
        cmds.append(_copy_to_all_workers(opts, wheel))
    cmds.append(_copy_to_all_workers(opts, str(REPO / "configs"), recurse=True))
    cmds.append(_on_all_workers(opts, f"set -e; cd {d}; {venv}; .venv/bin/pip install -q \"./{name}[tpu]\""))
    return cmds


def tpu_run(opts, command: list[str]) -> list[list[str]]:
    args = fact_rlhf_args(command, num_processes=1, always_distributed=True)
    workdir = workdir_of(args)
    if workdir is not None and not workdir.startswith("gs://"):
        print(f"warning: --workdir {workdir} is not a gs:// bucket: every worker must see the same directory "
              "(e.g. a gcsfuse mount)", file=sys.stderr)
    return [_on_all_workers(opts, remote_shell(opts.dir, env_items(opts.env), [".venv/bin/fact-rlhf", *args]))]


def tpu_delete(opts) -> list[list[str]]:
    return [_gcloud_tpu("delete", [opts.name], opts) + ["--quiet"]]


# --- multi-node GPU ---------------------------------------------------------------------------------


def _gpu_program(opts) -> list[str]:
    return shlex.split(opts.fact_rlhf) if opts.fact_rlhf else [f"{opts.dir}/.venv/bin/fact-rlhf"]


def gpu_slurm(opts, command: list[str]) -> list[list[str]]:
    """One srun step, one task per node; JAX reads rank, size and the coordinator from SLURM."""
    args = fact_rlhf_args(command, opts.nodes)
    cmd = ["srun", f"--nodes={opts.nodes}", "--ntasks-per-node=1", f"--gpus-per-node={opts.gpus_per_node}",
           "--kill-on-bad-exit=1", f"--chdir={opts.dir}"]
    cmd += [f"--{flag}={value}" for flag, value in
            (("partition", opts.partition), ("account", opts.account), ("time", opts.time)) if value]
    env = list(GPU_DEFAULT_ENV) + env_items(opts.env)
    cmd += [f"--export=ALL,{','.join(env)}"]
    return [cmd + _gpu_program(opts) + args]


def gpu_ssh(opts, command: list[str]) -> list[list[str]]:
    """One process per host over ssh, started together; host 0 is the coordinator."""
    hosts = [h for h in opts.hosts.split(",") if h]
    if not hosts:
        raise LaunchError("--hosts: give the node names, comma-separated, coordinator first")
    args = fact_rlhf_args(command, len(hosts))
    coordinator = f"{hosts[0]}:{opts.port}"
    extra = list(GPU_DEFAULT_ENV) + env_items(opts.env)
    return [["ssh", host, remote_shell(opts.dir, coordinator_env(coordinator, len(hosts), i) + extra,
                                       _gpu_program(opts) + args)]
            for i, host in enumerate(hosts)]


def gpu_node(opts, command: list[str]) -> list[list[str]]:
    """This node's process only (for your own orchestration: pdsh, Kubernetes, ...)."""
    if not 0 <= opts.process_id < opts.num_processes:
        raise LaunchError(f"--process-id {opts.process_id}: expected 0..{opts.num_processes - 1}")
    args = fact_rlhf_args(command, opts.num_processes)
    env = coordinator_env(opts.coordinator, opts.num_processes, opts.process_id)
    return [["env", *env, *GPU_DEFAULT_ENV, *env_items(opts.env), *_gpu_program(opts), *args]]


# --- one machine ------------------------------------------------------------------------------------


def _local_program(opts) -> list[str]:
    if opts.fact_rlhf:
        return shlex.split(opts.fact_rlhf)
    venv = REPO / ".venv" / "bin" / "fact-rlhf"
    return [str(venv)] if venv.exists() else ["fact-rlhf"]


def local(opts, command: list[str]) -> list[list[str]]:
    """One process, or N processes on this machine talking through a coordinator on localhost."""
    n = opts.processes
    if n < 1:
        raise LaunchError(f"--processes {n}: expected >= 1")
    args = fact_rlhf_args(command, n)
    program = _local_program(opts)
    extra = env_items(opts.env)
    if n == 1 and not opts.cpu_devices:
        return [(["env", *extra] if extra else []) + program + args]
    cmds = []
    for i in range(n):
        env = coordinator_env(f"localhost:{opts.port}", n, i) if n > 1 else []
        if opts.cpu_devices:
            env += ["JAX_PLATFORMS=cpu", f"XLA_FLAGS=--xla_force_host_platform_device_count={opts.cpu_devices}"]
        elif opts.gpus_per_process:
            k = opts.gpus_per_process
            env.append("JAX_LOCAL_DEVICE_IDS=" + ",".join(str(i * k + j) for j in range(k)))
        cmds.append(["env", *env, *extra, *program, *args])
    return cmds


# --- running ----------------------------------------------------------------------------------------


def run_sequentially(cmds: list[list[str]]) -> int:
    for cmd in cmds:
        code = subprocess.call(cmd)
        if code:
            return code
    return 0


def run_together(cmds: list[list[str]]) -> int:
    """Starts every command, forwards SIGINT/SIGTERM to them (a run saves a checkpoint on SIGTERM), waits for
    all; if one fails the others are terminated. Returns the first non-zero exit status."""
    procs = [subprocess.Popen(cmd) for cmd in cmds]

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        pending = list(procs)
        while pending:
            for p in list(pending):
                try:
                    code = p.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
                pending.remove(p)
                if code and not status:
                    status = code
                    for other in pending:
                        other.terminate()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status


def execute(cmds: list[list[str]], together: bool, dry_run: bool) -> int:
    if dry_run:
        for cmd in cmds:
            print(shlex.join(cmd))
        return 0
    return run_together(cmds) if together and len(cmds) > 1 else run_sequentially(cmds)


# --- command line -----------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, env_help: str = "extra environment for fact-rlhf, repeatable") -> None:
    p.add_argument("--dry-run", action="store_true", help="print the commands, one per line, and run nothing")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help=env_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launcher.py", description=__doc__.splitlines()[0])
    platforms = parser.add_subparsers(dest="platform", required=True, metavar="PLATFORM")

    tpu = platforms.add_parser("tpu-vm", help="Cloud TPU VM slices (gcloud)",
                               description="Create a TPU VM slice, set up every worker, run fact-rlhf on all "
                                           "workers, delete it. Needs gcloud on this machine.")
    tpu_sub = tpu.add_subparsers(dest="action", required=True, metavar="ACTION")

    def tpu_parser(name, help_text):
        p = tpu_sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--name", required=True, help="TPU VM name")
        p.add_argument("--zone", required=True, help="e.g. us-central2-b")
        p.add_argument("--project", default=None, help="Google Cloud project (default: gcloud's)")
        p.add_argument("--dry-run", action="store_true", help="print the commands, one per line, and run nothing")
        return p

    p = tpu_parser("create", "create the slice")
    p.add_argument("--accelerator", required=True, help="accelerator type, e.g. v4-32, v5litepod-16, v5p-8")
    p.add_argument("--version", default=None, help="runtime image (default: tpu-ubuntu2204-base; "
                                                   "v2-alpha-tpuv5-lite for v5litepod)")
    p.add_argument("--spot", action="store_true", help="spot capacity (preemptible; runs resume on rerun)")
    p = tpu_parser("setup", "install fact_rlhf_jax on every worker: venv + pip install .[tpu]")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--repo", help="git URL to clone on every worker")
    source.add_argument("--wheel", help="a built wheel: local path (copied) or gs://...; configs/ is copied too")
    p.add_argument("--ref", default="main", help="branch, tag or commit of --repo (default main)")
    p.add_argument("--dir", default="~/fact_rlhf_jax", help="install directory on the workers")
    p.add_argument("--python", default="python3", help="Python >= 3.11 on the workers (e.g. python3.11)")
    p = tpu_parser("run", "run `fact-rlhf ARGS` on every worker (after --)")
    p.add_argument("--dir", default="~/fact_rlhf_jax", help="install directory on the workers")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment (e.g. LIBTPU_INIT_ARGS=...), repeatable")
    tpu_parser("delete", "delete the slice")

    gpu = platforms.add_parser("gpu", help="multi-node GPU clusters",
                               description="One JAX process per node driving all its GPUs. The code and its "
                                           ".venv must be at --dir on every node and the workdir on storage "
                                           "every node sees.")
    gpu_sub = gpu.add_subparsers(dest="action", required=True, metavar="ACTION")

    def gpu_parser(name, help_text):
        p = gpu_sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--dir", default=str(REPO), help="checkout with its .venv on every node (default: this one)")
        p.add_argument("--fact-rlhf", default=None, help="the fact-rlhf executable (default DIR/.venv/bin/fact-rlhf)")
        _common(p)
        return p

    p = gpu_parser("slurm", "srun one task per node (inside or outside an allocation)")
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--time", default=None, help="time limit, e.g. 24:00:00")
    p = gpu_parser("ssh", "start one process per host over ssh; the first host is the coordinator")
    p.add_argument("--hosts", required=True, help="comma-separated host names, coordinator first")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="coordinator port on the first host")
    p = gpu_parser("node", "start this node's process (you start the others)")
    p.add_argument("--coordinator", required=True, help="host:port of process 0")
    p.add_argument("--num-processes", type=int, required=True)
    p.add_argument("--process-id", type=int, required=True)

    loc = platforms.add_parser("local", help="one machine",
                               description="Run fact-rlhf here: one process, or N processes with a coordinator "
                                           "on localhost (to test multi-host code paths on one machine).")
    loc.add_argument("--processes", type=int, default=1)
    loc.add_argument("--port", type=int, default=DEFAULT_PORT)
    devices = loc.add_mutually_exclusive_group()
    devices.add_argument("--cpu-devices", type=int, default=0, help="CPU only, with this many devices per process")
    devices.add_argument("--gpus-per-process", type=int, default=0,
                         help="split this machine's GPUs: process i gets GPUs i*K .. i*K+K-1")
    loc.add_argument("--fact-rlhf", default=None,
                     help="the fact-rlhf command (default: this checkout's .venv/bin/fact-rlhf, else fact-rlhf)")
    _common(loc)
    return parser


def plan_commands(opts, command: list[str]) -> tuple[list[list[str]], bool]:
    """(commands, run together?)"""
    if opts.platform == "tpu-vm":
        if opts.action == "run":
            return tpu_run(opts, command), False
        if command:
            raise LaunchError(f"tpu-vm {opts.action} takes no command after --")
        return {"create": tpu_create, "setup": tpu_setup, "delete": tpu_delete}[opts.action](opts), False
    if opts.platform == "gpu":
        return {"slurm": gpu_slurm, "ssh": gpu_ssh, "node": gpu_node}[opts.action](opts, command), True
    return local(opts, command), True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, command = split_command(argv)
    parser = build_parser()
    opts = parser.parse_args(options)
    try:
        cmds, together = plan_commands(opts, command)
    except LaunchError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return execute(cmds, together, opts.dry_run)


if __name__ == "__main__":
    sys.exit(main())

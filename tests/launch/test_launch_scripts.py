"""launch/*.sh: every dry run prints exactly the commands it would run; the local launcher really starts them."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
TRAIN = ["train", "--config", "configs/sft/llava_7b_224.py", "--workdir", "gs://bucket/sft7b",
         "--config.optim.lr=1e-5", "--config.grad_accum", "8"]
TRAIN_DISTRIBUTED = [TRAIN[0], "--distributed", *TRAIN[1:]]


def launch(script, *args, check=True):
    proc = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def dry_run(script, *args):
    """The printed commands, each split back into its argv."""
    return [shlex.split(line) for line in launch(script, *args).stdout.splitlines()]


def remote(shell: str) -> tuple[str, list[str], list[str]]:
    """'cd DIR && env K=V ... PROGRAM ARGS' -> (DIR, [K=V ...], [PROGRAM, ARGS...])."""
    cd, sep, rest = shell.partition(" && ")
    assert cd.startswith("cd ") and sep
    words = shlex.split(rest)
    env = []
    if words[0] == "env":
        words = words[1:]
        while "=" in words[0] and not words[0].startswith("-"):
            env.append(words.pop(0))
    return cd[3:], env, words


# --- TPU VM -----------------------------------------------------------------------------------------

TPU = ["--name", "rlhf-v4", "--zone", "us-central2-b"]


def test_tpu_run_on_all_workers():
    (cmd,) = dry_run("tpu_vm.sh", "run", *TPU, "--project", "proj", "--env", "LIBTPU_INIT_ARGS=--xla_x=1",
                     "--dry-run", "--", *TRAIN)
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rlhf-v4"]
    assert {"--zone=us-central2-b", "--project=proj", "--worker=all"} <= set(cmd)
    (shell,) = [c[len("--command="):] for c in cmd if c.startswith("--command=")]
    directory, env, program = remote(shell)
    assert directory == "~/fact_rlhf_jax" and env == ["LIBTPU_INIT_ARGS=--xla_x=1"]
    # JAX finds the coordinator, process count and id on a TPU slice itself; train gets --distributed.
    assert program == [".venv/bin/fact-rlhf", *TRAIN_DISTRIBUTED]


def test_tpu_run_passes_any_command_and_warns_about_local_workdirs():
    proc = launch("tpu_vm.sh", "run", *TPU, "--dry-run", "--", "eval", "pope", "--model", "/tmp/w",
                  "--workdir", "/tmp/local")
    (cmd,) = [shlex.split(line) for line in proc.stdout.splitlines()]
    _, _, program = remote(cmd[-1][len("--command="):])
    assert program == [".venv/bin/fact-rlhf", "eval", "pope", "--model", "/tmp/w", "--workdir", "/tmp/local"]
    assert "not a gs:// bucket" in proc.stderr


def test_tpu_create_and_delete():
    assert dry_run("tpu_vm.sh", "create", *TPU, "--accelerator", "v4-32", "--spot", "--dry-run") == [
        ["gcloud", "compute", "tpus", "tpu-vm", "create", "rlhf-v4", "--zone=us-central2-b",
         "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]]
    (v5e,) = dry_run("tpu_vm.sh", "create", *TPU, "--accelerator", "v5litepod-16", "--dry-run")
    assert "--version=v2-alpha-tpuv5-lite" in v5e
    assert dry_run("tpu_vm.sh", "delete", *TPU, "--dry-run") == [
        ["gcloud", "compute", "tpus", "tpu-vm", "delete", "rlhf-v4", "--zone=us-central2-b", "--quiet"]]


def _worker_shell(cmd):
    assert cmd[4] == "ssh" and "--worker=all" in cmd
    return cmd[-1][len("--command="):]


def test_tpu_setup_from_a_checkout():
    (cmd,) = dry_run("tpu_vm.sh", "setup", *TPU, "--repo", "https://example.org/fact_rlhf_jax.git", "--ref",
                     "v0.1", "--python", "python3.11", "--dry-run")
    steps = [s.strip() for s in _worker_shell(cmd).split(";")]
    assert steps[0] == "set -e"
    assert "git clone -q https://example.org/fact_rlhf_jax.git ~/fact_rlhf_jax" in steps[1]
    assert steps[2:5] == ["cd ~/fact_rlhf_jax", "git fetch -q origin v0.1", "git checkout -q --detach FETCH_HEAD"]
    assert steps[5] == "python3.11 -m venv .venv && .venv/bin/pip install -q -U pip"
    assert steps[6] == '.venv/bin/pip install -q -e ".[tpu]"'


def test_tpu_setup_from_a_wheel():
    wheel = "dist/fact_rlhf_jax-0.1.0-py3-none-any.whl"
    mkdir, copy_wheel, copy_configs, install = dry_run("tpu_vm.sh", "setup", *TPU, "--wheel", wheel, "--dry-run")
    assert _worker_shell(mkdir) == "mkdir -p ~/fact_rlhf_jax"
    assert copy_wheel[4:7] == ["scp", wheel, "rlhf-v4:~/fact_rlhf_jax/"] and "--worker=all" in copy_wheel
    assert copy_configs[4:8] == ["scp", "--recurse", str(LAUNCH.parent / "configs"), "rlhf-v4:~/fact_rlhf_jax/"]
    assert _worker_shell(install).endswith('.venv/bin/pip install -q "./fact_rlhf_jax-0.1.0-py3-none-any.whl[tpu]"')
    fetch, _, _ = dry_run("tpu_vm.sh", "setup", *TPU, "--wheel", "gs://b/w/" + wheel.split("/")[1], "--dry-run")
    assert _worker_shell(fetch).endswith("gcloud storage cp gs://b/w/fact_rlhf_jax-0.1.0-py3-none-any.whl "
                                         "~/fact_rlhf_jax/")


# --- multi-node GPU ---------------------------------------------------------------------------------

GPU_ENV = ["XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9"]


def test_gpu_slurm():
    (cmd,) = dry_run("gpu_multinode.sh", "slurm", "--nodes", "4", "--partition", "a100", "--time", "24:00:00",
                     "--dir", "/shared/fact_rlhf_jax", "--dry-run", "--", *TRAIN)
    i = cmd.index("/shared/fact_rlhf_jax/.venv/bin/fact-rlhf")
    assert cmd[0] == "srun" and cmd[i + 1:] == TRAIN_DISTRIBUTED
    assert {"--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=a100", "--time=24:00:00",
            "--chdir=/shared/fact_rlhf_jax", f"--export=ALL,{','.join(GPU_ENV)}"} == set(cmd[1:i]) - {"--kill-on-bad-exit=1"}


def test_gpu_ssh_one_process_per_host():
    hosts = ["node0", "node1", "node2"]
    cmds = dry_run("gpu_multinode.sh", "ssh", "--hosts", ",".join(hosts), "--port", "2222", "--dir", "/nfs/f",
                   "--env", "NCCL_DEBUG=WARN", "--dry-run", "--", *TRAIN)
    assert len(cmds) == 3
    for i, (cmd, host) in enumerate(zip(cmds, hosts)):
        assert cmd[:2] == ["ssh", host] and len(cmd) == 3
        directory, env, program = remote(cmd[2])
        assert directory == "/nfs/f"
        assert env == ["JAX_COORDINATOR_ADDRESS=node0:2222", "JAX_NUM_PROCESSES=3", f"JAX_PROCESS_ID={i}",
                       *GPU_ENV, "NCCL_DEBUG=WARN"]
        assert program == ["/nfs/f/.venv/bin/fact-rlhf", *TRAIN_DISTRIBUTED]


def test_gpu_node_process():
    (cmd,) = dry_run("gpu_multinode.sh", "node", "--coordinator", "10.0.0.1:1234", "--num-processes", "4",
                     "--process-id", "3", "--fact-rlhf", "/opt/venv/bin/fact-rlhf", "--dry-run", "--", *TRAIN)
    assert cmd == ["env", "JAX_COORDINATOR_ADDRESS=10.0.0.1:1234", "JAX_NUM_PROCESSES=4", "JAX_PROCESS_ID=3",
                   *GPU_ENV, "/opt/venv/bin/fact-rlhf", *TRAIN_DISTRIBUTED]
    bad = launch("gpu_multinode.sh", "node", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2",
                 "--dry-run", "--", *TRAIN, check=False)
    assert bad.returncode == 2 and "expected 0..1" in bad.stderr


# --- one machine ------------------------------------------------------------------------------------


def test_local_single_process_runs_the_command_as_given():
    plan = ["plan", "--config", "configs/sft/tiny.py", "--mesh", "fsdp=8"]
    assert dry_run("local.sh", "--fact-rlhf", "fact-rlhf", "--dry-run", "--", *plan) == [["fact-rlhf", *plan]]
    assert dry_run("local.sh", "--fact-rlhf", "fact-rlhf", "--dry-run", "--", *TRAIN) == [["fact-rlhf", *TRAIN]]


@pytest.mark.parametrize("devices,expect", [
    (["--cpu-devices", "4"], lambda i: ["JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=4"]),
    (["--gpus-per-process", "2"], lambda i: [f"JAX_LOCAL_DEVICE_IDS={2 * i},{2 * i + 1}"]),
])
def test_local_processes(devices, expect):
    cmds = dry_run("local.sh", "--processes", "2", "--port", "4321", *devices, "--fact-rlhf",
                   "python -m fact_rlhf_jax", "--dry-run", "--", *TRAIN)
    assert len(cmds) == 2
    for i, cmd in enumerate(cmds):
        assert cmd == ["env", "JAX_COORDINATOR_ADDRESS=localhost:4321", "JAX_NUM_PROCESSES=2", f"JAX_PROCESS_ID={i}",
                       *expect(i), "python", "-m", "fact_rlhf_jax", *TRAIN_DISTRIBUTED]


def test_local_processes_really_start_together(tmp_path):
    # A stand-in for fact-rlhf that reports what it was started with.
    report = "import os, sys; print(os.environ['JAX_PROCESS_ID'], os.environ['JAX_NUM_PROCESSES'], sys.argv[1:])"
    proc = launch("local.sh", "--processes", "2", "--cpu-devices", "1", "--fact-rlhf",
                  shlex.join([sys.executable, "-c", report]), "--", "train", "--config", "c.py")
    lines = sorted(proc.stdout.splitlines())
    assert lines == [f"{i} 2 ['train', '--distributed', '--config', 'c.py']" for i in range(2)]
    failing = launch("local.sh", "--processes", "2", "--fact-rlhf", shlex.join([sys.executable, "-c",
                     "import os, sys; sys.exit(3 if os.environ['JAX_PROCESS_ID'] == '1' else 0)"]), "--", "x",
                     check=False)
    assert failing.returncode == 3


# --- every script -----------------------------------------------------------------------------------


@pytest.mark.parametrize("script,args", [
    ("tpu_vm.sh", ["run", *TPU]), ("gpu_multinode.sh", ["ssh", "--hosts", "a,b"]), ("local.sh", []),
])
def test_help_and_missing_command(script, args):
    assert "--dry-run" in launch(script, *args, "--help").stdout
    missing = launch(script, *args, "--dry-run", check=False)
    assert missing.returncode == 2 and "after --" in missing.stderr

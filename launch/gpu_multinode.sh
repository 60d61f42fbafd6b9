#!/usr/bin/env bash
# Runs `fact-rlhf train` as one JAX process per GPU node. Start it on every node:
#
#   COORDINATOR=node0:12345 NUM_NODES=4 NODE_RANK=<0..3> launch/gpu_multinode.sh CONFIG WORKDIR [--config.key=value ...]
#
# Under SLURM (`srun --nodes=4 --ntasks-per-node=1 launch/gpu_multinode.sh ...`) the three
# variables may be left unset: jax.distributed.initialize() reads the SLURM environment.
# Each process drives all GPUs of its node. WORKDIR must be on a filesystem every node sees.
# SIGTERM (e.g. `scancel --signal=TERM`) saves a checkpoint and exits 0; rerun to resume.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,10p' "$0"; exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
REPO_DIR=${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
if [[ -n "${COORDINATOR:-}" ]]; then
  export JAX_COORDINATOR_ADDRESS=$COORDINATOR
  export JAX_NUM_PROCESSES=${NUM_NODES:?set NUM_NODES with COORDINATOR}
  export JAX_PROCESS_ID=${NODE_RANK:?set NODE_RANK with COORDINATOR}
fi
# Let XLA overlap collectives with compute on GPUs.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
exec "$REPO_DIR/.venv/bin/fact-rlhf" train --distributed --config "$CONFIG" --workdir "$WORKDIR" "$@"

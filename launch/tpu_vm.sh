#!/usr/bin/env bash
# Runs `fact-rlhf train` on every worker of a Cloud TPU VM slice (one process per host).
#
#   launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#
# Every worker needs the repository at $REPO_DIR (default ~/fact_rlhf_jax) with its .venv
# (`pip install -e .[tpu]`), and WORKDIR must be storage all hosts see (gs://... or a shared
# filesystem): checkpoints are written by all hosts together, metrics by host 0.
# jax.distributed.initialize() discovers the slice by itself on TPU VMs. TPU preemption sends
# SIGTERM: the run saves a checkpoint and exits 0; rerun this script to resume.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,11p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_DIR=${REPO_DIR:-'~/fact_rlhf_jax'}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
EXTRA=$(printf ' %q' "$@")
CMD="cd $REPO_DIR && .venv/bin/fact-rlhf train --distributed --config $(printf %q "$CONFIG") --workdir $(printf %q "$WORKDIR")$EXTRA"
echo "on all workers of $TPU_NAME: $CMD"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all --command="$CMD"

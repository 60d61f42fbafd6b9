#!/usr/bin/env bash
# Multi-node GPU clusters, one JAX process per node driving all its GPUs:
#
#   launch/gpu_multinode.sh slurm --nodes 4 [--partition P] -- train --config C --workdir /shared/run
#   launch/gpu_multinode.sh ssh   --hosts node0,node1,node2,node3 [--port 12355] -- train --config C --workdir /shared/run
#   launch/gpu_multinode.sh node  --coordinator node0:12355 --num-processes 4 --process-id 2 -- train ...
#
# Every action takes --dry-run (print the commands, run nothing) and --help. See launch/launcher.py.
exec "${PYTHON:-python3}" "$(dirname "$0")/launcher.py" gpu "$@"

#!/usr/bin/env bash
# Cloud TPU VM slices: create, set up every worker, run any fact-rlhf command on all workers, delete.
#
#   launch/tpu_vm.sh create --name N --zone Z --accelerator v4-32 [--spot]
#   launch/tpu_vm.sh setup  --name N --zone Z (--repo URL [--ref REF] | --wheel dist/*.whl | --wheel gs://...)
#   launch/tpu_vm.sh run    --name N --zone Z -- train --config configs/sft/llava_7b_224.py --workdir gs://B/sft7b
#   launch/tpu_vm.sh delete --name N --zone Z
#
# Every action takes --dry-run (print the commands, run nothing) and --help. See launch/launcher.py.
exec "${PYTHON:-python3}" "$(dirname "$0")/launcher.py" tpu-vm "$@"

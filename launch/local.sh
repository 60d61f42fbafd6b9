#!/usr/bin/env bash
# One machine: one process, or N processes with a coordinator on localhost (multi-host code paths on one box).
#
#   launch/local.sh -- train --config configs/sft/tiny.py --workdir /tmp/sft_tiny
#   launch/local.sh --processes 2 --cpu-devices 4 -- train --config configs/sft/tiny.py --workdir /tmp/sft_2p
#   launch/local.sh --processes 2 --gpus-per-process 4 -- train --config C --workdir DIR
#
# Takes --dry-run (print the commands, run nothing) and --help. See launch/launcher.py.
exec "${PYTHON:-python3}" "$(dirname "$0")/launcher.py" local "$@"

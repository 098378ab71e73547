#!/usr/bin/env bash
# The README's main command: set up, build the built-in emoji-scenes benchmark, train, evaluate,
# and print base / novel mIoU and where the model was saved. Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  scripts/train.py "$@"

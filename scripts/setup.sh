#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment with the CPU build of torch pinned
# (a bare `torch` requirement would pull a multi-GB CUDA build) and larvseg-hf with its extras.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${LARVSEG_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev,demo,text]"
# ImageNet-1K / -21K names (larvseg_hf.known_vocabularies): timm's data files, as a data-only copy that Python
# never imports (TIMM_DATA_ONLY_DIR). The `vocab` extra would bring timm with torchvision, and no torchvision
# wheel works beside the CPU torch; timm without it would stop `accelerate launch`, which imports timm.
TIMM_VERSION=1.0.29
if [ ! -d ".venv/share/larvseg-hf/timm/timm-${TIMM_VERSION}.dist-info" ]; then
  .venv/bin/python -m pip install --quiet --no-deps --upgrade --target .venv/share/larvseg-hf/timm "timm==${TIMM_VERSION}"
fi

#!/usr/bin/env bash
# The README's test command (CI runs exactly this): set up (including headless Chromium for the
# demo's browser test), lint, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_browser.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Installs what tests/test_demo_browser.py needs: Debian's headless Chromium at /usr/bin/chromium and the
# Python `playwright` driver in .venv. Never runs `playwright install` (its browser download fails here);
# the test points Playwright at /usr/bin/chromium instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
  else
    SUDO=""
  fi
  echo "Installing Debian's chromium package (apt-get)..."
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
/usr/bin/chromium --version

PYTHON=".venv/bin/python"
[ -x "$PYTHON" ] || PYTHON="python3"
if ! "$PYTHON" -c "import playwright" 2>/dev/null; then
  echo "Installing the Python playwright driver..."
  "$PYTHON" -m pip install -q "playwright>=1.40"
fi
"$PYTHON" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"

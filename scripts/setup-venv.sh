#!/usr/bin/env bash
# Create ./.venv with the pinned Python tools racefree's tests and demo need.
# Idempotent: reinstalls only when python/requirements-dev.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
req=python/requirements-dev.txt
stamp=.venv/.racefree-requirements
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "setup-venv: '$python' not found; install Python 3.9+ or set PYTHON=/path/to/python3" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi
plugins=python/requirements-plugins.txt
plugins_stamp=.venv/plugins/.racefree-requirements
if ! cmp -s "$plugins" "$plugins_stamp" 2>/dev/null; then
  rm -rf .venv/plugins
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --target .venv/plugins -r "$plugins"
  cp "$plugins" "$plugins_stamp"
fi

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

#!/usr/bin/env bash
# Create bench/.venv with the pinned peers (pytest, pytest-xdist) and the test dependencies of
# the suites in bench/.suites (fetched by bench/fetch-suites.sh), then install those suites
# from copies so their source trees stay untouched. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.racefree-bench-requirements
if ! cmp -s requirements.txt "$stamp" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$stamp"
fi
for dir in .suites/*/; do
  name=$(basename "$dir")
  [ "$name" = sdists ] && continue
  marker=.venv/.installed-$name
  [ -f "$marker" ] && continue
  # Build from a scratch copy: in-tree builds would leave build/ and egg-info in the suite.
  scratch=$(mktemp -d)
  cp -a "$dir" "$scratch/src"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "$scratch/src"
  rm -rf "$scratch"
  touch "$marker"
done

#!/usr/bin/env bash
# Benchmark `racefree run` against serial pytest and pytest-xdist on real suites.
#
#   bash bench/runner/run.sh [-n W] [SUITE...]      # default: every suite in bench/.suites
#
# Needs bench/.suites (bash bench/fetch-suites.sh) and builds bench/.venv and racefree (release).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash bench/fetch-suites.sh >/dev/null
bash bench/setup-venv.sh
cargo build --release --quiet -p racefree
exec bench/.venv/bin/python bench/runner/bench.py --racefree "$PWD/target/release/racefree" "$@"

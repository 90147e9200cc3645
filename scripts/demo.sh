#!/usr/bin/env bash
# Build racefree and run its main job on the bundled example suite (examples/), with the
# pinned pytest in ./.venv. Extra arguments go to `racefree run` (e.g. `-n 4`, `-v`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
cargo build --release --quiet -p racefree
./target/release/racefree --version
cd examples
exec ../target/release/racefree run --python ../.venv/bin/python "$@"

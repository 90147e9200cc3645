#!/usr/bin/env bash
# Build racefree and run its main job on the bundled example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
cargo build --release --quiet -p racefree
echo "racefree $(./target/release/racefree --version)"

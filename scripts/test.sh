#!/usr/bin/env bash
# Set up everything and run every check and test: formatting, lints, unit and integration tests.
# This is the command README.md names and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
export RACEFREE_TEST_PYTHON="$PWD/.venv/bin/python"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features

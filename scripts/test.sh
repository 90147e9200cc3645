#!/usr/bin/env bash
# Set up everything and run every check and test: formatting, lints, unit and integration tests,
# then the wheel test (build the Python wheel, install it with no Rust on PATH, run it).
# This is the command README.md names and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
export RACEFREE_TEST_PYTHON="$PWD/.venv/bin/python"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
# Last: the packaging Python users get (scripts/test-wheel.sh). The dev profile reuses the build
# `cargo test` just made; a cold release build would add about 10 minutes on 2 cores.
RACEFREE_WHEEL_PROFILE=dev bash scripts/test-wheel.sh

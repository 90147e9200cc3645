#!/usr/bin/env bash
# Build racefree's wheel with a pinned maturin, install it into a fresh virtualenv with no Rust
# toolchain on PATH, and check the installed `racefree` works: --version, `run` on examples/,
# `lock`. This is what a Python user without Rust gets from `pip install racefree` (issue 9).
# Idempotent: everything goes to a mktemp dir that is removed on exit. The cargo target dir is
# reused (CARGO_TARGET_DIR, else ./target), so only the first build pays for a compile.
# RACEFREE_WHEEL_PROFILE picks the cargo profile (default release, what a published wheel uses);
# scripts/test.sh sets it to dev, to reuse the build `cargo test` just made instead of a cold
# release build (about 10 minutes on 2 cores): the packaging is what is under test here.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
maturin_pin=maturin==1.16.0
profile=${RACEFREE_WHEEL_PROFILE:-release}

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }

command -v "$python" >/dev/null || fail "'$python' not found; install Python 3.9+ or set PYTHON=/path/to/python3"
# `racefree run` needs a Python with the pinned pytest; ./.venv is where scripts/setup-venv.sh puts it.
scripts/setup-venv.sh
test_python=$root/.venv/bin/python

tmp=$(mktemp -d "${TMPDIR:-/tmp}/racefree-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# 1. Build: a scratch venv holds the pinned maturin, so the build does not depend on what the
#    machine happens to have installed.
"$python" -m venv "$tmp/build-venv"
"$tmp/build-venv/bin/python" -m pip install --quiet --disable-pip-version-check "$maturin_pin" \
  || fail "could not install $maturin_pin into $tmp/build-venv (network or index problem?)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
"$tmp/build-venv/bin/maturin" build --profile "$profile" --quiet -o "$tmp/dist" \
  || fail "maturin build --profile $profile failed (messages above); fix the build, then rerun"
wheels=("$tmp"/dist/racefree-*.whl)
[ "${#wheels[@]}" -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected exactly one wheel in $tmp/dist, found: ${wheels[*]}"
wheel=${wheels[0]}
pass "built $(basename "$wheel") (cargo profile $profile)"

# The wheel must hold only the binary and metadata: python/ (the plugin, embedded in the binary)
# must not leak in as a Python package.
files=$("$python" -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$wheel")
unexpected=$(grep -v -E '^racefree-[^/]+\.(data/scripts/racefree|dist-info/.+)$' <<<"$files" || true)
[ -z "$unexpected" ] || fail "wheel contains files other than the binary and metadata: $unexpected"
pass "wheel holds only the binary and metadata"

# 2. Install into a second fresh venv. From here on PATH has no cargo/rustc, as for a Python
#    user without Rust: only the venv and the system directories.
"$python" -m venv "$tmp/venv"
venv=$tmp/venv
nrpath="$venv/bin:/usr/bin:/bin"
if env PATH="$nrpath" sh -c 'command -v cargo || command -v rustc' >/dev/null; then
  fail "cargo or rustc is on the reduced PATH ($nrpath); the check would not prove the wheel needs no Rust"
fi
env PATH="$nrpath" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" \
  || fail "pip install of $wheel into $venv failed"
rf=$(env PATH="$nrpath" sh -c 'command -v racefree') || fail "racefree is not on PATH in the venv after pip install"
[ "$rf" = "$venv/bin/racefree" ] || fail "racefree on PATH is $rf, expected $venv/bin/racefree"
pass "pip install put racefree on PATH ($rf)"

# 3. --version must be Cargo's version: the wheel's version is single-sourced from Cargo.
cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$cargo_version" ] || fail "could not read the workspace version from Cargo.toml"
got=$(env PATH="$nrpath" racefree --version) || fail "racefree --version exited non-zero"
[ "$got" = "racefree $cargo_version" ] || fail "racefree --version printed '$got', expected 'racefree $cargo_version'"
pass "racefree --version = $got"

# 4. racefree run on a copy of examples/ (a copy, so history and reports do not touch the checkout).
cp -R examples "$tmp/examples"
status=0
(cd "$tmp/examples" && env PATH="$nrpath" racefree run --python "$test_python") >"$tmp/run.log" 2>&1 || status=$?
[ "$status" -eq 0 ] || { cat "$tmp/run.log" >&2; fail "racefree run on examples/ exited $status, expected 0 (log above)"; }
pass "racefree run on examples/ exited 0"

# 5. racefree lock runs the command under the lock and passes its exit code through.
status=0
env PATH="$nrpath" racefree lock "$tmp/test.lock" -- sh -c 'exit 7' || status=$?
[ "$status" -eq 7 ] || fail "racefree lock exited $status, expected the command's exit code 7"
out=$(env PATH="$nrpath" racefree lock "$tmp/test.lock" -- echo locked) || fail "racefree lock -- echo exited non-zero"
[ "$out" = locked ] || fail "racefree lock -- echo printed '$out', expected 'locked'"
pass "racefree lock ran the command and passed its exit code through"

echo "PASS: wheel test"

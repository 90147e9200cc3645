#!/usr/bin/env bash
# bench/isolation: what namespace isolation costs per unit. Times N spawns (default 200) of
# `racefree __unit-init -- /bin/true` against `/bin/true` started directly, interleaved in one
# run, plus `racefree --version` (the cost of starting racefree's binary at all), the private
# network variant, and `python -c pass` both ways for scale. Usage:
#
#   bash bench/isolation/run.sh [ROUNDS] [PYTHON]
#
# Needs a kernel that allows the namespaces (root, or unprivileged user namespaces).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-200}
python=${2:-$(command -v python3)}
cargo build --release --quiet -p racefree --bin racefree --example isolation_bench
echo "$(uname -sr); $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg); uid $(id -u)"
target/release/racefree __unit-init --probe || { echo "namespaces unavailable here" >&2; exit 1; }
target/release/examples/isolation_bench target/release/racefree "$rounds" "$python"

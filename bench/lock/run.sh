#!/usr/bin/env bash
# bench/lock: racefree-lock against Python's filelock (FileLock, SoftFileLock; pinned below) and
# a bare flock() sequence, all measured in this one run, with ratios. Usage:
#
#   bash bench/lock/run.sh [DIR]     # DIR: where the lock files live (default: a fresh temp dir)
#
# Prints a table; the raw JSON lines go to bench/lock/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
FILELOCK_VERSION=4.2.11
venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/python" -c "import filelock, sys; sys.exit(filelock.__version__ != '$FILELOCK_VERSION')" 2>/dev/null \
  || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "filelock==$FILELOCK_VERSION"
cargo build --release --quiet -p racefree-lock --example lockbench
rs=target/release/examples/lockbench
py="$venv/bin/python bench/lock/filelock_bench.py"
dir=${1:-$(mktemp -d)}
mkdir -p "$dir"
out=bench/lock/results.jsonl
: > "$out"
echo "lock files in $dir ($(stat -f -c %T "$dir") filesystem); $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
{
  $rs uncontended "$dir" 200000
  $py uncontended "$dir" 20000
  $rs contended "$dir" kernel 8 3
  $rs contended "$dir" soft 8 3
  $py contended "$dir" FileLock 8 3
  $py contended "$dir" SoftFileLock 8 3
  $rs stale "$dir" kernel 20
  $rs stale "$dir" soft 20
  $py stale "$dir" FileLock 10
  $py stale "$dir" SoftFileLock 5
} | tee -a "$out" >/dev/null
"$venv/bin/python" - "$out" <<'PY'
import json, sys
rows = {r["name"]: r for r in map(json.loads, open(sys.argv[1]))}
def get(name, field):
    return rows.get(name, {}).get(field, float("nan"))
print("\nUncontended acquire+release (ns per op, lower is better; CPU = user+system time of the process)")
print(f"  {'':34s} {'wall':>10s} {'CPU':>10s}")
for name in ["racefree kernel", "racefree soft", "bare open+flock+unlock+close",
             "bare flock pair on an open fd", "filelock FileLock", "filelock SoftFileLock"]:
    print(f"  {name:34s} {get(name, 'ns_per_op'):>10,.0f} {get(name, 'cpu_ns_per_op'):>10,.0f}")
print(f"  racefree kernel / bare open+flock+unlock+close, median of 7 interleaved rounds: "
      f"wall {get('racefree kernel', 'ratio_vs_bare_wall'):.2f}x, CPU {get('racefree kernel', 'ratio_vs_bare_cpu'):.2f}x (target <= 2x)")
for metric, label in [("ns_per_op", "wall"), ("cpu_ns_per_op", "CPU")]:
    k = get("racefree kernel", metric)
    print(f"  [{label}] racefree kernel / bare flock pair on open fd: {k / get('bare flock pair on an open fd', metric):.2f}x"
          f"; filelock FileLock / racefree kernel: {get('filelock FileLock', metric) / k:.1f}x (target >= 20x)"
          f"; SoftFileLock / racefree soft: {get('filelock SoftFileLock', metric) / get('racefree soft', metric):.1f}x")
print("\nContended hand-off, 8 processes (acquisitions per second, higher is better)")
for name in ["racefree kernel contended x8", "racefree soft contended x8",
             "filelock FileLock contended x8", "filelock SoftFileLock contended x8"]:
    print(f"  {name:40s} {get(name, 'ops_per_sec'):>12,.0f}")
print(f"  kernel vs FileLock:    {get('racefree kernel contended x8', 'ops_per_sec') / get('filelock FileLock contended x8', 'ops_per_sec'):.1f}x (target >= 5x)")
print(f"  soft vs SoftFileLock:  {get('racefree soft contended x8', 'ops_per_sec') / get('filelock SoftFileLock contended x8', 'ops_per_sec'):.1f}x")
print("\nStale recovery: holder SIGKILLed -> next waiter holds the lock (ms, lower is better)")
for name in ["racefree kernel stale recovery", "racefree soft stale recovery",
             "filelock FileLock stale recovery", "filelock SoftFileLock stale recovery"]:
    r = rows.get(name, {})
    print(f"  {name:40s} median {r.get('median_ms', float('nan')):>9.2f}  p95 {r.get('p95_ms', float('nan')):>9.2f}  max {r.get('max_ms', float('nan')):>9.2f}")
print("  target: racefree <= 10 ms in both modes")
PY

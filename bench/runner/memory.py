"""racefree's own peak memory on a generated suite of N trivial tests (default 10,000).

    bench/.venv/bin/python bench/runner/memory.py --racefree target/release/racefree [-n W] [--tests N]

Writes the suite to a temp dir (100 tests per file, half of them parametrized), runs
`racefree run --junit-xml --events` on it and samples racefree's VmHWM from /proc (its
pytest children are separate processes and are not counted).
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--racefree", required=True)
    parser.add_argument("-n", "--workers", type=int, default=2)
    parser.add_argument("--tests", type=int, default=10000)
    args = parser.parse_args()
    racefree = os.path.abspath(args.racefree)
    with tempfile.TemporaryDirectory(prefix="racefree-mem-") as d:
        with open(os.path.join(d, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        for i in range(args.tests // 100):
            with open(os.path.join(d, f"test_gen_{i:04d}.py"), "w") as f:
                f.write("import pytest\n\n")
                f.write(f"@pytest.mark.parametrize('x', list(range(50)))\ndef test_param(x):\n    assert x >= 0\n\n")
                for j in range(50):
                    f.write(f"def test_plain_{j}():\n    pass\n\n")
        cmd = [racefree, "run", "--python", sys.executable, "-q", "--plain", "-n", str(args.workers),
               "--junit-xml", "j.xml", "--events", "e.ndjson"]
        took, code, line, rss = timed(cmd, d, measure_rss=True)
        print(f"{args.tests} tests, -n {args.workers}: {line} (exit {code}, {took:.1f}s wall); "
              f"racefree peak RSS {rss:.1f} MB")


if __name__ == "__main__":
    main()

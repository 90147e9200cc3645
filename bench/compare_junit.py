"""Compare two JUnit XML reports test by test: (classname, name) -> passed/failure/error/skipped.

Usage: python compare_junit.py EXPECTED.xml ACTUAL.xml   (exit 0 if the result sets are equal)
"""
import sys
import xml.etree.ElementTree as ET


def results(path):
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = sorted(c.tag for c in case if c.tag in ("failure", "error", "skipped"))
        key = (case.get("classname", ""), case.get("name", ""))
        out[key] = "+".join(kinds) or "passed"
    return out


def main():
    expected, actual = results(sys.argv[1]), results(sys.argv[2])
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    for k in missing[:20]:
        print(f"  missing: {k} ({expected[k]})")
    for k in extra[:20]:
        print(f"  extra:   {k} ({actual[k]})")
    for k in changed[:20]:
        print(f"  changed: {k}: {expected[k]} -> {actual[k]}")
    same = not (missing or extra or changed)
    print(f"{'SAME' if same else 'DIFFERENT'}: {len(expected)} expected, {len(actual)} actual, "
          f"{len(missing)} missing, {len(extra)} extra, {len(changed)} changed")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

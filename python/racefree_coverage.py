"""racefree's coverage report: pytest-cov's, made once for the whole run.

Under pytest-cov (``--cov``) every unit measures into a data file of its own (racefree sets
``COVERAGE_FILE`` per unit) and reports nothing (see racefree_pytest's
``_take_coverage_report``): one pytest process per file, each reporting and erasing the
shared ``.coverage`` as pytest-cov does in a single process, would leave one unit's share of
the coverage and race the others. Once every unit has ended, racefree runs this module with
the interpreter the units ran with, in the directory they ran in: it combines the units'
data into the data file pytest-cov would have written (the configuration's, or
``$COVERAGE_FILE``), then makes the reports pytest-cov would have made, with its wording
(pytest-cov 7), and checks its minimum.

Input on stdin, one JSON object: ``data_files`` (the units' data files), ``omit_dirs``
(where racefree's own modules are, left out of the data), ``options`` (as a
unit's pytest-cov parsed them: source, report, config, append, branch, precision,
fail_under, no_cov_on_fail), ``failed`` (some test failed), ``width`` (the terminal's).
Output: the report on stdout, as pytest prints it in its terminal summary; exit status 0,
or 3 if the total is below the minimum. Anything else is an error, said on stderr.
"""

import json
import os
import sys

BELOW_MINIMUM = 3


class _Null:
    @staticmethod
    def write(_text):
        pass


def _sep(out, char, title, width):
    """A separator line as pytest's terminal writer draws it."""
    fill = char * max((width - len(title) - 2) // (2 * len(char)), 1)
    line = "%s %s %s" % (fill, title, fill)
    if len(line) + len(char.rstrip()) <= width:
        line += char.rstrip()
    out.write(line + "\n")


def _combined(options, data_files, omit_dirs):
    import coverage

    def measurer():
        return coverage.Coverage(
            source=options.get("source"),
            branch=options.get("branch"),
            config_file=options.get("config", True),
        )

    cov = measurer()
    if not options.get("append"):
        cov.erase()
    cov.load()
    if data_files:
        cov.combine(data_paths=list(data_files), keep=False)
    cov.save()
    if _without_own_files(cov.get_data(), omit_dirs):
        # The data file was replaced under this object's open database: read it afresh.
        cov = measurer()
        cov.load()
    return cov


def _without_own_files(data, omit_dirs):
    """Rewrites the data file without racefree's own modules (its plugin, its fork
    server): they ran in every unit, and with ``--cov`` and no source coverage measures
    every file that is not the standard library's or an installed package's. True if
    there were any. (``CoverageData.purge_files`` would leave them listed, at 0 %.)"""
    import coverage

    roots = set()
    for directory in omit_dirs:
        for path in (directory, os.path.realpath(directory)):
            roots.add(path.rstrip(os.sep) + os.sep)
    measured = data.measured_files()
    own = {f for f in measured if any(f.startswith(root) for root in roots)}
    if not own:
        return False
    keep = sorted(measured - own)
    path = data.data_filename()
    fresh = coverage.CoverageData(basename=path + ".racefree-tmp")
    fresh.erase()
    # Context by context, so that --cov-context=test survives.
    for context in sorted(data.measured_contexts()) or [""]:
        data.set_query_context(context)
        read = data.arcs if data.has_arcs() else data.lines
        found = {f: seen for f in keep if (seen := read(f))}
        if found:
            fresh.set_context(context)
            (fresh.add_arcs if data.has_arcs() else fresh.add_lines)(found)
    data.set_query_contexts(None)
    # A file measured with nothing run in it is listed still (at 0 %), as coverage lists it.
    fresh.touch_files([f for f in keep if f not in fresh.measured_files()])
    tracers = {f: data.file_tracer(f) for f in keep}
    fresh.add_file_tracers({f: t for f, t in tracers.items() if t})
    fresh.write()
    os.replace(fresh.data_filename(), path)
    return True


def _reports(cov, report, precision, out):
    """pytest-cov's reports (its ``CovController.summary``), each where it writes them."""
    if "term" in report or "term-missing" in report:
        cov.report(
            show_missing=("term-missing" in report) or None,
            skip_covered=("skip-covered" in report.values()) or None,
            ignore_errors=True,
            file=out,
            precision=precision,
        )
    if "annotate" in report:
        directory = report["annotate"]
        cov.annotate(ignore_errors=True, directory=directory)
        if directory:
            out.write("Coverage annotated source written to dir %s\n" % directory)
        else:
            out.write("Coverage annotated source written next to source\n")
    if "html" in report:
        directory = report["html"]
        cov.html_report(ignore_errors=True, directory=directory)
        shown = cov.config.html_dir if directory is None else directory
        out.write("Coverage HTML written to dir %s\n" % shown)
    if "xml" in report:
        path = report["xml"]
        cov.xml_report(ignore_errors=True, outfile=path)
        out.write("Coverage XML written to file %s\n" % (cov.config.xml_output if path is None else path))
    if "json" in report:
        path = report["json"]
        cov.json_report(ignore_errors=True, outfile=path)
        out.write("Coverage JSON written to file %s\n" % (cov.config.json_output if path is None else path))
    for kind, verb in (("markdown", "written"), ("markdown-append", "appended")):
        if kind in report:
            path = report[kind]
            with open(path, "a" if kind == "markdown-append" else "w", encoding="utf-8") as handle:
                cov.report(ignore_errors=True, file=handle, output_format="markdown")
            out.write("Coverage Markdown information %s to file %s\n" % (verb, path))
    if "lcov" in report:
        path = report["lcov"]
        cov.lcov_report(ignore_errors=True, outfile=path)
        out.write("Coverage LCOV written to file %s\n" % (cov.config.lcov_output if path is None else path))


def main():
    spec = json.load(sys.stdin)
    options = spec["options"]
    width = int(spec.get("width") or 80)
    out = sys.stdout
    cov = _combined(options, spec.get("data_files") or [], spec.get("omit_dirs") or [])
    report = options.get("report") or {}
    fail_under = options.get("fail_under")
    if options.get("no_cov_on_fail") and spec.get("failed"):
        return 0
    if not report and not fail_under:
        return 0
    from coverage.results import display_covered, should_fail_under

    precision = options.get("precision")
    if precision is None:
        precision = getattr(cov.config, "precision", 0)
    total = cov.report(ignore_errors=True, file=_Null, precision=precision)
    below = bool(fail_under) and should_fail_under(total, fail_under, precision)
    if below:
        out.write(
            "\nERROR: Coverage failure: total of %s is less than fail-under=%.*f\n"
            % (display_covered(total, precision), precision, fail_under)
        )
    heading = [False]

    def head():
        if not heading[0]:
            _sep(out, "=", "tests coverage", width)
            heading[0] = True

    # pytest-cov's report starts with the platform line whenever it reports at all (a
    # minimum without any report included).
    head()
    version = "%d.%d.%d-%s-%d" % tuple(sys.version_info[:5])
    _sep(out, "_", "coverage: platform %s, python %s" % (sys.platform, version), width)
    out.write("\n")
    _reports(cov, report, precision, out)
    if fail_under:
        head()
        out.write(
            "%sRequired test coverage of %s%% %s. Total coverage: %.2f%%\n"
            % ("FAIL " if below else "", fail_under, "not reached" if below else "reached", total)
        )
    return BELOW_MINIMUM if below else 0


if __name__ == "__main__":
    sys.exit(main())

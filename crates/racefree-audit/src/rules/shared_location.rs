//! RF001: writes to a fixed path under a hardcoded shared root (/tmp, /var/tmp, /dev/shm, or
//! a root from `shared-roots`), or such a path used as a working directory or handed to code.

use crate::analysis::Facts;
use crate::analysis::facts::WriteKind;
use crate::analysis::value::Origin;
use crate::rules::{RawFinding, RuleId};

pub fn check(facts: &Facts, out: &mut Vec<RawFinding>) {
    if facts.fake_fs {
        return;
    }
    for w in &facts.writes {
        if w.path.origin != Origin::Shared || !w.path.fixed {
            continue;
        }
        // `os.makedirs("/tmp", exist_ok=True)` creates nothing that could collide.
        if w.kind == WriteKind::Write
            && w.path.bare
            && (w.sink.contains("mkdir") || w.sink.contains("makedirs"))
        {
            continue;
        }
        let p = &w.path.text;
        if w.sink == "basetemp=" {
            out.push(RawFinding {
                rule: RuleId::SharedLocation,
                span: w.span,
                message: format!("pytest's basetemp is set to the fixed shared path \"{p}\": every run and worker uses (and pytest empties) the same directory"),
                fix: "leave basetemp unset so pytest picks a private numbered directory, or build it from something unique to the run (for example the worker id)".to_owned(),
            });
            continue;
        }
        let message = match w.kind {
            WriteKind::Write => format!(
                "{} writes the fixed path \"{p}\" in a location shared by every process",
                w.sink
            ),
            WriteKind::WorkDir => {
                format!(
                    "\"{p}\" is used as the working directory ({}); anything created relative to it is shared by every process",
                    w.sink
                )
            }
            WriteKind::RootArg => format!(
                "the shared path \"{p}\" is handed to the code under test as `{}`",
                w.sink
            ),
        };
        let fix = match w.kind {
            WriteKind::Write => {
                let name = p.rsplit('/').find(|s| !s.is_empty()).unwrap_or("name");
                format!(
                    "use the `tmp_path` fixture: `tmp_path / \"{name}\"` (or `tmp_path_factory.mktemp(\"{name}\")` in wider-scoped fixtures)"
                )
            }
            WriteKind::WorkDir => {
                "work in a private directory: `monkeypatch.chdir(tmp_path)`, or pass `cwd=tmp_path`"
                    .to_owned()
            }
            WriteKind::RootArg => format!("pass a private directory instead: `{}tmp_path`", w.sink),
        };
        out.push(RawFinding {
            rule: RuleId::SharedLocation,
            span: w.span,
            message,
            fix,
        });
    }
}

//! RF002: a fixed name in the system temp directory (`tempfile.gettempdir()`, `$TMPDIR`),
//! or the temp directory itself used as a working directory or handed to code.

use crate::analysis::Facts;
use crate::analysis::facts::WriteKind;
use crate::analysis::value::Origin;
use crate::rules::{RawFinding, RuleId};

pub fn check(facts: &Facts, out: &mut Vec<RawFinding>) {
    if facts.fake_fs {
        return;
    }
    for w in &facts.writes {
        if w.path.origin != Origin::TempDir || !w.path.fixed {
            continue;
        }
        let p = &w.path.text;
        let (message, fix) = match w.kind {
            // Writing the temp dir itself (chmod, rmtree) is not about names; leave it to review.
            WriteKind::Write if w.path.bare => continue,
            WriteKind::Write => (
                format!("{} writes \"{p}\": a fixed name in the system temp directory, the same in every process", w.sink),
                "use `tmp_path`, or let tempfile pick the name: `tempfile.mkstemp()`, `tempfile.mkdtemp()`, `tempfile.TemporaryDirectory()`".to_owned(),
            ),
            WriteKind::WorkDir => (
                format!("the system temp directory \"{p}\" is used as the working directory ({})", w.sink),
                "work in a private directory: `monkeypatch.chdir(tmp_path)`, or pass `cwd=tmp_path`".to_owned(),
            ),
            WriteKind::RootArg => (
                format!("the system temp directory \"{p}\" is handed to the code under test as `{}`", w.sink),
                format!("pass a private directory instead: `{}tmp_path`", w.sink),
            ),
        };
        out.push(RawFinding {
            rule: RuleId::FixedTempName,
            span: w.span,
            message,
            fix,
        });
    }
}

//! RF005: a session- or package-scoped fixture writes a fixed path (relative to the working
//! directory, in the home directory or at another absolute path). Under xdist and racefree each
//! worker runs its own copy of the fixture at the same time. Shared roots, the temp dir and the
//! source tree have their own rules and are not repeated here.

use crate::analysis::Facts;
use crate::analysis::facts::{FixtureScope, FuncKind, WriteKind};
use crate::analysis::value::Origin;
use crate::rules::{RawFinding, RuleId};

/// Device and kernel files: writing them is not creating a shared file.
const SPECIAL: [&str; 3] = ["/dev/", "/proc/", "/sys/"];

pub fn check(facts: &Facts, out: &mut Vec<RawFinding>) {
    if facts.fake_fs {
        return;
    }
    for w in &facts.writes {
        let Some(func) = facts.func(w.func) else {
            continue;
        };
        let FuncKind::Fixture {
            scope: scope @ (FixtureScope::Session | FixtureScope::Package),
            ..
        } = func.kind
        else {
            continue;
        };
        if w.kind != WriteKind::Write
            || !w.path.fixed
            || !matches!(
                w.path.origin,
                Origin::Cwd | Origin::Home | Origin::OtherAbsolute
            )
            || SPECIAL.iter().any(|s| w.path.text.starts_with(s))
        {
            continue;
        }
        let scope = if scope == FixtureScope::Session {
            "session"
        } else {
            "package"
        };
        out.push(RawFinding {
            rule: RuleId::SessionFixture,
            span: w.span,
            message: format!(
                "{scope}-scoped fixture `{}` writes the fixed path \"{}\" ({}); every parallel worker runs it at once",
                func.name, w.path.text, w.sink
            ),
            fix: "write under `tmp_path_factory.mktemp(...)`; data every worker must share belongs under `tmp_path_factory.getbasetemp().parent`, created once under a file lock".to_owned(),
        });
    }
}

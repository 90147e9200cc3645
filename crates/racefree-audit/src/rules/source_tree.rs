//! RF006: writes into the source tree (paths built from `__file__`, pytest's rootdir or the
//! test file's own path).

use crate::analysis::Facts;
use crate::analysis::facts::WriteKind;
use crate::analysis::value::Origin;
use crate::rules::{RawFinding, RuleId};

pub fn check(facts: &Facts, out: &mut Vec<RawFinding>) {
    if facts.fake_fs {
        return;
    }
    for w in &facts.writes {
        if w.kind != WriteKind::Write || w.path.origin != Origin::SourceTree || !w.path.fixed {
            continue;
        }
        out.push(RawFinding {
            rule: RuleId::SourceTree,
            span: w.span,
            message: format!("{} writes \"{}\" inside the source tree, which every worker and run shares", w.sink, w.path.text),
            fix: "write to `tmp_path` instead and point the code under test there; read fixtures from the source tree, never write them during tests".to_owned(),
        });
    }
}

//! RF004: process-global state changed without restore.
//!
//! A change counts as restored when the same top-level function changes the same state again,
//! before or after it (a `finally:` block, the code after a fixture's `yield`, a save/restore
//! pair, a nested finalizer or lambda, a cleanup registration like `addCleanup(os.chdir, old)`):
//! one of the two is the restore of the other, and telling which is not worth a false positive; when a teardown-like function of the same class or module changes the same state; when
//! it happens inside a block that restores it (`with mock.patch.dict(os.environ)`); or when the
//! function registers a cleanup racefree cannot see into. Import-time changes in conftest.py,
//! pytest hooks and autouse session fixtures are per-process setup, the same in every worker.

use crate::analysis::Facts;
use crate::analysis::facts::{FixtureScope, FuncKind, MutationFact, Target};
use crate::rules::{RawFinding, RuleId};

fn fix_for(t: &Target) -> &'static str {
    match t {
        Target::Environ(_) => {
            "use `monkeypatch.setenv(...)` / `monkeypatch.delenv(...)`, or restore the old value in a `finally:` block"
        }
        Target::Cwd => {
            "use `monkeypatch.chdir(tmp_path)`, or `os.chdir(old)` in a `finally:` block"
        }
        Target::SysPath => {
            "use `monkeypatch.syspath_prepend(path)`, or restore `sys.path[:] = saved` in a `finally:` block"
        }
        Target::SysModules(_) => {
            "use `monkeypatch.setitem(sys.modules, ...)` / `monkeypatch.delitem(sys.modules, ...)`"
        }
        Target::Attr(_) => {
            "use `monkeypatch.setattr(module, \"name\", value)`, or restore the old value in a `finally:` block"
        }
        Target::Setter(_) => {
            "save the previous value and restore it in a `finally:` block or after the fixture's `yield`"
        }
    }
}

fn exempt(facts: &Facts, m: &MutationFact) -> bool {
    if m.synthetic || m.guarded {
        return true;
    }
    match facts.func(m.func) {
        None => facts.is_conftest,
        Some(f) => {
            f.restorer
                || f.opaque_cleanup
                // conftest.py helpers (not fixtures) set up the process for every test below it.
                || (facts.is_conftest && matches!(f.kind, FuncKind::Other))
                || matches!(f.kind, FuncKind::Hook)
                || matches!(
                    f.kind,
                    FuncKind::Fixture {
                        scope: FixtureScope::Session,
                        autouse: true
                    }
                )
        }
    }
}

fn restored(facts: &Facts, i: usize, m: &MutationFact) -> bool {
    // Module-level code is one "function" too: `sys.modules[k] = fake` ... `sys.modules[k] = orig`.
    let same_func = |r: &MutationFact| r.func == m.func;
    // Teardown-like functions of the same class (or module), and cleanups registered by its
    // setUp-like functions, restore for every test of the class.
    let teardown_peer = |r: &MutationFact| {
        let (Some(mf), Some(rf)) = (facts.func(m.func), facts.func(r.func)) else {
            return false;
        };
        facts.shares_fixtures(mf.class, rf.class)
            && (rf.restorer || (r.synthetic && rf.kind != FuncKind::Test))
    };
    // A setUp-like function that enters a context or registers a cleanup racefree cannot see
    // into may restore anything the class's tests change.
    let opaque_class_cleanup = facts.func(m.func).is_some_and(|mf| {
        mf.class.is_some()
            && facts.funcs.iter().any(|f| {
                facts.shares_fixtures(mf.class, f.class)
                    && f.kind != FuncKind::Test
                    && f.opaque_cleanup
            })
    });
    // Helpers (`_make_pkg`, `check_locale`, a fake's `__init__`, setUp) are called by tests that
    // restore what they change (`_del_pkg`, `addCleanup(locale.setlocale, ...)`, `tearDown`):
    // any change to the same state anywhere in the file may be that restore.
    let helper = facts
        .func(m.func)
        .is_some_and(|f| f.kind == FuncKind::Other);
    opaque_class_cleanup
        || facts.mutations.iter().enumerate().any(|(j, r)| {
            j != i
                && m.target.restored_by(&r.target)
                && (same_func(r) || teardown_peer(r) || helper)
        })
}

pub fn check(facts: &Facts, out: &mut Vec<RawFinding>) {
    for (i, m) in facts.mutations.iter().enumerate() {
        if exempt(facts, m) || restored(facts, i, m) {
            continue;
        }
        let place = match facts.func(m.func) {
            None => "at import time, so it leaks into every test that runs in the same process"
                .to_owned(),
            Some(f) => format!(
                "in `{}` without restoring it, so it leaks into the tests that run after it",
                f.name
            ),
        };
        out.push(RawFinding {
            rule: RuleId::GlobalState,
            span: m.span,
            message: format!("`{}` changes {} {place}", m.how, m.target.describe()),
            fix: fix_for(&m.target).to_owned(),
        });
    }
}

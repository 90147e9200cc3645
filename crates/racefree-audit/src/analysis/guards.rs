//! What a `with` block, a decorator or a `mock.patch` call restores or replaces, judged from
//! the call: `mock.patch.dict(os.environ)`, `pytest.raises(...)`, helpers named to restore.

use rustpython_parser::ast::{self, Expr};

use super::facts::StateKind;
use super::scope::ScopeId;
use super::sinks::last_segment;
use super::value::Evaluator;

/// State a `with` block or a decorator restores when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    Kind(StateKind),
    Attr(String),
    /// A helper whose name says it saves and restores state (`isolated_modules()`, `swap_attr()`).
    All,
    /// `pytest.raises(...)` / `self.assertRaises(...)`: the block is expected to fail, so what it
    /// tries to change or write is the subject of the test, not a side effect.
    ExpectError,
}

/// Words in a context manager's name that say it restores whatever the block changes.
const RESTORING_WORDS: &[&str] = &[
    "restor",
    "preserv",
    "isolat",
    "uncache",
    "cleanimport",
    "clean_import",
    "swap",
    "saved",
    "guard",
    "sandbox",
    "temporarily",
    "override",
    "conserv",
];

/// Decorators such as `@run_with_locale(...)`, `@with_env(...)`, `@with_environment`,
/// `@conserve_mpmath_dps`: wrappers
/// that set something up around the test and, by the convention their names follow, put it back.
pub fn decorator_restores(func: &Expr) -> bool {
    let name = match func {
        Expr::Attribute(a) => a.attr.as_str(),
        Expr::Name(n) => n.id.as_str(),
        _ => return false,
    };
    let lower = name.to_ascii_lowercase();
    lower.starts_with("with_")
        || lower.starts_with("run_with")
        // `@conserve_mpmath_dps`, `@preserve_cwd`, `@restore_env`
        || RESTORING_WORDS.iter().any(|w| lower.contains(w))
}

/// The operation a `mock.patch(...)`-like call replaces, by its short name.
pub fn patched_name(ev: &Evaluator<'_, '_>, scope: ScopeId, c: &ast::ExprCall) -> Option<String> {
    let q = ev.qualname(&c.func, scope).unwrap_or_default();
    let last = last_segment(&q);
    match last {
        "patch" => c
            .args
            .first()
            .and_then(|a| ev.string(a, scope))
            .map(|s| last_segment(&s).to_owned()),
        "object" if q.ends_with("patch.object") => c.args.get(1).and_then(|a| ev.string(a, scope)),
        "mock_open" => Some("open".to_owned()),
        _ => None,
    }
}

/// What state a context manager (or decorator) restores when its block ends.
pub fn guard_of(ev: &Evaluator<'_, '_>, scope: ScopeId, c: &ast::ExprCall) -> Option<Guard> {
    let q = ev.qualname(&c.func, scope);
    let name = match (&q, &*c.func) {
        (Some(q), _) => last_segment(q).to_owned(),
        (None, Expr::Attribute(a)) => a.attr.to_string(),
        _ => return None,
    };
    let q = q.unwrap_or_default();
    let first = c.args.first();
    let first_names = |wanted: &str| {
        first.is_some_and(|a| {
            ev.qualname(a, scope).as_deref() == Some(wanted)
                || ev.string(a, scope).as_deref() == Some(wanted)
        })
    };
    if q.ends_with("patch.dict") {
        if first_names("os.environ") {
            return Some(Guard::Kind(StateKind::Environ));
        }
        if first_names("sys.modules") {
            return Some(Guard::Kind(StateKind::SysModules));
        }
        return None;
    }
    if q.ends_with("patch.object") {
        let obj = first?;
        let attr = ev.string(c.args.get(1)?, scope)?;
        let whole = format!("{}.{attr}", ev.text(obj));
        return Some(match whole.as_str() {
            "os.environ" => Guard::Kind(StateKind::Environ),
            "sys.path" => Guard::Kind(StateKind::SysPath),
            "sys.modules" => Guard::Kind(StateKind::SysModules),
            _ => Guard::Attr(whole),
        });
    }
    if name == "patch" {
        return match first.and_then(|a| ev.string(a, scope)).as_deref() {
            Some("os.environ") => Some(Guard::Kind(StateKind::Environ)),
            Some("sys.path") => Some(Guard::Kind(StateKind::SysPath)),
            Some("sys.modules") => Some(Guard::Kind(StateKind::SysModules)),
            _ => None,
        };
    }
    if matches!(
        name.as_str(),
        "raises" | "assertRaises" | "assertRaisesRegex" | "assertRaisesRegexp" | "failUnlessRaises"
    ) {
        return Some(Guard::ExpectError);
    }
    let lower = name.to_ascii_lowercase();
    if !q.starts_with("tempfile.") && RESTORING_WORDS.iter().any(|w| lower.contains(w)) {
        return Some(Guard::All);
    }
    // Project helpers such as `modified_environ(...)`, `EnvironmentVarGuard()`, `chdir(...)`,
    // `tmpdir.as_cwd()`: by name, they exist to restore what they change.
    if lower.contains("env") {
        return Some(Guard::Kind(StateKind::Environ));
    }
    if lower.contains("chdir")
        || lower.contains("cwd")
        || lower == "cd"
        || lower == "pushd"
        || lower.contains("working_dir")
    {
        return Some(Guard::Kind(StateKind::Cwd));
    }
    None
}

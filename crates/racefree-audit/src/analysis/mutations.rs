//! Calls that change process-global state (`os.environ.update`, `os.chdir`, `sys.path.insert`,
//! `setattr(module, ...)`, process-wide setters), and how to tell a change from a restore.

use rustpython_parser::ast::{self, Constant, Expr};

use super::facts::Target;
use super::scope::ScopeId;
use super::value::Evaluator;

impl<'a> Evaluator<'_, 'a> {
    /// The global state a call changes, if it is one of the known mutators. `args` are the call's
    /// positional arguments (for a cleanup registration: the arguments after the function).
    pub fn call_mutation(
        &self,
        q: &str,
        args: &[Expr],
        scope: ScopeId,
    ) -> Option<(Target, String)> {
        let key = |i: usize| args.get(i).map(|e| self.key_text(e, scope));
        let (head, tail) = q.rsplit_once('.').unwrap_or(("", q));
        let target = match (head, tail) {
            ("os.environ", "update" | "clear" | "popitem" | "__enter__" | "__exit__") => {
                Target::Environ(None)
            }
            ("os.environ", "setdefault" | "pop" | "__setitem__" | "__delitem__") => {
                Target::Environ(key(0))
            }
            ("os", "putenv" | "unsetenv") => Target::Environ(key(0)),
            ("os", "chdir" | "fchdir") => Target::Cwd,
            (
                "sys.path",
                "insert" | "append" | "extend" | "remove" | "pop" | "clear" | "__setitem__"
                | "__delitem__",
            ) => Target::SysPath,
            ("sys.modules", "update" | "clear" | "popitem") => Target::SysModules(None),
            ("sys.modules", "pop" | "setdefault" | "__setitem__" | "__delitem__") => {
                Target::SysModules(key(0))
            }
            ("", "setattr" | "delattr") => {
                let obj = args.first()?;
                let attr = self.string(args.get(1)?, scope)?;
                if !self.is_imported(obj, scope) {
                    return None;
                }
                Target::Attr(format!("{}.{attr}", self.text(obj)))
            }
            // setlocale(category) and setlocale(category, None) only ask.
            ("locale", "setlocale")
                if args.len() < 2
                    || matches!(
                        &args[1],
                        Expr::Constant(ast::ExprConstant {
                            value: Constant::None,
                            ..
                        })
                    ) =>
            {
                return None;
            }
            ("os", "umask")
            | ("socket", "setdefaulttimeout")
            | ("locale", "setlocale")
            | ("sys", "setrecursionlimit")
            | ("logging", "disable") => Target::Setter(q.to_owned()),
            ("signal", "signal") => {
                Target::Setter(format!("signal.signal({})", key(0).unwrap_or_default()))
            }
            ("gc", "disable" | "enable") => Target::Setter("gc.disable".to_owned()),
            _ => return None,
        };
        Some((target, q.to_owned()))
    }

    /// Calls that put a process-wide setting back to Python's default, which is a restore:
    /// `socket.setdefaulttimeout(None)`, `logging.disable()` / `logging.disable(logging.NOTSET)`,
    /// `gc.enable()`.
    pub fn resets_to_default(&self, q: &str, args: &[Expr]) -> bool {
        let none = |e: Option<&Expr>| {
            matches!(
                e,
                Some(Expr::Constant(ast::ExprConstant {
                    value: Constant::None,
                    ..
                }))
            )
        };
        match q {
            "socket.setdefaulttimeout" => none(args.first()),
            "logging.disable" => args.first().is_none_or(|a| {
                self.text(a).ends_with("NOTSET")
                    || matches!(a, Expr::Constant(ast::ExprConstant { value: Constant::Int(i), .. }) if i.to_string() == "0")
            }),
            "gc.enable" => true,
            _ => false,
        }
    }

    /// A key as text: the string for constants, else the expression's source.
    pub fn key_text(&self, e: &Expr, scope: ScopeId) -> String {
        match e {
            Expr::Constant(ast::ExprConstant {
                value: Constant::Str(s),
                ..
            }) => format!("{s:?}"),
            _ => self
                .string(e, scope)
                .map_or_else(|| self.text(e).to_owned(), |s| format!("{s:?}")),
        }
    }

    /// Whether the root name of an attribute chain is bound by an import (a module or an object
    /// imported from one), not a local variable.
    pub fn is_imported(&self, e: &Expr, scope: ScopeId) -> bool {
        let mut e = e;
        while let Expr::Attribute(a) = e {
            e = &a.value;
        }
        let Expr::Name(n) = e else { return false };
        match self.scopes.lookup(scope, n.id.as_str()) {
            Some(super::scope::Binding::Import) => true,
            None => self.imports.resolve(n.id.as_str()).is_some(),
            _ => false,
        }
    }
}

impl<'a> Evaluator<'_, 'a> {
    /// Whether `value`, put back into `target`, is a saved copy of it: a name or attribute bound
    /// to something that read the same state (`old = os.getcwd()` then `os.chdir(old)`;
    /// `saved = sys.stdout` then `sys.stdout = saved`; `sys.stdout = sys.__stdout__`).
    /// Only plain names and attributes count: `os.environ["P"] = os.environ["P"] + ":x"` is a change.
    pub fn restores(&self, target: &Target, value: &Expr, scope: ScopeId) -> bool {
        // `sys.path[:] = saved[:]`: a copy of a saved value is still the saved value.
        let value = match value {
            Expr::Subscript(s) if matches!(&*s.slice, Expr::Slice(_)) => &*s.value,
            other => other,
        };
        if !matches!(value, Expr::Name(_) | Expr::Attribute(_)) {
            return false;
        }
        let marker = target.saved_marker();
        let text = match self.bound(value, scope) {
            Some((e, _)) => self.text(e),
            None => self.text(value),
        };
        if text.contains(&marker) {
            return true;
        }
        // sys.stdout = sys.__stdout__
        if let Target::Attr(a) = target
            && let Some((head, last)) = a.rsplit_once('.')
        {
            return text == format!("{head}.__{last}__");
        }
        false
    }
}

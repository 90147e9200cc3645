//! One pass over a module that records write, port and mutation facts with their context
//! (which function, which fixture scope, inside which restoring `with` block).

use std::collections::HashSet;

use rustpython_parser::ast::{self, Constant, Expr, Ranged, Stmt};

use super::facts::{
    Facts, FixtureScope, FuncInfo, FuncKind, MutationFact, PortFact, Span, Target, WriteFact,
    WriteKind,
};
use super::guards::{Guard, decorator_restores, guard_of, patched_name};
use super::scope::{Binding, MODULE_SCOPE, ScopeId};
use super::sinks::last_segment;
use super::traverse::{child_bodies, for_each_child, stmt_exprs};
use super::value::Evaluator;

/// Names a function gets restoring fixtures from: changes in these functions are restores.
const RESTORER_WORDS: &[&str] = &[
    "teardown",
    "cleanup",
    "clean_up",
    "restore",
    "reset",
    "__exit__",
    "__aexit__",
    "stop",
    "close",
    "finaliz",
    "finalis",
    "undo",
    "revert",
    "__del__",
    "clear",
];

pub struct Walker<'s, 'a> {
    pub ev: Evaluator<'s, 'a>,
    pub facts: Facts,
    func: Option<usize>,
    scope: ScopeId,
    nested: bool,
    in_finally: bool,
    /// Start of the call whose result the current assignment keeps (`old = signal.signal(...)`).
    captured_call: Option<usize>,
    /// Names mocked by decorators of the enclosing classes.
    class_mocked: Vec<String>,
    class: Option<usize>,
    guards: Vec<Guard>,
}

fn is_main_guard(test: &Expr) -> bool {
    let Expr::Compare(c) = test else { return false };
    let is_name = |e: &Expr| matches!(e, Expr::Name(n) if n.id.as_str() == "__name__");
    let is_main = |e: &Expr| matches!(e, Expr::Constant(ast::ExprConstant { value: Constant::Str(s), .. }) if s == "__main__");
    c.comparators.len() == 1
        && ((is_name(&c.left) && is_main(&c.comparators[0]))
            || (is_main(&c.left) && is_name(&c.comparators[0])))
}

impl<'s, 'a> Walker<'s, 'a> {
    pub fn new(ev: Evaluator<'s, 'a>, is_conftest: bool) -> Self {
        let fake_fs = ev.imports.imports_module("pyfakefs");
        let lineages = ev.scopes.lineages();
        Walker {
            ev,
            facts: Facts {
                is_conftest,
                fake_fs,
                lineages,
                ..Facts::default()
            },
            func: None,
            scope: MODULE_SCOPE,
            nested: false,
            in_finally: false,
            captured_call: None,
            class_mocked: Vec::new(),
            class: None,
            guards: Vec::new(),
        }
    }

    pub fn run(mut self, body: &'a [Stmt]) -> Facts {
        self.block(body);
        self.facts
    }

    fn span(node: &impl Ranged) -> Span {
        Span {
            start: node.start().to_usize(),
            end: node.end().to_usize(),
        }
    }

    fn block(&mut self, body: &'a [Stmt]) {
        for s in body {
            self.stmt(s);
        }
    }

    fn classify(&self, name: &str, decorators: &[Expr]) -> FuncKind {
        for d in decorators {
            let (func, call) = match d {
                Expr::Call(c) => (&*c.func, Some(c)),
                other => (other, None),
            };
            let q = self.ev.qualname(func, MODULE_SCOPE).unwrap_or_default();
            if matches!(last_segment(&q), "fixture" | "yield_fixture") {
                let kw = |k: &str| {
                    call.and_then(|c| {
                        c.keywords
                            .iter()
                            .find(|x| x.arg.as_ref().is_some_and(|a| a.as_str() == k))
                    })
                };
                let scope = match kw("scope")
                    .and_then(|k| self.ev.string(&k.value, MODULE_SCOPE))
                    .as_deref()
                {
                    Some("session") => FixtureScope::Session,
                    Some("package") => FixtureScope::Package,
                    Some("module") => FixtureScope::Module,
                    Some("class") => FixtureScope::Class,
                    _ => FixtureScope::Function,
                };
                let autouse = kw("autouse").is_some_and(|k| {
                    matches!(
                        &k.value,
                        Expr::Constant(ast::ExprConstant {
                            value: Constant::Bool(true),
                            ..
                        })
                    )
                });
                return FuncKind::Fixture { scope, autouse };
            }
        }
        if name.starts_with("test") {
            FuncKind::Test
        } else if name.starts_with("pytest_") {
            FuncKind::Hook
        } else {
            FuncKind::Other
        }
    }

    fn function(
        &mut self,
        stmt: &'a Stmt,
        name: &'a str,
        decorators: &'a [Expr],
        body: &'a [Stmt],
    ) {
        let saved = (self.func, self.scope, self.nested, self.guards.len());
        let scope = self.ev.scopes.function_scope(stmt).unwrap_or(self.scope);
        if self.func.is_none() {
            let kind = self.classify(name, decorators);
            let lower = name.to_ascii_lowercase();
            let restorer =
                kind != FuncKind::Test && RESTORER_WORDS.iter().any(|w| lower.contains(w));
            self.facts.funcs.push(FuncInfo {
                name: name.to_owned(),
                kind,
                class: self.class,
                restorer,
                opaque_cleanup: false,
                mocked: self.class_mocked.iter().cloned().collect::<HashSet<_>>(),
            });
            self.func = Some(self.facts.funcs.len() - 1);
        } else {
            self.nested = true;
        }
        self.scope = scope;
        for d in decorators {
            // `@mock.patch("builtins.open")`, `@mock.patch.dict(os.environ)`
            if let Expr::Call(c) = d {
                self.note_patch(c);
                if let Some(g) = guard_of(&self.ev, self.scope, c) {
                    self.guards.push(g);
                } else if decorator_restores(&c.func) {
                    self.guards.push(Guard::All);
                }
            } else if decorator_restores(d) {
                // `@with_environment`, a marker or wrapper bound to a name.
                self.guards.push(Guard::All);
            }
        }
        self.block(body);
        self.guards.truncate(saved.3);
        (self.func, self.scope, self.nested) = (saved.0, saved.1, saved.2);
    }

    fn stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::FunctionDef(f) => {
                self.function(stmt, f.name.as_str(), &f.decorator_list, &f.body)
            }
            Stmt::AsyncFunctionDef(f) => {
                self.function(stmt, f.name.as_str(), &f.decorator_list, &f.body)
            }
            Stmt::ClassDef(c) => {
                let saved = (self.class, self.guards.len(), self.class_mocked.len());
                if self.func.is_none() {
                    self.class = self.ev.scopes.class_index(stmt);
                }
                for b in &c.bases {
                    self.expr(b);
                }
                // Class decorators apply to every test method: `@mock.patch.dict(os.environ)`,
                // `@mock.patch("builtins.open")`.
                for d in &c.decorator_list {
                    if let Expr::Call(call) = d {
                        if let Some(g) = guard_of(&self.ev, self.scope, call) {
                            self.guards.push(g);
                        } else if decorator_restores(&call.func) {
                            self.guards.push(Guard::All);
                        }
                        if let Some(name) = patched_name(&self.ev, self.scope, call) {
                            self.class_mocked.push(name);
                        }
                    } else if decorator_restores(d) {
                        self.guards.push(Guard::All);
                    }
                }
                self.block(&c.body);
                self.class = saved.0;
                self.guards.truncate(saved.1);
                self.class_mocked.truncate(saved.2);
            }
            Stmt::If(i) if self.func.is_none() && is_main_guard(&i.test) => self.block(&i.orelse),
            Stmt::Try(ast::StmtTry {
                body,
                handlers,
                orelse,
                finalbody,
                ..
            })
            | Stmt::TryStar(ast::StmtTryStar {
                body,
                handlers,
                orelse,
                finalbody,
                ..
            }) => {
                self.block(body);
                for h in handlers {
                    let ast::ExceptHandler::ExceptHandler(h) = h;
                    if let Some(t) = &h.type_ {
                        self.expr(t);
                    }
                    self.block(&h.body);
                }
                self.block(orelse);
                let saved = self.in_finally;
                self.in_finally = true;
                self.block(finalbody);
                self.in_finally = saved;
            }
            Stmt::With(ast::StmtWith { items, body, .. })
            | Stmt::AsyncWith(ast::StmtAsyncWith { items, body, .. }) => {
                let depth = self.guards.len();
                for item in items {
                    self.expr(&item.context_expr);
                    if let Expr::Call(c) = &item.context_expr
                        && let Some(g) = guard_of(&self.ev, self.scope, c)
                    {
                        self.guards.push(g);
                    }
                }
                self.block(body);
                self.guards.truncate(depth);
            }
            Stmt::Assign(a) => {
                self.captured_call =
                    matches!(&*a.value, Expr::Call(_)).then(|| a.value.start().to_usize());
                self.expr(&a.value);
                self.captured_call = None;
                for t in &a.targets {
                    self.store(t, "=", Some(&a.value));
                }
            }
            Stmt::AugAssign(a) => {
                self.expr(&a.value);
                self.store(&a.target, "+=", None);
            }
            Stmt::AnnAssign(a) => {
                if let Some(v) = &a.value {
                    self.expr(v);
                    self.store(&a.target, "=", Some(v));
                }
            }
            Stmt::Delete(d) => {
                for t in &d.targets {
                    self.store(t, "del", None);
                }
            }
            _ => {
                for e in stmt_exprs(stmt) {
                    self.expr(e);
                }
                for b in child_bodies(stmt) {
                    self.block(b);
                }
            }
        }
    }

    /// An assignment or `del` target: does it change global state?
    fn store(&mut self, target: &'a Expr, how: &str, value: Option<&'a Expr>) {
        // `config.option.basetemp = "/tmp/pytest-x"`: pytest's temp root set to a fixed path that
        // every run and worker then shares (and pytest deletes at start).
        if let (Expr::Attribute(a), Some(v)) = (target, value)
            && a.attr.as_str() == "basetemp"
            && !self.guards.contains(&Guard::ExpectError)
        {
            let path = self.ev.path(v, self.scope);
            self.facts.writes.push(WriteFact {
                span: Self::span(target),
                kind: WriteKind::RootArg,
                path,
                sink: "basetemp=".to_owned(),
                func: self.func,
            });
        }
        let found = match target {
            Expr::Subscript(s) => {
                self.expr(&s.slice);
                match self.ev.qualname(&s.value, self.scope).as_deref() {
                    Some("os.environ") => Some((
                        Target::Environ(Some(self.ev.key_text(&s.slice, self.scope))),
                        "os.environ[...]",
                    )),
                    Some("sys.modules") => Some((
                        Target::SysModules(Some(self.ev.key_text(&s.slice, self.scope))),
                        "sys.modules[...]",
                    )),
                    Some("sys.path") => Some((Target::SysPath, "sys.path[...]")),
                    _ => {
                        self.expr(&s.value);
                        None
                    }
                }
            }
            Expr::Attribute(_) if self.ev.is_imported(target, self.scope) => {
                match self.ev.qualname(target, self.scope).as_deref() {
                    Some("os.environ") => Some((Target::Environ(None), "os.environ")),
                    Some("sys.path") => Some((Target::SysPath, "sys.path")),
                    Some("sys.modules") => Some((Target::SysModules(None), "sys.modules")),
                    _ => Some((
                        Target::Attr(self.ev.text(target).to_owned()),
                        "module attribute",
                    )),
                }
            }
            Expr::Tuple(t) => {
                t.elts.iter().for_each(|e| self.store(e, how, None));
                None
            }
            Expr::List(t) => {
                t.elts.iter().for_each(|e| self.store(e, how, None));
                None
            }
            _ => None,
        };
        if let Some((t, spelling)) = found {
            // Deleting a module attribute or a sys.modules entry is how tests clean up after
            // themselves (forcing a fresh import, removing what `install()` added): a restore.
            let cleanup = how == "del"
                && matches!(t, Target::Attr(_) | Target::SysModules(_) | Target::SysPath);
            let restore = cleanup || value.is_some_and(|v| self.ev.restores(&t, v, self.scope));
            let how = if how == "del" {
                format!("del {spelling}")
            } else {
                format!("{spelling} {how}")
            };
            self.mutation(target, t, how, restore);
        }
    }

    fn mark_opaque_cleanup(&mut self) {
        if let Some(i) = self.func
            && let Some(info) = self.facts.funcs.get_mut(i)
        {
            info.opaque_cleanup = true;
        }
    }

    fn mutation(&mut self, node: &impl Ranged, target: Target, how: String, synthetic: bool) {
        // Whatever a `finally:` block sets is the restore, even to a constant.
        let synthetic = synthetic || self.in_finally;
        let guarded = self.guards.iter().any(|g| match g {
            Guard::Kind(k) => *k == target.kind(),
            Guard::Attr(a) => matches!(&target, Target::Attr(t) if t == a),
            Guard::All | Guard::ExpectError => true,
        });
        self.facts.mutations.push(MutationFact {
            span: Self::span(node),
            target,
            func: self.func,
            nested: self.nested,
            synthetic,
            guarded,
            how,
        });
    }

    fn expr(&mut self, e: &'a Expr) {
        match e {
            Expr::Call(c) => {
                self.call(e, c);
                self.expr(&c.func);
                c.args.iter().for_each(|a| self.expr(a));
                // `preexec_fn=` runs in the child process: its changes are not ours.
                c.keywords
                    .iter()
                    .filter(|k| k.arg.as_ref().is_none_or(|a| a.as_str() != "preexec_fn"))
                    .for_each(|k| self.expr(&k.value));
            }
            Expr::Lambda(l) => {
                let saved = self.nested;
                self.nested = true;
                self.expr(&l.body);
                self.nested = saved;
            }
            _ => for_each_child(e, |c| self.expr(c)),
        }
    }

    fn call(&mut self, e: &'a Expr, c: &'a ast::ExprCall) {
        let scope = self.scope;
        self.note_patch(c);
        if self.guards.contains(&Guard::ExpectError) {
            return;
        }
        for sink in self.ev.write_sinks(c, scope) {
            let mocked = self
                .facts
                .func(self.func)
                .is_some_and(|f| f.mocked.contains(&sink.name));
            if !mocked {
                self.facts.writes.push(WriteFact {
                    span: Self::span(e),
                    kind: sink.kind,
                    path: sink.path,
                    sink: sink.what,
                    func: self.func,
                });
            }
        }
        if let Some((port, sink)) = self.ev.bound_port(c, scope) {
            self.facts.ports.push(PortFact {
                span: Self::span(e),
                port,
                sink,
            });
        }
        let q = self.ev.qualname(&c.func, scope);
        if let Some(q) = &q
            && let Some((target, how)) = self.ev.call_mutation(q, &c.args, scope)
        {
            // `os.chdir(old)`, `locale.setlocale(cat, saved)`, `sys.modules.pop(name)`,
            // `sys.path.remove(d)`: restores. Taking things out is how tests clean up.
            let cleanup = matches!(&target, Target::SysModules(_)) && q.ends_with(".pop")
                || matches!(q.as_str(), "sys.path.remove" | "sys.path.pop" | "delattr");
            // Setters return the previous value: a caller that keeps it (`old = signal.signal(...)`,
            // often to return it from a helper) is saving it to restore later.
            let saved = matches!(target, Target::Setter(_))
                && self.captured_call == Some(e.start().to_usize());
            let restore = cleanup
                || saved
                || self.ev.resets_to_default(q, &c.args)
                || c.args
                    .last()
                    .is_some_and(|v| self.ev.restores(&target, v, scope));
            self.mutation(e, target, how, restore);
        }
        // Cleanup registrations: addCleanup(os.chdir, old), request.addfinalizer(fin), ...
        let method = match &*c.func {
            Expr::Attribute(a) => a.attr.as_str(),
            _ => "",
        };
        let registers = matches!(
            method,
            "addCleanup"
                | "addfinalizer"
                | "callback"
                | "addClassCleanup"
                | "addModuleCleanup"
                | "push"
        ) || q.as_deref() == Some("atexit.register");
        // `self.enterContext(cm)` / `stack.enter_context(cm)`: the context manager's exit runs at
        // cleanup, and racefree cannot see what it restores.
        if matches!(
            method,
            "enterContext" | "enter_context" | "enterClassContext"
        ) {
            self.mark_opaque_cleanup();
        }
        if registers && let Some(f) = c.args.first() {
            match f {
                // Their bodies are walked as nested code, so their changes are already recorded.
                Expr::Lambda(_) => {}
                Expr::Name(n)
                    if self.ev.scopes.scopes.get(scope).is_some_and(|d| {
                        matches!(d.bindings.get(n.id.as_str()), Some(Binding::Def))
                    }) => {}
                _ => {
                    let synthesized = self
                        .ev
                        .qualname(f, scope)
                        .and_then(|fq| self.ev.call_mutation(&fq, &c.args[1..], scope));
                    match synthesized {
                        Some((target, how)) => self.mutation(e, target, how, true),
                        None => self.mark_opaque_cleanup(),
                    }
                }
            }
        }
    }

    /// Records names replaced by `mock.patch(...)`, `mock.patch.object(x, "name")`, `mock_open()`.
    fn note_patch(&mut self, c: &'a ast::ExprCall) {
        let Some(i) = self.func else { return };
        if let Some(name) = patched_name(&self.ev, self.scope, c)
            && let Some(info) = self.facts.funcs.get_mut(i)
        {
            info.mocked.insert(name);
        }
    }
}

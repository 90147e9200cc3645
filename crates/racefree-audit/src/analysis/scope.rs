//! Name bindings per scope, for a simple flow-insensitive data flow: a name assigned exactly once
//! in a function (or at module level, or as `self.name` once in a class) stands for its value.
//! A name assigned twice, a loop variable or a parameter stands for "unknown", which never
//! produces a finding: that is the low-false-positive choice.

use std::collections::HashMap;

use rustpython_parser::ast::{self, Expr, Ranged, Stmt};

use super::traverse::child_bodies;

pub type ScopeId = usize;

#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    /// Assigned once, to this expression, evaluated in that scope.
    Expr(&'a Expr, ScopeId),
    Param(&'a str),
    /// A nested `def` or `class`.
    Def,
    Import,
    /// Assigned more than once, unpacked, a loop target: unknown.
    Many,
}

#[derive(Debug, Default)]
pub struct ScopeData<'a> {
    pub bindings: HashMap<&'a str, Binding<'a>>,
    pub parent: Option<ScopeId>,
    /// For methods: the class (index into `Scopes::classes`) and the name of `self`/`cls`.
    pub class: Option<usize>,
    pub self_name: Option<&'a str>,
}

#[derive(Debug, Default)]
pub struct ClassData<'a> {
    /// `self.x = ...` in any method and `x = ...` in the class body.
    pub attrs: HashMap<&'a str, Binding<'a>>,
    pub name: &'a str,
    /// Names of the base classes, as written (`Base`, `unittest.TestCase`).
    pub bases: Vec<&'a str>,
}

#[derive(Debug, Default)]
pub struct Scopes<'a> {
    pub scopes: Vec<ScopeData<'a>>,
    pub classes: Vec<ClassData<'a>>,
    /// Function or class statement start offset -> its scope / class index.
    by_offset: HashMap<u32, ScopeId>,
    class_by_offset: HashMap<u32, usize>,
}

pub const MODULE_SCOPE: ScopeId = 0;

fn bind<'a>(map: &mut HashMap<&'a str, Binding<'a>>, name: &'a str, binding: Binding<'a>) {
    map.entry(name)
        .and_modify(|b| {
            // Imports and defs rebound keep their nature; any second value assignment is unknown.
            if !matches!((*b, binding), (Binding::Import, Binding::Import)) {
                *b = Binding::Many;
            }
        })
        .or_insert(binding);
}

impl<'a> Scopes<'a> {
    pub fn build(body: &'a [Stmt]) -> Self {
        let mut scopes = Scopes::default();
        scopes.scopes.push(ScopeData::default());
        scopes.collect_block(body, MODULE_SCOPE);
        scopes
    }

    /// For each class, itself and the classes of this file it inherits from (by name).
    pub fn lineages(&self) -> Vec<Vec<usize>> {
        (0..self.classes.len())
            .map(|start| {
                let mut seen = vec![start];
                let mut i = 0;
                while let Some(&c) = seen.get(i) {
                    for base in &self.classes[c].bases {
                        if let Some(b) = self.classes.iter().position(|k| k.name == *base)
                            && !seen.contains(&b)
                        {
                            seen.push(b);
                        }
                    }
                    i += 1;
                }
                seen
            })
            .collect()
    }

    pub fn function_scope(&self, def: &impl Ranged) -> Option<ScopeId> {
        self.by_offset.get(&def.start().to_u32()).copied()
    }

    pub fn class_index(&self, def: &impl Ranged) -> Option<usize> {
        self.class_by_offset.get(&def.start().to_u32()).copied()
    }

    /// Finds the binding of `name` as seen from `scope`, walking out to the module.
    pub fn lookup(&self, mut scope: ScopeId, name: &str) -> Option<Binding<'a>> {
        loop {
            let data = self.scopes.get(scope)?;
            if let Some(b) = data.bindings.get(name) {
                return Some(*b);
            }
            scope = data.parent?;
        }
    }

    fn new_scope(
        &mut self,
        parent: ScopeId,
        class: Option<usize>,
        self_name: Option<&'a str>,
    ) -> ScopeId {
        self.scopes.push(ScopeData {
            bindings: HashMap::new(),
            parent: Some(parent),
            class,
            self_name,
        });
        self.scopes.len() - 1
    }

    fn collect_block(&mut self, body: &'a [Stmt], scope: ScopeId) {
        for stmt in body {
            self.collect_stmt(stmt, scope);
        }
    }

    fn bind_target(&mut self, target: &'a Expr, value: Option<&'a Expr>, scope: ScopeId) {
        match target {
            Expr::Name(n) => {
                let b = value.map_or(Binding::Many, |v| Binding::Expr(v, scope));
                bind(&mut self.scopes[scope].bindings, n.id.as_str(), b);
            }
            Expr::Tuple(t) => t.elts.iter().for_each(|e| self.bind_target(e, None, scope)),
            Expr::List(t) => t.elts.iter().for_each(|e| self.bind_target(e, None, scope)),
            Expr::Starred(s) => self.bind_target(&s.value, None, scope),
            Expr::Attribute(a) => {
                // `self.x = value` inside a method: a class attribute for every method.
                let data = &self.scopes[scope];
                if let (Some(class), Some(self_name), Expr::Name(n)) =
                    (data.class, data.self_name, &*a.value)
                    && n.id.as_str() == self_name
                {
                    let b = value.map_or(Binding::Many, |v| Binding::Expr(v, scope));
                    bind(&mut self.classes[class].attrs, a.attr.as_str(), b);
                }
            }
            _ => {}
        }
    }

    fn collect_stmt(&mut self, stmt: &'a Stmt, scope: ScopeId) {
        match stmt {
            Stmt::FunctionDef(ast::StmtFunctionDef {
                name, args, body, ..
            })
            | Stmt::AsyncFunctionDef(ast::StmtAsyncFunctionDef {
                name, args, body, ..
            }) => {
                bind(
                    &mut self.scopes[scope].bindings,
                    name.as_str(),
                    Binding::Def,
                );
                self.collect_function(stmt, args, body, scope, None);
            }
            Stmt::ClassDef(c) => {
                bind(
                    &mut self.scopes[scope].bindings,
                    c.name.as_str(),
                    Binding::Def,
                );
                let bases = c.bases.iter().filter_map(|b| match b {
                    Expr::Name(n) => Some(n.id.as_str()),
                    _ => None,
                });
                self.classes.push(ClassData {
                    name: c.name.as_str(),
                    bases: bases.collect(),
                    ..ClassData::default()
                });
                let class = self.classes.len() - 1;
                self.class_by_offset.insert(stmt.start().to_u32(), class);
                // The class body is a scope of its own; its plain assignments are class attributes.
                let body_scope = self.new_scope(scope, None, None);
                for s in &c.body {
                    match s {
                        Stmt::FunctionDef(ast::StmtFunctionDef { args, body, .. })
                        | Stmt::AsyncFunctionDef(ast::StmtAsyncFunctionDef {
                            args, body, ..
                        }) => {
                            // Methods see the module, not the class body, as enclosing scope.
                            self.collect_function(s, args, body, scope, Some(class));
                        }
                        Stmt::Assign(a) => {
                            for t in &a.targets {
                                if let Expr::Name(n) = t {
                                    bind(
                                        &mut self.classes[class].attrs,
                                        n.id.as_str(),
                                        Binding::Expr(&a.value, body_scope),
                                    );
                                }
                            }
                            self.collect_stmt(s, body_scope);
                        }
                        _ => self.collect_stmt(s, body_scope),
                    }
                }
            }
            Stmt::Assign(a) => {
                for t in &a.targets {
                    self.bind_target(t, Some(&a.value), scope);
                }
            }
            Stmt::AnnAssign(a) => self.bind_target(&a.target, a.value.as_deref(), scope),
            Stmt::AugAssign(a) => self.bind_target(&a.target, None, scope),
            Stmt::For(f) => self.bind_target(&f.target, None, scope),
            Stmt::AsyncFor(f) => self.bind_target(&f.target, None, scope),
            Stmt::With(ast::StmtWith { items, .. })
            | Stmt::AsyncWith(ast::StmtAsyncWith { items, .. }) => {
                for item in items {
                    if let Some(vars) = &item.optional_vars {
                        self.bind_target(vars, Some(&item.context_expr), scope);
                    }
                }
            }
            Stmt::Import(i) => {
                for alias in &i.names {
                    let local = alias.asname.as_ref().map_or_else(
                        || alias.name.as_str().split('.').next().unwrap_or(""),
                        |a| a.as_str(),
                    );
                    bind(&mut self.scopes[scope].bindings, local, Binding::Import);
                }
            }
            Stmt::ImportFrom(i) => {
                for alias in &i.names {
                    let local = alias.asname.as_ref().unwrap_or(&alias.name).as_str();
                    bind(&mut self.scopes[scope].bindings, local, Binding::Import);
                }
            }
            Stmt::Try(ast::StmtTry { handlers, .. })
            | Stmt::TryStar(ast::StmtTryStar { handlers, .. }) => {
                for h in handlers {
                    let ast::ExceptHandler::ExceptHandler(h) = h;
                    if let Some(name) = &h.name {
                        bind(
                            &mut self.scopes[scope].bindings,
                            name.as_str(),
                            Binding::Many,
                        );
                    }
                }
            }
            _ => {}
        }
        if !matches!(
            stmt,
            Stmt::FunctionDef(_) | Stmt::AsyncFunctionDef(_) | Stmt::ClassDef(_)
        ) {
            for child in child_bodies(stmt) {
                self.collect_block(child, scope);
            }
        }
    }

    fn collect_function(
        &mut self,
        stmt: &'a Stmt,
        args: &'a ast::Arguments,
        body: &'a [Stmt],
        parent: ScopeId,
        class: Option<usize>,
    ) {
        let params: Vec<&'a str> = args
            .posonlyargs
            .iter()
            .chain(&args.args)
            .chain(&args.kwonlyargs)
            .map(|a| a.def.arg.as_str())
            .chain(args.vararg.iter().map(|a| a.arg.as_str()))
            .chain(args.kwarg.iter().map(|a| a.arg.as_str()))
            .collect();
        let self_name = if class.is_some() {
            params.first().copied()
        } else {
            None
        };
        let scope = self.new_scope(parent, class, self_name);
        self.by_offset.insert(stmt.start().to_u32(), scope);
        for p in params {
            bind(&mut self.scopes[scope].bindings, p, Binding::Param(p));
        }
        self.collect_block(body, scope);
    }
}

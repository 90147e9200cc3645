//! Which local names are bound by imports, so `osp.join`, `join` and `os.path.join` are known to
//! be the same function. Collected over the whole module (function-local imports included):
//! test files rarely bind one name to two different modules.

use std::collections::HashMap;

use rustpython_parser::ast::{Stmt, StmtImport, StmtImportFrom};

#[derive(Debug, Default)]
pub struct Imports {
    names: HashMap<String, String>,
}

impl Imports {
    pub fn collect(body: &[Stmt]) -> Self {
        let mut imports = Imports::default();
        imports.visit(body);
        imports
    }

    /// The dotted name a local name was imported as (`osp` -> `os.path`).
    pub fn resolve(&self, local: &str) -> Option<&str> {
        self.names.get(local).map(String::as_str)
    }

    /// Whether any import brings in `module` or something under it.
    pub fn imports_module(&self, module: &str) -> bool {
        self.names
            .values()
            .any(|q| q == module || q.starts_with(&format!("{module}.")))
    }

    fn bind(&mut self, local: &str, qualified: String) {
        // First binding wins: a later rebinding of the same name is almost always the same module.
        self.names.entry(local.to_owned()).or_insert(qualified);
    }

    fn visit(&mut self, body: &[Stmt]) {
        for stmt in body {
            match stmt {
                Stmt::Import(StmtImport { names, .. }) => {
                    for alias in names {
                        let full = alias.name.as_str();
                        match &alias.asname {
                            Some(asname) => self.bind(asname.as_str(), full.to_owned()),
                            // `import os.path` binds `os`.
                            None => {
                                let head = full.split('.').next().unwrap_or(full);
                                self.bind(head, head.to_owned());
                            }
                        }
                    }
                }
                Stmt::ImportFrom(StmtImportFrom {
                    module,
                    names,
                    level,
                    ..
                }) => {
                    let dots = ".".repeat(level.map_or(0, |l| l.to_usize()));
                    let base = format!("{dots}{}", module.as_ref().map_or("", |m| m.as_str()));
                    for alias in names {
                        let name = alias.name.as_str();
                        if name == "*" {
                            continue;
                        }
                        let local = alias.asname.as_ref().map_or(name, |a| a.as_str());
                        let qualified = if base.is_empty() || base.ends_with('.') {
                            format!("{base}{name}")
                        } else {
                            format!("{base}.{name}")
                        };
                        self.bind(local, qualified);
                    }
                }
                _ => {}
            }
            for child in super::traverse::child_bodies(stmt) {
                self.visit(child);
            }
        }
    }
}

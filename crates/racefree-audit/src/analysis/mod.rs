//! Turns one parsed module into facts: paths written, ports bound, global state changed,
//! each with its context. Rules (in `crate::rules`) decide which facts are findings.

pub mod facts;
pub mod guards;
pub mod imports;
pub mod mutations;
pub mod ports;
pub mod scope;
pub mod sinks;
pub mod traverse;
pub mod value;
pub mod walk;

use rustpython_parser::ast::Stmt;

pub use facts::Facts;

/// Analyzes one module. `shared_roots` are the literal prefixes that count as shared locations.
pub fn analyze(body: &[Stmt], src: &str, shared_roots: &[String], is_conftest: bool) -> Facts {
    let imports = imports::Imports::collect(body);
    let scopes = scope::Scopes::build(body);
    let ev = value::Evaluator {
        src,
        imports: &imports,
        scopes: &scopes,
        shared_roots,
    };
    walk::Walker::new(ev, is_conftest).run(body)
}

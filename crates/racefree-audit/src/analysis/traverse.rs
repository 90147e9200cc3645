//! Generic traversal helpers over rustpython's AST: the statement lists inside a compound
//! statement and the direct sub-expressions of statements and expressions.

use rustpython_parser::ast::{self, Expr, Stmt};

/// The statement lists directly inside a compound statement (function and class bodies included).
pub fn child_bodies(stmt: &Stmt) -> Vec<&[Stmt]> {
    match stmt {
        Stmt::FunctionDef(s) => vec![&s.body],
        Stmt::AsyncFunctionDef(s) => vec![&s.body],
        Stmt::ClassDef(s) => vec![&s.body],
        Stmt::For(s) => vec![&s.body, &s.orelse],
        Stmt::AsyncFor(s) => vec![&s.body, &s.orelse],
        Stmt::While(s) => vec![&s.body, &s.orelse],
        Stmt::If(s) => vec![&s.body, &s.orelse],
        Stmt::With(s) => vec![&s.body],
        Stmt::AsyncWith(s) => vec![&s.body],
        Stmt::Try(s) => handler_bodies(&s.handlers, [&s.body, &s.orelse, &s.finalbody]),
        Stmt::TryStar(s) => handler_bodies(&s.handlers, [&s.body, &s.orelse, &s.finalbody]),
        Stmt::Match(s) => s.cases.iter().map(|c| c.body.as_slice()).collect(),
        _ => Vec::new(),
    }
}

fn handler_bodies<'s>(
    handlers: &'s [ast::ExceptHandler],
    rest: [&'s Vec<Stmt>; 3],
) -> Vec<&'s [Stmt]> {
    let mut v: Vec<&[Stmt]> = rest.iter().map(|b| b.as_slice()).collect();
    v.extend(handlers.iter().map(|h| {
        let ast::ExceptHandler::ExceptHandler(h) = h;
        h.body.as_slice()
    }));
    v
}

/// The expressions directly inside a statement that `Walker::stmt` does not handle itself.
pub fn stmt_exprs(stmt: &Stmt) -> Vec<&Expr> {
    match stmt {
        Stmt::Return(r) => r.value.iter().map(|b| &**b).collect(),
        Stmt::For(f) => vec![&f.iter],
        Stmt::AsyncFor(f) => vec![&f.iter],
        Stmt::While(w) => vec![&w.test],
        Stmt::If(i) => vec![&i.test],
        Stmt::Raise(r) => r.exc.iter().chain(r.cause.iter()).map(|b| &**b).collect(),
        Stmt::Assert(a) => std::iter::once(&*a.test)
            .chain(a.msg.iter().map(|b| &**b))
            .collect(),
        Stmt::Expr(e) => vec![&e.value],
        Stmt::Match(m) => std::iter::once(&*m.subject)
            .chain(m.cases.iter().filter_map(|c| c.guard.as_deref()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Calls `f` on each direct sub-expression (lambdas and calls are handled by the caller).
pub fn for_each_child<'a>(e: &'a Expr, mut f: impl FnMut(&'a Expr)) {
    match e {
        Expr::BoolOp(x) => x.values.iter().for_each(f),
        Expr::NamedExpr(x) => f(&x.value),
        Expr::BinOp(x) => {
            f(&x.left);
            f(&x.right);
        }
        Expr::UnaryOp(x) => f(&x.operand),
        Expr::IfExp(x) => {
            f(&x.test);
            f(&x.body);
            f(&x.orelse);
        }
        Expr::Dict(x) => {
            x.keys.iter().flatten().for_each(&mut f);
            x.values.iter().for_each(f);
        }
        Expr::Set(x) => x.elts.iter().for_each(f),
        Expr::ListComp(x) => {
            f(&x.elt);
            comprehension(&x.generators, f);
        }
        Expr::SetComp(x) => {
            f(&x.elt);
            comprehension(&x.generators, f);
        }
        Expr::GeneratorExp(x) => {
            f(&x.elt);
            comprehension(&x.generators, f);
        }
        Expr::DictComp(x) => {
            f(&x.key);
            f(&x.value);
            comprehension(&x.generators, f);
        }
        Expr::Await(x) => f(&x.value),
        Expr::Yield(x) => x.value.iter().for_each(|v| f(v)),
        Expr::YieldFrom(x) => f(&x.value),
        Expr::Compare(x) => {
            f(&x.left);
            x.comparators.iter().for_each(f);
        }
        Expr::FormattedValue(x) => f(&x.value),
        Expr::JoinedStr(x) => x.values.iter().for_each(f),
        Expr::Attribute(x) => f(&x.value),
        Expr::Subscript(x) => {
            f(&x.value);
            f(&x.slice);
        }
        Expr::Starred(x) => f(&x.value),
        Expr::List(x) => x.elts.iter().for_each(f),
        Expr::Tuple(x) => x.elts.iter().for_each(f),
        Expr::Slice(x) => {
            x.lower.iter().for_each(|v| f(v));
            x.upper.iter().for_each(|v| f(v));
            x.step.iter().for_each(|v| f(v));
        }
        _ => {}
    }
}

fn comprehension<'a>(gens: &'a [ast::Comprehension], mut f: impl FnMut(&'a Expr)) {
    for g in gens {
        f(&g.iter);
        g.ifs.iter().for_each(&mut f);
    }
}

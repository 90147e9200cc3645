//! Estimates how many tests a file holds, by parsing it (never importing it): test
//! functions at module level and in test classes, multiplied by literal `parametrize`
//! lists. The estimate only guides scheduling for files without history; pytest's own
//! collection is the truth, so a file that does not parse still runs (estimate 1) and
//! pytest reports its error.

use rustpython_parser::Parse;
use rustpython_parser::ast::{self, Expr, Stmt};

use crate::fnmatch::{fnmatch, has_magic};

/// The naming rules that decide what pytest collects.
#[derive(Debug, Clone)]
pub struct Naming {
    pub classes: Vec<String>,
    pub functions: Vec<String>,
}

impl Naming {
    fn is_test_function(&self, name: &str) -> bool {
        self.functions.iter().any(|p| name_matches(p, name))
    }
    fn is_test_class(&self, name: &str) -> bool {
        self.classes.iter().any(|p| name_matches(p, name))
    }
}

/// pytest's rule: a pattern with glob characters is an fnmatch, otherwise a prefix.
fn name_matches(pattern: &str, name: &str) -> bool {
    if has_magic(pattern) {
        fnmatch(pattern, name)
    } else {
        name.starts_with(pattern)
    }
}

/// The estimated number of tests in a Python source; None if it does not parse.
pub fn estimate_tests(source: &str, path: &str, naming: &Naming) -> Option<u64> {
    let suite = ast::Suite::parse(source, path).ok()?;
    Some(count_block(&suite, naming, 1, false))
}

fn count_block(body: &[Stmt], naming: &Naming, factor: u64, in_class: bool) -> u64 {
    let mut total = 0u64;
    for stmt in body {
        total = total.saturating_add(match stmt {
            Stmt::FunctionDef(f) if naming.is_test_function(f.name.as_str()) => {
                factor.saturating_mul(decorators_factor(&f.decorator_list))
            }
            Stmt::AsyncFunctionDef(f) if naming.is_test_function(f.name.as_str()) => {
                factor.saturating_mul(decorators_factor(&f.decorator_list))
            }
            Stmt::ClassDef(c) if is_collected_class(c, naming, in_class) => count_block(
                &c.body,
                naming,
                factor.saturating_mul(decorators_factor(&c.decorator_list)),
                true,
            ),
            // Definitions under `if` / `try` at module level (version guards) still count.
            Stmt::If(s) if !in_class => count_block(&s.body, naming, factor, in_class)
                .max(count_block(&s.orelse, naming, factor, in_class)),
            Stmt::Try(s) if !in_class => count_block(&s.body, naming, factor, in_class),
            _ => 0,
        });
    }
    total
}

fn is_collected_class(c: &ast::StmtClassDef, naming: &Naming, _nested: bool) -> bool {
    if naming.is_test_class(c.name.as_str()) {
        // pytest skips test classes with an `__init__` (with a warning).
        return !c
            .body
            .iter()
            .any(|s| matches!(s, Stmt::FunctionDef(f) if f.name.as_str() == "__init__"));
    }
    // unittest.TestCase subclasses are collected whatever their name.
    c.bases
        .iter()
        .any(|b| dotted_tail(b).is_some_and(|n| n.ends_with("TestCase")))
}

fn dotted_tail(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Name(n) => Some(n.id.as_str()),
        Expr::Attribute(a) => Some(a.attr.as_str()),
        _ => None,
    }
}

/// The product of every `@...parametrize(names, [literal list])` decorator's list length.
fn decorators_factor(decorators: &[Expr]) -> u64 {
    decorators
        .iter()
        .map(parametrize_len)
        .fold(1u64, |acc, n| acc.saturating_mul(n))
}

fn parametrize_len(decorator: &Expr) -> u64 {
    let Expr::Call(call) = decorator else {
        return 1;
    };
    if dotted_tail(&call.func) != Some("parametrize") {
        return 1;
    }
    let values = call.args.get(1).or_else(|| {
        call.keywords
            .iter()
            .find(|k| k.arg.as_ref().is_some_and(|a| a.as_str() == "argvalues"))
            .map(|k| &k.value)
    });
    match values {
        // An empty list still yields one (skipped) test in pytest.
        Some(Expr::List(l)) => (l.elts.len() as u64).max(1),
        Some(Expr::Tuple(t)) => (t.elts.len() as u64).max(1),
        // Not a literal: we cannot know; count one, scheduling history corrects it later.
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming {
            classes: vec!["Test".into()],
            functions: vec!["test".into()],
        }
    }

    #[test]
    fn counts_functions_classes_and_parametrize() {
        let src = r#"
import pytest

def helper(): pass

def test_a(): pass

@pytest.mark.parametrize("x", [1, 2, 3])
@pytest.mark.parametrize("y", (pytest.param(1), 2))
def test_b(x, y): pass

async def test_c(): pass

@pytest.mark.parametrize("z", [1, 2])
class TestK:
    def test_m(self): pass
    @pytest.mark.parametrize("w", DATA)
    def test_n(self, w): pass
    def other(self): pass

class TestInit:
    def __init__(self): pass
    def test_hidden(self): pass

class Checks(unittest.TestCase):
    def test_u(self): pass

if sys.version_info > (3,):
    def test_guarded(): pass
"#;
        // 1 + 3*2 + 1 + 2*(1+1) + 0 + 1 + 1
        assert_eq!(estimate_tests(src, "t.py", &naming()), Some(14));
    }

    #[test]
    fn syntax_error_is_none() {
        assert_eq!(estimate_tests("def test_x(:\n", "t.py", &naming()), None);
    }

    #[test]
    fn custom_patterns() {
        let n = Naming {
            classes: vec!["*Suite".into()],
            functions: vec!["check_*".into()],
        };
        let src = "def check_a(): pass\ndef test_b(): pass\nclass MySuite:\n    def check_c(self): pass\n";
        assert_eq!(estimate_tests(src, "t.py", &n), Some(2));
    }
}

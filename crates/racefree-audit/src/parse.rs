//! The Python parser boundary: source text in, statements or a located syntax error out.

use rustpython_parser::{Parse, ast};

/// A syntax error the parser reported, with the byte offset it points at.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub offset: usize,
}

pub fn parse_module(source: &str, path: &str) -> Result<Vec<ast::Stmt>, SyntaxError> {
    ast::Suite::parse(source, path).map_err(|e| SyntaxError {
        message: e.error.to_string(),
        offset: e.offset.to_usize(),
    })
}

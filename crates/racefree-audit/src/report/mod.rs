//! Renderers: one module per output format.

pub mod human;
pub mod json;
pub mod sarif;

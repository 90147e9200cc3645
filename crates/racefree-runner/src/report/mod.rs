//! Consumers of the event stream: what the user sees and the files a run writes.

pub mod junit;
pub mod ndjson;
pub mod plugin_sections;
pub mod progress;
pub mod summary;

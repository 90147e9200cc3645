//! `--events PATH`: one JSON object per line, `{"v":1,"event":...}`, documented in
//! docs/events.md. Flushed per line so the log can be followed live.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::dispatch::Reporter;
use crate::error::{Error, Result};
use crate::events::Event;

pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Line<'a> {
    v: u32,
    /// Seconds since racefree started the run (the origin of `run_finished`'s `duration`),
    /// monotonic.
    t: f64,
    #[serde(flatten)]
    event: &'a Event,
}

pub struct NdjsonLog {
    path: PathBuf,
    out: BufWriter<File>,
    error: Option<std::io::Error>,
    start: Instant,
}

impl NdjsonLog {
    /// Opens the log at `path`; every line's `t` counts from `run_started_at`, the instant
    /// the run began (not the later moment the log is opened, once the fork servers have
    /// started and discovery is done), so `t` and `run_finished`'s `duration` agree.
    pub fn create(path: &Path, run_started_at: Instant) -> Result<NdjsonLog> {
        let ctx = || format!("--events {}", path.display());
        // Like --junit-xml (and pytest's): a missing directory is created.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(ctx(), e))?;
        }
        let file = File::create(path).map_err(|e| Error::io(ctx(), e))?;
        Ok(NdjsonLog {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            error: None,
            start: run_started_at,
        })
    }
}

impl Reporter for NdjsonLog {
    fn on_event(&mut self, event: &Event) {
        if self.error.is_some() {
            return;
        }
        let line = Line {
            v: VERSION,
            t: self.start.elapsed().as_secs_f64(),
            event,
        };
        let res = serde_json::to_writer(&mut self.out, &line)
            .map_err(std::io::Error::other)
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush());
        if let Err(e) = res {
            self.error = Some(e);
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self.error.take() {
            Some(e) => Err(Error::io(
                format!("writing --events {}", self.path.display()),
                e,
            )),
            None => self
                .out
                .flush()
                .map_err(|e| Error::io(format!("writing --events {}", self.path.display()), e)),
        }
    }
}

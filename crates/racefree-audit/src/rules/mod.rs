//! The rule catalogue: stable ids, names, default severities and the fix each rule asks for.
//! Detection lives in one module per rule; they all read the same per-file analysis facts.

use serde::{Serialize, Serializer};

use crate::analysis::Facts;
use crate::analysis::facts::Span;
use crate::finding::Severity;

pub mod fixed_port;
pub mod fixed_temp_name;
pub mod global_state;
pub mod session_fixture;
pub mod shared_location;
pub mod source_tree;

/// A rule's stable identity. Ids never change meaning once released; retired ids are not reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    SharedLocation,
    FixedTempName,
    FixedPort,
    GlobalState,
    SessionFixture,
    SourceTree,
}

/// Everything the reports and docs say about a rule.
#[derive(Debug, Clone, Copy)]
pub struct RuleInfo {
    pub id: RuleId,
    pub code: &'static str,
    /// kebab-case name, also accepted in config and suppressions.
    pub name: &'static str,
    pub default_severity: Severity,
    pub summary: &'static str,
    pub why: &'static str,
    pub fix: &'static str,
}

pub const RULES: [RuleInfo; 6] = [
    RuleInfo {
        id: RuleId::SharedLocation,
        code: "RF001",
        name: "shared-location-write",
        default_severity: Severity::Error,
        summary: "Writes to a hardcoded shared location (/tmp, /var/tmp, /dev/shm or a configured shared root)",
        why: "Every process on the machine sees the same /tmp: parallel workers, other checkouts and other users race on the same path.",
        fix: "Use pytest's `tmp_path` fixture (or `tmp_path_factory.mktemp()` in wider-scoped fixtures) instead of a fixed path under a shared root.",
    },
    RuleInfo {
        id: RuleId::FixedTempName,
        code: "RF002",
        name: "fixed-temp-name",
        default_severity: Severity::Error,
        summary: "Writes a fixed name inside the system temp directory (tempfile.gettempdir(), $TMPDIR)",
        why: "The temp directory is shared by every process that does not get its own: two workers creating the same name collide.",
        fix: "Use `tmp_path` / `tmp_path_factory.mktemp()`, or `tempfile.mkstemp()` / `tempfile.mkdtemp()` / `TemporaryDirectory()` for a name nobody else can pick.",
    },
    RuleInfo {
        id: RuleId::FixedPort,
        code: "RF003",
        name: "fixed-port",
        default_severity: Severity::Error,
        summary: "Binds or serves on a fixed TCP/UDP port",
        why: "Two workers binding the same port fail with EADDRINUSE, or one talks to the other's server.",
        fix: "Bind port 0 and read the port the kernel chose (`sock.getsockname()[1]`, `server.server_address[1]`), or use a free-port fixture.",
    },
    RuleInfo {
        id: RuleId::GlobalState,
        code: "RF004",
        name: "global-state-unrestored",
        default_severity: Severity::Warning,
        summary: "Changes process-global state (environment, working directory, sys.path, sys.modules, module attributes) without restoring it",
        why: "The change leaks into whichever tests run later in the same process, so results depend on order and on how tests are split between workers.",
        fix: "Use the `monkeypatch` fixture (`setenv`, `delenv`, `chdir`, `syspath_prepend`, `setattr`, `setitem`), or restore the old value in a `finally:` block or after the `yield` of a fixture.",
    },
    RuleInfo {
        id: RuleId::SessionFixture,
        code: "RF005",
        name: "session-fixture-fixed-path",
        default_severity: Severity::Error,
        summary: "A session- or package-scoped fixture writes to a fixed path",
        why: "Every parallel worker runs its own copy of a session fixture, all at once: they write the same path concurrently.",
        fix: "Write under `tmp_path_factory.mktemp(...)`; for data that really must be shared between workers, write it once under `tmp_path_factory.getbasetemp().parent` guarded by a file lock.",
    },
    RuleInfo {
        id: RuleId::SourceTree,
        code: "RF006",
        name: "source-tree-write",
        default_severity: Severity::Warning,
        summary: "Writes into the source tree (a path built from __file__ or the rootdir)",
        why: "The checkout is shared by every worker and every run; it may also be read-only (installed packages, CI caches).",
        fix: "Write to `tmp_path` and pass that path to the code under test; keep the source tree read-only during tests.",
    },
];

impl RuleId {
    pub const ALL: [RuleId; 6] = [
        RuleId::SharedLocation,
        RuleId::FixedTempName,
        RuleId::FixedPort,
        RuleId::GlobalState,
        RuleId::SessionFixture,
        RuleId::SourceTree,
    ];

    pub fn info(self) -> &'static RuleInfo {
        // RULES is declared in the same order as the enum, checked by a unit test.
        &RULES[self as usize]
    }

    pub fn code(self) -> &'static str {
        self.info().code
    }

    /// Accepts a code (`RF001`, any case) or a rule name (`shared-location-write`).
    pub fn parse(text: &str) -> Option<RuleId> {
        let text = text.trim();
        RULES
            .iter()
            .find(|r| r.code.eq_ignore_ascii_case(text) || r.name == text)
            .map(|r| r.id)
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for RuleId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// A finding before positions, suppressions and severity configuration are applied.
#[derive(Debug, Clone)]
pub struct RawFinding {
    pub rule: RuleId,
    pub span: Span,
    pub message: String,
    pub fix: String,
}

/// Runs every rule over one file's facts.
pub fn check_all(facts: &Facts) -> Vec<RawFinding> {
    let mut out = Vec::new();
    shared_location::check(facts, &mut out);
    fixed_temp_name::check(facts, &mut out);
    fixed_port::check(facts, &mut out);
    global_state::check(facts, &mut out);
    session_fixture::check(facts, &mut out);
    source_tree::check(facts, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_order_matches_enum() {
        for (i, id) in RuleId::ALL.iter().enumerate() {
            assert_eq!(RULES[i].id, *id);
            assert_eq!(RULES[i].code, format!("RF{:03}", i + 1));
        }
    }

    #[test]
    fn parse_accepts_codes_and_names() {
        assert_eq!(RuleId::parse("rf003"), Some(RuleId::FixedPort));
        assert_eq!(RuleId::parse("source-tree-write"), Some(RuleId::SourceTree));
        assert_eq!(RuleId::parse("RF999"), None);
    }
}

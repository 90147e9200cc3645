//! The holder record: who holds a lock, written into the lock file under the lock (kernel mode)
//! or published atomically as the lock itself (soft mode).
//!
//! Format: one line of JSON whose first key is `"racefree_lock"` (the format version), then a
//! newline. Only the first line is read, so a record overwritten in place by a shorter one stays
//! readable even if the process died before truncating the tail. Anything that does not start
//! with the magic prefix is foreign content and is never overwritten.

use serde::{Deserialize, Serialize};

use crate::identity::{self, HolderIdentity, HostIdentity};

/// The record format version written by this library.
pub const RECORD_VERSION: u32 = 1;

/// Records are small; anything larger is not ours and is refused rather than read.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024;

pub(crate) const MAGIC_PREFIX: &[u8] = b"{\"racefree_lock\":";

/// The lock mode a record was written by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    Kernel,
    Soft,
}

impl RecordMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordMode::Kernel => "kernel",
            RecordMode::Soft => "soft",
        }
    }
}

/// Who holds (or last held) a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// Format version; also the magic that marks the file as a racefree lock.
    pub racefree_lock: u32,
    /// A random 128-bit token (32 hex digits), unique to this acquisition.
    pub token: String,
    /// The fencing generation: strictly increasing across successive exclusive holders.
    pub generation: u64,
    pub mode: RecordMode,
    pub shared: bool,
    pub pid: u32,
    /// Process start time (Linux: clock ticks since boot; macOS: microseconds since the epoch).
    pub start_time: Option<u64>,
    pub boot_id: Option<String>,
    pub host: HostIdentity,
    pub uid: u32,
    /// Wall-clock time of acquisition, milliseconds since the Unix epoch (for people, not for
    /// staleness decisions).
    pub acquired_at_ms: u64,
    /// Soft mode on shared filesystems: the holder refreshes the record's mtime at least every
    /// third of this; a record older than this (by the directory's clock) may be broken.
    pub lease_ms: Option<u64>,
    /// The holder's command line, capped at [`identity::MAX_CMDLINE_BYTES`].
    pub cmdline: String,
}

/// What was found in a lock file.
#[allow(clippy::large_enum_variant)] // read once per attempt, never stored in bulk
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Nothing (a fresh kernel lock file, or a crash before the first write).
    Empty,
    /// A well-formed record.
    Record(HolderRecord),
    /// Starts like a record but does not parse: a torn or corrupted write. Evicted after a grace.
    Malformed,
    /// Data that is not a racefree record at all: never overwritten.
    Foreign,
}

impl HolderRecord {
    pub(crate) fn identity(&self) -> HolderIdentity<'_> {
        HolderIdentity {
            host: &self.host,
            boot_id: self.boot_id.as_deref(),
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// Judges this holder's liveness from the local host.
    pub fn liveness(&self) -> identity::Liveness {
        identity::judge(self.identity())
    }

    /// A one-line description for people: `pid 123 on host (cmd)`.
    pub fn describe(&self) -> String {
        let mut cmd = self.cmdline.clone();
        if cmd.len() > 80 {
            cmd = identity::truncate_utf8(cmd, 77) + "...";
        }
        format!(
            "pid {} on {} (generation {}, `{}`)",
            self.pid, self.host.hostname, self.generation, cmd
        )
    }

    /// Serializes the record as written to disk: one JSON line.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing plain strings and integers into memory cannot fail.
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// Classifies raw lock-file bytes. Only the first line is a record; see the module docs.
pub fn parse(bytes: &[u8]) -> Contents {
    if bytes.is_empty() {
        return Contents::Empty;
    }
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    if !first_line.starts_with(MAGIC_PREFIX) {
        // A torn write of our own can leave a strict prefix of the magic.
        return if MAGIC_PREFIX.starts_with(first_line) {
            Contents::Malformed
        } else {
            Contents::Foreign
        };
    }
    match serde_json::from_slice::<HolderRecord>(first_line) {
        Ok(record) if record.racefree_lock == RECORD_VERSION && record.token.len() == 32 => {
            Contents::Record(record)
        }
        _ => Contents::Malformed,
    }
}

/// A fresh 128-bit token as 32 lowercase hex digits.
///
/// Tokens must be unique, not secret: they let a releaser or breaker tell one acquisition from
/// another. So instead of a `getrandom` syscall per acquisition, each half is SipHash under the
/// process's random std keys of (pid, per-process counter, half): unique across acquisitions, and
/// across a fork too, since the child has another pid.
pub(crate) fn new_token() -> String {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: OnceLock<std::hash::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(std::hash::RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = crate::sys::current_pid();
    let hi = keys.hash_one((pid, n, 1u8));
    let lo = keys.hash_one((pid, n, 2u8));
    let mut token = String::with_capacity(32);
    for half in [hi, lo] {
        for shift in (0..16).rev() {
            let nibble = ((half >> (shift * 4)) & 0xF) as u32;
            token.push(char::from_digit(nibble, 16).unwrap_or('0'));
        }
    }
    token
}

pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The next fencing generation after `previous`.
///
/// Strictly greater than the previous holder's, and never below the wall clock in microseconds.
/// The clock floor keeps generations increasing even when the previous record was lost (a torn
/// write, a file recreated after a reboot) without an fsync on the hot path: a new holder after
/// a loss starts above every generation handed out before it, unless the clock went backwards.
pub fn next_generation(previous: Option<u64>) -> u64 {
    let floor = now_micros();
    match previous {
        Some(p) => p.saturating_add(1).max(floor),
        None => floor,
    }
}

/// The record line of a kernel-mode acquisition and its token, built without constructing a
/// [`HolderRecord`] (the guard parses the line only if someone asks for the record).
pub(crate) fn kernel_line(pid: u32, generation: u64) -> Vec<u8> {
    let process = identity::process_facts(pid);
    let token = new_token();
    let acquired_at_ms = now_micros() / 1000;
    let mut line = Vec::with_capacity(200 + process.json_tail.len());
    line.extend_from_slice(MAGIC_PREFIX);
    push_u64(&mut line, u64::from(RECORD_VERSION));
    line.extend_from_slice(b",\"token\":\"");
    line.extend_from_slice(token.as_bytes());
    line.extend_from_slice(b"\",\"generation\":");
    push_u64(&mut line, generation);
    line.extend_from_slice(b",\"mode\":\"kernel\",\"shared\":false,\"acquired_at_ms\":");
    push_u64(&mut line, acquired_at_ms);
    line.extend_from_slice(b",\"lease_ms\":null,");
    line.extend_from_slice(process.json_tail.as_bytes());
    line.extend_from_slice(b"}\n");
    line
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Builds a record for the current process (whose pid the caller read).
pub(crate) fn for_current_process(
    pid: u32,
    mode: RecordMode,
    shared: bool,
    generation: u64,
    lease_ms: Option<u64>,
) -> (HolderRecord, Vec<u8>) {
    let host = identity::host_facts();
    let process = identity::process_facts(pid);
    let token = new_token();
    let acquired_at_ms = now_micros() / 1000;
    // The same bytes `HolderRecord::to_line` would produce (up to key order, which JSON ignores),
    // without re-serializing the fields that never change for this process.
    let lease = lease_ms.map_or_else(|| "null".to_owned(), |l| l.to_string());
    let line = format!(
        "{{\"racefree_lock\":{RECORD_VERSION},\"token\":\"{token}\",\"generation\":{generation},\"mode\":\"{}\",\"shared\":{shared},\"acquired_at_ms\":{acquired_at_ms},\"lease_ms\":{lease},{}}}\n",
        mode.as_str(),
        process.json_tail
    )
    .into_bytes();
    let record = HolderRecord {
        racefree_lock: RECORD_VERSION,
        token,
        generation,
        mode,
        shared,
        pid: process.pid,
        start_time: process.start_time,
        boot_id: host.boot_id.clone(),
        host: host.host.clone(),
        uid: host.uid,
        acquired_at_ms,
        lease_ms,
        cmdline: process.cmdline.clone(),
    };
    (record, line)
}

/// What the hot path needs from a previous record: its generation and mode, found without a
/// full parse. `None` for anything that is not a well-formed-looking record.
pub(crate) fn peek_generation_and_mode(bytes: &[u8]) -> Option<(u64, RecordMode)> {
    if !bytes.starts_with(MAGIC_PREFIX) {
        return None;
    }
    // Every writer puts generation and mode among the first fields; our own writers put the
    // generation at a fixed offset (after the version digit and the 32-digit token).
    const KEY: &[u8] = b"\"generation\":";
    const FIXED: usize = MAGIC_PREFIX.len() + 1 + b",\"token\":\"".len() + 32 + b"\",".len();
    let head = &bytes[..bytes.len().min(160)];
    let at = if head.get(FIXED..FIXED + KEY.len()) == Some(KEY) {
        FIXED + KEY.len()
    } else {
        head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len()
    };
    let mut generation: u64 = 0;
    let mut digits = 0;
    for &b in &head[at..] {
        if !b.is_ascii_digit() {
            break;
        }
        generation = generation
            .checked_mul(10)?
            .checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    // A record cut short (torn write) must not pass for a well-formed one.
    if digits == 0 || !bytes.contains(&b'\n') {
        return None;
    }
    let rest = &head[at + digits..];
    let mode = if rest.starts_with(b",\"mode\":\"soft\"") {
        RecordMode::Soft
    } else if rest.starts_with(b",\"mode\":\"kernel\"") {
        RecordMode::Kernel
    } else {
        return None;
    };
    Some((generation, mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> HolderRecord {
        for_current_process(std::process::id(), RecordMode::Kernel, false, 42, None).0
    }

    #[test]
    fn kernel_line_parses() {
        let line = kernel_line(std::process::id(), 99);
        let Contents::Record(r) = parse(&line) else {
            panic!("not a record: {}", String::from_utf8_lossy(&line));
        };
        assert_eq!(r.generation, 99);
        assert_eq!(r.mode, RecordMode::Kernel);
        assert_eq!(r.pid, std::process::id());
        assert_eq!(
            peek_generation_and_mode(&line),
            Some((99, RecordMode::Kernel))
        );
    }

    #[test]
    fn fast_line_matches_the_record() {
        let (record, line) =
            for_current_process(std::process::id(), RecordMode::Soft, false, 7, Some(3000));
        assert_eq!(parse(&line), Contents::Record(record.clone()));
        assert_eq!(peek_generation_and_mode(&line), Some((7, RecordMode::Soft)));
        assert_eq!(
            peek_generation_and_mode(&record.to_line()),
            Some((7, RecordMode::Soft))
        );
        assert_eq!(
            peek_generation_and_mode(b"{\"racefree_lock\":1,\"gen"),
            None
        );
    }

    #[test]
    fn roundtrip() {
        let r = sample();
        assert_eq!(parse(&r.to_line()), Contents::Record(r));
    }

    #[test]
    fn shorter_record_over_longer_tail_still_parses() {
        let mut long = sample();
        long.cmdline = "x".repeat(900);
        let short = sample();
        let mut bytes = long.to_line();
        let s = short.to_line();
        bytes[..s.len()].copy_from_slice(&s);
        assert_eq!(parse(&bytes), Contents::Record(short));
    }

    #[test]
    fn classification() {
        assert_eq!(parse(b""), Contents::Empty);
        assert_eq!(parse(b"{\"racefree_lock\":1,\"tok"), Contents::Malformed);
        assert_eq!(parse(b"{\"racefr"), Contents::Malformed);
        assert_eq!(parse(b"hello world\n"), Contents::Foreign);
        assert_eq!(parse(b"{\"other\":1}\n"), Contents::Foreign);
        assert_eq!(parse(b"\0\0\0\0"), Contents::Foreign);
    }

    #[test]
    fn tokens_are_unique_hex() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn generation_strictly_increases(prev in proptest::option::of(0u64..u64::MAX - 1)) {
            let next = next_generation(prev);
            if let Some(p) = prev {
                prop_assert!(next > p);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }
    }
}

//! RF003: binding or serving on a fixed TCP/UDP port.

use crate::analysis::Facts;
use crate::rules::{RawFinding, RuleId};

pub fn check(facts: &Facts, out: &mut Vec<RawFinding>) {
    for p in &facts.ports {
        out.push(RawFinding {
            rule: RuleId::FixedPort,
            span: p.span,
            message: format!("`{}(...)` binds the fixed port {}: two workers cannot both have it", p.sink, p.port),
            fix: "bind port 0 and read the chosen port back (`sock.getsockname()[1]`, `server.server_address[1]`), then hand it to the client".to_owned(),
        });
    }
}

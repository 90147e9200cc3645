//! `--format sarif`: SARIF 2.1.0 as GitHub code scanning reads it. Paths are relative URIs
//! against `%SRCROOT%` (the repository root when racefree runs there), columns count Unicode code
//! points (declared with `columnKind`), and each result carries a stable partial fingerprint so
//! code scanning can track an alert across commits that move it.

use serde_json::{Value, json};

use crate::finding::{AuditReport, Severity};
use crate::rules::RULES;

pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// Percent-encodes a relative path for a URI reference, keeping `/` as the separator.
pub fn path_to_uri(path: &str) -> String {
    let path = path.replace('\\', "/");
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if path.starts_with('/') {
        format!("file://{out}")
    } else {
        out
    }
}

/// FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn render(report: &AuditReport) -> serde_json::Result<String> {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.code,
                "name": r.name,
                "shortDescription": { "text": r.summary },
                "fullDescription": { "text": format!("{} {}", r.summary, r.why) },
                "help": {
                    "text": format!("{}\n\nFix: {}", r.why, r.fix),
                    "markdown": format!("{}\n\n**Fix:** {}", r.why, r.fix),
                },
                "defaultConfiguration": { "level": level(r.default_severity) },
                "properties": { "tags": ["reliability", "tests", "concurrency"], "precision": "high" },
            })
        })
        .collect();
    let mut results = Vec::new();
    for (file, f) in report.findings() {
        // The same rule on the same code line text in the same file: the Nth such one.
        let key = format!("{}:{}:{}", f.rule, file.path, f.snippet.trim());
        let nth = file
            .findings
            .iter()
            .take_while(|g| !std::ptr::eq(*g, f))
            .filter(|g| g.rule == f.rule && g.snippet.trim() == f.snippet.trim())
            .count();
        results.push(json!({
            "ruleId": f.rule.code(),
            "ruleIndex": f.rule as usize,
            "level": level(f.severity),
            "message": { "text": format!("{} Fix: {}", f.message, f.fix) },
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": { "uri": path_to_uri(&file.path), "uriBaseId": "%SRCROOT%" },
                    "region": {
                        "startLine": f.start.line,
                        "startColumn": f.start.column,
                        "endLine": f.end.line,
                        "endColumn": f.end.column,
                        "snippet": { "text": f.snippet },
                    },
                },
            }],
            "partialFingerprints": { "racefreeFinding/v1": format!("{:016x}:{nth}", fnv1a(&key)) },
        }));
    }
    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| {
            let mut loc = json!({ "physicalLocation": { "artifactLocation": { "uri": path_to_uri(&e.path), "uriBaseId": "%SRCROOT%" } } });
            if let Some(p) = e.position {
                loc["physicalLocation"]["region"] = json!({ "startLine": p.line, "startColumn": p.column });
            }
            json!({ "level": "warning", "message": { "text": format!("could not audit: {}", e.message) }, "locations": [loc] })
        })
        .collect();
    let doc = json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "racefree",
                    "fullName": "racefree audit",
                    "version": env!("CARGO_PKG_VERSION"),
                    "semanticVersion": env!("CARGO_PKG_VERSION"),
                    "informationUri": env!("CARGO_PKG_REPOSITORY"),
                    "rules": rules,
                }
            },
            "automationDetails": { "id": "racefree-audit/" },
            "columnKind": "unicodeCodePoints",
            "invocations": [{ "executionSuccessful": true, "toolExecutionNotifications": notifications }],
            "results": results,
        }]
    });
    serde_json::to_string_pretty(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_relative_and_encoded() {
        assert_eq!(path_to_uri("tests/test a.py"), "tests/test%20a.py");
        assert_eq!(path_to_uri("/abs/x.py"), "file:///abs/x.py");
    }

    #[test]
    fn sarif_shape() {
        let settings = crate::Settings::default();
        let file = crate::audit_source(
            "tests/test_x.py",
            "def test_x():\n    open('/tmp/x', 'w')\n",
            &settings,
        )
        .unwrap();
        let report = AuditReport {
            files: vec![file],
            errors: vec![],
        };
        let v: Value = serde_json::from_str(&render(&report).unwrap()).unwrap();
        assert_eq!(v["version"], "2.1.0");
        let run = &v["runs"][0];
        assert_eq!(
            run["tool"]["driver"]["rules"].as_array().unwrap().len(),
            RULES.len()
        );
        let r = &run["results"][0];
        assert_eq!(r["ruleId"], "RF001");
        assert_eq!(r["level"], "error");
        assert_eq!(
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
            2
        );
        assert_eq!(
            run["tool"]["driver"]["rules"][r["ruleIndex"].as_u64().unwrap() as usize]["id"],
            "RF001"
        );
    }
}

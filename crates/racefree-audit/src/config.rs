//! `[tool.racefree.audit]` in pyproject.toml, and the settings the rules run with.
//! The CLI reads the TOML; this module validates it so every mistake names the key and the fix.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use crate::finding::Severity;
use crate::rules::{RULES, RuleId};

/// The raw table, as written. Unknown keys are rejected (by serde) so typos do not go unnoticed.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditConfig {
    /// Paths to audit when none are given on the command line.
    pub paths: Option<Vec<String>>,
    /// Rule codes or names to turn off.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Extra absolute directories that are shared between processes, like /tmp.
    #[serde(default)]
    pub shared_roots: Vec<String>,
    /// Per-rule severity overrides: `{ RF004 = "error" }`.
    #[serde(default)]
    pub severity: BTreeMap<String, String>,
    /// The lowest severity that makes the command exit 1 (`error`, `warning`, `info`, `never`).
    pub fail_on: Option<String>,
}

/// The directories every machine shares between processes.
pub const DEFAULT_SHARED_ROOTS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown rule `{value}` in `{key}`; known rules: {known}")]
    UnknownRule {
        key: String,
        value: String,
        known: String,
    },
    #[error("unknown severity `{value}` for `{key}`; use one of: error, warning, info")]
    BadSeverity { key: String, value: String },
    #[error("unknown fail-on level `{value}`; use one of: error, warning, info, never")]
    BadFailOn { value: String },
    #[error(
        "shared root `{value}` is not an absolute path; write it as it appears in test code, e.g. \"/srv/shared\""
    )]
    RelativeRoot { value: String },
}

/// When findings make the command fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    AtLeast(Severity),
    Never,
}

impl FailOn {
    /// The default: any warning or error fails; `info` findings are advice only.
    pub const DEFAULT: FailOn = FailOn::AtLeast(Severity::Warning);

    pub fn parse(text: &str) -> Result<FailOn, ConfigError> {
        match text {
            "never" | "none" => Ok(FailOn::Never),
            other => {
                Severity::parse(other)
                    .map(FailOn::AtLeast)
                    .ok_or_else(|| ConfigError::BadFailOn {
                        value: other.to_owned(),
                    })
            }
        }
    }

    pub fn fails(self, worst: Option<Severity>) -> bool {
        match (self, worst) {
            (FailOn::AtLeast(min), Some(w)) => w >= min,
            _ => false,
        }
    }
}

/// What the rules run with, after validation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub disabled: HashSet<RuleId>,
    pub severities: HashMap<RuleId, Severity>,
    pub shared_roots: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            disabled: HashSet::new(),
            severities: HashMap::new(),
            shared_roots: DEFAULT_SHARED_ROOTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

fn known_rules() -> String {
    RULES
        .iter()
        .map(|r| format!("{} ({})", r.code, r.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rule(key: &str, value: &str) -> Result<RuleId, ConfigError> {
    RuleId::parse(value).ok_or_else(|| ConfigError::UnknownRule {
        key: key.to_owned(),
        value: value.to_owned(),
        known: known_rules(),
    })
}

impl Settings {
    pub fn from_config(config: &AuditConfig) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        for r in &config.disable {
            settings.disabled.insert(rule("disable", r)?);
        }
        for (r, sev) in &config.severity {
            let id = rule("severity", r)?;
            let s = Severity::parse(sev).ok_or_else(|| ConfigError::BadSeverity {
                key: format!("severity.{r}"),
                value: sev.clone(),
            })?;
            settings.severities.insert(id, s);
        }
        for root in &config.shared_roots {
            if !root.starts_with('/') {
                return Err(ConfigError::RelativeRoot {
                    value: root.clone(),
                });
            }
            let root = root.trim_end_matches('/');
            if !root.is_empty() && !settings.shared_roots.iter().any(|r| r == root) {
                settings.shared_roots.push(root.to_owned());
            }
        }
        if let Some(f) = &config.fail_on {
            FailOn::parse(f)?;
        }
        Ok(settings)
    }

    pub fn enabled(&self, rule: RuleId) -> bool {
        !self.disabled.contains(&rule)
    }

    pub fn severity(&self, rule: RuleId) -> Severity {
        self.severities
            .get(&rule)
            .copied()
            .unwrap_or(rule.info().default_severity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AuditConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn full_config_is_accepted() {
        let c = parse(
            r#"
            paths = ["tests"]
            disable = ["RF004", "fixed-port"]
            shared-roots = ["/srv/shared/"]
            severity = { RF006 = "error" }
            fail-on = "error"
            "#,
        )
        .unwrap();
        let s = Settings::from_config(&c).unwrap();
        assert!(!s.enabled(RuleId::GlobalState));
        assert!(!s.enabled(RuleId::FixedPort));
        assert!(s.enabled(RuleId::SharedLocation));
        assert_eq!(s.severity(RuleId::SourceTree), Severity::Error);
        assert_eq!(s.severity(RuleId::GlobalState), Severity::Warning);
        assert!(s.shared_roots.contains(&"/srv/shared".to_owned()));
    }

    #[test]
    fn unknown_keys_and_values_are_errors() {
        let err = parse("disabled = [\"RF001\"]").unwrap_err();
        assert!(err.to_string().contains("disabled"), "{err}");
        let c = parse("disable = [\"RF042\"]").unwrap();
        assert!(matches!(
            Settings::from_config(&c),
            Err(ConfigError::UnknownRule { .. })
        ));
        let c = parse("severity = { RF001 = \"fatal\" }").unwrap();
        assert!(matches!(
            Settings::from_config(&c),
            Err(ConfigError::BadSeverity { .. })
        ));
        let c = parse("shared-roots = [\"scratch\"]").unwrap();
        assert!(matches!(
            Settings::from_config(&c),
            Err(ConfigError::RelativeRoot { .. })
        ));
        let c = parse("fail-on = \"sometimes\"").unwrap();
        assert!(matches!(
            Settings::from_config(&c),
            Err(ConfigError::BadFailOn { .. })
        ));
    }

    #[test]
    fn fail_on_levels() {
        assert!(FailOn::DEFAULT.fails(Some(Severity::Warning)));
        assert!(!FailOn::DEFAULT.fails(Some(Severity::Info)));
        assert!(!FailOn::DEFAULT.fails(None));
        assert!(!FailOn::parse("never").unwrap().fails(Some(Severity::Error)));
        assert!(
            !FailOn::parse("error")
                .unwrap()
                .fails(Some(Severity::Warning))
        );
    }
}

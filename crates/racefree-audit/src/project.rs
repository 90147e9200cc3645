//! Where pytest keeps `testpaths`, for the default set of paths to audit. pyproject.toml is read
//! by the CLI (it owns TOML parsing); the INI-style files pytest also reads are handled here.

/// The INI-style files pytest reads, in its order of precedence, with the section it uses.
pub const INI_FILES: [(&str, &str); 3] = [
    ("pytest.ini", "pytest"),
    ("tox.ini", "pytest"),
    ("setup.cfg", "tool:pytest"),
];

/// `testpaths` from an INI file's `section`, if present. Values may be space-separated on one
/// line or spread over indented continuation lines, as pytest accepts.
pub fn ini_testpaths(text: &str, section: &str) -> Option<Vec<String>> {
    let mut in_section = false;
    let mut collecting = false;
    let mut values: Option<Vec<String>> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            in_section = &trimmed[1..trimmed.len() - 1] == section;
            collecting = false;
            continue;
        }
        if !in_section {
            continue;
        }
        let continuation = raw.starts_with([' ', '\t']) && !trimmed.is_empty();
        if collecting && continuation {
            values
                .get_or_insert_with(Vec::new)
                .extend(trimmed.split_whitespace().map(str::to_owned));
            continue;
        }
        collecting = false;
        if let Some((key, value)) = trimmed.split_once(['=', ':'])
            && key.trim() == "testpaths"
        {
            values = Some(value.split_whitespace().map(str::to_owned).collect());
            collecting = true;
        }
    }
    values.filter(|v| !v.is_empty())
}

/// Whether an INI file has the pytest section at all (pytest stops looking at the first that does).
pub fn ini_has_section(text: &str, section: &str) -> bool {
    text.lines().any(|l| l.trim() == format!("[{section}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_line_and_continuation_lines() {
        assert_eq!(
            ini_testpaths("[pytest]\ntestpaths = tests docs\n", "pytest"),
            Some(vec!["tests".into(), "docs".into()])
        );
        assert_eq!(
            ini_testpaths(
                "[tool:pytest]\naddopts = -q\ntestpaths =\n    tests\n    more\nxfail_strict = true\n",
                "tool:pytest"
            ),
            Some(vec!["tests".into(), "more".into()])
        );
        assert_eq!(ini_testpaths("[other]\ntestpaths = x\n", "pytest"), None);
        assert!(ini_has_section("[tool:pytest]\n", "tool:pytest"));
    }
}

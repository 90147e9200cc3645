//! Python's `fnmatch.fnmatch` semantics, which pytest uses for `python_files`,
//! `norecursedirs` and the doctest globs: `*` and `?` also match `/`, `[seq]` and `[!seq]`
//! are character classes, and an unclosed `[` is a literal.

pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n)
}

fn matches(p: &[char], n: &[char]) -> bool {
    // Iterative matcher with single-star backtracking: linear enough for short names.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((hit, len)) = class(&p[pi..], n[ni]) {
                        if hit {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches one character against a class starting at `p[0] == '['`. Returns whether it
/// matched and the class's length, or None when the class is unclosed (then `[` is literal).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = p.get(i) == Some(&'!');
    if negate {
        i += 1;
    }
    let start = i;
    let mut hit = false;
    while i < p.len() {
        if p[i] == ']' && i > start {
            return Some((hit != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

/// True if `pattern` contains glob metacharacters.
pub fn has_magic(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::fnmatch;
    use proptest::prelude::*;

    #[test]
    fn pytest_defaults() {
        assert!(fnmatch("test_*.py", "test_a.py"));
        assert!(fnmatch("*_test.py", "a_test.py"));
        assert!(!fnmatch("test_*.py", "conftest.py"));
        assert!(fnmatch(".*", ".git"));
        assert!(fnmatch("*.egg", "foo.egg"));
        assert!(fnmatch("{arch}", "{arch}"));
        assert!(fnmatch("[!a]b", "cb"));
        assert!(!fnmatch("[!a]b", "ab"));
        assert!(fnmatch("[a-c]x", "bx"));
        assert!(fnmatch("a[", "a["));
        assert!(fnmatch("*", "a/b"));
        assert!(!fnmatch("test_?.py", "test_ab.py"));
    }

    proptest! {
        #[test]
        fn literal_names_match_themselves(name in "[a-zA-Z0-9_.]{0,20}") {
            prop_assert!(fnmatch(&name, &name));
            prop_assert!(fnmatch("*", &name));
        }

        #[test]
        fn star_prefix_suffix(prefix in "[a-z_]{0,6}", mid in "[a-z_]{0,6}", suffix in "[a-z.]{0,6}") {
            let name = format!("{prefix}{mid}{suffix}");
            let pattern = format!("{prefix}*{suffix}");
            prop_assert!(fnmatch(&pattern, &name));
        }
    }
}

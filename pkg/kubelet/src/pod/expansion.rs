//! `$(VAR)` expansion in env values, command and args, as upstream's
//! `third_party/forked/golang/expansion` does it.
//!
//! Rules (each pinned by a test below): `$(NAME)` is replaced when `NAME` is defined and kept
//! literally when it is not; `$$` is an escaped `$`; a `$` followed by anything else, or a
//! `$(` with no closing `)`, is kept as written. Expansion is single-pass: a value that itself
//! contains `$(X)` is not expanded again.

/// Expands `input` with `lookup`, which answers the value of a defined variable.
///
/// Undefined references come back as `$(NAME)`, so a typo is visible in the container rather
/// than silently empty (upstream behaviour).
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A trailing `$` stays as written.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after[1..].find(')') {
                Some(end) => {
                    let name = &after[1..1 + end];
                    match lookup(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[end + 2..];
                }
                // Unclosed reference: upstream emits `$(` and scans on after it.
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ex(input: &str) -> String {
        let vars: HashMap<&str, &str> = [
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
            ("", "EMPTY"),
        ]
        .into_iter()
        .collect();
        expand(input, |n| vars.get(n).copied())
    }

    #[test]
    fn table_from_upstream_semantics() {
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_B)-$(VAR_C)", "A-B-C"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("$(VAR_REF)", "$(VAR_A)"), // single pass
            ("$(VAR_EMPTY)", ""),
            ("$()", "EMPTY"),
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            ("$(UNDEFINED)-$(VAR_A)", "$(UNDEFINED)-A"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$$", "$"),
            ("$", "$"),
            ("foo$", "foo$"),
            ("$VAR_A", "$VAR_A"),
            ("$(VAR_A", "$(VAR_A"),
            ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
            ("$(VAR_A)$(", "A$("),
            ("$é", "$é"),
            ("(VAR_A)", "(VAR_A)"),
            ("no refs", "no refs"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(ex(input), want, "input {input:?}");
        }
    }
}

//! Field selectors (`?fieldSelector=`), as in `k8s.io/apimachinery/pkg/fields`: `=`, `==`,
//! `!=` terms joined by commas, with `\` escaping of `\`, `,` and `=` in values.
//!
//! Which fields a kind supports is the apiserver's business; this module only parses, prints
//! and matches given a field getter.

use std::fmt;

/// Why a field selector could not be parsed. `Display` is upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A term had no operator.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Term {
        /// The whole selector string.
        selector: String,
        /// The term that could not be split.
        term: String,
    },
    /// A value used `\` before something other than `\`, `,` or `=` (or ended with `\`).
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A value contained a bare `,` or `=`; upstream prints the character's code point.
    #[error("invalid field selector: unescaped character in value: {}", *.0 as u32)]
    UnescapedRune(char),
}

/// A field selector term's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value` (upstream folds both into one term type).
    Equals,
    /// `field!=value` (a missing field counts as the empty string).
    NotEquals,
}

/// One `field op value` term, value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field path, e.g. `metadata.name`, `status.phase`, `spec.nodeName`.
    pub field: String,
    /// The operator.
    pub operator: FieldOperator,
    /// The literal (unescaped) value.
    pub value: String,
}

/// A parsed field selector: the AND of its terms (sorted as upstream sorts the raw terms).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldRequirement>,
}

/// Escapes a literal for use as a selector value (upstream `EscapeValue`).
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reverses [`escape_value`] (upstream `UnescapeValue`).
///
/// # Errors
/// [`Error::InvalidEscape`] or [`Error::UnescapedRune`].
pub fn unescape_value(s: &str) -> Result<String, Error> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if matches!(c, '\\' | ',' | '=') {
                out.push(c);
            } else {
                return Err(Error::InvalidEscape(format!("\\{c}")));
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(Error::UnescapedRune(c)),
            c => out.push(c),
        }
    }
    if in_slash {
        return Err(Error::InvalidEscape("\\".into()));
    }
    Ok(out)
}

/// Splits on commas not preceded by an escaping backslash (the backslash stays in the term).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits at the first operator; `!=` and `==` are tried before `=` at each position.
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// Parses `?fieldSelector=` syntax (upstream `fields.ParseSelector`).
    ///
    /// # Errors
    /// [`Error`] with upstream's message.
    pub fn parse(selector: &str) -> Result<Self, Error> {
        let mut parts = split_terms(selector);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let (lhs, op, rhs) = split_term(part).ok_or_else(|| Error::Term {
                selector: selector.to_string(),
                term: part.to_string(),
            })?;
            let value = unescape_value(rhs)?;
            // Upstream's identity transform turns an empty field with an empty value
            // into "everything".
            if lhs.is_empty() && value.is_empty() {
                continue;
            }
            terms.push(FieldRequirement {
                field: lhs.to_string(),
                operator: if op == "!=" {
                    FieldOperator::NotEquals
                } else {
                    FieldOperator::Equals
                },
                value,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The terms, in canonical order.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.terms
    }

    /// True when the selector restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether an object matches; `get` returns a field's string value, `None` for a field the
    /// object lacks, which (as upstream) compares as the empty string.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let got = get(&t.field).unwrap_or_default();
            match t.operator {
                FieldOperator::Equals => got == t.value,
                FieldOperator::NotEquals => got != t.value,
            }
        })
    }

    /// If the selector pins `field` to one value with `=`/`==`, that value (e.g.
    /// `metadata.name` for a single-object watch).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// Canonical form: `f=v` / `f!=v` terms, values escaped, joined by commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match t.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let cases = [
            ("", ""),
            ("a=b", "a=b"),
            ("a==b", "a=b"),
            ("a!=b", "a!=b"),
            ("b=1,a=2", "a=2,b=1"),
            ("metadata.name=x,", "metadata.name=x"),
            ("a=", "a="),
            ("=", ""),
            (r"a=b\,c", r"a=b\,c"),
            (r"a=b\=c\\d", r"a=b\=c\\d"),
            ("a!==b", "a!=\\=b"),
        ];
        for (input, want) in cases {
            match FieldSelector::parse(input) {
                Ok(s) => assert_eq!(s.to_string(), want, "{input}"),
                Err(e) if input == "a!==b" => {
                    assert_eq!(
                        e.to_string(),
                        "invalid field selector: unescaped character in value: 61"
                    )
                }
                Err(e) => panic!("{input}: {e}"),
            }
        }
        let s = FieldSelector::parse(r"a=b\,c").unwrap();
        assert_eq!(s.requirements()[0].value, "b,c");
    }

    #[test]
    fn errors() {
        let cases = [
            ("a", "invalid selector: 'a'; can't understand 'a'"),
            ("x=y,a", "invalid selector: 'x=y,a'; can't understand 'a'"),
            (
                r"a=b\c",
                r"invalid field selector: invalid escape sequence: \c",
            ),
            (
                r"a=b\",
                r"invalid field selector: invalid escape sequence: \",
            ),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: 61",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                FieldSelector::parse(input).unwrap_err().to_string(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn matching() {
        let get = |f: &str| match f {
            "metadata.name" => Some("web".to_string()),
            "status.phase" => Some("Running".to_string()),
            _ => None,
        };
        let cases = [
            ("", true),
            ("metadata.name=web", true),
            ("metadata.name=db", false),
            ("metadata.name!=db", true),
            ("spec.nodeName=", true),
            ("spec.nodeName!=", false),
            ("metadata.name=web,status.phase!=Running", false),
        ];
        for (sel, want) in cases {
            assert_eq!(
                FieldSelector::parse(sel).unwrap().matches(get),
                want,
                "{sel}"
            );
        }
        let s = FieldSelector::parse("metadata.name==web").unwrap();
        assert_eq!(s.requires_exact_match("metadata.name"), Some("web"));
        assert_eq!(escape_value(r"a,b=c\"), r"a\,b\=c\\");
    }
}

//! Name, label and annotation validators with upstream's exact messages
//! (`k8s.io/apimachinery/pkg/util/validation` and `.../api/validation`).
//!
//! Validators return a list of messages (empty = valid) rather than `Result`, because upstream
//! reports every problem at once and callers wrap each message into a field error
//! (`metadata.name: Invalid value: "x": <message>`).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::gofmt;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Maximum length of a DNS-1123 label (namespace names, most resource names with label rules).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a DNS-1123 subdomain (most object names).
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Maximum length of a DNS-1035 label (Service names).
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of the name part of a qualified name (label/annotation key).
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// Maximum length of a label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Upstream caps the summed byte length of all annotation keys and values at 256 KiB.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: usize = 256 * 1024;

/// Characters upstream's `generateName` draws its 5-character random suffix from (no vowels,
/// no confusable characters, so generated names never spell words).
pub const NAME_SUFFIX_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";
/// Length of the random suffix `generateName` appends.
pub const NAME_SUFFIX_LENGTH: usize = 5;
/// `generateName` bases are cut to this many bytes so base + suffix fits a 63-byte label.
pub const MAX_GENERATED_NAME_LENGTH: usize = 63 - NAME_SUFFIX_LENGTH;

fn anchored(fmt: &str) -> Regex {
    // The patterns are compile-time constants; a failure here is a programming error caught by
    // the unit tests, so fall back to a never-matching regex instead of panicking.
    Regex::new(&format!("^(?:{fmt})$")).unwrap_or_else(|_| never_matching())
}

fn never_matching() -> Regex {
    #[allow(clippy::unwrap_used)]
    Regex::new("a\\Ab").unwrap()
}

static DNS1123_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1123_LABEL_FMT));
static DNS1123_SUBDOMAIN_RE: LazyLock<Regex> = LazyLock::new(|| anchored(&subdomain_fmt()));
static DNS1035_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1035_LABEL_FMT));
static QUALIFIED_NAME_RE: LazyLock<Regex> = LazyLock::new(|| anchored(QUALIFIED_NAME_FMT));
static LABEL_VALUE_RE: LazyLock<Regex> = LazyLock::new(|| anchored(&label_value_fmt()));

fn subdomain_fmt() -> String {
    format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*")
}

fn label_value_fmt() -> String {
    format!("({QUALIFIED_NAME_FMT})?")
}

/// Upstream's `EmptyError()` text.
pub fn empty_error() -> String {
    "must be non-empty".to_string()
}

/// Upstream's `MaxLenError(n)` text.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Upstream's `RegexError`: the message, examples, and the regex used, in upstream's exact
/// (slightly odd: `'a',  or 'b', `) punctuation, which kubectl users see verbatim.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(e);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// Checks a DNS-1123 label (namespace names and other label-shaped names).
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !DNS1123_LABEL_RE.is_match(value) {
        if DNS1123_SUBDOMAIN_RE.is_match(value) {
            // A valid subdomain but not a label: the length was checked, so it must be dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Checks a DNS-1123 subdomain (the name rule of most resources).
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !DNS1123_SUBDOMAIN_RE.is_match(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            &subdomain_fmt(),
            &["example.com"],
        ));
    }
    errs
}

/// Checks a DNS-1035 label (Service names: must start with a letter).
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1035_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1035_LABEL_MAX_LENGTH));
    }
    if !DNS1035_LABEL_RE.is_match(value) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Checks a qualified name (`[prefix/]name`): label keys, annotation keys, finalizers.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                for msg in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !QUALIFIED_NAME_RE.is_match(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Checks a label value (may be empty).
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !LABEL_VALUE_RE.is_match(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            &label_value_fmt(),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Validates `metadata.labels` like upstream `ValidateLabels`.
///
/// Returns `(bad_value, detail)` pairs in map order. As upstream, `bad_value` is the key for a
/// bad key and the value for a bad value, ready for
/// `field.Invalid(metadata.labels, bad_value, detail)`. A non-string value is reported with
/// its JSON text and the label-value message (upstream's typed decode would reject it earlier).
pub fn validate_labels(labels: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in labels {
        for msg in is_qualified_name(k) {
            out.push((k.clone(), msg));
        }
        let value = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for msg in is_valid_label_value(&value) {
            out.push((value.clone(), msg));
        }
    }
    out
}

/// Kind of a field error, matching upstream `field.ErrorType` for the cases produced here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `FieldValueInvalid`: "Invalid value".
    Invalid,
    /// `FieldValueTooLong`: "Too long".
    TooLong,
}

/// One field-level problem, rendered by [`FieldError::body`] exactly as upstream's
/// `ErrorBody()`, so the apiserver only has to prefix the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem (picks the Status cause `reason`).
    pub kind: FieldErrorKind,
    /// The offending value (the annotation key for bad keys); empty for `TooLong`.
    pub bad_value: String,
    /// Upstream's detail text.
    pub detail: String,
}

impl FieldError {
    /// `Invalid value: "x": detail` / `Too long: may not be more than N bytes`.
    pub fn body(&self) -> String {
        match self.kind {
            FieldErrorKind::Invalid => format!(
                "Invalid value: {}: {}",
                gofmt::quote(&self.bad_value),
                self.detail
            ),
            FieldErrorKind::TooLong => format!("Too long: {}", self.detail),
        }
    }

    /// The full upstream text for this error at `path`, e.g. `metadata.annotations: ...`.
    pub fn render(&self, path: &str) -> String {
        format!("{path}: {}", self.body())
    }
}

/// Validates `metadata.annotations` like upstream `ValidateAnnotations`: every key must be a
/// qualified name (case-insensitively) and keys plus values must total at most 256 KiB.
pub fn validate_annotations(annotations: &Map<String, Value>) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        for msg in is_qualified_name(&k.to_lowercase()) {
            out.push(FieldError {
                kind: FieldErrorKind::Invalid,
                bad_value: k.clone(),
                detail: msg,
            });
        }
        total += k.len()
            + match v {
                Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES {
        out.push(FieldError {
            kind: FieldErrorKind::TooLong,
            bad_value: String::new(),
            detail: format!("may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT_BYTES} bytes"),
        });
    }
    out
}

/// The name `metadata.generateName` produces: `base` cut to [`MAX_GENERATED_NAME_LENGTH`]
/// bytes, then `random_suffix` (the caller draws 5 characters from [`NAME_SUFFIX_ALPHABET`];
/// randomness stays out of this crate so the function is testable).
///
/// # Guarantees
/// The cut never splits a UTF-8 character (upstream cuts bytes; names with multi-byte
/// characters are invalid anyway and get rejected by name validation afterwards).
pub fn generate_name(base: &str, random_suffix: &str) -> String {
    let mut end = base.len().min(MAX_GENERATED_NAME_LENGTH);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{random_suffix}", &base[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const QN_REGEX: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    #[test]
    fn dns1123_label() {
        for good in ["a", "ab", "a-b", "0", "a1", &"a".repeat(63)] {
            assert!(is_dns1123_label(good).is_empty(), "{good}");
        }
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
        assert_eq!(
            is_dns1123_label("A"),
            vec!["a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]
        );
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        for bad in ["", "-a", "a-", "a_b", "á"] {
            assert_eq!(is_dns1123_label(bad).len(), 1, "{bad}");
        }
    }

    #[test]
    fn dns1123_subdomain() {
        for good in ["a", "a.b", "a-b.c-d", "0.0", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(good).is_empty(), "{good}");
        }
        assert_eq!(
            is_dns1123_subdomain("Foo"),
            vec!["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
        );
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254)),
            vec!["must be no more than 253 characters"]
        );
        for bad in ["", ".a", "a.", "a..b", "a_b"] {
            assert!(!is_dns1123_subdomain(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn dns1035_label() {
        assert!(is_dns1035_label("my-svc").is_empty());
        assert_eq!(
            is_dns1035_label("1abc"),
            vec!["a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"]
        );
    }

    #[test]
    fn qualified_name() {
        for good in [
            "a",
            "A",
            "a.b_c-d",
            "example.com/a",
            "kubernetes.io/hostname",
            "1-2",
            &"a".repeat(63),
        ] {
            assert!(is_qualified_name(good).is_empty(), "{good}");
        }
        assert_eq!(is_qualified_name("-a"), vec![QN_REGEX]);
        assert_eq!(
            is_qualified_name(""),
            vec![
                "name part must be non-empty".to_string(),
                QN_REGEX.to_string()
            ]
        );
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            is_qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
        assert_eq!(
            is_qualified_name("a/b/c"),
            vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
        );
        let errs = is_qualified_name("Example.com/a");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
    }

    #[test]
    fn label_value() {
        for good in ["", "a", "A-b_c.d", &"a".repeat(63)] {
            assert!(is_valid_label_value(good).is_empty(), "{good}");
        }
        assert_eq!(
            is_valid_label_value("-a"),
            vec!["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]
        );
        assert_eq!(is_valid_label_value(&"a".repeat(64)).len(), 1);
    }

    #[test]
    fn labels_and_annotations() {
        let labels = json!({"ok": "yes", "bad key": "v", "k": "bad value"});
        let errs = validate_labels(labels.as_object().unwrap());
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].0, "bad key");
        assert_eq!(errs[1].0, "bad value");

        let ann = json!({"Example.com/Upper": "x", "a b": "y"});
        let errs = validate_annotations(ann.as_object().unwrap());
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].render("metadata.annotations"),
            format!("metadata.annotations: Invalid value: \"a b\": {QN_REGEX}")
        );

        let big = json!({"a": "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES)});
        let errs = validate_annotations(big.as_object().unwrap());
        assert_eq!(
            errs[0].render("metadata.annotations"),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
    }

    #[test]
    fn generated_names() {
        assert_eq!(generate_name("web-", "x7k2p"), "web-x7k2p");
        let long = "a".repeat(70);
        let name = generate_name(&long, "bcdfg");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("bcdfg"));
        // never splits a multi-byte character
        let multi = format!("{}é", "a".repeat(57));
        assert_eq!(
            generate_name(&multi, "zzzzz"),
            format!("{}zzzzz", "a".repeat(57))
        );
        assert_eq!(NAME_SUFFIX_ALPHABET.len(), 27);
    }
}

//! Metadata validation shared by every kind, in upstream's words, on top of the pure validators
//! in `distro-apimachinery`.

use distro_apimachinery::validation as v;
use serde_json::{json, Value};

use crate::error::FieldError;

/// DNS-1123 subdomain problems.
pub fn dns1123_subdomain(name: &str) -> Vec<String> {
    v::is_dns1123_subdomain(name)
}

/// DNS-1123 label problems.
pub fn dns1123_label(name: &str) -> Vec<String> {
    v::is_dns1123_label(name)
}

/// DNS-1035 label problems.
pub fn dns1035_label(name: &str) -> Vec<String> {
    v::is_dns1035_label(name)
}

/// Path-segment name problems (RBAC objects may hold `:`).
pub fn path_segment_name(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name == "." || name == ".." {
        out.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            out.push(format!("may not contain '{bad}'"));
        }
    }
    out
}

/// A name from `generateName`: the base (cut to leave room) plus 5 random characters.
pub fn generate_name(base: &str) -> String {
    let alphabet = v::NAME_SUFFIX_ALPHABET.as_bytes();
    let suffix: String = (0..5)
        .map(|_| alphabet[rand::random::<usize>() % alphabet.len()] as char)
        .collect();
    v::generate_name(base, &suffix)
}

/// Label keys and values.
pub fn labels(labels: &Value, path: &str) -> Vec<FieldError> {
    let Some(map) = labels.as_object() else {
        return Vec::new();
    };
    v::validate_labels(map)
        .into_iter()
        .map(|(bad, msg)| FieldError::invalid(path.to_string(), &json!(bad), msg))
        .collect()
}

/// Annotation keys and total size.
pub fn annotations(annotations: &Value, path: &str) -> Vec<FieldError> {
    let Some(map) = annotations.as_object() else {
        return Vec::new();
    };
    v::validate_annotations(map)
        .into_iter()
        .map(|e| match e.kind {
            v::FieldErrorKind::Invalid => {
                FieldError::invalid(path.to_string(), &json!(e.bad_value), e.detail)
            }
            v::FieldErrorKind::TooLong => FieldError {
                field: path.to_string(),
                reason: crate::error::FieldReason::TooLong,
                detail: e.body(),
            },
        })
        .collect()
}

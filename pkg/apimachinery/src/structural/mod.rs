//! Structural OpenAPI schemas of CustomResourceDefinitions, as upstream's
//! apiextensions-apiserver applies them to custom resources: validation ([`validate`]),
//! pruning of unknown fields ([`prune`]), defaulting ([`default`]), and the check that a
//! CRD's schema is structural in the first place ([`check_schema`]).
//!
//! Schemas stay `serde_json::Value`s as written in the CRD: the apiserver keeps them that way
//! for OpenAPI publishing too, and walking them directly avoids a second model that could drift.
//! Error paths and messages follow upstream (`spec.replicas in body must be of type integer`),
//! since kubectl prints them verbatim.
//!
//! Limits: `x-kubernetes-validations` (CEL) rules are accepted but not evaluated; formats are
//! checked for the common ones only (see [`validate`]).

mod check;
mod defaults;
mod prune;
mod validate;

pub use check::check_schema;
pub use defaults::default;
pub use prune::prune;
pub use validate::validate;

use serde_json::Value;

use crate::gofmt;

/// The kinds of field errors schema handling produces (upstream's `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Required value`.
    Required,
    /// `Invalid value`.
    Invalid,
    /// `Unsupported value`.
    NotSupported,
    /// `Duplicate value`.
    Duplicate,
    /// `Forbidden`.
    Forbidden,
    /// `Too long`.
    TooLong,
    /// `Too many`.
    TooMany,
}

/// One problem at one field path, rendered as upstream's `field.Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `spec.replicas`.
    pub field: String,
    /// What kind of problem.
    pub kind: ErrorKind,
    /// Everything after `<field>: `, e.g. `Required value`.
    pub detail: String,
}

impl FieldError {
    /// The line upstream prints: `<field>: <detail>`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }

    pub(crate) fn required(field: &str, detail: &str) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Required,
            detail: suffix("Required value", detail),
        }
    }

    pub(crate) fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Invalid,
            detail: suffix(&format!("Invalid value: {}", shown(value)), detail),
        }
    }

    pub(crate) fn forbidden(field: &str, detail: &str) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Forbidden,
            detail: suffix("Forbidden", detail),
        }
    }

    pub(crate) fn not_supported(field: &str, value: &Value, supported: &[Value]) -> Self {
        let list: Vec<String> = supported
            .iter()
            .map(|v| gofmt::quote(&gofmt::v(v)))
            .collect();
        Self {
            field: field.into(),
            kind: ErrorKind::NotSupported,
            detail: format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                list.join(", ")
            ),
        }
    }

    pub(crate) fn duplicate(field: &str, value: &Value) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Duplicate,
            detail: format!("Duplicate value: {}", shown(value)),
        }
    }

    pub(crate) fn too_long(field: &str, max: u64) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::TooLong,
            detail: format!("Too long: must have at most {max} bytes"),
        }
    }

    pub(crate) fn too_many(field: &str, actual: usize, max: u64) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::TooMany,
            detail: format!("Too many: {actual}: must have at most {max} items"),
        }
    }
}

fn suffix(prefix: &str, detail: &str) -> String {
    if detail.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}: {detail}")
    }
}

/// A bad value as `field.Error` prints it: strings quoted, scalars bare, the rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => gofmt::quote(s),
        Value::Null => "null".into(),
        Value::Bool(_) | Value::Number(_) => gofmt::v(value),
        other => other.to_string(),
    }
}

/// `a.b` for a property, `b` at the root.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// `a[3]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The keyword `key` of `schema` is `true`.
pub(crate) fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

/// The fields of `ObjectMeta`: everything else under `metadata` is pruned, as upstream's
/// typed round trip of metadata drops it.
pub const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

#[cfg(test)]
mod tests;

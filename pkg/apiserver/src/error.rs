//! The apiserver's one error type, and its one mapping to Kubernetes `Status` objects.

use serde_json::{json, Value};

/// One field-level problem, as upstream's `field.Error`: rendered as
/// `<field>: <type>: <detail>` and listed in `Status.details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// Upstream reason, e.g. `FieldValueRequired`.
    pub reason: FieldReason,
    /// What is wrong, e.g. `Required value`, with the offending value where upstream shows it.
    pub detail: String,
}

/// The kinds of field errors upstream distinguishes (their `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldReason {
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
    /// `Not found`.
    NotFound,
    /// `Too many`.
    TooMany,
}

impl FieldReason {
    fn cause(self) -> &'static str {
        match self {
            FieldReason::Required => "FieldValueRequired",
            FieldReason::Invalid => "FieldValueInvalid",
            FieldReason::NotSupported => "FieldValueNotSupported",
            FieldReason::Duplicate => "FieldValueDuplicate",
            FieldReason::Forbidden => "FieldValueForbidden",
            FieldReason::TooLong => "FieldValueTooLong",
            FieldReason::NotFound => "FieldValueNotFound",
            FieldReason::TooMany => "FieldValueTooMany",
        }
    }
}

impl FieldError {
    /// `field: Required value`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldReason::Required, detail)
    }
    /// `field: Invalid value: "v": detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            Value::Null => "null".into(),
            other => other.to_string(),
        };
        let detail = if detail.is_empty() {
            format!("Invalid value: {shown}")
        } else {
            format!("Invalid value: {shown}: {detail}")
        };
        Self {
            field: field.into(),
            reason: FieldReason::Invalid,
            detail,
        }
    }
    /// `field: Unsupported value: "v": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            field: field.into(),
            reason: FieldReason::NotSupported,
            detail: format!(
                "Unsupported value: {}: supported values: {}",
                value,
                list.join(", ")
            ),
        }
    }
    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldReason::Forbidden, detail)
    }
    /// `field: Duplicate value: v`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Duplicate,
            detail: format!("Duplicate value: {value}"),
        }
    }

    fn new(field: impl Into<String>, reason: FieldReason, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let prefix = match reason {
            FieldReason::Required => "Required value",
            FieldReason::Invalid => "Invalid value",
            FieldReason::NotSupported => "Unsupported value",
            FieldReason::Duplicate => "Duplicate value",
            FieldReason::Forbidden => "Forbidden",
            FieldReason::TooLong => "Too long",
            FieldReason::NotFound => "Not found",
            FieldReason::TooMany => "Too many",
        };
        let detail = if detail.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}: {detail}")
        };
        Self {
            field: field.into(),
            reason,
            detail,
        }
    }

    /// The line upstream prints for this error.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }
}

/// Everything a request can fail with. Each variant maps to exactly one HTTP code and `Status`
/// reason in [`Error::status`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404: the object is not there.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// `resource.group` (as upstream: `deployments.apps`).
        resource: String,
        /// Object name.
        name: String,
    },
    /// 404: the URL names no resource we serve.
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    /// 409: create of an existing object.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// `resource.group`.
        resource: String,
        /// Object name.
        name: String,
    },
    /// 409: optimistic-concurrency conflict (stale resourceVersion).
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {detail}")]
    Conflict {
        /// `resource.group`.
        resource: String,
        /// Object name.
        name: String,
        /// Why, e.g. "the object has been modified; please apply your changes to the latest version and try again".
        detail: String,
    },
    /// 409: server-side apply would change fields other managers own.
    #[error("{message}")]
    ApplyConflict {
        /// upstream's summary, e.g. `Apply failed with 1 conflict: conflict with "m": .spec.replicas`.
        message: String,
        /// One `(field, message)` per conflicting field, for `details.causes`.
        causes: Vec<(String, String)>,
    },
    /// 422: validation failed.
    #[error("{kind} \"{name}\" is invalid: {}", .causes.iter().map(FieldError::message).collect::<Vec<_>>().join(", "))]
    Invalid {
        /// Kind, e.g. `Pod`.
        kind: String,
        /// Group of the kind.
        group: String,
        /// Object name.
        name: String,
        /// The problems.
        causes: Vec<FieldError>,
    },
    /// 400: the request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403: authorization denied or a policy forbids it.
    #[error("{0}")]
    Forbidden(String),
    /// 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406: we can't produce the asked-for representation.
    #[error("{0}")]
    NotAcceptable(String),
    /// 415: we can't read the body's content type (e.g. protobuf).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 410: a resourceVersion or continue token is too old.
    #[error("{0}")]
    Gone(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 429.
    #[error("{0}")]
    TooManyRequests(String),
    /// 429 from the eviction subresource: a PodDisruptionBudget forbids the eviction now.
    #[error("{message}")]
    DisruptionBudget {
        /// The request-level message.
        message: String,
        /// Why, listed as a `DisruptionBudget` cause.
        cause: String,
        /// Suggested wait before retrying (0: none given).
        retry_after: u32,
    },
    /// 503: a kubelet (or other backend) a proxy subresource needs could not be reached.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// 504: waited for a resourceVersion that never came.
    #[error("{0}")]
    Timeout(String),
    /// 500: the datastore failed.
    #[error("storage: {0}")]
    Store(#[from] distro_store::Error),
    /// 500: something that should not happen.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// 404 for `resource` (`pods`, `deployments.apps`) named `name`.
    pub fn not_found(resource: impl Into<String>, name: impl Into<String>) -> Self {
        Error::NotFound {
            resource: resource.into(),
            name: name.into(),
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.parts().0
    }

    fn parts(&self) -> (u16, &'static str) {
        match self {
            Error::NotFound { .. } | Error::NoSuchResource => (404, "NotFound"),
            Error::AlreadyExists { .. } => (409, "AlreadyExists"),
            Error::Conflict { .. } | Error::ApplyConflict { .. } => (409, "Conflict"),
            Error::Invalid { .. } => (422, "Invalid"),
            Error::BadRequest(_) => (400, "BadRequest"),
            Error::Unauthorized => (401, "Unauthorized"),
            Error::Forbidden(_) => (403, "Forbidden"),
            Error::MethodNotAllowed(_) => (405, "MethodNotAllowed"),
            Error::NotAcceptable(_) => (406, "NotAcceptable"),
            Error::UnsupportedMediaType(_) => (415, "UnsupportedMediaType"),
            Error::Gone(_) => (410, "Expired"),
            Error::TooLarge(_) => (413, "RequestEntityTooLarge"),
            Error::TooManyRequests(_) | Error::DisruptionBudget { .. } => (429, "TooManyRequests"),
            Error::ServiceUnavailable(_) => (503, "ServiceUnavailable"),
            Error::Timeout(_) => (504, "Timeout"),
            Error::Store(_) | Error::Internal(_) => (500, "InternalError"),
        }
    }

    /// The `Status` object upstream would send for this error.
    pub fn status(&self) -> Value {
        let (code, reason) = self.parts();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code,
        });
        let details = match self {
            Error::NotFound { resource, name }
            | Error::AlreadyExists { resource, name }
            | Error::Conflict { resource, name, .. } => Some(resource_details(resource, name)),
            Error::Invalid {
                kind,
                group,
                name,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason.cause(), "message": c.detail, "field": c.field}))
                    .collect();
                let mut d = json!({"name": name, "kind": kind, "causes": causes});
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            Error::ApplyConflict { causes, .. } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|(field, message)| json!({"type": "FieldManagerConflict", "message": message, "field": field}))
                    .collect();
                Some(json!({"causes": causes}))
            }
            Error::Timeout(_) => Some(json!({"retryAfterSeconds": 1})),
            Error::ServiceUnavailable(_) => None,
            Error::DisruptionBudget {
                cause, retry_after, ..
            } => {
                let mut d = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
                if *retry_after > 0 {
                    d["retryAfterSeconds"] = json!(retry_after);
                }
                Some(d)
            }
            Error::NoSuchResource
            | Error::BadRequest(_)
            | Error::Unauthorized
            | Error::Forbidden(_)
            | Error::MethodNotAllowed(_)
            | Error::NotAcceptable(_)
            | Error::UnsupportedMediaType(_)
            | Error::Gone(_)
            | Error::TooLarge(_)
            | Error::TooManyRequests(_)
            | Error::Store(_)
            | Error::Internal(_) => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

/// `details` for errors about one object: upstream splits `deployments.apps` into kind and group.
fn resource_details(resource: &str, name: &str) -> Value {
    let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

/// A `Status` for a successful operation without an object to return (deletecollection).
pub fn success_status(details: Option<Value>) -> Value {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_matches_upstream() {
        let s = Error::not_found("deployments.apps", "web").status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["group"], "apps");
        assert_eq!(s["details"]["kind"], "deployments");
    }

    #[test]
    fn invalid_lists_causes() {
        let e = Error::Invalid {
            kind: "Pod".into(),
            group: "".into(),
            name: "p".into(),
            causes: vec![FieldError::required("spec.containers", "")],
        };
        assert_eq!(
            e.to_string(),
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "spec.containers");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
    }
}

//! The review APIs: create-only kinds that are answered, never stored. TokenReview and
//! SelfSubjectReview (authentication.k8s.io; SelfSubjectReview also at v1beta1 for kubectl
//! 1.27's `auth whoami`), and SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectAccessReview and SelfSubjectRulesReview (authorization.k8s.io), which ask the
//! same authorizer requests go through. Callers need `create` on the review kind, checked by
//! the handler like any request.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::authn::UserInfo;
use crate::authz::{Rbac, Rule};
use crate::error::{Error, FieldError, Result};
use crate::handler::{error_response, json_response, Authorizer, Body, Route, TokenAuthenticator};
use crate::request::{RequestInfo, ResourceRequest};

/// Lists the rules that apply to a user, for SelfSubjectRulesReview.
pub trait RuleResolver: Send + Sync {
    /// Every rule granted to `user` in `namespace` (cluster-wide ones included).
    fn rules_for(&self, user: &UserInfo, namespace: Option<&str>) -> Vec<Rule>;
}

impl RuleResolver for Rbac {
    fn rules_for(&self, user: &UserInfo, namespace: Option<&str>) -> Vec<Rule> {
        Rbac::rules_for(self, user, namespace)
    }
}

/// The route answering reviews.
pub struct Reviews {
    /// Token authenticators TokenReview asks, in order.
    pub tokens: Vec<Arc<dyn TokenAuthenticator>>,
    /// The authorizer access reviews ask.
    pub authorizer: Arc<dyn Authorizer>,
    /// Rules for SelfSubjectRulesReview; `None` answers `incomplete`.
    pub rules: Option<Arc<dyn RuleResolver>>,
}

const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";

#[async_trait::async_trait]
impl Route for Reviews {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        info: &RequestInfo,
        user: &UserInfo,
    ) -> Option<Response<Body>> {
        let RequestInfo::Resource(r) = info else {
            return None;
        };
        if r.verb != "create" || r.subresource.is_some() || r.name.is_some() {
            return None;
        }
        let result = match (r.group.as_str(), r.version.as_str(), r.resource.as_str()) {
            (AUTHN, "v1", "tokenreviews") => self.token_review(req, r).await,
            (AUTHN, "v1" | "v1beta1", "selfsubjectreviews") => self_subject_review(req, r, user),
            (AUTHZ, "v1", "subjectaccessreviews") => {
                self.access_review(req, r, user, Kind::Subject)
            }
            (AUTHZ, "v1", "localsubjectaccessreviews") => {
                self.access_review(req, r, user, Kind::Local)
            }
            (AUTHZ, "v1", "selfsubjectaccessreviews") => {
                self.access_review(req, r, user, Kind::SelfSubject)
            }
            (AUTHZ, "v1", "selfsubjectrulesreviews") => self.rules_review(req, r, user),
            _ => return None,
        };
        Some(result.unwrap_or_else(|e| error_response(&e)))
    }
}

/// Decodes the body and checks its kind and apiVersion against the endpoint.
fn body(req: &Request<Bytes>, r: &ResourceRequest, kind: &str) -> Result<Value> {
    let b = crate::handler::decode_body(req)?;
    if !b.is_object() {
        return Err(Error::BadRequest(
            "the body of the request was not a JSON object".into(),
        ));
    }
    let api_version = format!("{}/{}", r.group, r.version);
    crate::subresources::check_kind(&b, &[kind], &[api_version.as_str()])?;
    Ok(b)
}

/// The created review: the request with `status`, stamped with its kind.
fn answer(r: &ResourceRequest, kind: &str, mut obj: Value, status: Value) -> Response<Body> {
    obj["kind"] = json!(kind);
    obj["apiVersion"] = json!(format!("{}/{}", r.group, r.version));
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    obj["status"] = status;
    json_response(StatusCode::CREATED, &obj)
}

fn self_subject_review(
    req: &Request<Bytes>,
    r: &ResourceRequest,
    user: &UserInfo,
) -> Result<Response<Body>> {
    let b = if req.body().is_empty() {
        json!({})
    } else {
        body(req, r, "SelfSubjectReview")?
    };
    Ok(answer(
        r,
        "SelfSubjectReview",
        b,
        json!({"userInfo": user.to_json()}),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Subject,
    Local,
    SelfSubject,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Subject => "SubjectAccessReview",
            Kind::Local => "LocalSubjectAccessReview",
            Kind::SelfSubject => "SelfSubjectAccessReview",
        }
    }
}

/// Verbs as `&'static str`, as [`ResourceRequest`] holds them; RBAC rules can only name these
/// (plus custom verbs, which this server does not check).
fn static_verb(v: &str) -> Option<&'static str> {
    const VERBS: &[&str] = &[
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "proxy",
        "impersonate",
        "approve",
        "sign",
        "escalate",
        "bind",
        "use",
        "attest",
        "post",
        "put",
        "head",
        "options",
        "*",
    ];
    VERBS.iter().find(|x| **x == v).copied()
}

fn invalid(kind: Kind, name: &Value, causes: Vec<FieldError>) -> Error {
    Error::Invalid {
        kind: kind.name().into(),
        group: AUTHZ.into(),
        name: name.as_str().unwrap_or("").into(),
        causes,
    }
}

/// Upstream's access-review validation, per kind.
fn validate_access(kind: Kind, obj: &Value, url_ns: Option<&str>) -> Result<()> {
    let spec = &obj["spec"];
    let (ra, nra) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    let mut causes = Vec::new();
    if ra.is_object() && nra.is_object() {
        causes.push(FieldError::invalid(
            "spec.nonResourceAttributes",
            nra,
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if !ra.is_object() && !nra.is_object() {
        causes.push(FieldError::invalid(
            "spec.resourceAttributes",
            &Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    match kind {
        Kind::Subject | Kind::Local => {
            let no_user = spec["user"].as_str().unwrap_or("").is_empty();
            let no_groups = spec["groups"].as_array().is_none_or(|g| g.is_empty());
            if no_user && no_groups {
                causes.push(FieldError::invalid(
                    "spec.user",
                    &json!(""),
                    "at least one of user or group must be specified",
                ));
            }
        }
        Kind::SelfSubject => {}
    }
    if kind == Kind::Local {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
        if let Some(url) = url_ns {
            if !ns.is_empty() && ns != url {
                return Err(Error::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
        let ns = if ns.is_empty() {
            url_ns.unwrap_or("")
        } else {
            ns
        };
        if ra.is_object() && ra["namespace"].as_str().unwrap_or("") != ns {
            causes.push(FieldError::invalid(
                "spec.resourceAttributes.namespace",
                &ra["namespace"],
                "must match metadata.namespace",
            ));
        }
        if nra.is_object() {
            causes.push(FieldError::invalid(
                "spec.nonResourceAttributes",
                nra,
                "disallowed on this kind of request",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(kind, &obj["metadata"]["name"], causes))
    }
}

/// The request an access review asks about, or why it cannot be asked.
fn attributes(spec: &Value) -> std::result::Result<RequestInfo, String> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    if let Some(nra) = spec["nonResourceAttributes"].as_object() {
        let verb = nra.get("verb").and_then(Value::as_str).unwrap_or("");
        let verb = static_verb(verb).ok_or_else(|| format!("verb {verb:?} is not supported"))?;
        return Ok(RequestInfo::NonResource {
            verb,
            path: nra.get("path").and_then(Value::as_str).unwrap_or("").into(),
        });
    }
    let ra = &spec["resourceAttributes"];
    let verb = ra["verb"].as_str().unwrap_or("");
    let verb = static_verb(verb).ok_or_else(|| format!("verb {verb:?} is not supported"))?;
    let opt = |v: &Value| Some(s(v)).filter(|x| !x.is_empty());
    Ok(RequestInfo::Resource(ResourceRequest {
        group: s(&ra["group"]),
        version: s(&ra["version"]),
        namespace: opt(&ra["namespace"]),
        resource: s(&ra["resource"]),
        name: opt(&ra["name"]),
        subresource: opt(&ra["subresource"]),
        verb,
    }))
}

fn spec_user(spec: &Value) -> UserInfo {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let extra: BTreeMap<String, Vec<String>> = spec["extra"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
        .unwrap_or_default();
    UserInfo {
        name: spec["user"].as_str().unwrap_or("").into(),
        uid: spec["uid"].as_str().unwrap_or("").into(),
        groups: strings(&spec["groups"]),
        extra,
    }
}

impl Reviews {
    async fn token_review(
        &self,
        req: &Request<Bytes>,
        r: &ResourceRequest,
    ) -> Result<Response<Body>> {
        let b = body(req, r, "TokenReview")?;
        if r.namespace.is_some() {
            return Err(Error::BadRequest(
                "namespace is not allowed on this type".into(),
            ));
        }
        let token = b["spec"]["token"].as_str().unwrap_or("");
        if token.is_empty() {
            return Err(Error::BadRequest(
                "token is required for TokenReview in authentication".into(),
            ));
        }
        let asked: Vec<String> = b["spec"]["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for t in &self.tokens {
            if let Some((user, audiences)) = t.review(token, &asked).await {
                let mut status = json!({"authenticated": true, "user": user.to_json()});
                if !audiences.is_empty() {
                    status["audiences"] = json!(audiences);
                }
                return Ok(answer(r, "TokenReview", b, status));
            }
        }
        let status = json!({"authenticated": false, "user": {}, "error": "invalid bearer token"});
        Ok(answer(r, "TokenReview", b, status))
    }

    fn access_review(
        &self,
        req: &Request<Bytes>,
        r: &ResourceRequest,
        user: &UserInfo,
        kind: Kind,
    ) -> Result<Response<Body>> {
        let mut b = body(req, r, kind.name())?;
        validate_access(kind, &b, r.namespace.as_deref())?;
        if kind == Kind::Local {
            if let Some(ns) = &r.namespace {
                b["metadata"]["namespace"] = json!(ns);
            }
        }
        let subject = match kind {
            Kind::SelfSubject => user.clone(),
            Kind::Subject | Kind::Local => spec_user(&b["spec"]),
        };
        let status = match attributes(&b["spec"]) {
            Ok(info) => match self.authorizer.authorize(&subject, &info) {
                Ok(()) => json!({"allowed": true}),
                Err(reason) if reason.is_empty() => json!({"allowed": false}),
                Err(reason) => json!({"allowed": false, "reason": reason}),
            },
            Err(e) => json!({"allowed": false, "evaluationError": e}),
        };
        Ok(answer(r, kind.name(), b, status))
    }

    fn rules_review(
        &self,
        req: &Request<Bytes>,
        r: &ResourceRequest,
        user: &UserInfo,
    ) -> Result<Response<Body>> {
        let b = body(req, r, "SelfSubjectRulesReview")?;
        let ns = b["spec"]["namespace"].as_str().unwrap_or("");
        if ns.is_empty() {
            return Err(Error::BadRequest("no namespace on request".into()));
        }
        let Some(resolver) = &self.rules else {
            let status = json!({"resourceRules": [], "nonResourceRules": [], "incomplete": true,
                "evaluationError": "this server's authorizer cannot list rules"});
            return Ok(answer(r, "SelfSubjectRulesReview", b, status));
        };
        let mut resource = Vec::new();
        let mut non_resource = Vec::new();
        for rule in resolver.rules_for(user, Some(ns)) {
            match rule.to_review() {
                ("nonResource", v) => non_resource.push(v),
                (_, v) => resource.push(v),
            }
        }
        let status = json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false});
        Ok(answer(r, "SelfSubjectRulesReview", b, status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_reviews_validate_like_upstream() {
        let none = json!({"spec": {}});
        let e = validate_access(Kind::SelfSubject, &none, None).unwrap_err();
        assert!(e.to_string().contains(
            "spec.resourceAttributes: Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified"
        ), "{e}");
        let sar = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
        let e = validate_access(Kind::Subject, &sar, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("at least one of user or group must be specified"),
            "{e}"
        );
        let lsar = json!({"metadata": {"namespace": "a"}, "spec": {"user": "bob",
            "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "b"}}});
        let e = validate_access(Kind::Local, &lsar, Some("a")).unwrap_err();
        assert!(
            e.to_string().contains("must match metadata.namespace"),
            "{e}"
        );
        match attributes(&json!({"nonResourceAttributes": {"verb": "get", "path": "/metrics"}})) {
            Ok(RequestInfo::NonResource { verb, path }) => {
                assert_eq!((verb, path.as_str()), ("get", "/metrics"))
            }
            other => panic!("{other:?}"),
        }
        assert!(attributes(&json!({"resourceAttributes": {"verb": "frobnicate"}})).is_err());
    }
}

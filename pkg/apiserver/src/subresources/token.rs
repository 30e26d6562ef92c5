//! `serviceaccounts/<name>/token`: TokenRequest, as upstream's `TokenREST`. Tokens are JWTs
//! with upstream's claims (`iss`, `sub`, `aud`, `exp`/`iat`/`nbf`, `jti`, and the
//! `kubernetes.io` claim naming the namespace, the service account and the bound pod or
//! secret with their uids), so the service-account authenticator can refuse them once any of
//! those objects is gone.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{SecondsFormat, TimeZone, Utc};
use distro_pki::TokenSigner;
use http::StatusCode;
use serde_json::{json, Value};

use super::{check_kind, Call, Subresources};
use crate::error::{Error, FieldError, Result};
use crate::handler::{json_response, Body};

/// Lifetime of a token when the request names none (upstream's default).
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// Shortest lifetime a request may ask for.
pub const MIN_EXPIRATION: i64 = 600;

/// Signs service-account tokens for TokenRequests.
pub struct TokenIssuer {
    signer: Arc<TokenSigner>,
    issuer: String,
    audiences: Vec<String>,
}

impl TokenIssuer {
    /// Tokens from `issuer` for `audiences` by default (the API server's own audiences).
    pub fn new(signer: Arc<TokenSigner>, issuer: String, audiences: Vec<String>) -> Self {
        TokenIssuer {
            signer,
            issuer,
            audiences,
        }
    }

    /// The audiences the API server accepts.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
}

/// A bound object's `kubernetes.io` claim entry and its reference as echoed back.
struct Bound {
    kind: &'static str,
    name: String,
    uid: String,
}

fn validate(spec: &Value, name: &str) -> Result<i64> {
    let mut causes = Vec::new();
    let exp = &spec["expirationSeconds"];
    let seconds = if exp.is_null() {
        DEFAULT_EXPIRATION
    } else {
        exp.as_i64().ok_or_else(|| {
            Error::BadRequest(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: spec.expirationSeconds: expected an integer, got {exp}"
            ))
        })?
    };
    if seconds < MIN_EXPIRATION {
        causes.push(FieldError::invalid(
            "spec.expirationSeconds",
            exp,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if seconds > 1 << 32 {
        causes.push(FieldError::invalid(
            "spec.expirationSeconds",
            exp,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if causes.is_empty() {
        Ok(seconds)
    } else {
        Err(Error::Invalid {
            kind: "TokenRequest".into(),
            group: "authentication.k8s.io".into(),
            name: name.into(),
            causes,
        })
    }
}

/// POST of a TokenRequest.
pub(crate) async fn handle(
    s: &Subresources,
    issuer: &TokenIssuer,
    call: &Call<'_>,
) -> Result<http::Response<Body>> {
    let body = call.body()?;
    check_kind(&body, &["TokenRequest"], &["authentication.k8s.io/v1"])?;
    let name = call.name();
    let ns = call.ns.unwrap_or_default();
    let mut spec = body["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    let seconds = validate(&spec, name)?;
    let sa = s.storage.get(&call.def, call.ns, name).await?;
    let sa_uid = sa["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let bound = match spec["boundObjectRef"].as_object() {
        None => None,
        Some(r) => Some(bound_object(s, call, r, name).await?),
    };
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => issuer.audiences.clone(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let exp = now + seconds;
    let mut k8s = json!({
        "namespace": ns,
        "serviceaccount": {"name": name, "uid": sa_uid},
    });
    if let Some(b) = &bound {
        let key = if b.kind == "Pod" { "pod" } else { "secret" };
        k8s[key] = json!({"name": b.name, "uid": b.uid});
    }
    let claims = json!({
        "iss": issuer.issuer,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "aud": audiences,
        "exp": exp,
        "iat": now,
        "nbf": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
    });
    let token = issuer
        .signer
        .sign(&claims)
        .map_err(|e| Error::Internal(format!("signing the token: {e}")))?;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(seconds);
    if let Some(b) = &bound {
        spec["boundObjectRef"]["uid"] = json!(b.uid);
    }
    let expires = Utc
        .timestamp_opt(exp, 0)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default();
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok(json_response(StatusCode::CREATED, &out))
}

/// Resolves `spec.boundObjectRef` (a Pod or Secret in the service account's namespace).
async fn bound_object(
    s: &Subresources,
    call: &Call<'_>,
    r: &serde_json::Map<String, Value>,
    sa_name: &str,
) -> Result<Bound> {
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let name = r
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (kind, plural) = match (api_version, kind) {
        ("v1", "Pod") => ("Pod", "pods"),
        ("v1", "Secret") => ("Secret", "secrets"),
        _ => {
            let gvk = match api_version.split_once('/') {
                Some((g, v)) => format!("{g}/{v}, Kind={kind}"),
                None => format!("/{api_version}, Kind={kind}"),
            };
            return Err(Error::BadRequest(format!(
                "cannot bind token to object of type {gvk}"
            )));
        }
    };
    let def = s
        .registry
        .get("", "v1", plural)
        .ok_or(Error::NoSuchResource)?;
    let obj = s.storage.get(&def, call.ns, &name).await?;
    if kind == "Pod" {
        let sa = obj["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        if sa != sa_name {
            return Err(Error::BadRequest(format!(
                "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
            )));
        }
    }
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if let Some(want) = r
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        if want != uid {
            return Err(Error::Conflict {
                resource: kind.into(),
                name,
                detail: format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
            });
        }
    }
    Ok(Bound { kind, name, uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_is_defaulted_and_bounded() {
        assert_eq!(validate(&json!({}), "sa").expect("default"), 3600);
        assert_eq!(
            validate(&json!({"expirationSeconds": 600}), "sa").expect("min"),
            600
        );
        let e = validate(&json!({"expirationSeconds": 599}), "sa").unwrap_err();
        assert_eq!(
            e.to_string(),
            "TokenRequest \"sa\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        );
    }
}

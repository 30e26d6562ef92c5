//! CertificateSigningRequest `approval` and `status`, as upstream's approval and status
//! strategies: `approval` changes only `status.conditions` (what `kubectl certificate
//! approve/deny` write) and needs the `approve` verb on the request's signer; `status` changes
//! everything in status except the Approved/Denied conditions, so a signer cannot approve its
//! own requests. Approval conditions, once set, stay.

use std::collections::HashSet;

use http::StatusCode;
use serde_json::{json, Value};

use super::{apply_patch, Call, Subresources};
use crate::error::{Error, FieldError, Result};
use crate::handler::{json_response, Body};
use crate::request::{RequestInfo, ResourceRequest};
use crate::rest::now_rfc3339;

const GROUP: &str = "certificates.k8s.io";

fn is_approval(c: &Value) -> bool {
    matches!(c["type"].as_str(), Some("Approved" | "Denied"))
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Upstream's `populateConditionTimestamps`: a condition keeps its times while its status
/// stays; new or changed ones get now.
fn stamp(conds: &mut [Value], old: &[Value]) {
    let now = now_rfc3339();
    for c in conds.iter_mut() {
        let prev = old.iter().find(|o| o["type"] == c["type"]);
        if c["lastUpdateTime"].is_null() {
            c["lastUpdateTime"] = json!(now);
        }
        if c["lastTransitionTime"].is_null() {
            c["lastTransitionTime"] = match prev {
                Some(p) if p["status"] == c["status"] && !p["lastTransitionTime"].is_null() => {
                    p["lastTransitionTime"].clone()
                }
                _ => json!(now),
            };
        }
    }
}

/// The next object for a write of `body` through `sub`, from `current`.
fn next(current: &Value, body: &Value, sub: &str) -> Value {
    let mut out = current.clone();
    let old = conditions(current);
    let mut conds: Vec<Value> = match sub {
        "approval" => conditions(body),
        _ => {
            out["status"] = body["status"].clone();
            let mut c: Vec<Value> = conditions(body)
                .into_iter()
                .filter(|c| !is_approval(c))
                .collect();
            c.extend(old.iter().filter(|c| is_approval(c)).cloned());
            c
        }
    };
    stamp(&mut conds, &old);
    if !out["status"].is_object() {
        out["status"] = json!({});
    }
    if conds.is_empty() {
        if let Some(m) = out["status"].as_object_mut() {
            m.remove("conditions");
        }
    } else {
        out["status"]["conditions"] = json!(conds);
    }
    out["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"].clone();
    if out["metadata"]["resourceVersion"].is_null() {
        if let Some(m) = out["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
    }
    out
}

/// Upstream's condition rules for CSR updates.
fn validate(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let conds = conditions(obj);
    let mut seen = HashSet::new();
    let (mut approved, mut denied) = (false, false);
    for (i, c) in conds.iter().enumerate() {
        let path = format!("status.conditions[{i}]");
        let t = c["type"].as_str().unwrap_or("");
        if t.is_empty() {
            errs.push(FieldError::required(format!("{path}.type"), ""));
            continue;
        }
        if !seen.insert(t.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.type"), &json!(t)));
        }
        match t {
            "Approved" | "Denied" | "Failed" => {
                if c["status"] != "True" {
                    errs.push(FieldError::not_supported(
                        format!("{path}.status"),
                        &c["status"],
                        &["True"],
                    ));
                }
                approved |= t == "Approved";
                if t == "Denied" {
                    denied = true;
                    if approved {
                        errs.push(FieldError::invalid(
                            format!("{path}.type"),
                            &json!(t),
                            "Approved and Denied conditions are mutually exclusive",
                        ));
                    }
                }
            }
            _ => {
                let st = c["status"].as_str().unwrap_or("");
                if !matches!(st, "True" | "False" | "Unknown") {
                    errs.push(FieldError::not_supported(
                        format!("{path}.status"),
                        &c["status"],
                        &["False", "True", "Unknown"],
                    ));
                }
            }
        }
    }
    if approved && denied && !errs.iter().any(|e| e.detail.contains("mutually exclusive")) {
        errs.push(FieldError::invalid(
            "status.conditions",
            &json!("Approved"),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    for t in ["Approved", "Denied", "Failed"] {
        let had = conditions(old).iter().any(|c| c["type"] == t);
        if had && !seen.contains(t) {
            errs.push(FieldError::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type {t:?}"),
            ));
        }
    }
    let (cert, old_cert) = (
        obj["status"]["certificate"].as_str().unwrap_or(""),
        old["status"]["certificate"].as_str().unwrap_or(""),
    );
    if !old_cert.is_empty() && cert != old_cert {
        errs.push(FieldError::forbidden(
            "status.certificate",
            "updates may not modify existing certificate content",
        ));
    }
    errs
}

/// Checks the signer permission upstream's CertificateApproval admission wants for a write
/// that adds an Approved or Denied condition: `approve` on `signers` named the signer or its
/// domain wildcard.
fn check_signer(s: &Subresources, call: &Call<'_>, obj: &Value, old: &Value) -> Result<()> {
    let new_approval: Vec<&Value> = obj["status"]["conditions"]
        .as_array()
        .map(|a| a.iter().filter(|c| is_approval(c)).collect())
        .unwrap_or_default();
    let old_approval = conditions(old);
    let changed = new_approval
        .iter()
        .any(|c| !old_approval.iter().any(|o| o["type"] == c["type"]));
    if !changed {
        return Ok(());
    }
    let signer = obj["spec"]["signerName"].as_str().unwrap_or("");
    let mut names = vec![signer.to_string()];
    if let Some((domain, _)) = signer.split_once('/') {
        names.push(format!("{domain}/*"));
    }
    let allowed = names.into_iter().any(|n| {
        let info = RequestInfo::Resource(ResourceRequest {
            group: GROUP.into(),
            version: String::new(),
            namespace: None,
            resource: "signers".into(),
            name: Some(n),
            subresource: None,
            verb: "approve",
        });
        s.authorizer.authorize(call.user, &info).is_ok()
    });
    if allowed {
        return Ok(());
    }
    Err(Error::Forbidden(format!(
        "certificatesigningrequests.certificates.k8s.io {:?} is forbidden: user not permitted to approve requests with signerName {signer:?}",
        call.name()
    )))
}

/// Creates a CSR recording who asked (`spec.username`, `uid`, `groups`, `extra`), as upstream's
/// strategy does: the requestor cannot be forged.
pub(crate) async fn create(s: &Subresources, call: &Call<'_>) -> Result<http::Response<Body>> {
    let mut body = call.body()?;
    if !body["spec"].is_object() {
        body["spec"] = json!({});
    }
    let spec = &mut body["spec"];
    let user = call.user;
    spec["username"] = json!(user.name);
    for (k, v) in [
        ("uid", (!user.uid.is_empty()).then(|| json!(user.uid))),
        (
            "groups",
            (!user.groups.is_empty()).then(|| json!(user.groups)),
        ),
        ("extra", (!user.extra.is_empty()).then(|| json!(user.extra))),
    ] {
        match v {
            Some(v) => spec[k] = v,
            None => {
                if let Some(m) = spec.as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    let opts = call.write_options()?;
    let w = s.storage.create(&call.def, None, body, &opts).await?;
    let mut resp = json_response(StatusCode::CREATED, &w.object);
    for warning in w.warnings {
        let v = format!(
            "299 - {}",
            serde_json::to_string(&warning).unwrap_or_default()
        );
        if let Ok(h) = http::HeaderValue::from_str(&v) {
            resp.headers_mut().append(http::header::WARNING, h);
        }
    }
    Ok(resp)
}

/// GET, PUT and PATCH of `certificatesigningrequests/<name>/{approval,status}`.
pub(crate) async fn handle(s: &Subresources, call: &Call<'_>) -> Result<http::Response<Body>> {
    let def = &call.def;
    let name = call.name();
    let sub = call.r.subresource.as_deref().unwrap_or("status");
    if call.r.verb == "get" {
        let obj = s.storage.get(def, None, name).await?;
        return Ok(json_response(StatusCode::OK, &obj));
    }
    let opts = call.write_options()?;
    let body = if call.r.verb == "update" {
        let b = call.body()?;
        super::check_kind(
            &b,
            &["CertificateSigningRequest"],
            &["certificates.k8s.io/v1"],
        )?;
        if let Some(n) = b["metadata"]["name"].as_str() {
            if n != name {
                return Err(Error::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        Some(b)
    } else {
        None
    };
    let schema = s.patch_schema.clone();
    let w = s
        .storage
        .guaranteed_update(def, None, name, Some("status"), &opts, |current| {
            let current = current.ok_or_else(|| Error::not_found(def.group_resource(), name))?;
            let body = match &body {
                Some(b) => b.clone(),
                None => {
                    let mut base = current.clone();
                    if let Some(m) = base["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    apply_patch(call.req, &base, schema.as_ref(), &def.definition)?
                }
            };
            let obj = next(current, &body, sub);
            let errs = validate(&obj, current);
            if !errs.is_empty() {
                return Err(Error::Invalid {
                    kind: def.kind.clone(),
                    group: def.group.clone(),
                    name: name.into(),
                    causes: errs,
                });
            }
            if sub == "approval" {
                check_signer(s, call, &obj, current)?;
            }
            Ok((obj, Vec::new()))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &w.object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(conds: Value) -> Value {
        json!({"metadata": {"name": "c"}, "spec": {"signerName": "example.com/x"}, "status": {"conditions": conds}})
    }

    #[test]
    fn approval_sets_conditions_and_status_cannot_approve() {
        let old = csr(json!([]));
        let approve =
            csr(json!([{"type": "Approved", "status": "True", "reason": "KubectlApprove"}]));
        let n = next(&old, &approve, "approval");
        assert_eq!(n["status"]["conditions"][0]["type"], "Approved");
        assert!(n["status"]["conditions"][0]["lastTransitionTime"].is_string());
        assert!(validate(&n, &old).is_empty());
        // Status writes keep approval conditions as they were.
        let n2 = next(&old, &approve, "status");
        assert!(n2["status"]["conditions"].is_null());
        let both = csr(
            json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]),
        );
        let errs = validate(&next(&old, &both, "approval"), &old);
        assert!(
            errs.iter()
                .any(|e| e.message().contains("mutually exclusive")),
            "{errs:?}"
        );
        let errs = validate(&next(&n, &csr(json!([])), "approval"), &n);
        assert!(
            errs.iter().any(|e| e
                .message()
                .contains("may not remove a condition of type \"Approved\"")),
            "{errs:?}"
        );
    }
}

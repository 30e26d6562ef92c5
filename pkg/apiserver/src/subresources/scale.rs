//! `scale` of Deployments, ReplicaSets, StatefulSets and ReplicationControllers: an
//! autoscaling/v1 `Scale` view of `spec.replicas`, as upstream's `ScaleREST`. A Scale's
//! resourceVersion (and uid) are preconditions on the object it views, so a stale
//! `kubectl scale --resource-version` gets 409.

use distro_apimachinery::labels::Selector;
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{apply_patch, check_kind, Call, Subresources};
use crate::error::{Error, FieldError, Result};
use crate::handler::{json_response, Body};
use crate::resources::ResourceDef;

const SCALE_DEFINITION: &str = "io.k8s.api.autoscaling.v1.Scale";

/// The Scale view of a workload.
pub fn to_scale(def: &ResourceDef, obj: &Value) -> Value {
    let m = &obj["metadata"];
    let mut meta = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if !m[k].is_null() {
            meta.insert(k.into(), m[k].clone());
        }
    }
    let mut spec = json!({});
    if let Some(r) = obj["spec"]["replicas"].as_i64().filter(|r| *r != 0) {
        spec["replicas"] = json!(r);
    }
    let mut status = json!({"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)});
    let selector = selector_string(def, &obj["spec"]["selector"]);
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": spec,
        "status": status,
    })
}

/// `status.selector`: the canonical selector string (ReplicationControllers have a plain map).
fn selector_string(def: &ResourceDef, sel: &Value) -> String {
    let parsed = if def.group.is_empty() {
        sel.as_object().map(Selector::from_set)
    } else {
        Selector::from_label_selector(sel).ok()
    };
    parsed.map(|s| s.to_string()).unwrap_or_default()
}

/// Upstream's `ValidateScale`.
fn validate_scale(scale: &Value) -> Result<()> {
    let mut causes = Vec::new();
    let replicas = &scale["spec"]["replicas"];
    if !replicas.is_null() && !replicas.is_i64() {
        return Err(Error::BadRequest(format!(
            "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: expected an integer, got {replicas}"
        )));
    }
    if replicas.as_i64().is_some_and(|r| r < 0) {
        causes.push(FieldError::invalid(
            "spec.replicas",
            replicas,
            "must be greater than or equal to 0",
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        kind: "Scale".into(),
        group: "autoscaling".into(),
        name: scale["metadata"]["name"].as_str().unwrap_or("").into(),
        causes,
    })
}

/// Carries a (validated) Scale onto the current object: replicas, plus its resourceVersion as
/// the write's precondition. A uid that names another object is a conflict, as upstream.
fn apply_scale(def: &ResourceDef, current: &Value, scale: &Value, name: &str) -> Result<Value> {
    if let Some(uid) = scale["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
        let have = current["metadata"]["uid"].as_str().unwrap_or("");
        if uid != have {
            return Err(Error::Conflict {
                resource: format!("{}/scale", def.group_resource()),
                name: name.into(),
                detail: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            });
        }
    }
    let mut next = current.clone();
    next["spec"]["replicas"] = json!(scale["spec"]["replicas"].as_i64().unwrap_or(0));
    match scale["metadata"]["resourceVersion"]
        .as_str()
        .filter(|v| !v.is_empty())
    {
        Some(rv) => next["metadata"]["resourceVersion"] = json!(rv),
        None => {
            if let Some(m) = next["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
        }
    }
    Ok(next)
}

/// GET, PUT and PATCH of `<workload>/scale`.
pub(crate) async fn handle(s: &Subresources, call: &Call<'_>) -> Result<http::Response<Body>> {
    let def = &call.def;
    let name = call.name();
    if name.is_empty() {
        return Err(Error::NoSuchResource);
    }
    let storage = &s.storage;
    let written = match call.r.verb {
        "get" => {
            let obj = storage.get(def, call.ns, name).await?;
            return Ok(json_response(StatusCode::OK, &to_scale(def, &obj)));
        }
        "update" => {
            let opts = call.write_options()?;
            let body = call.body()?;
            check_kind(&body, &["Scale"], &["autoscaling/v1"])?;
            validate_scale(&body)?;
            if let Some(n) = body["metadata"]["name"].as_str() {
                if n != name {
                    return Err(Error::BadRequest(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
            }
            storage
                .guaranteed_update(def, call.ns, name, Some("scale"), &opts, |current| {
                    let current =
                        current.ok_or_else(|| Error::not_found(def.group_resource(), name))?;
                    Ok((apply_scale(def, current, &body, name)?, Vec::new()))
                })
                .await?
        }
        "patch" => {
            let opts = call.write_options()?;
            let schema = s.patch_schema.clone();
            storage
                .guaranteed_update(def, call.ns, name, Some("scale"), &opts, |current| {
                    let current =
                        current.ok_or_else(|| Error::not_found(def.group_resource(), name))?;
                    let mut base = to_scale(def, current);
                    // Only a resourceVersion the patch sets is a precondition.
                    if let Some(m) = base["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    let patched = apply_patch(call.req, &base, schema.as_ref(), SCALE_DEFINITION)?;
                    validate_scale(&patched)?;
                    Ok((apply_scale(def, current, &patched, name)?, Vec::new()))
                })
                .await?
        }
        other => {
            return Err(Error::MethodNotAllowed(format!(
                "{}/scale does not support {other}",
                def.group_resource()
            )))
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &to_scale(def, &written.object),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtin;

    fn def(group: &str, plural: &str) -> ResourceDef {
        builtin()
            .into_iter()
            .find(|d| d.group == group && d.plural == plural)
            .expect("def")
    }

    #[test]
    fn scale_views_replicas_and_selector() {
        let d = def("apps", "deployments");
        let obj = json!({"metadata": {"name": "web", "namespace": "a", "uid": "u1", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "tier": "fe"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}]}},
            "status": {"replicas": 1}});
        let s = to_scale(&d, &obj);
        assert_eq!(s["spec"]["replicas"], 2);
        assert_eq!(s["status"]["replicas"], 1);
        assert_eq!(s["status"]["selector"], "app=web,env in (a,b),tier=fe");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert!(s["metadata"]["labels"].is_null());
        let rc = def("", "replicationcontrollers");
        let obj = json!({"metadata": {"name": "r"}, "spec": {"replicas": 0, "selector": {"b": "2", "a": "1"}}});
        let s = to_scale(&rc, &obj);
        assert!(s["spec"]["replicas"].is_null());
        assert_eq!(s["status"]["replicas"], 0);
        assert_eq!(s["status"]["selector"], "a=1,b=2");
    }

    #[test]
    fn scale_updates_carry_preconditions() {
        let d = def("apps", "deployments");
        let cur = json!({"metadata": {"name": "web", "uid": "u1", "resourceVersion": "7"}, "spec": {"replicas": 2}});
        let next = apply_scale(&d, &cur, &json!({"spec": {"replicas": 5}}), "web").expect("apply");
        assert_eq!(next["spec"]["replicas"], 5);
        assert!(next["metadata"]["resourceVersion"].is_null());
        let next = apply_scale(
            &d,
            &cur,
            &json!({"metadata": {"resourceVersion": "3"}, "spec": {}}),
            "web",
        )
        .expect("apply");
        assert_eq!(next["metadata"]["resourceVersion"], "3");
        assert_eq!(next["spec"]["replicas"], 0);
        let err = apply_scale(&d, &cur, &json!({"metadata": {"uid": "other"}}), "web").unwrap_err();
        assert_eq!(err.code(), 409);
        let err = validate_scale(&json!({"metadata": {"name": "web"}, "spec": {"replicas": -1}}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Scale \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }
}

//! `pods/<name>/binding` and the namespaced `bindings` resource: assign a pod to a node, as
//! upstream's `BindingREST` (the scheduler's write). A pod is bound once: binding an assigned
//! or terminating pod is a 409.

use serde_json::{json, Value};

use super::{check_kind, created_status, unchecked_def, Call, Subresources};
use crate::error::{Error, FieldError, Result};
use crate::handler::Body;
use crate::rest::now_rfc3339;

/// Checks a Binding body against the URL, as upstream's `ValidatePodBinding` and REST checks.
fn validate(body: &Value, url_name: Option<&str>) -> Result<String> {
    check_kind(body, &["Binding"], &["v1"])?;
    let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
    if let Some(url) = url_name {
        if url != name {
            return Err(Error::BadRequest(
                "name in URL does not match name in Binding object".into(),
            ));
        }
    }
    let mut causes = Vec::new();
    let kind = body["target"]["kind"].as_str().unwrap_or("");
    if !kind.is_empty() && kind != "Node" {
        causes.push(FieldError::not_supported(
            "target.kind",
            &json!(kind),
            &["Node", "<empty>"],
        ));
    }
    if body["target"]["name"].as_str().unwrap_or("").is_empty() {
        causes.push(FieldError::required("target.name", ""));
    }
    if name.is_empty() {
        causes.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    if causes.is_empty() {
        Ok(name)
    } else {
        Err(Error::Invalid {
            kind: "Binding".into(),
            group: String::new(),
            name,
            causes,
        })
    }
}

/// The pod bound to the binding's node: `spec.nodeName`, the binding's annotations, and a
/// true `PodScheduled` condition.
fn bind(pod: &Value, binding: &Value, name: &str) -> Result<Value> {
    let conflict = |detail: String| Error::Conflict {
        resource: "pods".into(),
        name: name.into(),
        detail,
    };
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Err(conflict(format!(
            "pod {name} is being deleted, cannot be assigned to a host"
        )));
    }
    if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(conflict(format!(
            "pod {name} is already assigned to node {node:?}"
        )));
    }
    if let Some(uid) = binding["metadata"]["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
    {
        let have = pod["metadata"]["uid"].as_str().unwrap_or("");
        if uid != have {
            return Err(conflict(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
            )));
        }
    }
    let mut next = pod.clone();
    next["spec"]["nodeName"] = binding["target"]["name"].clone();
    if let Some(extra) = binding["metadata"]["annotations"].as_object() {
        if !next["metadata"]["annotations"].is_object() {
            next["metadata"]["annotations"] = json!({});
        }
        for (k, v) in extra {
            next["metadata"]["annotations"][k] = v.clone();
        }
    }
    if !next["status"]["conditions"].is_array() {
        next["status"]["conditions"] = json!([]);
    }
    let now = now_rfc3339();
    if let Some(conds) = next["status"]["conditions"].as_array_mut() {
        match conds.iter_mut().find(|c| c["type"] == "PodScheduled") {
            Some(c) => {
                if c["status"] != "True" {
                    c["status"] = json!("True");
                    c["lastTransitionTime"] = json!(now);
                }
                if let Some(m) = c.as_object_mut() {
                    m.remove("reason");
                    m.remove("message");
                }
            }
            None => conds.push(json!({"type": "PodScheduled", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": now})),
        }
    }
    if let Some(m) = next["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    Ok(next)
}

/// POST of a Binding.
pub(crate) async fn handle(s: &Subresources, call: &Call<'_>) -> Result<http::Response<Body>> {
    let body = call.body()?;
    let url_name = call.r.subresource.as_ref().map(|_| call.name());
    let name = validate(&body, url_name)?;
    if let Some(ns) = body["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        if Some(ns) != call.ns {
            return Err(Error::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    let opts = call.write_options()?;
    let pods = s
        .registry
        .get("", "v1", "pods")
        .ok_or(Error::NoSuchResource)?;
    let def = unchecked_def(&pods);
    s.storage
        .guaranteed_update(&def, call.ns, &name, Some("binding"), &opts, |current| {
            let pod = current.ok_or_else(|| Error::not_found("pods", name.as_str()))?;
            Ok((bind(pod, &body, &name)?, Vec::new()))
        })
        .await?;
    Ok(created_status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_once_with_upstream_messages() {
        let binding = json!({"metadata": {"name": "p", "annotations": {"a": "b"}}, "target": {"kind": "Node", "name": "n1"}});
        assert_eq!(validate(&binding, Some("p")).expect("valid"), "p");
        assert_eq!(
            validate(&binding, Some("q")).unwrap_err().to_string(),
            "name in URL does not match name in Binding object"
        );
        let bad = json!({"metadata": {"name": "p"}, "target": {"kind": "Pod"}});
        let e = validate(&bad, None).unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(e.to_string().contains("target.name: Required value"), "{e}");
        let pod = json!({"metadata": {"name": "p", "uid": "u", "resourceVersion": "3"}, "spec": {}, "status": {"phase": "Pending"}});
        let bound = bind(&pod, &binding, "p").expect("bind");
        assert_eq!(bound["spec"]["nodeName"], "n1");
        assert_eq!(bound["metadata"]["annotations"]["a"], "b");
        assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
        let e = bind(&bound, &binding, "p").unwrap_err();
        assert_eq!(e.code(), 409);
        assert_eq!(
            e.to_string(),
            "Operation cannot be fulfilled on pods \"p\": pod p is already assigned to node \"n1\""
        );
    }
}

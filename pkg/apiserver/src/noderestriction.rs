//! NodeRestriction admission, as upstream's `plugin/pkg/admission/noderestriction`: what the
//! Node authorizer ([`crate::nodeauthz`]) lets a node do by kind, this limits to the node's
//! own objects, which needs the request body or the stored object: its own Node (and not the
//! labels reserved for the control plane), its own Lease, the status of pods bound to it,
//! mirror pods bound to itself, deleting and evicting only its pods, tokens only for its pods.
//!
//! It runs as a [`Route`] placed first: after authentication and authorization it sees the
//! user and the request, and answers 403 Forbidden (upstream's messages) or passes it on.
//!
//! # Limits
//! Patches are checked by what they set (`metadata.labels`, `spec.taints`, `spec.nodeName`
//! in merge and strategic patches and JSON-patch operations), not by applying them first.
//! Mirror pods are not checked for the secret/configmap/PVC references upstream forbids.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use serde_json::Value;

use crate::authn::UserInfo;
use crate::error::Error;
use crate::handler::{error_response, Body, Route};
use crate::nodeauthz::{node_name, NODE_LEASE_NAMESPACE};
use crate::request::{RequestInfo, ResourceRequest};
use crate::resources::Registry;
use crate::rest::Storage;

/// The annotation that marks a mirror pod (a static pod's API copy).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Label prefix reserved for the control plane to restrict workloads to nodes.
const RESTRICTION_PREFIX: &str = "node-restriction.kubernetes.io/";

/// `kubernetes.io` / `k8s.io` labels a kubelet may set on its Node (upstream's
/// `kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];

/// Label domains (and their subdomains) a kubelet may use freely.
const KUBELET_DOMAINS: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn in_domain(domain: &str, parent: &str) -> bool {
    domain == parent || domain.ends_with(&format!(".{parent}"))
}

/// Whether a node may not set `key` on itself: `node-restriction.kubernetes.io/` always, other
/// `kubernetes.io`/`k8s.io` labels unless upstream lists them as kubelet labels.
pub fn forbidden_label(key: &str) -> bool {
    if key.starts_with(RESTRICTION_PREFIX) {
        return true;
    }
    let Some((domain, _)) = key.split_once('/') else {
        return false;
    };
    if !in_domain(domain, "kubernetes.io") && !in_domain(domain, "k8s.io") {
        return false;
    }
    if KUBELET_LABELS.contains(&key) || KUBELET_DOMAINS.iter().any(|d| in_domain(domain, d)) {
        return false;
    }
    true
}

/// The admission plugin.
pub struct NodeRestriction {
    /// For the stored objects a decision depends on (the pod being deleted, the old Node).
    pub storage: Storage,
    /// To find the pods and nodes resources.
    pub registry: Arc<Registry>,
}

/// The labels (`None`: removed) and whether taints change, as a request body sets them.
#[derive(Debug, Default, PartialEq)]
struct NodeChanges {
    labels: Vec<(String, Option<String>)>,
    taints: bool,
}

/// What a Node body (full object, merge/strategic patch or JSON patch) sets.
fn node_changes(body: &Value) -> NodeChanges {
    let mut c = NodeChanges::default();
    let label_map = |c: &mut NodeChanges, labels: &Value| {
        for (k, v) in labels.as_object().into_iter().flatten() {
            c.labels.push((k.clone(), v.as_str().map(String::from)));
        }
    };
    if let Some(ops) = body.as_array() {
        for op in ops {
            let path = op["path"].as_str().unwrap_or("");
            let value = match op["op"].as_str() {
                Some("remove") => Value::Null,
                _ => op["value"].clone(),
            };
            if path == "/metadata/labels" {
                label_map(&mut c, &value);
            } else if let Some(key) = path.strip_prefix("/metadata/labels/") {
                let key = key.replace("~1", "/").replace("~0", "~");
                c.labels.push((key, value.as_str().map(String::from)));
            } else if path.starts_with("/spec/taints") {
                c.taints = true;
            }
        }
    } else {
        label_map(&mut c, &body["metadata"]["labels"]);
        c.taints = body["spec"].get("taints").is_some();
    }
    c
}

fn forbidden(r: &ResourceRequest, message: String) -> Response<Body> {
    let what = if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    let subject = match &r.name {
        Some(n) => format!("{what} \"{n}\" is forbidden"),
        None => format!("{what} is forbidden"),
    };
    error_response(&Error::Forbidden(format!("{subject}: {message}")))
}

fn body_json(req: &Request<Bytes>) -> Value {
    let b = req.body();
    serde_json::from_slice(b)
        .or_else(|_| serde_yaml::from_slice(b))
        .unwrap_or(Value::Null)
}

impl NodeRestriction {
    async fn stored(&self, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let def = self.registry.get("", "v1", plural)?;
        self.storage.get(&def, ns, name).await.ok()
    }

    async fn pod_node(&self, r: &ResourceRequest) -> Option<String> {
        let pod = self
            .stored("pods", r.namespace.as_deref(), r.name.as_deref()?)
            .await?;
        Some(pod["spec"]["nodeName"].as_str().unwrap_or("").to_string())
    }

    /// `Some(message)` if `node` may not do `r` with `body`.
    async fn check(&self, node: &str, r: &ResourceRequest, req: &Request<Bytes>) -> Option<String> {
        let write = matches!(r.verb, "create" | "update" | "patch" | "delete");
        match (
            r.group.as_str(),
            r.resource.as_str(),
            r.subresource.as_deref(),
        ) {
            ("", "nodes", _) if write => self.node(node, r, req).await,
            ("", "pods", None) if write => self.pod(node, r, req).await,
            ("", "pods", Some("status")) if matches!(r.verb, "update" | "patch") => {
                match self.pod_node(r).await {
                    Some(n) if n != node => Some(format!(
                        "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                    )),
                    _ => None,
                }
            }
            ("", "pods", Some("eviction")) if r.verb == "create" => match self.pod_node(r).await {
                Some(n) if n != node => Some(format!(
                    "node \"{node}\" can only evict pods with spec.nodeName set to itself"
                )),
                _ => None,
            },
            ("", "serviceaccounts", Some("token")) if r.verb == "create" => {
                self.token(node, r, req).await
            }
            ("coordination.k8s.io", "leases", None) if write => {
                let name = match r.verb {
                    "create" => body_json(req)["metadata"]["name"]
                        .as_str()
                        .map(String::from),
                    _ => r.name.clone(),
                };
                (r.namespace.as_deref() != Some(NODE_LEASE_NAMESPACE)
                    || name.as_deref() != Some(node))
                .then(|| {
                    "can only access node lease with the same name as the requesting node".into()
                })
            }
            _ => None,
        }
    }

    async fn node(&self, node: &str, r: &ResourceRequest, req: &Request<Bytes>) -> Option<String> {
        let body = body_json(req);
        let target = match r.verb {
            "create" => body["metadata"]["name"].as_str().map(String::from),
            _ => r.name.clone(),
        };
        if target.as_deref() != Some(node) {
            return Some(format!(
                "node \"{node}\" is not allowed to modify node \"{}\"",
                target.unwrap_or_default()
            ));
        }
        if r.verb == "delete" || r.subresource.is_some() {
            return None;
        }
        let changes = node_changes(&body);
        let old = match r.verb {
            "create" => None,
            _ => self.stored("nodes", None, node).await,
        };
        let old_labels = old.as_ref().map(|o| &o["metadata"]["labels"]);
        let mut bad: Vec<String> = changes
            .labels
            .iter()
            .filter(|(k, v)| {
                let before = old_labels.and_then(|l| l[k.as_str()].as_str());
                forbidden_label(k) && before != v.as_deref()
            })
            .map(|(k, _)| k.clone())
            .collect();
        // A full update drops labels it does not list.
        if r.verb == "update" {
            for (k, _) in old_labels.and_then(Value::as_object).into_iter().flatten() {
                if forbidden_label(k) && body["metadata"]["labels"].get(k).is_none() {
                    bad.push(k.clone());
                }
            }
        }
        bad.sort();
        bad.dedup();
        if !bad.is_empty() {
            return Some(match r.verb {
                "create" => format!(
                    "node \"{node}\" is not allowed to set the following labels: {}",
                    bad.join(", ")
                ),
                _ => format!(
                    "node \"{node}\" is not allowed to modify labels: {}",
                    bad.join(", ")
                ),
            });
        }
        if r.verb != "create" && changes.taints {
            let old_taints = old.as_ref().map(|o| o["spec"]["taints"].clone());
            let same =
                r.verb == "update" && old_taints.unwrap_or(Value::Null) == body["spec"]["taints"];
            if !same {
                return Some(format!("node \"{node}\" is not allowed to modify taints"));
            }
        }
        None
    }

    async fn pod(&self, node: &str, r: &ResourceRequest, req: &Request<Bytes>) -> Option<String> {
        match r.verb {
            "create" => {
                let pod = body_json(req);
                if pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
                    return Some(format!(
                        "pod does not have \"{MIRROR_ANNOTATION}\" annotation, node \"{node}\" can only create mirror pods"
                    ));
                }
                (pod["spec"]["nodeName"].as_str() != Some(node)).then(|| {
                    format!("node \"{node}\" can only create pods with spec.nodeName set to itself")
                })
            }
            "delete" => match self.pod_node(r).await {
                Some(n) if n != node => Some(format!(
                    "node \"{node}\" can only delete pods with spec.nodeName set to itself"
                )),
                _ => None,
            },
            _ => Some(format!("node \"{node}\" can only update pod status")),
        }
    }

    /// Upstream: a node's service-account token must be bound to a pod on that node.
    async fn token(&self, node: &str, r: &ResourceRequest, req: &Request<Bytes>) -> Option<String> {
        let body = body_json(req);
        let bound = &body["spec"]["boundObjectRef"];
        if bound["kind"].as_str() != Some("Pod") {
            return Some("node requested token not bound to a pod".into());
        }
        let name = bound["name"].as_str().unwrap_or("");
        let pod = self.stored("pods", r.namespace.as_deref(), name).await;
        match pod {
            Some(p) if p["spec"]["nodeName"].as_str() == Some(node) => {
                let uid = bound["uid"].as_str().unwrap_or("");
                (!uid.is_empty() && p["metadata"]["uid"].as_str() != Some(uid))
                    .then(|| "the UID in the bound object reference does not match the pod".into())
            }
            Some(_) => {
                Some("node requested token bound to a pod scheduled on a different node".into())
            }
            None => Some(format!(
                "node \"{node}\" requested a token for a pod that does not exist"
            )),
        }
    }
}

#[async_trait::async_trait]
impl Route for NodeRestriction {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        info: &RequestInfo,
        user: &UserInfo,
    ) -> Option<Response<Body>> {
        let (Some(node), RequestInfo::Resource(r)) = (node_name(user), info) else {
            return None;
        };
        let message = self.check(node, r, req).await?;
        tracing::debug!(%node, verb = r.verb, resource = %r.resource, %message, "NodeRestriction denied");
        Some(forbidden(r, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_a_node_may_set() {
        for ok in [
            "tier",
            "example.com/x",
            "kubernetes.io/hostname",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/anything",
            "foo.kubelet.kubernetes.io/x",
            "topology.kubernetes.io/zone",
        ] {
            assert!(!forbidden_label(ok), "{ok}");
        }
        for bad in [
            "node-restriction.kubernetes.io/trusted",
            "node-role.kubernetes.io/master",
            "kubernetes.io/role",
            "example.k8s.io/x",
            "k8s.io/x",
        ] {
            assert!(forbidden_label(bad), "{bad}");
        }
    }

    #[test]
    fn changes_from_every_body_form() {
        let merge = json!({"metadata": {"labels": {"a": "1", "b": null}}, "spec": {"taints": []}});
        assert_eq!(
            node_changes(&merge),
            NodeChanges {
                labels: vec![("a".into(), Some("1".into())), ("b".into(), None)],
                taints: true
            }
        );
        let jp = json!([
            {"op": "add", "path": "/metadata/labels/node-role.kubernetes.io~1x", "value": ""},
            {"op": "remove", "path": "/metadata/labels/c"}
        ]);
        assert_eq!(
            node_changes(&jp),
            NodeChanges {
                labels: vec![
                    ("node-role.kubernetes.io/x".into(), Some(String::new())),
                    ("c".into(), None)
                ],
                taints: false
            }
        );
    }
}

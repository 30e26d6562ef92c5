//! The Node authorizer (authorization mode `Node,RBAC`), as upstream's
//! `plugin/pkg/auth/authorizer/node`: a kubelet (`system:node:<name>` in `system:nodes`) may
//! read a Secret, ConfigMap, PersistentVolumeClaim, PersistentVolume or ResourceClaim, or get
//! a token for a ServiceAccount, only when a pod bound to it uses the object. Otherwise it gets
//! what upstream's `system:node` role grants (its own Lease only), and the per-object checks
//! that need the request body (own Node, own pods' status) are NodeRestriction admission's
//! ([`crate::noderestriction`]).
//!
//! Which node uses what comes from a graph of pods, PVCs and PVs kept current by datastore
//! watches (as [`crate::authz::Rbac`] does for roles), so authorizing never reads the store.
//! Users that are not nodes, and everything the node rules leave open, go to the next
//! authorizer (RBAC), as upstream's union authorizer does on "no opinion".
//!
//! # Limits
//! - SelfSubjectRulesReview lists RBAC rules only, not the node rules applied here.
//! - VolumeAttachments, CSINodes and ResourceSlices are allowed by kind (as the `system:node`
//!   role), not by the graph: no attachment or driver objects are followed yet.
//! - The graph follows the datastore, so a pod bound a moment ago may take a watch delivery
//!   (milliseconds) before its node may read its secrets; the kubelet retries, as upstream's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use crate::authn::UserInfo;
use crate::authz::Rule;
use crate::handler::Authorizer;
use crate::request::{RequestInfo, ResourceRequest};
use crate::resources::{Registry, ResourceDef};
use crate::rest::Storage;

/// The group every node's identity is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is, if it is one: `system:node:<name>` in `system:nodes`.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
}

/// What one pod bound to a node references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PodRefs {
    node: String,
    namespace: String,
    secrets: HashSet<String>,
    configmaps: HashSet<String>,
    pvcs: HashSet<String>,
    service_account: String,
    claims: HashSet<String>,
}

impl PodRefs {
    /// Upstream's graph populator: every Secret, ConfigMap, PVC, ServiceAccount and
    /// ResourceClaim a pod names. `None` for pods not bound to a node.
    fn from_pod(pod: &Value) -> Option<PodRefs> {
        let node = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())?;
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let mut r = PodRefs {
            node: node.to_string(),
            namespace: pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            service_account: pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            ..Default::default()
        };
        let spec = &pod["spec"];
        let add = |set: &mut HashSet<String>, v: &Value| {
            if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                set.insert(s.to_string());
            }
        };
        for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            add(&mut r.secrets, &s["name"]);
        }
        let containers = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .flat_map(|k| spec[*k].as_array().cloned().unwrap_or_default());
        for c in containers {
            for e in c["env"].as_array().into_iter().flatten() {
                add(&mut r.secrets, &e["valueFrom"]["secretKeyRef"]["name"]);
                add(
                    &mut r.configmaps,
                    &e["valueFrom"]["configMapKeyRef"]["name"],
                );
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(&mut r.secrets, &e["secretRef"]["name"]);
                add(&mut r.configmaps, &e["configMapRef"]["name"]);
            }
        }
        for v in spec["volumes"].as_array().into_iter().flatten() {
            add(&mut r.secrets, &v["secret"]["secretName"]);
            add(&mut r.configmaps, &v["configMap"]["name"]);
            for src in v["projected"]["sources"].as_array().into_iter().flatten() {
                add(&mut r.secrets, &src["secret"]["name"]);
                add(&mut r.configmaps, &src["configMap"]["name"]);
            }
            add(&mut r.pvcs, &v["persistentVolumeClaim"]["claimName"]);
            if v["ephemeral"].is_object() {
                if let Some(vol) = v["name"].as_str() {
                    r.pvcs.insert(format!("{name}-{vol}"));
                }
            }
            // Volume plugins that take credentials from a Secret.
            add(&mut r.secrets, &v["azureFile"]["secretName"]);
            for plugin in [
                "cephfs",
                "flexVolume",
                "iscsi",
                "rbd",
                "scaleIO",
                "storageos",
            ] {
                add(&mut r.secrets, &v[plugin]["secretRef"]["name"]);
            }
            add(&mut r.secrets, &v["csi"]["nodePublishSecretRef"]["name"]);
        }
        for c in pod["status"]["resourceClaimStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            add(&mut r.claims, &c["resourceClaimName"]);
        }
        Some(r)
    }
}

/// The secrets a PersistentVolume's source names (namespace, name), for nodes mounting it.
fn pv_secrets(pv: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(spec) = pv["spec"].as_object() else {
        return out;
    };
    for (_, source) in spec {
        for (k, r) in source.as_object().into_iter().flatten() {
            if !k.ends_with("SecretRef") && k != "secretRef" {
                continue;
            }
            if let (Some(ns), Some(n)) = (r["namespace"].as_str(), r["name"].as_str()) {
                out.push((ns.to_string(), n.to_string()));
            }
        }
    }
    out
}

/// The node ↔ object graph.
#[derive(Default)]
struct Graph {
    /// Pod key → what it references.
    pods: HashMap<String, PodRefs>,
    /// Node → keys of pods bound to it.
    by_node: HashMap<String, HashSet<String>>,
    /// (namespace, PVC name) → bound PV name.
    pvcs: HashMap<(String, String), String>,
    /// PVC key → (namespace, name), to forget deleted ones.
    pvc_keys: HashMap<String, (String, String)>,
    /// PV name → secrets it names.
    pvs: HashMap<String, Vec<(String, String)>>,
}

/// Kinds of objects whose readability depends on the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Secret,
    ConfigMap,
    Pvc,
    Pv,
    ServiceAccount,
    ResourceClaim,
}

impl Graph {
    fn apply(&mut self, plural: &str, key: &str, obj: Option<&Value>) {
        match plural {
            "pods" => {
                if let Some(old) = self.pods.remove(key) {
                    if let Some(set) = self.by_node.get_mut(&old.node) {
                        set.remove(key);
                        if set.is_empty() {
                            self.by_node.remove(&old.node);
                        }
                    }
                }
                if let Some(refs) = obj.and_then(PodRefs::from_pod) {
                    self.by_node
                        .entry(refs.node.clone())
                        .or_default()
                        .insert(key.to_string());
                    self.pods.insert(key.to_string(), refs);
                }
            }
            "persistentvolumeclaims" => {
                if let Some(id) = self.pvc_keys.remove(key) {
                    self.pvcs.remove(&id);
                }
                if let Some(o) = obj {
                    let id = (
                        o["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    );
                    let pv = o["spec"]["volumeName"].as_str().unwrap_or("").to_string();
                    self.pvc_keys.insert(key.to_string(), id.clone());
                    self.pvcs.insert(id, pv);
                }
            }
            _ => {
                let name = key.rsplit('/').next().unwrap_or("").to_string();
                match obj {
                    Some(o) => drop(self.pvs.insert(name, pv_secrets(o))),
                    None => drop(self.pvs.remove(&name)),
                }
            }
        }
    }

    fn clear(&mut self, plural: &str) {
        match plural {
            "pods" => {
                self.pods.clear();
                self.by_node.clear();
            }
            "persistentvolumeclaims" => {
                self.pvcs.clear();
                self.pvc_keys.clear();
            }
            _ => self.pvs.clear(),
        }
    }

    /// Whether a pod bound to `node` uses the object (`namespace` is empty for PVs).
    fn related(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        let Some(keys) = self.by_node.get(node) else {
            return false;
        };
        let pods = keys.iter().filter_map(|k| self.pods.get(k));
        let mut pods =
            pods.filter(|p| matches!(kind, Kind::Pv | Kind::Secret) || p.namespace == namespace);
        pods.any(|p| match kind {
            Kind::Secret => {
                (p.namespace == namespace && p.secrets.contains(name))
                    || p.pvcs.iter().any(|c| {
                        self.pvcs
                            .get(&(p.namespace.clone(), c.clone()))
                            .and_then(|pv| self.pvs.get(pv))
                            .is_some_and(|s| s.iter().any(|(ns, n)| ns == namespace && n == name))
                    })
            }
            Kind::ConfigMap => p.configmaps.contains(name),
            Kind::Pvc => p.pvcs.contains(name),
            Kind::ServiceAccount => p.service_account == name,
            Kind::ResourceClaim => p.claims.contains(name),
            Kind::Pv => p.pvcs.iter().any(|c| {
                self.pvcs
                    .get(&(p.namespace.clone(), c.clone()))
                    .is_some_and(|pv| pv == name)
            }),
        })
    }
}

/// The resources the graph follows, as (group, version, plural).
const WATCHED: &[(&str, &str, &str)] = &[
    ("", "v1", "pods"),
    ("", "v1", "persistentvolumeclaims"),
    ("", "v1", "persistentvolumes"),
];

/// What the authorizer decided, as upstream's `Decision` without `Deny`: on "no opinion" the
/// next authorizer is asked, and the reason is kept for the Forbidden message.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    NoOpinion(String),
}

/// The Node authorizer, in front of `next` (RBAC).
pub struct NodeAuthorizer {
    graph: RwLock<Graph>,
    rules: Vec<Rule>,
    next: Arc<dyn Authorizer>,
}

impl NodeAuthorizer {
    /// Loads pods, PVCs and PVs, keeps following them until the process ends, and authorizes
    /// nodes before handing everyone else (and what it has no opinion on) to `next`.
    ///
    /// # Errors
    /// The initial load failed.
    pub async fn start(
        storage: Storage,
        registry: &Registry,
        next: Arc<dyn Authorizer>,
    ) -> crate::Result<Arc<NodeAuthorizer>> {
        let authz = Arc::new(NodeAuthorizer::new(next));
        let defs = WATCHED
            .iter()
            .map(|(group, version, plural)| {
                registry
                    .get(group, version, plural)
                    .ok_or(crate::Error::NoSuchResource)
            })
            .collect::<crate::Result<Vec<_>>>()?;
        crate::mirror::start(&authz, &storage, defs).await?;
        Ok(authz)
    }

    fn new(next: Arc<dyn Authorizer>) -> NodeAuthorizer {
        NodeAuthorizer {
            graph: RwLock::new(Graph::default()),
            rules: node_rules(),
            next,
        }
    }

    fn decide(&self, node: &str, r: &ResourceRequest) -> Decision {
        let kind = match (r.group.as_str(), r.resource.as_str()) {
            ("", "secrets") => Some(Kind::Secret),
            ("", "configmaps") => Some(Kind::ConfigMap),
            ("", "persistentvolumeclaims") => Some(Kind::Pvc),
            ("", "persistentvolumes") => Some(Kind::Pv),
            ("resource.k8s.io", "resourceclaims") => Some(Kind::ResourceClaim),
            ("", "serviceaccounts") => Some(Kind::ServiceAccount),
            ("coordination.k8s.io", "leases") => return lease(node, r),
            _ => None,
        };
        let Some(kind) = kind else {
            return if self
                .rules
                .iter()
                .any(|rule| rule.allows(&RequestInfo::Resource(r.clone())))
            {
                Decision::Allow
            } else {
                Decision::NoOpinion(String::new())
            };
        };
        let no = |s: &str| Decision::NoOpinion(s.to_string());
        match kind {
            Kind::Secret | Kind::ConfigMap => {
                if !matches!(r.verb, "get" | "list" | "watch") || r.subresource.is_some() {
                    return no("can only read resources of this type");
                }
            }
            Kind::ServiceAccount => {
                if r.verb != "create" || r.subresource.as_deref() != Some("token") {
                    return no("can only create tokens for individual service accounts");
                }
            }
            _ => {
                if r.verb != "get" || r.subresource.is_some() {
                    return no("can only get individual resources of this type");
                }
            }
        }
        let Some(name) = r.name.as_deref() else {
            return no("can only read individual resources of this type");
        };
        let namespace = r.namespace.as_deref().unwrap_or("");
        if namespace.is_empty() && kind != Kind::Pv {
            return no("can only read namespaced object of this type");
        }
        let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
        if graph.related(node, kind, namespace, name) {
            Decision::Allow
        } else {
            Decision::NoOpinion(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }
}

/// Upstream's `authorizeLease`: a node's own Lease in `kube-node-lease`, nothing else.
fn lease(node: &str, r: &ResourceRequest) -> Decision {
    if !matches!(r.verb, "get" | "create" | "update" | "patch" | "delete") {
        return Decision::NoOpinion(
            "can only get, create, update, patch, or delete a node lease".into(),
        );
    }
    if r.namespace.as_deref() != Some(NODE_LEASE_NAMESPACE) {
        return Decision::NoOpinion(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE} namespace"
        ));
    }
    // A create names its Lease in the body: NodeRestriction admission checks that one.
    if r.verb != "create" && r.name.as_deref() != Some(node) {
        return Decision::NoOpinion(
            "can only access node lease with the same name as the requesting node".into(),
        );
    }
    Decision::Allow
}

/// Upstream's `system:node` rules (bootstrappolicy `NodeRules`) for what the graph does not
/// decide; per-object limits on these are NodeRestriction admission's.
fn node_rules() -> Vec<Rule> {
    let rules = json!([
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"],
         "resources": ["localsubjectaccessreviews", "subjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["services", "endpoints"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["create", "get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch", "update"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["delete", "patch", "update"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]},
        {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
         "verbs": ["create", "get", "list", "watch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["csidrivers", "csinodes", "storageclasses"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["volumeattachments"], "verbs": ["get"]},
        {"apiGroups": ["node.k8s.io"], "resources": ["runtimeclasses"], "verbs": ["get", "list", "watch"]},
    ]);
    rules
        .as_array()
        .into_iter()
        .flatten()
        .map(Rule::from_json)
        .collect()
}

impl crate::mirror::Mirror for NodeAuthorizer {
    const NAME: &'static str = "node graph";

    fn replace(&self, def: &ResourceDef, objects: Vec<(String, Value)>) {
        let mut graph = self.graph.write().unwrap_or_else(|e| e.into_inner());
        graph.clear(&def.plural);
        for (key, obj) in &objects {
            graph.apply(&def.plural, key, Some(obj));
        }
    }

    fn apply(&self, def: &ResourceDef, key: &str, object: Option<&Value>, deleted: bool) {
        if !deleted && object.is_none() {
            return;
        }
        let mut graph = self.graph.write().unwrap_or_else(|e| e.into_inner());
        graph.apply(&def.plural, key, object.filter(|_| !deleted));
    }
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, user: &UserInfo, info: &RequestInfo) -> Result<(), String> {
        let (Some(node), RequestInfo::Resource(r)) = (node_name(user), info) else {
            return self.next.authorize(user, info);
        };
        match self.decide(node, r) {
            Decision::Allow => Ok(()),
            Decision::NoOpinion(reason) => match self.next.authorize(user, info) {
                Ok(()) => Ok(()),
                Err(next) if next.is_empty() => Err(reason),
                Err(next) if reason.is_empty() => Err(next),
                Err(next) => Err(format!("{reason}, {next}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DenyAll;
    impl Authorizer for DenyAll {
        fn authorize(&self, _: &UserInfo, _: &RequestInfo) -> Result<(), String> {
            Err(String::new())
        }
    }

    fn node(n: &str) -> UserInfo {
        UserInfo::from_cert(format!("system:node:{n}"), vec![NODES_GROUP.into()])
    }

    fn req(
        verb: &'static str,
        group: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> RequestInfo {
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        RequestInfo::Resource(ResourceRequest {
            group: group.into(),
            version: "v1".into(),
            namespace: ns.map(String::from),
            resource: resource.into(),
            name: (!name.is_empty()).then(|| name.to_string()),
            subresource: sub,
            verb,
        })
    }

    fn authz() -> NodeAuthorizer {
        let a = NodeAuthorizer::new(Arc::new(DenyAll));
        {
            let mut g = a.graph.write().unwrap();
            g.apply(
                "pods",
                "/registry/pods/ns/p1",
                Some(&json!({"metadata": {"name": "p1", "namespace": "ns"},
                "spec": {"nodeName": "n1", "serviceAccountName": "sa1",
                  "containers": [{"envFrom": [{"configMapRef": {"name": "cm1"}}],
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}]}],
                  "volumes": [{"name": "v", "secret": {"secretName": "s1"}},
                              {"name": "data", "persistentVolumeClaim": {"claimName": "c1"}}]}})),
            );
            g.apply(
                "persistentvolumeclaims",
                "/registry/persistentvolumeclaims/ns/c1",
                Some(&json!({"metadata": {"name": "c1", "namespace": "ns"}, "spec": {"volumeName": "pv1"}})),
            );
            g.apply(
                "persistentvolumes",
                "/registry/persistentvolumes/pv1",
                Some(&json!({"metadata": {"name": "pv1"},
                "spec": {"csi": {"driver": "d", "nodePublishSecretRef": {"namespace": "other", "name": "csi-secret"}}}})),
            );
        }
        a
    }

    #[test]
    fn node_reads_only_what_its_pods_use() {
        let a = authz();
        let n1 = node("n1");
        for ok in [
            req("get", "", "secrets", Some("ns"), "s1"),
            req("watch", "", "secrets", Some("ns"), "env-secret"),
            req("get", "", "configmaps", Some("ns"), "cm1"),
            req("get", "", "persistentvolumeclaims", Some("ns"), "c1"),
            req("get", "", "persistentvolumes", None, "pv1"),
            req("get", "", "secrets", Some("other"), "csi-secret"),
            req("create", "", "serviceaccounts/token", Some("ns"), "sa1"),
        ] {
            assert_eq!(a.authorize(&n1, &ok), Ok(()), "{ok:?}");
        }
        let no_rel = Err("no relationship found between node 'n1' and this object".to_string());
        assert_eq!(
            a.authorize(&n1, &req("get", "", "secrets", Some("ns"), "s2")),
            no_rel
        );
        assert_eq!(
            a.authorize(&n1, &req("get", "", "secrets", Some("ns2"), "s1")),
            no_rel
        );
        assert_eq!(
            a.authorize(&node("n2"), &req("get", "", "secrets", Some("ns"), "s1")),
            Err("no relationship found between node 'n2' and this object".into())
        );
        assert!(a
            .authorize(&n1, &req("list", "", "secrets", Some("ns"), ""))
            .is_err());
        assert!(a
            .authorize(&n1, &req("update", "", "secrets", Some("ns"), "s1"))
            .is_err());
        // The pod goes away: so does the access.
        a.graph
            .write()
            .unwrap()
            .apply("pods", "/registry/pods/ns/p1", None);
        assert_eq!(
            a.authorize(&n1, &req("get", "", "secrets", Some("ns"), "s1")),
            no_rel
        );
    }

    #[test]
    fn node_rules_and_own_lease() {
        let a = authz();
        let n1 = node("n1");
        let lease = |verb, name| {
            req(
                verb,
                "coordination.k8s.io",
                "leases",
                Some(NODE_LEASE_NAMESPACE),
                name,
            )
        };
        assert_eq!(a.authorize(&n1, &lease("update", "n1")), Ok(()));
        assert_eq!(a.authorize(&n1, &lease("create", "")), Ok(()));
        assert!(a.authorize(&n1, &lease("get", "n2")).is_err());
        assert!(a
            .authorize(
                &n1,
                &req(
                    "get",
                    "coordination.k8s.io",
                    "leases",
                    Some("default"),
                    "n1"
                )
            )
            .is_err());
        for ok in [
            req("list", "", "pods", None, ""),
            req("patch", "", "pods/status", Some("ns"), "p1"),
            req("get", "", "nodes", None, "n2"),
            req("patch", "", "nodes/status", None, "n1"),
            req("create", "", "events", Some("ns"), ""),
            req(
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests",
                None,
                "",
            ),
        ] {
            assert_eq!(a.authorize(&n1, &ok), Ok(()), "{ok:?}");
        }
        assert!(a
            .authorize(&n1, &req("delete", "", "services", Some("ns"), "x"))
            .is_err());
        // Not a node (no group): straight to RBAC.
        let fake = UserInfo::from_cert("system:node:n1".into(), vec![]);
        assert!(a
            .authorize(&fake, &req("list", "", "pods", None, ""))
            .is_err());
    }
}

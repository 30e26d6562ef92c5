//! Authorization: RBAC as upstream evaluates it, over an in-memory copy of every Role,
//! ClusterRole and binding that datastore watches keep current — a request never reads the
//! datastore to be authorized. `system:masters` is allowed everything, as upstream's superuser
//! shortcut. Aggregated ClusterRoles (admin/edit/view) get their rules from the roles their
//! selectors match, computed here at evaluation time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use distro_apimachinery::labels::Selector;
use serde_json::Value;

use crate::authn::UserInfo;
use crate::handler::Authorizer;
use crate::request::RequestInfo;
use crate::resources::{Registry, ResourceDef};
use crate::rest::Storage;

/// One RBAC rule, kept as upstream's PolicyRule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    /// The rule as SelfSubjectRulesReview lists it: `("resource", ResourceRule)` or
    /// `("nonResource", NonResourceRule)`.
    pub fn to_review(&self) -> (&'static str, Value) {
        if !self.non_resource_urls.is_empty() {
            return (
                "nonResource",
                serde_json::json!({"verbs": self.verbs, "nonResourceURLs": self.non_resource_urls}),
            );
        }
        let mut v = serde_json::json!({"verbs": self.verbs});
        for (k, list) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
        ] {
            if !list.is_empty() {
                v[k] = serde_json::json!(list);
            }
        }
        ("resource", v)
    }

    pub(crate) fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// Upstream's `RuleAllows`.
    pub fn allows(&self, info: &RequestInfo) -> bool {
        match info {
            RequestInfo::Resource(r) => {
                let verb_ok = self.verbs.iter().any(|v| v == "*" || v == r.verb);
                let group_ok = self.api_groups.iter().any(|g| g == "*" || *g == r.group);
                let combined = match &r.subresource {
                    Some(s) => format!("{}/{}", r.resource, s),
                    None => r.resource.clone(),
                };
                let resource_ok = self.resources.iter().any(|res| {
                    res == "*"
                        || *res == combined
                        || r.subresource
                            .as_ref()
                            .is_some_and(|s| *res == format!("*/{s}"))
                });
                let name_ok = self.resource_names.is_empty()
                    || r.name
                        .as_ref()
                        .is_some_and(|n| self.resource_names.contains(n));
                verb_ok && group_ok && resource_ok && name_ok
            }
            RequestInfo::NonResource { verb, path } => {
                let verb_ok = self.verbs.iter().any(|v| v == "*" || v == verb);
                let url_ok = self.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || u == path
                        || u.strip_suffix('*')
                            .is_some_and(|prefix| path.starts_with(prefix))
                });
                verb_ok && url_ok
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Role {
    rules: Vec<Rule>,
    labels: serde_json::Map<String, Value>,
    aggregation: Vec<Selector>,
}

#[derive(Clone, Debug)]
struct Binding {
    namespace: Option<String>,
    role_kind: String,
    role_name: String,
    subjects: Vec<Value>,
}

impl Binding {
    fn matches(&self, user: &UserInfo) -> bool {
        self.subjects.iter().any(|s| match s["kind"].as_str() {
            Some("User") => s["name"].as_str() == Some(user.name.as_str()),
            Some("Group") => s["name"]
                .as_str()
                .is_some_and(|g| user.groups.iter().any(|ug| ug == g)),
            Some("ServiceAccount") => {
                let ns = s["namespace"]
                    .as_str()
                    .or(self.namespace.as_deref())
                    .unwrap_or("");
                let name = s["name"].as_str().unwrap_or("");
                user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        })
    }
}

#[derive(Default)]
struct State {
    cluster_roles: HashMap<String, Role>,
    roles: HashMap<(String, String), Role>,
    cluster_bindings: HashMap<String, Binding>,
    bindings: HashMap<(String, String), Binding>,
}

impl State {
    fn cluster_role_rules(&self, name: &str) -> Vec<Rule> {
        let Some(role) = self.cluster_roles.get(name) else {
            return Vec::new();
        };
        let mut rules = role.rules.clone();
        if !role.aggregation.is_empty() {
            for (other_name, other) in &self.cluster_roles {
                if other_name != name && role.aggregation.iter().any(|s| s.matches(&other.labels)) {
                    rules.extend(other.rules.iter().cloned());
                }
            }
        }
        rules
    }

    fn binding_rules(&self, b: &Binding) -> Vec<Rule> {
        match (b.role_kind.as_str(), &b.namespace) {
            ("ClusterRole", _) => self.cluster_role_rules(&b.role_name),
            ("Role", Some(ns)) => self
                .roles
                .get(&(ns.clone(), b.role_name.clone()))
                .map(|r| r.rules.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide rules included).
    fn rules_for(&self, user: &UserInfo, namespace: Option<&str>) -> Vec<Rule> {
        let mut out = Vec::new();
        for b in self.cluster_bindings.values().filter(|b| b.matches(user)) {
            out.extend(self.binding_rules(b));
        }
        if let Some(ns) = namespace {
            for ((bns, _), b) in &self.bindings {
                if bns == ns && b.matches(user) {
                    out.extend(self.binding_rules(b));
                }
            }
        }
        out
    }
}

/// The RBAC authorizer.
pub struct Rbac {
    state: RwLock<State>,
}

/// The four RBAC resources the cache follows, with how to apply their objects.
const WATCHED: &[&str] = &[
    "clusterroles",
    "roles",
    "clusterrolebindings",
    "rolebindings",
];

impl Rbac {
    /// Loads every role and binding and keeps following changes until the process ends.
    ///
    /// # Errors
    /// The initial load failed.
    pub async fn start(storage: Storage, registry: &Registry) -> crate::Result<Arc<Rbac>> {
        let rbac = Arc::new(Rbac {
            state: RwLock::new(State::default()),
        });
        let defs = WATCHED
            .iter()
            .map(|plural| {
                registry
                    .get("rbac.authorization.k8s.io", "v1", plural)
                    .ok_or(crate::Error::NoSuchResource)
            })
            .collect::<crate::Result<Vec<_>>>()?;
        crate::mirror::start(&rbac, &storage, defs).await?;
        Ok(rbac)
    }

    /// The rules that apply to `user` in `namespace`, for SelfSubjectRulesReview.
    pub fn rules_for(&self, user: &UserInfo, namespace: Option<&str>) -> Vec<Rule> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .rules_for(user, namespace)
    }
}

impl crate::mirror::Mirror for Rbac {
    const NAME: &'static str = "rbac";

    fn replace(&self, def: &ResourceDef, objects: Vec<(String, Value)>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        clear(&mut state, &def.plural);
        for (_, obj) in &objects {
            apply(&mut state, &def.plural, obj, false);
        }
    }

    fn apply(&self, def: &ResourceDef, _key: &str, object: Option<&Value>, deleted: bool) {
        if let Some(obj) = object {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            apply(&mut state, &def.plural, obj, deleted);
        }
    }
}

fn clear(state: &mut State, plural: &str) {
    match plural {
        "clusterroles" => state.cluster_roles.clear(),
        "roles" => state.roles.clear(),
        "clusterrolebindings" => state.cluster_bindings.clear(),
        _ => state.bindings.clear(),
    }
}

fn apply(state: &mut State, plural: &str, obj: &Value, deleted: bool) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let role = || Role {
        rules: obj["rules"]
            .as_array()
            .map(|a| a.iter().map(Rule::from_json).collect())
            .unwrap_or_default(),
        labels: obj["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        aggregation: obj["aggregationRule"]["clusterRoleSelectors"]
            .as_array()
            .map(|sels| {
                sels.iter()
                    .filter_map(|s| Selector::from_label_selector(s).ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let binding = |namespace: Option<String>| Binding {
        namespace,
        role_kind: obj["roleRef"]["kind"].as_str().unwrap_or("").to_string(),
        role_name: obj["roleRef"]["name"].as_str().unwrap_or("").to_string(),
        subjects: obj["subjects"].as_array().cloned().unwrap_or_default(),
    };
    match (plural, deleted) {
        ("clusterroles", true) => drop(state.cluster_roles.remove(&name)),
        ("clusterroles", false) => drop(state.cluster_roles.insert(name, role())),
        ("roles", true) => drop(state.roles.remove(&(ns, name))),
        ("roles", false) => drop(state.roles.insert((ns, name), role())),
        ("clusterrolebindings", true) => drop(state.cluster_bindings.remove(&name)),
        ("clusterrolebindings", false) => drop(state.cluster_bindings.insert(name, binding(None))),
        (_, true) => drop(state.bindings.remove(&(ns, name))),
        (_, false) => {
            let b = binding(Some(ns.clone()));
            state.bindings.insert((ns, name), b);
        }
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, user: &UserInfo, info: &RequestInfo) -> Result<(), String> {
        if user.is_master() {
            return Ok(());
        }
        let namespace = match info {
            RequestInfo::Resource(r) if r.resource != "namespaces" => r.namespace.as_deref(),
            _ => None,
        };
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        if state
            .rules_for(user, namespace)
            .iter()
            .any(|r| r.allows(info))
        {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ResourceRequest;
    use serde_json::json;

    fn req(
        verb: &'static str,
        group: &str,
        resource: &str,
        sub: Option<&str>,
        ns: Option<&str>,
    ) -> RequestInfo {
        RequestInfo::Resource(ResourceRequest {
            group: group.into(),
            version: "v1".into(),
            namespace: ns.map(String::from),
            resource: resource.into(),
            name: Some("x".into()),
            subresource: sub.map(String::from),
            verb,
        })
    }

    #[test]
    fn rules_match_like_upstream() {
        let r = Rule::from_json(
            &json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "*/status"]}),
        );
        assert!(r.allows(&req("get", "", "pods", None, Some("a"))));
        assert!(!r.allows(&req("get", "", "pods", Some("log"), Some("a"))));
        assert!(r.allows(&req("get", "", "services", Some("status"), Some("a"))));
        assert!(!r.allows(&req("list", "", "pods", None, Some("a"))));
        assert!(!r.allows(&req("get", "apps", "pods", None, Some("a"))));
        let n =
            Rule::from_json(&json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*", "/version"]}));
        assert!(n.allows(&RequestInfo::NonResource {
            verb: "get",
            path: "/apis/apps".into()
        }));
        assert!(n.allows(&RequestInfo::NonResource {
            verb: "get",
            path: "/version".into()
        }));
        assert!(!n.allows(&RequestInfo::NonResource {
            verb: "get",
            path: "/metrics".into()
        }));
    }

    #[test]
    fn bindings_and_aggregation() {
        let mut s = State::default();
        apply(
            &mut s,
            "clusterroles",
            &json!({"metadata": {"name": "view", "labels": {}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}}),
            false,
        );
        apply(
            &mut s,
            "clusterroles",
            &json!({"metadata": {"name": "pods-view", "labels": {"agg": "view"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            false,
        );
        apply(
            &mut s,
            "rolebindings",
            &json!({"metadata": {"name": "b", "namespace": "team"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot"}, {"kind": "Group", "name": "devs"}]}),
            false,
        );
        let bot = UserInfo::service_account("team", "bot", "");
        let rbac = Rbac {
            state: RwLock::new(s),
        };
        assert!(rbac
            .authorize(&bot, &req("get", "", "pods", None, Some("team")))
            .is_ok());
        assert!(rbac
            .authorize(&bot, &req("get", "", "pods", None, Some("other")))
            .is_err());
        let dev = UserInfo::from_cert("alice".into(), vec!["devs".into()]);
        assert!(rbac
            .authorize(&dev, &req("get", "", "pods", None, Some("team")))
            .is_ok());
        let other = UserInfo::from_cert("bob".into(), vec![]);
        assert!(rbac
            .authorize(&other, &req("get", "", "pods", None, Some("team")))
            .is_err());
    }
}

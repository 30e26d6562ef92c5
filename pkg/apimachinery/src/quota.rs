//! ResourceQuota arithmetic shared by the quota admission plugin and the resourcequota
//! controller: what an object uses of a namespace's quota (upstream's evaluators for pods,
//! services, persistent volume claims and object counts), and the check against `spec.hard`
//! with upstream's message.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::{Format, Quantity};

/// Resource names mapped to amounts, as a ResourceList.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The object-count name of a resource (`count/pods`, `count/deployments.apps`).
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Core resources quota also counts under their bare name (`pods: 10`).
const LEGACY_COUNTED: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

fn quantity(v: &Value) -> Option<Quantity> {
    Quantity::from_json(v).ok()
}

/// Adds `q` to `list[name]`.
pub fn add_to(list: &mut ResourceList, name: &str, q: &Quantity) {
    let sum = match list.get(name) {
        Some(cur) => cur.add(q),
        None => q.clone(),
    };
    list.insert(name.to_string(), sum);
}

/// A pod's effective requests and limits (upstream's `PodRequests`/`PodLimits`): the sum
/// over containers, at least the largest init container's, plus the pod overhead.
pub fn pod_resources(spec: &Value) -> (ResourceList, ResourceList) {
    let sum = |field: &str| {
        let mut total = ResourceList::new();
        for c in spec["containers"].as_array().into_iter().flatten() {
            for (name, v) in c["resources"][field].as_object().into_iter().flatten() {
                if let Some(q) = quantity(v) {
                    add_to(&mut total, name, &q);
                }
            }
        }
        for c in spec["initContainers"].as_array().into_iter().flatten() {
            for (name, v) in c["resources"][field].as_object().into_iter().flatten() {
                if let Some(q) = quantity(v) {
                    if total.get(name).is_none_or(|cur| q > *cur) {
                        total.insert(name.clone(), q);
                    }
                }
            }
        }
        for (name, v) in spec["overhead"].as_object().into_iter().flatten() {
            if let Some(q) = quantity(v) {
                add_to(&mut total, name, &q);
            }
        }
        total
    };
    (sum("requests"), sum("limits"))
}

/// Whether a pod still counts against quota: terminal pods (Succeeded, Failed) do not.
fn pod_counts(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// What one object uses of a namespace's quota. `obj` may be `Null` when the stored object
/// cannot be read (an encrypted Secret): it then counts as one object.
pub fn usage_of(group: &str, plural: &str, obj: &Value) -> ResourceList {
    let one = Quantity::from_units(1, Format::DecimalSI);
    let mut usage = ResourceList::new();
    if plural == "pods" && group.is_empty() && !obj.is_null() && !pod_counts(obj) {
        return usage;
    }
    usage.insert(count_name(group, plural), one.clone());
    if group.is_empty() && LEGACY_COUNTED.contains(&plural) {
        usage.insert(plural.to_string(), one.clone());
    }
    match (group, plural) {
        ("", "pods") => {
            let (requests, limits) = pod_resources(&obj["spec"]);
            for (name, q) in &requests {
                usage.insert(format!("requests.{name}"), q.clone());
                if name == "cpu" || name == "memory" || name == "ephemeral-storage" {
                    usage.insert(name.clone(), q.clone());
                }
            }
            for (name, q) in &limits {
                usage.insert(format!("limits.{name}"), q.clone());
            }
        }
        ("", "services") => {
            let type_ = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if type_ == "LoadBalancer" {
                usage.insert("services.loadbalancers".into(), one.clone());
            }
            if type_ == "NodePort" || type_ == "LoadBalancer" {
                let ports = obj["spec"]["ports"].as_array().map_or(0, |p| p.len()) as i64;
                usage.insert(
                    "services.nodeports".into(),
                    Quantity::from_units(ports, Format::DecimalSI),
                );
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(q) = quantity(&obj["spec"]["resources"]["requests"]["storage"]) {
                usage.insert("requests.storage".into(), q);
            }
        }
        _ => {}
    }
    usage
}

/// A quota's `spec.hard`, or `None` for quotas this implementation does not evaluate
/// (scoped ones).
pub fn hard_of(quota: &Value) -> Option<ResourceList> {
    let spec = &quota["spec"];
    let scoped = spec["scopes"].as_array().is_some_and(|s| !s.is_empty())
        || spec["scopeSelector"].is_object();
    if scoped {
        return None;
    }
    Some(
        spec["hard"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| quantity(v).map(|q| (k.clone(), q)))
            .collect(),
    )
}

/// `a=1,b=2`, sorted by name, as upstream's `prettyPrint`.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={}", v.canonical()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks one quota against `used + requested`; the error message is upstream's.
///
/// # Errors
/// The `exceeded quota: ...` text when a constrained resource would go over its hard limit.
pub fn check(
    name: &str,
    hard: &ResourceList,
    used: &ResourceList,
    requested: &ResourceList,
) -> std::result::Result<(), String> {
    let mut failed_requested = ResourceList::new();
    let mut failed_used = ResourceList::new();
    let mut failed_hard = ResourceList::new();
    for (resource, req) in requested {
        let Some(limit) = hard.get(resource) else {
            continue;
        };
        let zero = Quantity::from_units(0, req.format());
        let cur = used.get(resource).unwrap_or(&zero);
        if cur.add(req) > *limit {
            failed_requested.insert(resource.clone(), req.clone());
            failed_used.insert(resource.clone(), cur.clone());
            failed_hard.insert(resource.clone(), limit.clone());
        }
    }
    if failed_requested.is_empty() {
        return Ok(());
    }
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        pretty(&failed_requested),
        pretty(&failed_used),
        pretty(&failed_hard)
    ))
}

/// Resources a quota constrains that a pod must state for every container, as upstream
/// requires (`must specify ...`).
pub fn missing_pod_resources(hard: &ResourceList, pod: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    let containers: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for resource in hard.keys() {
        let (field, name) = match resource.as_str() {
            "cpu" | "memory" => ("requests", resource.as_str()),
            r => match r.split_once('.') {
                Some(("requests", n @ ("cpu" | "memory"))) => ("requests", n),
                Some(("limits", n @ ("cpu" | "memory"))) => ("limits", n),
                _ => continue,
            },
        };
        if containers
            .iter()
            .any(|c| c["resources"][field][name].is_null())
        {
            missing.push(resource.clone());
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::parse(v).unwrap()))
            .collect()
    }

    #[test]
    fn exceeded_message_is_upstreams() {
        let hard = list(&[("pods", "2"), ("requests.cpu", "1")]);
        let used = list(&[("pods", "2"), ("requests.cpu", "500m")]);
        let req = list(&[("pods", "1"), ("requests.cpu", "250m"), ("count/pods", "1")]);
        assert_eq!(
            check("q", &hard, &used, &req).unwrap_err(),
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let req = list(&[("pods", "1"), ("requests.cpu", "600m")]);
        let used = list(&[("pods", "1"), ("requests.cpu", "500m")]);
        assert_eq!(
            check("q", &hard, &used, &req).unwrap_err(),
            "exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"
        );
        assert!(check("q", &hard, &list(&[]), &req).is_ok());
    }

    #[test]
    fn pod_usage_sums_containers_and_init_max() {
        let pod = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m"}}},
                {"resources": {"requests": {"cpu": "150m"}}}
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "1"}}}]
        }});
        let u = usage_of("", "pods", &pod);
        assert_eq!(u["pods"].canonical(), "1");
        assert_eq!(u["count/pods"].canonical(), "1");
        assert_eq!(u["requests.cpu"].canonical(), "1");
        assert_eq!(u["cpu"].canonical(), "1");
        assert_eq!(u["requests.memory"].canonical(), "64Mi");
        assert_eq!(u["limits.cpu"].canonical(), "200m");
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(
            usage_of("", "pods", &done).is_empty(),
            "terminal pods are free"
        );
        let d = usage_of("apps", "deployments", &json!({}));
        assert_eq!(d.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
    }

    #[test]
    fn constrained_compute_resources_must_be_specified() {
        let hard = list(&[("limits.cpu", "2"), ("pods", "5")]);
        let pod = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(missing_pod_resources(&hard, &pod), ["limits.cpu"]);
    }
}

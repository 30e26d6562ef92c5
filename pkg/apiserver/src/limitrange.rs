//! Upstream's `LimitRanger` admission plugin for pods: containers without requests or limits
//! get the namespace LimitRanges' `defaultRequest` and `default`, then every container (type
//! `Container`) and the pod as a whole (type `Pod`) must respect `min`, `max` and
//! `maxLimitRequestRatio`; violations are refused with 403 and upstream's messages.
//!
//! It runs before the ResourceQuota plugin (as upstream orders them), so quota sees the
//! defaulted requests.

use std::sync::Arc;

use distro_apimachinery::quantity::Quantity;
use serde_json::{json, Value};

use distro_store::{prefix_end, Datastore, RangeRequest};

use crate::admission::Admission;
use crate::error::{Error, Result};
use crate::resources::ResourceDef;
use distro_apimachinery::quota::{pod_resources, ResourceList};

/// The admission plugin.
#[derive(Debug, Default, Clone)]
pub struct LimitRanger;

fn list_of(v: &Value) -> ResourceList {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Quantity::from_json(v).ok().map(|q| (k.clone(), q)))
        .collect()
}

/// One `spec.limits` item with upstream's API defaulting applied (for containers: `default`
/// falls back to `max`, `defaultRequest` to `default`, then to `min`).
#[derive(Debug, Clone, Default)]
pub struct Item {
    /// `Container` or `Pod` (other types do not concern pods).
    pub type_: String,
    /// `min`.
    pub min: ResourceList,
    /// `max`.
    pub max: ResourceList,
    /// `default` (limits).
    pub default: ResourceList,
    /// `defaultRequest`.
    pub default_request: ResourceList,
    /// `maxLimitRequestRatio`.
    pub ratio: ResourceList,
}

impl Item {
    /// Parses and defaults one item.
    pub fn from_json(v: &Value) -> Item {
        let mut item = Item {
            type_: v["type"].as_str().unwrap_or_default().to_string(),
            min: list_of(&v["min"]),
            max: list_of(&v["max"]),
            default: list_of(&v["default"]),
            default_request: list_of(&v["defaultRequest"]),
            ratio: list_of(&v["maxLimitRequestRatio"]),
        };
        if item.type_ == "Container" {
            for (k, q) in &item.max {
                item.default.entry(k.clone()).or_insert_with(|| q.clone());
            }
            for (k, q) in &item.default {
                item.default_request
                    .entry(k.clone())
                    .or_insert_with(|| q.clone());
            }
            for (k, q) in &item.min {
                item.default_request
                    .entry(k.clone())
                    .or_insert_with(|| q.clone());
            }
        }
        item
    }
}

/// Fills missing container requests and limits from the `Container` items (upstream's
/// `mergeContainerResources`; the first LimitRange naming a resource wins).
pub fn apply_defaults(pod: &mut Value, items: &[Item]) {
    for list in ["containers", "initContainers"] {
        let Some(containers) = pod["spec"][list].as_array_mut() else {
            continue;
        };
        for c in containers {
            for item in items.iter().filter(|i| i.type_ == "Container") {
                for (field, defaults) in [
                    ("limits", &item.default),
                    ("requests", &item.default_request),
                ] {
                    for (name, q) in defaults {
                        if c["resources"][field][name].is_null() {
                            if !c["resources"].is_object() {
                                c["resources"] = json!({});
                            }
                            if !c["resources"][field].is_object() {
                                c["resources"][field] = json!({});
                            }
                            c["resources"][field][name] = json!(q.canonical());
                        }
                    }
                }
            }
        }
    }
}

fn min_constraint(
    kind: &str,
    name: &str,
    min: &Quantity,
    req: Option<&Quantity>,
    lim: Option<&Quantity>,
) -> Option<String> {
    let Some(req) = req else {
        return Some(format!(
            "minimum {name} usage per {kind} is {}.  No request is specified",
            min.canonical()
        ));
    };
    if req < min {
        return Some(format!(
            "minimum {name} usage per {kind} is {}, but request is {}",
            min.canonical(),
            req.canonical()
        ));
    }
    if let Some(lim) = lim.filter(|l| *l < min) {
        return Some(format!(
            "minimum {name} usage per {kind} is {}, but limit is {}",
            min.canonical(),
            lim.canonical()
        ));
    }
    None
}

fn max_constraint(
    kind: &str,
    name: &str,
    max: &Quantity,
    req: Option<&Quantity>,
    lim: Option<&Quantity>,
) -> Option<String> {
    let Some(lim) = lim else {
        return Some(format!(
            "maximum {name} usage per {kind} is {}.  No limit is specified",
            max.canonical()
        ));
    };
    if lim > max {
        return Some(format!(
            "maximum {name} usage per {kind} is {}, but limit is {}",
            max.canonical(),
            lim.canonical()
        ));
    }
    if let Some(req) = req.filter(|r| *r > max) {
        return Some(format!(
            "maximum {name} usage per {kind} is {}, but request is {}",
            max.canonical(),
            req.canonical()
        ));
    }
    None
}

fn ratio_constraint(
    kind: &str,
    name: &str,
    ratio: &Quantity,
    req: Option<&Quantity>,
    lim: Option<&Quantity>,
) -> Option<String> {
    let Some(req) = req.filter(|r| !r.is_zero()) else {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {}, but no request is specified or request is 0",
            ratio.canonical()
        ));
    };
    let Some(lim) = lim.filter(|l| !l.is_zero()) else {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {}, but no limit is specified or limit is 0",
            ratio.canonical()
        ));
    };
    let observed = lim.nanos() as f64 / req.nanos() as f64;
    let allowed = ratio.nanos() as f64 / 1e9;
    (observed > allowed).then(|| {
        format!(
            "{name} max limit to request ratio per {kind} is {}, but provided ratio is {observed:.6}",
            ratio.canonical()
        )
    })
}

fn check_item(
    kind: &str,
    item: &Item,
    requests: &ResourceList,
    limits: &ResourceList,
    errs: &mut Vec<String>,
) {
    for (name, min) in &item.min {
        errs.extend(min_constraint(
            kind,
            name,
            min,
            requests.get(name),
            limits.get(name),
        ));
    }
    for (name, max) in &item.max {
        errs.extend(max_constraint(
            kind,
            name,
            max,
            requests.get(name),
            limits.get(name),
        ));
    }
    for (name, ratio) in &item.ratio {
        errs.extend(ratio_constraint(
            kind,
            name,
            ratio,
            requests.get(name),
            limits.get(name),
        ));
    }
}

/// The violations of a (defaulted) pod, in upstream's words.
pub fn violations(pod: &Value, items: &[Item]) -> Vec<String> {
    let mut errs = Vec::new();
    for item in items {
        match item.type_.as_str() {
            "Container" => {
                for list in ["containers", "initContainers"] {
                    for c in pod["spec"][list].as_array().into_iter().flatten() {
                        let requests = list_of(&c["resources"]["requests"]);
                        let limits = list_of(&c["resources"]["limits"]);
                        check_item("Container", item, &requests, &limits, &mut errs);
                    }
                }
            }
            "Pod" => {
                let (requests, limits) = pod_resources(&pod["spec"]);
                check_item("Pod", item, &requests, &limits, &mut errs);
            }
            _ => {}
        }
    }
    errs
}

async fn items(store: &Arc<dyn Datastore>, ns: &str) -> Result<Vec<Item>> {
    let prefix = format!("/registry/limitranges/{ns}/");
    let resp = store
        .range(RangeRequest {
            start: prefix.clone(),
            end: prefix_end(&prefix),
            ..Default::default()
        })
        .await?;
    Ok(resp
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .flat_map(|lr| {
            lr["spec"]["limits"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(Item::from_json)
                .collect::<Vec<_>>()
        })
        .collect())
}

#[async_trait::async_trait]
impl Admission for LimitRanger {
    async fn create(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        _dry_run: bool,
    ) -> Result<()> {
        if !(def.group.is_empty() && def.plural == "pods") {
            return Ok(());
        }
        let Some(ns) = obj["metadata"]["namespace"].as_str().map(String::from) else {
            return Ok(());
        };
        let items = items(store, &ns).await?;
        if items.is_empty() {
            return Ok(());
        }
        apply_defaults(obj, &items);
        let mut errs = violations(obj, &items);
        if errs.is_empty() {
            return Ok(());
        }
        let shown = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
            .or(obj["metadata"]["name"].as_str())
            .unwrap_or("Unknown")
            .to_string();
        // Upstream aggregates: one error as is, several in brackets.
        let msg = if errs.len() == 1 {
            errs.remove(0)
        } else {
            format!("[{}]", errs.join(", "))
        };
        Err(Error::Forbidden(format!(
            "pods \"{shown}\" is forbidden: {msg}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Item> {
        vec![Item::from_json(&json!({
            "type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1"},
            "min": {"cpu": "50m"},
            "maxLimitRequestRatio": {"cpu": "5"}
        }))]
    }

    #[test]
    fn defaults_fill_only_missing_values() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"cpu": "800m"}, "requests": {"cpu": "200m"}}}
        ]}});
        apply_defaults(&mut pod, &items());
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"]["cpu"], "500m");
        assert_eq!(a["requests"]["cpu"], "100m");
        assert_eq!(a["limits"]["memory"], "256Mi");
        assert_eq!(
            a["requests"]["memory"], "256Mi",
            "defaultRequest falls back to default"
        );
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"]["cpu"], "800m");
        assert_eq!(b["requests"]["cpu"], "200m");
        assert!(violations(&pod, &items()).is_empty());
    }

    #[test]
    fn violations_in_upstreams_words() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "1"}}}
        ]}});
        assert_eq!(
            violations(&pod, &items()),
            ["maximum cpu usage per Container is 1, but limit is 2"]
        );
        let pod = json!({"spec": {"containers": [
            {"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "100m"}}}
        ]}});
        assert_eq!(
            violations(&pod, &items()),
            ["cpu max limit to request ratio per Container is 5, but provided ratio is 10.000000"]
        );
        let pod = json!({"spec": {"containers": [
            {"resources": {"limits": {"cpu": "40m"}, "requests": {"cpu": "20m"}}}
        ]}});
        assert_eq!(
            violations(&pod, &items()),
            ["minimum cpu usage per Container is 50m, but request is 20m"]
        );
    }
}

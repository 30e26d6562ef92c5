//! Upstream's `Priority` admission plugin: a new pod's `priorityClassName` is resolved to
//! `spec.priority` and `spec.preemptionPolicy` from its PriorityClass; a pod without one gets
//! the global default class (the lowest-valued `globalDefault: true` class), if any. An unknown
//! class is refused with 403, in upstream's words.
//!
//! The built-in `system-cluster-critical` and `system-node-critical` classes resolve without a
//! lookup (the Pod strategy sets their values), as the bootstrap creates them anyway.

use std::sync::Arc;

use serde_json::{json, Value};

use distro_store::{prefix_end, Datastore, RangeRequest};

use crate::admission::Admission;
use crate::error::{Error, Result};
use crate::resources::ResourceDef;

/// Where PriorityClasses are stored.
const PREFIX: &str = "/registry/priorityclasses/";

/// The Priority admission step (pods only).
#[derive(Debug, Default)]
pub struct PriorityAdmission;

/// What a pod gets from its class.
#[derive(Debug, PartialEq)]
struct Resolved {
    class: String,
    value: i64,
    preemption_policy: String,
}

fn resolved(class: &Value) -> Resolved {
    Resolved {
        class: class["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .into(),
        value: class["value"].as_i64().unwrap_or(0),
        preemption_policy: class["preemptionPolicy"]
            .as_str()
            .unwrap_or("PreemptLowerPriority")
            .into(),
    }
}

/// The global default among `classes`: upstream takes the lowest value if several claim it.
fn global_default(classes: &[Value]) -> Option<Resolved> {
    classes
        .iter()
        .filter(|c| c["globalDefault"] == json!(true))
        .map(resolved)
        .min_by_key(|r| r.value)
}

impl PriorityAdmission {
    async fn lookup(store: &Arc<dyn Datastore>, name: &str) -> Result<Option<Value>> {
        let kv = store.get(&format!("{PREFIX}{name}")).await?;
        Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
    }

    async fn all(store: &Arc<dyn Datastore>) -> Result<Vec<Value>> {
        let r = store
            .range(RangeRequest {
                start: PREFIX.into(),
                end: prefix_end(PREFIX),
                limit: 0,
                revision: None,
            })
            .await?;
        Ok(r.kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }
}

fn is_pod(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "pods"
}

#[async_trait::async_trait]
impl Admission for PriorityAdmission {
    async fn create(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        _dry_run: bool,
    ) -> Result<()> {
        if !is_pod(def) {
            return Ok(());
        }
        let pod_name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let spec = &mut obj["spec"];
        let class = spec["priorityClassName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if matches!(
            class.as_str(),
            "system-cluster-critical" | "system-node-critical"
        ) {
            return Ok(());
        }
        let found = if class.is_empty() {
            global_default(&Self::all(store).await?)
        } else {
            match Self::lookup(store, &class).await? {
                Some(c) => Some(resolved(&c)),
                None => {
                    return Err(Error::Forbidden(format!(
                    "pods {pod_name:?} is forbidden: no PriorityClass with name {class} was found"
                )))
                }
            }
        };
        let Some(found) = found else { return Ok(()) };
        // The Pod strategy leaves `priority` unset for a named class; a value there came from
        // the user and must agree (upstream's check). For the global default, its 0 is ours.
        if !class.is_empty() {
            if let Some(given) = spec["priority"].as_i64().filter(|p| *p != found.value) {
                return Err(Error::Forbidden(format!(
                    "pods {pod_name:?} is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {} from the given PriorityClass name",
                    found.value
                )));
            }
        }
        spec["priorityClassName"] = json!(found.class);
        spec["priority"] = json!(found.value);
        spec["preemptionPolicy"] = json!(found.preemption_policy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_global_default_wins() {
        let classes = [
            json!({"metadata": {"name": "high"}, "value": 100, "globalDefault": true}),
            json!({"metadata": {"name": "low"}, "value": 5, "globalDefault": true,
                   "preemptionPolicy": "Never"}),
            json!({"metadata": {"name": "other"}, "value": 1}),
        ];
        assert_eq!(
            global_default(&classes),
            Some(Resolved {
                class: "low".into(),
                value: 5,
                preemption_policy: "Never".into()
            })
        );
        assert_eq!(global_default(&classes[2..]), None);
    }
}

//! Upstream's `DefaultTolerationSeconds` admission plugin: a new pod that does not say how long
//! it tolerates its node being not-ready or unreachable gets 300 s of each, so a lost node's
//! pods are evicted (and recreated elsewhere) after five minutes instead of never or at once.

use std::sync::Arc;

use serde_json::{json, Value};

use distro_store::Datastore;

use crate::admission::Admission;
use crate::error::Result;
use crate::resources::ResourceDef;

/// The taint keys that get a default toleration.
const TAINTS: &[&str] = &[
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// The plugin, with upstream's default of 300 seconds for both taints.
#[derive(Debug, Clone)]
pub struct DefaultTolerationSeconds {
    /// Seconds added for each taint.
    pub seconds: i64,
}

impl Default for DefaultTolerationSeconds {
    fn default() -> Self {
        DefaultTolerationSeconds { seconds: 300 }
    }
}

/// Whether a toleration already covers `key`'s NoExecute taint the way upstream checks it:
/// same key (or any key) and NoExecute (or any) effect.
fn covers(tol: &Value, key: &str) -> bool {
    let k = tol["key"].as_str().unwrap_or_default();
    let effect = tol["effect"].as_str().unwrap_or_default();
    (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
}

/// Adds the missing default tolerations to a pod object.
pub fn default_tolerations(pod: &mut Value, seconds: i64) {
    if !pod["spec"].is_object() {
        return;
    }
    let existing: Vec<Value> = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut added = existing.clone();
    for key in TAINTS {
        if !existing.iter().any(|t| covers(t, key)) {
            added.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": seconds,
            }));
        }
    }
    if added.len() != existing.len() {
        pod["spec"]["tolerations"] = Value::Array(added);
    }
}

fn is_pod(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "pods"
}

#[async_trait::async_trait]
impl Admission for DefaultTolerationSeconds {
    async fn create(
        &self,
        _store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        _dry_run: bool,
    ) -> Result<()> {
        if is_pod(def) {
            default_tolerations(obj, self.seconds);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_both_unless_covered() {
        let mut pod = json!({"spec": {"containers": []}});
        default_tolerations(&mut pod, 300);
        let tols = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols.len(), 2);
        assert_eq!(tols[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(tols[1]["tolerationSeconds"], 300);

        let mut own = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
        ]}});
        default_tolerations(&mut own, 300);
        let tols = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols.len(), 2);
        assert_eq!(tols[0]["tolerationSeconds"], 2, "the pod's own stays");
        assert_eq!(tols[1]["key"], "node.kubernetes.io/not-ready");

        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_tolerations(&mut all, 300);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);

        let mut no_schedule = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}
        ]}});
        default_tolerations(&mut no_schedule, 300);
        assert_eq!(
            no_schedule["spec"]["tolerations"].as_array().unwrap().len(),
            3
        );
    }
}

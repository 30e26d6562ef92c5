//! The image-pull part of upstream's `ServiceAccount` admission plugin: a new pod that names
//! no `imagePullSecrets` gets those of its service account, so the kubelet pulls with them
//! (and the Node authorizer lets the node read them, as they are now in the pod's spec).
//!
//! The Pod strategy already defaults `serviceAccountName` and mounts the token volume.
//!
//! # Limits
//! A pod whose service account does not exist is admitted unchanged; upstream refuses it
//! until the account exists.

use std::sync::Arc;

use serde_json::Value;

use distro_store::Datastore;

use crate::admission::Admission;
use crate::error::Result;
use crate::resources::ResourceDef;

/// Upstream's annotation of mirror pods (static pods), which this plugin leaves alone.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Copies a service account's `imagePullSecrets` into new pods that have none.
#[derive(Debug, Default)]
pub struct ServiceAccountPullSecrets;

#[async_trait::async_trait]
impl Admission for ServiceAccountPullSecrets {
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
        if !obj["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
            return Ok(());
        }
        let has_own = obj["spec"]["imagePullSecrets"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let sa = obj["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or_default();
        if has_own || ns.is_empty() || sa.is_empty() {
            return Ok(());
        }
        let key = format!("/registry/serviceaccounts/{ns}/{sa}");
        let Some(kv) = store.get(&key).await? else {
            return Ok(());
        };
        let account: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if let Some(secrets) = copied(&account) {
            obj["spec"]["imagePullSecrets"] = secrets;
        }
        Ok(())
    }
}

/// The account's non-empty `imagePullSecrets`, as the pod's list.
fn copied(account: &Value) -> Option<Value> {
    let list: Vec<Value> = account["imagePullSecrets"]
        .as_array()?
        .iter()
        .filter_map(|r| r["name"].as_str().filter(|n| !n.is_empty()))
        .map(|n| serde_json::json!({"name": n}))
        .collect();
    (!list.is_empty()).then(|| Value::Array(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn copies_named_secrets_only() {
        assert_eq!(
            copied(&json!({"imagePullSecrets": [{"name": "a"}, {"name": ""}, {}]})),
            Some(json!([{"name": "a"}]))
        );
        assert_eq!(copied(&json!({"imagePullSecrets": []})), None);
        assert_eq!(copied(&json!({})), None);
    }
}

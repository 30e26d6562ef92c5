//! Upstream's `ResourceQuota` admission plugin: a create that would take a namespace over a
//! ResourceQuota's `spec.hard` is refused with 403 and upstream's message
//! (`exceeded quota: <name>, requested: ..., used: ..., limited: ...`).
//!
//! Usage is counted from the datastore at admission time (the objects of the created kind in
//! the namespace), so a quota applies from the moment it exists, without waiting for the
//! resourcequota controller to fill `status.used`; that controller keeps the status current
//! for users.
//!
//! # Limits
//! - Concurrent creates in one namespace may both pass the last free unit (upstream
//!   serializes them through compare-and-swap writes of `status.used`).
//! - Quota scopes and scope selectors are not evaluated (such quotas are skipped).
//! - Only creates are checked (resizing a pod's requests in place is not possible anyway).

use std::sync::Arc;

use distro_apimachinery::quota::{
    add_to, check, hard_of, missing_pod_resources, usage_of, ResourceList,
};
use serde_json::Value;

use distro_store::{prefix_end, Datastore, RangeRequest};

use crate::admission::Admission;
use crate::error::{Error, Result};
use crate::resources::ResourceDef;

/// The admission plugin.
#[derive(Debug, Default, Clone)]
pub struct ResourceQuotaAdmission;

async fn list_values(store: &Arc<dyn Datastore>, prefix: &str) -> Result<Vec<Value>> {
    let resp = store
        .range(RangeRequest {
            start: prefix.to_string(),
            end: prefix_end(prefix),
            ..Default::default()
        })
        .await?;
    Ok(resp
        .kvs
        .iter()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap_or(Value::Null))
        .collect())
}

/// The namespace's quotas (name, hard), from the datastore.
async fn quotas(
    store: &Arc<dyn Datastore>,
    ns: &str,
) -> Result<Vec<(String, ResourceList, Value)>> {
    Ok(
        list_values(store, &format!("/registry/resourcequotas/{ns}/"))
            .await?
            .into_iter()
            .filter_map(|q| {
                let name = q["metadata"]["name"].as_str()?.to_string();
                let hard = hard_of(&q)?;
                Some((name, hard, q))
            })
            .collect(),
    )
}

#[async_trait::async_trait]
impl Admission for ResourceQuotaAdmission {
    async fn create(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        _dry_run: bool,
    ) -> Result<()> {
        if !def.namespaced {
            return Ok(());
        }
        let Some(ns) = obj["metadata"]["namespace"].as_str().map(String::from) else {
            return Ok(());
        };
        let requested = usage_of(&def.group, &def.plural, obj);
        let quotas = quotas(store, &ns).await?;
        if quotas.is_empty() {
            return Ok(());
        }
        // Name as upstream's admission errors show it: before name generation.
        let shown = obj["metadata"]["generateName"]
            .as_str()
            .filter(|g| !g.is_empty())
            .or(obj["metadata"]["name"].as_str())
            .unwrap_or("Unknown")
            .to_string();
        let forbidden = |msg: String| {
            Error::Forbidden(format!(
                "{} \"{shown}\" is forbidden: {msg}",
                def.group_resource()
            ))
        };
        let relevant = quotas
            .iter()
            .any(|(_, hard, _)| requested.keys().any(|k| hard.contains_key(k)));
        if !relevant {
            return Ok(());
        }
        if def.group.is_empty() && def.plural == "pods" {
            for (name, hard, _) in &quotas {
                let missing = missing_pod_resources(hard, obj);
                if !missing.is_empty() {
                    return Err(forbidden(format!(
                        "failed quota: {name}: must specify {}",
                        missing.join(",")
                    )));
                }
            }
        }
        let mut used = ResourceList::new();
        for existing in list_values(store, &def.namespace_prefix(Some(&ns))).await? {
            for (k, q) in usage_of(&def.group, &def.plural, &existing) {
                add_to(&mut used, &k, &q);
            }
        }
        for (name, hard, _) in &quotas {
            check(name, hard, &used, &requested).map_err(forbidden)?;
        }
        Ok(())
    }
}

//! In-memory indexes the apiserver keeps of a few resources it consults on every request
//! (RBAC roles and bindings, the Node authorizer's pod graph), kept current from datastore
//! watches so no request reads the store for them.

use std::sync::Arc;
use std::time::Duration;

use distro_store::{prefix_end, EventKind, RangeRequest};
use futures::StreamExt;
use serde_json::Value;

use crate::resources::ResourceDef;
use crate::rest::Storage;

/// An index built from the objects of some resources.
pub trait Mirror: Send + Sync + 'static {
    /// Names the index in logs.
    const NAME: &'static str;

    /// Replaces everything the index holds of `def` with `objects` (`(key, object)`), in one
    /// step so readers never see half a relist.
    fn replace(&self, def: &ResourceDef, objects: Vec<(String, Value)>);

    /// One change of `def`'s object at `key`: `object` is the new version, or the last one
    /// when `deleted` (`None` if it could not be decoded).
    fn apply(&self, def: &ResourceDef, key: &str, object: Option<&Value>, deleted: bool);
}

/// Loads every object of `defs` into `mirror`, then keeps following their changes until the
/// process ends (relisting after any break, with capped backoff).
///
/// # Errors
/// The initial load failed.
pub async fn start<M: Mirror>(
    mirror: &Arc<M>,
    storage: &Storage,
    defs: Vec<Arc<ResourceDef>>,
) -> crate::Result<()> {
    for def in defs {
        let prefix = def.key_prefix();
        let rev = load(&**mirror, storage, &def, &prefix).await?;
        let (m, s) = (mirror.clone(), storage.clone());
        tokio::spawn(async move { follow(m, s, def, prefix, rev).await });
    }
    Ok(())
}

async fn load<M: Mirror>(
    mirror: &M,
    storage: &Storage,
    def: &ResourceDef,
    prefix: &str,
) -> crate::Result<i64> {
    let resp = storage
        .range(RangeRequest {
            start: prefix.into(),
            end: prefix_end(prefix),
            limit: 0,
            revision: None,
        })
        .await?;
    let objects = resp
        .kvs
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), storage.decode(def, kv).ok()?)))
        .collect();
    mirror.replace(def, objects);
    Ok(resp.revision)
}

async fn follow<M: Mirror>(
    mirror: Arc<M>,
    storage: Storage,
    def: Arc<ResourceDef>,
    prefix: String,
    mut rev: i64,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match storage.datastore().watch(&prefix, rev).await {
            Ok(mut events) => {
                while let Some(ev) = events.next().await {
                    let Ok(ev) = ev else { break };
                    backoff = Duration::from_millis(100);
                    rev = ev.kv.mod_revision;
                    let object = storage.decode(&def, &ev.kv).ok();
                    let deleted = ev.kind == EventKind::Delete;
                    mirror.apply(&def, &ev.kv.key, object.as_ref(), deleted);
                }
            }
            Err(e) => tracing::debug!(index = M::NAME, error = %e, "watch failed; relisting"),
        }
        tokio::time::sleep(backoff + Duration::from_millis(rand::random::<u64>() % 100)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        match load(&*mirror, &storage, &def, &prefix).await {
            Ok(r) => rev = r,
            Err(e) => tracing::warn!(index = M::NAME, error = %e, "relist failed"),
        }
    }
}

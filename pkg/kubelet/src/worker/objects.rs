//! One watch per ConfigMap or Secret that a pod on this node references, as upstream's
//! kubelet does with its watch-based object managers.
//!
//! A node may not list Secrets or ConfigMaps (the Node authorizer allows it to read only
//! objects its pods use, one by one), so a cluster-wide informer is refused. Each referenced
//! object instead gets a watch with `fieldSelector=metadata.name=<name>` in its namespace,
//! started when a pod first needs it and stopped when no pod on the node refers to it.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// How long a pod's sync waits for the first answer of a new object watch before it goes on
/// (and reports the object as missing, retrying when the watch delivers it).
const FIRST_ANSWER: Duration = Duration::from_secs(2);

/// What a watch knows about its object.
#[derive(Clone, Debug)]
enum Slot<K> {
    /// No answer yet.
    Pending,
    /// The object does not exist (or was deleted).
    Missing,
    /// The latest version.
    Present(Arc<K>),
}

struct Entry<K> {
    slot: watch::Receiver<Slot<K>>,
    task: AbortHandle,
}

/// `(namespace, name)` of a watched object.
pub type Key = (String, String);

/// The watches of one kind, keyed by `(namespace, name)`.
pub struct ObjectWatches<K> {
    client: Client,
    entries: Mutex<HashMap<Key, Entry<K>>>,
    changed: mpsc::UnboundedSender<Key>,
}

impl<K> ObjectWatches<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    /// Watches of kind `K`; every change of a watched object is sent on `changed`, so the
    /// pods reading it are synced again.
    pub fn new(client: Client, changed: mpsc::UnboundedSender<Key>) -> Self {
        ObjectWatches {
            client,
            entries: Mutex::new(HashMap::new()),
            changed,
        }
    }

    /// The object as last seen, if it exists.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&(namespace.to_string(), name.to_string()))?;
        let slot = entry.slot.borrow();
        match &*slot {
            Slot::Present(obj) => Some(obj.clone()),
            Slot::Pending | Slot::Missing => None,
        }
    }

    /// Starts the watches of `keys` that are not running yet and waits (briefly) until each
    /// has answered once, so a new pod's first sync sees its objects.
    pub async fn ensure(&self, keys: impl IntoIterator<Item = Key>) {
        let mut waits = Vec::new();
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            for key in keys {
                let entry = entries
                    .entry(key.clone())
                    .or_insert_with(|| self.start(key));
                waits.push(entry.slot.clone());
            }
        }
        for mut slot in waits {
            let _ =
                tokio::time::timeout(FIRST_ANSWER, slot.wait_for(|s| !matches!(s, Slot::Pending)))
                    .await;
        }
    }

    /// Stops the watches of objects that are not in `wanted`.
    pub fn retain(&self, wanted: &BTreeSet<Key>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|key, entry| {
            let keep = wanted.contains(key);
            if !keep {
                entry.task.abort();
            }
            keep
        });
    }

    fn start(&self, key: Key) -> Entry<K> {
        let (tx, rx) = watch::channel(Slot::Pending);
        let api: Api<K> = Api::namespaced(self.client.clone(), &key.0);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", key.1));
        let changed = self.changed.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config).default_backoff());
            let mut listed: Option<Arc<K>> = None;
            while let Some(event) = events.next().await {
                let slot = match event {
                    Ok(watcher::Event::Init) => {
                        listed = None;
                        continue;
                    }
                    Ok(watcher::Event::InitApply(obj)) => {
                        listed = Some(Arc::new(obj));
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => match listed.take() {
                        Some(obj) => Slot::Present(obj),
                        None => Slot::Missing,
                    },
                    Ok(watcher::Event::Apply(obj)) => Slot::Present(Arc::new(obj)),
                    Ok(watcher::Event::Delete(_)) => Slot::Missing,
                    Err(e) => {
                        tracing::debug!(namespace = %key.0, name = %key.1, error = %e, "object watch failed; retrying");
                        continue;
                    }
                };
                tx.send_replace(slot);
                let _ = changed.send(key.clone());
            }
        });
        Entry {
            slot: rx,
            task: task.abort_handle(),
        }
    }
}

impl<K> Drop for ObjectWatches<K> {
    fn drop(&mut self) {
        let entries = self.entries.get_mut().unwrap_or_else(|e| e.into_inner());
        for entry in entries.values() {
            entry.task.abort();
        }
    }
}

/// The ConfigMaps and Secrets `pod` reads: its volumes, its containers' `env` and `envFrom`,
/// and its `imagePullSecrets`, as `(namespace, name)`.
pub fn pod_objects(pod: &Pod) -> (BTreeSet<Key>, BTreeSet<Key>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let volumes = crate::volume::referenced_sources(pod);
    let mut config_maps: BTreeSet<String> = volumes.config_maps.clone();
    let mut secrets: BTreeSet<String> = volumes.secrets.clone();
    if let Some(spec) = &pod.spec {
        let env = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .map(|c| (c.env.as_ref(), c.env_from.as_ref()))
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| (c.env.as_ref(), c.env_from.as_ref())),
            );
        for (vars, from) in env {
            for var in vars.into_iter().flatten() {
                let Some(source) = &var.value_from else {
                    continue;
                };
                if let Some(r) = &source.config_map_key_ref {
                    config_maps.insert(r.name.clone());
                }
                if let Some(r) = &source.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
            for source in from.into_iter().flatten() {
                if let Some(r) = &source.config_map_ref {
                    config_maps.insert(r.name.clone());
                }
                if let Some(r) = &source.secret_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for s in spec.image_pull_secrets.iter().flatten() {
            secrets.insert(s.name.clone());
        }
    }
    let keyed = |names: BTreeSet<String>| {
        names
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(|n| (ns.clone(), n))
            .collect()
    };
    (keyed(config_maps), keyed(secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_objects_cover_volumes_env_env_from_and_pull_secrets() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [{"name": "v", "configMap": {"name": "vol-cm"}}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-s"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "k"}}},
                    {"name": "C", "value": "plain"}
                ]}]
            }
        }))
        .unwrap();
        let (cms, secrets) = pod_objects(&pod);
        let k = |n: &str| ("ns".to_string(), n.to_string());
        assert_eq!(cms, BTreeSet::from([k("env-cm"), k("vol-cm")]));
        assert_eq!(
            secrets,
            BTreeSet::from([k("env-s"), k("init-s"), k("pull")])
        );
    }
}

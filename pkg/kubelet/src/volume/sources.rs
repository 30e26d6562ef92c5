//! The seam through which volumes learn about the cluster: the kubelet fills it from its
//! informer caches, tests and the simulated runtime from plain maps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Read access to the objects volumes are built from. Calls must not block on the network:
/// they read caches, so a missing object means "not (yet) seen".
pub trait VolumeSources: Send + Sync {
    /// A ConfigMap in `namespace`.
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>>;
    /// A Secret in `namespace`.
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>>;
    /// A PersistentVolumeClaim in `namespace`.
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<PersistentVolumeClaim>>;
    /// A PersistentVolume.
    fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    /// The node's `status.allocatable`: tmpfs sizes and downward API limit defaults.
    fn node_allocatable(&self) -> BTreeMap<String, Quantity>;
}

/// [`VolumeSources`] over plain maps keyed `namespace/name` (PVs by name).
#[derive(Debug, Default, Clone)]
pub struct StaticSources {
    /// ConfigMaps by `namespace/name`.
    pub config_maps: HashMap<String, Arc<ConfigMap>>,
    /// Secrets by `namespace/name`.
    pub secrets: HashMap<String, Arc<Secret>>,
    /// Claims by `namespace/name`.
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    /// Volumes by name.
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    /// The node's allocatable resources.
    pub allocatable: BTreeMap<String, Quantity>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl StaticSources {
    /// Adds or replaces a ConfigMap (namespace and name from its metadata).
    pub fn put_config_map(&mut self, cm: ConfigMap) {
        let k = key(
            cm.metadata.namespace.as_deref().unwrap_or_default(),
            cm.metadata.name.as_deref().unwrap_or_default(),
        );
        self.config_maps.insert(k, Arc::new(cm));
    }

    /// Adds or replaces a Secret (namespace and name from its metadata).
    pub fn put_secret(&mut self, s: Secret) {
        let k = key(
            s.metadata.namespace.as_deref().unwrap_or_default(),
            s.metadata.name.as_deref().unwrap_or_default(),
        );
        self.secrets.insert(k, Arc::new(s));
    }

    /// Adds or replaces a claim (namespace and name from its metadata).
    pub fn put_claim(&mut self, c: PersistentVolumeClaim) {
        let k = key(
            c.metadata.namespace.as_deref().unwrap_or_default(),
            c.metadata.name.as_deref().unwrap_or_default(),
        );
        self.claims.insert(k, Arc::new(c));
    }

    /// Adds or replaces a volume.
    pub fn put_volume(&mut self, v: PersistentVolume) {
        let k = v.metadata.name.clone().unwrap_or_default();
        self.volumes.insert(k, Arc::new(v));
    }
}

impl VolumeSources for StaticSources {
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps.get(&key(namespace, name)).cloned()
    }
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&key(namespace, name)).cloned()
    }
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&key(namespace, name)).cloned()
    }
    fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.get(name).cloned()
    }
    fn node_allocatable(&self) -> BTreeMap<String, Quantity> {
        self.allocatable.clone()
    }
}

/// The ConfigMaps and Secrets a pod's volumes read, so the kubelet knows which pods to
/// [`update`](super::VolumeManager::update) when one of them changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRefs {
    /// ConfigMap names (in the pod's namespace).
    pub config_maps: BTreeSet<String>,
    /// Secret names (in the pod's namespace).
    pub secrets: BTreeSet<String>,
    /// Whether a projected volume holds a service account token (refresh by time).
    pub service_account_token: bool,
    /// Whether a downwardAPI item reads labels or annotations (refresh on pod change).
    pub pod_metadata: bool,
}

/// What `pod`'s volumes depend on; see [`SourceRefs`].
pub fn referenced_sources(pod: &Pod) -> SourceRefs {
    let mut refs = SourceRefs::default();
    let mut downward = |items: Option<&Vec<k8s_openapi::api::core::v1::DownwardAPIVolumeFile>>| {
        for item in items.into_iter().flatten() {
            if let Some(f) = &item.field_ref {
                if f.field_path.starts_with("metadata.labels")
                    || f.field_path.starts_with("metadata.annotations")
                {
                    refs.pod_metadata = true;
                }
            }
        }
    };
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut token = false;
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(c) = &v.config_map {
            config_maps.insert(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        if let Some(d) = &v.downward_api {
            downward(d.items.as_ref());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &source.config_map {
                config_maps.insert(c.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.insert(s.name.clone());
            }
            if let Some(d) = &source.downward_api {
                downward(d.items.as_ref());
            }
            token |= source.service_account_token.is_some();
        }
    }
    refs.config_maps = config_maps;
    refs.secrets = secrets;
    refs.service_account_token = token;
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_source_a_pod_reads() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "volumes": [
                {"name": "a", "configMap": {"name": "cm1"}},
                {"name": "b", "secret": {"secretName": "s1"}},
                {"name": "c", "downwardAPI": {"items": [
                    {"path": "l", "fieldRef": {"fieldPath": "metadata.labels['x']"}}]}},
                {"name": "d", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"secret": {"name": "s2"}}]}},
                {"name": "e", "emptyDir": {}}
            ]}
        }))
        .unwrap();
        let refs = referenced_sources(&pod);
        assert_eq!(
            refs.config_maps.into_iter().collect::<Vec<_>>(),
            ["cm1", "kube-root-ca.crt"]
        );
        assert_eq!(refs.secrets.into_iter().collect::<Vec<_>>(), ["s1", "s2"]);
        assert!(refs.service_account_token);
        assert!(refs.pod_metadata);
        assert_eq!(referenced_sources(&Pod::default()), SourceRefs::default());
    }
}

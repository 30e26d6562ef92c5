//! The seam through which volumes learn about the cluster: the kubelet fills it from its
//! informer caches, tests and the simulated runtime from plain maps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret};
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

//! The kubelet's view of the cluster objects its pods read: ConfigMaps and Secrets through
//! one watch per referenced object ([`super::objects`]), Services from a shared informer
//! cache, and service account tokens through the TokenRequest API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use distro_client::Informers;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::PostParams;
use kube::runtime::reflector::Store;
use tokio::sync::mpsc;

use super::objects::{Key, ObjectWatches};
use kube::{Api, Client};

use crate::pod::env::ObjectLookup;
use crate::volume::token::{IssuedToken, TokenSource, TokenSourceError};
use crate::volume::{self, VolumeSources};

/// Read-only caches of the objects pods reference.
///
/// # Limits
/// PersistentVolumeClaims and PersistentVolumes are not cached (the node role may only `get`
/// them), so `persistentVolumeClaim` volumes report their claim as not found.
#[derive(Clone)]
pub struct Caches {
    /// The ConfigMaps pods on this node reference.
    pub config_maps: Arc<ObjectWatches<ConfigMap>>,
    /// The Secrets pods on this node reference.
    pub secrets: Arc<ObjectWatches<Secret>>,
    services: Store<Service>,
    allocatable: Arc<Mutex<BTreeMap<String, Quantity>>>,
}

impl Caches {
    /// Starts (or shares) the Service watch of `informers`; object watches start as pods
    /// need them, and their changes are sent on `config_map_changes` / `secret_changes`.
    pub fn new(
        client: Client,
        informers: &Informers,
        allocatable: BTreeMap<String, Quantity>,
        config_map_changes: mpsc::UnboundedSender<Key>,
        secret_changes: mpsc::UnboundedSender<Key>,
    ) -> Self {
        Caches {
            config_maps: Arc::new(ObjectWatches::new(client.clone(), config_map_changes)),
            secrets: Arc::new(ObjectWatches::new(client, secret_changes)),
            services: informers.get::<Service>().store(),
            allocatable: Arc::new(Mutex::new(allocatable)),
        }
    }

    /// Every Service the cache holds (for service-link environment variables).
    pub fn services(&self) -> Vec<Service> {
        self.services
            .state()
            .iter()
            .map(|s| (**s).clone())
            .collect()
    }

    /// The node's allocatable resources.
    pub fn allocatable(&self) -> BTreeMap<String, Quantity> {
        self.allocatable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl VolumeSources for Caches {
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps.get(namespace, name)
    }
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(namespace, name)
    }
    fn persistent_volume_claim(&self, _: &str, _: &str) -> Option<Arc<PersistentVolumeClaim>> {
        None
    }
    fn persistent_volume(&self, _: &str) -> Option<Arc<PersistentVolume>> {
        None
    }
    fn node_allocatable(&self) -> BTreeMap<String, Quantity> {
        self.allocatable()
    }
}

impl ObjectLookup for Caches {
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        VolumeSources::config_map(self, namespace, name).map(|c| (*c).clone())
    }
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        VolumeSources::secret(self, namespace, name).map(|s| (*s).clone())
    }
}

/// Service account tokens bound to the pod, from `serviceaccounts/<name>/token`.
pub struct ApiTokens {
    client: Client,
}

impl ApiTokens {
    /// Requests tokens with the node's client.
    pub fn new(client: Client) -> Self {
        ApiTokens { client }
    }
}

#[async_trait::async_trait]
impl TokenSource for ApiTokens {
    async fn request(
        &self,
        spec: &volume::TokenRequestSpec,
    ) -> Result<IssuedToken, TokenSourceError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &spec.namespace);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: spec.audiences.clone(),
                expiration_seconds: Some(spec.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(spec.pod_name.clone()),
                    uid: Some(spec.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let issued: TokenRequest = api
            .create_subresource("token", &spec.service_account, &PostParams::default(), &req)
            .await?;
        let status = issued
            .status
            .ok_or("the TokenRequest response has no status")?;
        let expiration = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                u64::try_from(status.expiration_timestamp.0.as_second()).unwrap_or_default(),
            );
        Ok(IssuedToken {
            token: status.token,
            expiration,
            expiration_seconds: issued
                .spec
                .expiration_seconds
                .unwrap_or(spec.expiration_seconds),
        })
    }
}

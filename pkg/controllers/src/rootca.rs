//! The root CA publisher: every active namespace has a `kube-root-ca.crt` ConfigMap holding
//! the cluster CA (`ca.crt`), so pods can verify the apiserver; recreated if deleted and
//! corrected if edited, as upstream's (`pkg/controller/certificates/rootcacertpublisher`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::{already_exists, namespace_closed, terminating, Backoff, Clients, Error};

/// The ConfigMap's name, as upstream.
pub const CONFIGMAP_NAME: &str = "kube-root-ca.crt";

/// Its data key.
pub const DATA_KEY: &str = "ca.crt";

/// The annotation upstream sets on it.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";

/// Upstream's wording, so users and tools see the same text as on any cluster.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: Client,
    configmaps: Store<ConfigMap>,
    ca_pem: String,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    clients: Clients,
    ca_pem: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespaces = clients.informers.get::<Namespace>();
    let configmaps = clients.informers.get::<ConfigMap>();
    let ctx = Arc::new(Ctx {
        client: clients.writer("root-ca-cert-publisher"),
        configmaps: configmaps.store(),
        ca_pem,
        backoff: Backoff::default(),
    });
    let results = Controller::for_shared_stream(namespaces.subscribe(), namespaces.store())
        .watches_shared_stream(configmaps.subscribe(), |cm: Arc<ConfigMap>| {
            (cm.name_any() == CONFIGMAP_NAME)
                .then(|| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)))
                .flatten()
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive("rootca", results).await;
}

/// What the ConfigMap should hold.
fn desired_data(ca_pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(DATA_KEY.to_string(), ca_pem.to_string())])
}

/// The existing ConfigMap corrected, or `None` if it is already right. As upstream, only
/// `data` and the description annotation are ours; other fields and annotations stay.
pub fn corrected(existing: &ConfigMap, ca_pem: &str) -> Option<ConfigMap> {
    let data = desired_data(ca_pem);
    let described = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| !d.is_empty());
    if existing.data.as_ref() == Some(&data) && described {
        return None;
    }
    let mut cm = existing.clone();
    cm.data = Some(data);
    cm.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Some(cm)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.name_any();
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let key = ObjectRef::<ConfigMap>::new(CONFIGMAP_NAME).within(&name);
    match ctx.configmaps.get(&key) {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIGMAP_NAME.into()),
                    namespace: Some(name.clone()),
                    annotations: Some(BTreeMap::from([(
                        DESCRIPTION_ANNOTATION.to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(desired_data(&ctx.ca_pem)),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => tracing::debug!(namespace = %name, "created ConfigMap {CONFIGMAP_NAME}"),
                Err(e) if already_exists(&e) || namespace_closed(&e) => {}
                Err(e) => {
                    return Err(Error::api(format!(
                        "creating ConfigMap {CONFIGMAP_NAME} in {name}"
                    ))(e))
                }
            }
        }
        Some(existing) => {
            if let Some(cm) = corrected(&existing, &ctx.ca_pem) {
                // Carries the cached resourceVersion: a conflict means the cache was behind,
                // and the retry sees the newer object.
                match api
                    .replace(CONFIGMAP_NAME, &PostParams::default(), &cm)
                    .await
                {
                    Ok(_) => {
                        tracing::debug!(namespace = %name, "corrected ConfigMap {CONFIGMAP_NAME}")
                    }
                    Err(e) if namespace_closed(&e) => {}
                    Err(e) => {
                        return Err(Error::api(format!(
                            "updating ConfigMap {CONFIGMAP_NAME} in {name}"
                        ))(e))
                    }
                }
            }
        }
    }
    ctx.backoff.succeeded(&name);
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    crate::requeue_with_backoff(&ctx.backoff, &ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correct_configmap_is_left_alone() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_string(),
                    "anything non-empty".to_string(),
                )])),
                ..Default::default()
            },
            data: Some(desired_data("PEM")),
            ..Default::default()
        };
        assert!(corrected(&cm, "PEM").is_none());
    }

    #[test]
    fn edited_data_and_missing_annotation_are_corrected_keeping_the_rest() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([("keep".to_string(), "me".to_string())])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("ca.crt".to_string(), "tampered".to_string()),
                ("extra".to_string(), "x".to_string()),
            ])),
            ..Default::default()
        };
        let fixed = corrected(&cm, "PEM").expect("needs correction");
        assert_eq!(fixed.data, Some(desired_data("PEM")));
        assert_eq!(
            fixed.metadata.annotations.unwrap()[DESCRIPTION_ANNOTATION],
            DESCRIPTION
        );
        assert_eq!(fixed.metadata.labels.unwrap()["keep"], "me");
    }
}

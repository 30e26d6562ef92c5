//! Helpers shared by the workload controllers: label selectors, owner references and core/v1
//! Events, each as upstream's `apimachinery`/`record` behave.

pub use distro_client::events::{EventType, Recorder};
use distro_client::labels::{self, Selector};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

/// A workload's `spec.selector` as the one label matcher ([`distro_client::labels`]), or
/// `None` when it is invalid: upstream's controllers then log it and act on nothing, which
/// callers do too (never adopting, releasing or counting pods by a selector they cannot read).
/// The apiserver refuses such selectors, so this guards against data it did not check.
pub fn workload_selector(selector: &LabelSelector, what: &str) -> Option<Selector> {
    match labels::selector(Some(selector)) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(object = what, error = %e, "invalid selector: nothing done");
            None
        }
    }
}

/// The owner reference flagged `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Makes `owner` the controller of orphan `pod` (upstream's `PodControllerRefManager.AdoptPod`):
/// a merge patch guarded by the pod's UID, so a namesake created meanwhile is never taken.
/// `None` if the pod changed or went meanwhile (404, 409, 422), which the next pass sees.
pub async fn adopt_pod(
    client: &Client,
    owner: OwnerReference,
    pod: &Pod,
) -> Result<Option<Pod>, crate::Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    let by = format!("{} {}", owner.kind, owner.name);
    refs.push(owner);
    let patch = serde_json::json!({"metadata": {"uid": pod.metadata.uid, "ownerReferences": refs}});
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => {
            tracing::debug!(owner = %by, pod = %format!("{ns}/{name}"), "adopted pod");
            Ok(Some(p))
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 || s.code == 422 => Ok(None),
        Err(e) => Err(crate::Error::api(format!("adopting pod {ns}/{name}"))(e)),
    }
}

/// The object of kind `K` that controls `meta`'s object, if any (its controller reference names
/// `K`'s kind in `K`'s API group).
pub fn controller_of<K>(meta: &ObjectMeta) -> Option<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()>,
{
    let r = controller_ref(meta)?;
    let group = K::group(&());
    let same_group = match r.api_version.split_once('/') {
        Some((g, _)) => g == group,
        None => group.is_empty(),
    };
    (r.kind == K::kind(&()) && same_group)
        .then(|| ObjectRef::new(&r.name).within(meta.namespace.as_deref().unwrap_or_default()))
}

/// The controllers of kind `K` a pod change concerns: its controller if it has one (a
/// controller of another kind means none of ours), else every `K` in its namespace that
/// `may_adopt` the orphan (one of them will).
pub fn owners_to_wake<K>(
    pod: &Pod,
    controllers: &Store<K>,
    may_adopt: impl Fn(&K, &Pod) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    if controller_ref(&pod.metadata).is_some() {
        return controller_of::<K>(&pod.metadata).into_iter().collect();
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    controllers
        .state()
        .iter()
        .filter(|c| c.meta().namespace.as_deref() == Some(ns))
        .filter(|c| may_adopt(c, pod))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Deletes `pods` (of `owner`) concurrently, each guarded by its uid so a pod replaced
/// meanwhile is left alone, and records SuccessfulDelete / FailedDelete on the owner as
/// upstream's controllers do. A pod already gone or replaced is not a failure.
///
/// # Errors
/// The first failed delete; the others were still attempted.
pub async fn delete_pods(
    client: &Client,
    events: &Recorder,
    owner: &ObjectReference,
    pods: &[&Pod],
) -> Result<(), kube::Error> {
    let results = futures::future::join_all(pods.iter().map(|p| {
        let dp = DeleteParams {
            preconditions: p.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(
            client.clone(),
            p.metadata.namespace.as_deref().unwrap_or_default(),
        );
        async move { (name.clone(), api.delete(&name, &dp).await) }
    }))
    .await;
    let mut failure = None;
    for (name, r) in results {
        match r {
            Ok(_) => events.record(
                owner.clone(),
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                events.record(
                    owner.clone(),
                    EventType::Warning,
                    "FailedDelete",
                    format!("Error deleting: {}", api_message(&e)),
                );
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// A reference to `obj` for Events' `involvedObject` and CronJob's `status.active`: kube's
/// reference plus the resourceVersion, as upstream's recorder sets it.
pub fn object_ref<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        resource_version: obj.meta().resource_version.clone(),
        ..obj.object_ref(&())
    }
}

/// An API error as Events quote it: the apiserver's own message for a Status, else the
/// error itself (as upstream's controllers put `err.Error()` in their Events).
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

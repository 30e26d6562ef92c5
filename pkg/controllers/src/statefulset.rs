//! The StatefulSet controller, as upstream's (`pkg/controller/statefulset`): pods with stable
//! names `<set>-<ordinal>`, hostnames and subdomains, each with its own PersistentVolumeClaims
//! `<template>-<set>-<ordinal>` made from `volumeClaimTemplates`.
//!
//! Each pass snapshots the template as a ControllerRevision ([`crate::history`]), then plans
//! one step list from the cache ([`plan`], pure): create missing ordinals lowest first,
//! replace failed pods, delete condemned ordinals highest first, and roll pods at or above the
//! partition to the update revision highest first. With `OrderedReady` every step waits for
//! the pods before it to be Running and Ready (and available); `Parallel` takes every create
//! and delete at once. Names are deterministic, so a stale cache costs at most an
//! "already exists" or "not found" answer, never a second pod.
//!
//! Claims are kept when pods go (`Retain`); with `persistentVolumeClaimRetentionPolicy`
//! `Delete` they get owner references (the set for `whenDeleted`, the condemned pod for
//! `whenScaled`) and the garbage collector removes them, as upstream.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distro_client::labels::{self, Selector};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::history::{self, Ensured, Parent, POD_REVISION_LABEL};
use crate::objects::{
    adopt_pod, api_message, controller_of, controller_ref, object_ref, owners_to_wake,
    workload_selector, EventType, Recorder,
};
use crate::replicaset::is_available;
use crate::{Backoff, Clients, Error};

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "statefulset-controller";

/// The label with the pod's own name, so a Service can select exactly one member.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// The label with the pod's ordinal (upstream since 1.28).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// How soon a pass whose status write met a conflict runs again (the cache catches up).
const CONFLICT_REQUEUE: Duration = Duration::from_millis(200);

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let sets = clients.informers.get::<StatefulSet>();
    let pods = clients.informers.get::<Pod>();
    let revisions = clients.informers.get::<ControllerRevision>();
    let claims = clients.informers.get::<PersistentVolumeClaim>();
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        events: Recorder::new(clients.writer(COMPONENT).clone(), COMPONENT, None),
        pods: pods.store(),
        revisions: revisions.store(),
        claims: claims.store(),
        backoff: Backoff::default(),
    });
    let all = sets.store();
    let results = Controller::for_shared_stream(sets.subscribe(), sets.store())
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            owners_to_wake(&pod, &all, |set: &StatefulSet, pod| {
                let selector = set.spec.as_ref().map(|s| &s.selector);
                labels::selector(selector).is_ok_and(|sel| adoptable(set, &sel, pod))
            })
        })
        .watches_shared_stream(revisions.subscribe(), |r: Arc<ControllerRevision>| {
            controller_of::<StatefulSet>(&r.metadata)
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

/// Whether `set` may adopt orphan `pod`: the selector matches and the name is a member's
/// (upstream's `isMemberOf` with the `PodControllerRefManager`).
fn adoptable(set: &StatefulSet, selector: &Selector, pod: &Pod) -> bool {
    controller_ref(&pod.metadata).is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && set.metadata.deletion_timestamp.is_none()
        && ordinal(&set.name_any(), &pod.name_any()).is_some()
        && selector.matches(&pod.metadata.labels)
}

fn key(set: &StatefulSet) -> String {
    format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any())
}

fn error_policy(set: Arc<StatefulSet>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&set)))
}

/// The ordinal of a pod named `<set>-<ordinal>`, if the name has that shape.
pub fn ordinal(set_name: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok().filter(|o: &i32| *o >= 0)
}

/// `<template>-<set>-<ordinal>`: the claim a pod of ordinal `ord` mounts for template `tmpl`.
pub fn claim_name(tmpl: &str, set: &str, ord: i32) -> String {
    format!("{tmpl}-{set}-{ord}")
}

fn replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

fn start(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

fn parallel(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some("Parallel")
}

/// The partition of a RollingUpdate set; `None` for OnDelete.
fn partition(set: &StatefulSet) -> Option<i32> {
    let us = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    match us.and_then(|u| u.type_.as_deref()) {
        Some("OnDelete") => None,
        _ => Some(
            us.and_then(|u| u.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0)
                .max(0),
        ),
    }
}

fn min_ready(set: &StatefulSet) -> i64 {
    i64::from(
        set.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    )
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == Some("Running")
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Running, Ready for `minReadySeconds`, and not going away (upstream's `isHealthy` with
/// availability).
fn healthy(pod: &Pod, min_ready: i64, now: Timestamp) -> bool {
    running_and_ready(pod) && is_available(pod, min_ready, now) && !terminating(pod)
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_REVISION_LABEL))
        .map(String::as_str)
}

/// Which revision a new pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The current revision (ordinals below the partition).
    Current,
    /// The update revision.
    Update,
}

/// One step of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the pod of this ordinal (and its missing claims) at a revision.
    Create(i32, Which),
    /// Delete this pod (name, uid): failed, condemned by a scale-down, or out of date.
    Delete(String, String),
}

/// The steps of one pass over `pods` (the set's pods by ordinal), as upstream's
/// `updateStatefulSet`: replicas lowest first, condemned highest first, then the rolling
/// update highest first. `OrderedReady` returns at the first step or unhealthy pod.
pub fn plan(
    set: &StatefulSet,
    pods: &BTreeMap<i32, &Pod>,
    update_revision: &str,
    now: Timestamp,
) -> Vec<Step> {
    let monotonic = !parallel(set);
    let (first, end) = (start(set), start(set) + replicas(set));
    let min_ready = min_ready(set);
    let partition = partition(set);
    let mut steps = Vec::new();
    for ord in first..end {
        let Some(pod) = pods.get(&ord) else {
            // Ordinals below the partition keep the current revision until it is moved.
            let which = match partition {
                Some(p) if ord - first < p => Which::Current,
                _ => Which::Update,
            };
            steps.push(Step::Create(ord, which));
            if monotonic {
                return steps;
            }
            continue;
        };
        if phase(pod) == Some("Failed") && !terminating(pod) {
            steps.push(Step::Delete(pod.name_any(), pod.uid().unwrap_or_default()));
            if monotonic {
                return steps;
            }
            continue;
        }
        if monotonic && !healthy(pod, min_ready, now) {
            return steps;
        }
    }
    let mut condemned: Vec<&Pod> = pods
        .iter()
        .filter(|(o, _)| **o < first || **o >= end)
        .map(|(_, p)| *p)
        .collect();
    condemned.reverse();
    for (i, pod) in condemned.iter().enumerate() {
        if terminating(pod) {
            if monotonic {
                return steps;
            }
            continue;
        }
        // Upstream waits for every other pod to be healthy before removing the next one, so a
        // scale-down never stacks on a broken pod.
        let others_unhealthy = pods
            .values()
            .filter(|p| p.metadata.name != pod.metadata.name)
            .filter(|p| {
                !condemned[..i]
                    .iter()
                    .any(|c| c.metadata.name == p.metadata.name)
            })
            .any(|p| !healthy(p, min_ready, now));
        if monotonic && others_unhealthy {
            return steps;
        }
        steps.push(Step::Delete(pod.name_any(), pod.uid().unwrap_or_default()));
        if monotonic {
            return steps;
        }
    }
    if !steps.is_empty() {
        return steps;
    }
    let Some(partition) = partition else {
        return steps;
    };
    for ord in (first + partition..end).rev() {
        let Some(pod) = pods.get(&ord) else { continue };
        if revision_of(pod) != Some(update_revision) && !terminating(pod) {
            steps.push(Step::Delete(pod.name_any(), pod.uid().unwrap_or_default()));
            return steps;
        }
        if !healthy(pod, min_ready, now) {
            return steps;
        }
    }
    steps
}

/// The status of a pass (upstream's `computeReplicaStatus` and `completeRollingUpdate`).
pub fn compute_status(
    set: &StatefulSet,
    pods: &[&Pod],
    current_revision: &str,
    update_revision: &str,
    collision_count: Option<i32>,
    now: Timestamp,
) -> StatefulSetStatus {
    let min_ready = min_ready(set);
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        current_revision: Some(current_revision.into()),
        update_revision: Some(update_revision.into()),
        collision_count,
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for pod in pods {
        st.replicas += 1;
        if running_and_ready(pod) {
            ready += 1;
            if is_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if !terminating(pod) {
            let rev = revision_of(pod);
            if rev == Some(current_revision) {
                current += 1;
            }
            if rev == Some(update_revision) {
                updated += 1;
            }
        }
    }
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    st.current_replicas = Some(current);
    st.updated_replicas = Some(updated);
    // A finished rolling update makes the update revision current.
    if partition(set).is_some() && updated == st.replicas && ready == st.replicas {
        st.current_replicas = Some(updated);
        st.current_revision = Some(update_revision.into());
    }
    st
}

fn owner_ref(set: &StatefulSet, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: set.name_any(),
        uid: set.uid().unwrap_or_default(),
        controller: controller.then_some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod of ordinal `ord` from `template` at revision `revision` (upstream's
/// `newVersionedStatefulSetPod`): stable name, hostname and subdomain, identity labels, and a
/// volume per claim template pointing at the ordinal's claim.
pub fn pod_for(set: &StatefulSet, template: &PodTemplateSpec, ord: i32, revision: &str) -> Pod {
    let set_name = set.name_any();
    let name = format!("{set_name}-{ord}");
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ord.to_string());
    labels.insert(POD_REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(service) = set
        .spec
        .as_ref()
        .map(|s| s.service_name.clone().unwrap_or_default())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service);
    }
    let templates = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    if !templates.is_empty() {
        let claimed: HashSet<String> = templates.iter().map(|t| t.name_any()).collect();
        let mut volumes: Vec<Volume> = templates
            .iter()
            .map(|t| Volume {
                name: t.name_any(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&t.name_any(), &set_name, ord),
                    read_only: None,
                }),
                ..Default::default()
            })
            .collect();
        volumes.extend(
            spec.volumes
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| !claimed.contains(&v.name)),
        );
        spec.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner_ref(set, true)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The claims of ordinal `ord` (upstream's `getPersistentVolumeClaims`): each template's
/// spec and labels plus the set's selector labels; owned by the set when
/// `whenDeleted: Delete`.
pub fn claims_for(set: &StatefulSet, ord: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    let delete_with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&t.name_any(), &set.name_any(), ord)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: delete_with_set.then(|| vec![owner_ref(set, false)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key(&set);
    let ns = set.namespace().unwrap_or_default();
    let Some(spec) = set.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let Some(selector) = workload_selector(&spec.selector, &key) else {
        return Ok(Action::await_change());
    };
    let uid = set.uid().unwrap_or_default();
    let set_name = set.name_any();
    let in_ns: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let mut owned: Vec<Arc<Pod>> = in_ns
        .iter()
        .filter(|p| controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
        .filter(|p| selector.matches(&p.metadata.labels))
        .cloned()
        .collect();
    for orphan in in_ns.iter().filter(|p| adoptable(&set, &selector, p)) {
        if let Some(adopted) = adopt_pod(&ctx.client, owner_ref(&set, true), orphan).await? {
            owned.push(Arc::new(adopted));
        }
    }
    let by_ordinal: BTreeMap<i32, &Pod> = owned
        .iter()
        .filter_map(|p| ordinal(&set_name, &p.name_any()).map(|o| (o, p.as_ref())))
        .collect();

    // Revisions: the template as the update revision; the current one from the status.
    let template = spec.template.clone();
    let parent = Parent {
        kind: "StatefulSet",
        name: set_name.clone(),
        namespace: ns.clone(),
        uid: uid.clone(),
        labels: template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        annotations: set.metadata.annotations.clone().unwrap_or_default(),
    };
    let revs = history::owned(&ctx.revisions, &parent);
    let mut collisions = set.status.as_ref().and_then(|s| s.collision_count);
    let update = match history::ensure(
        &ctx.client,
        &parent,
        &revs,
        history::template_patch(&template),
        collisions,
    )
    .await?
    {
        Ensured::Revision(r) => *r,
        Ensured::Collision => {
            collisions = Some(collisions.unwrap_or(0) + 1);
            let mut status = set.status.clone().unwrap_or_default();
            status.collision_count = collisions;
            update_status(&ctx, &set, status).await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
    };
    let update_name = update.name_any();
    let status_current = set.status.as_ref().and_then(|s| s.current_revision.clone());
    let current = revs
        .iter()
        .find(|r| Some(r.name_any()) == status_current)
        .cloned()
        .unwrap_or_else(|| update.clone());
    let current_name = current.name_any();
    let current_template = history::template_of(&current).unwrap_or_else(|| template.clone());

    let now = Timestamp::now();
    if set.metadata.deletion_timestamp.is_none() {
        for (ord, pod) in &by_ordinal {
            ensure_claims(&ctx, &set, *ord, pod).await?;
        }
        for step in plan(&set, &by_ordinal, &update_name, now) {
            match step {
                Step::Create(ord, which) => {
                    let (t, rev) = match which {
                        Which::Current => (&current_template, &current_name),
                        Which::Update => (&template, &update_name),
                    };
                    create_pod(&ctx, &set, pod_for(&set, t, ord, rev), ord).await?;
                }
                Step::Delete(name, pod_uid) => {
                    let condemned = ordinal(&set_name, &name)
                        .is_some_and(|o| o < start(&set) || o >= start(&set) + replicas(&set));
                    if condemned {
                        release_claims_with_pod(&ctx, &set, &name, &pod_uid).await?;
                    }
                    delete_pod(&ctx, &set, &name, &pod_uid).await?;
                }
            }
        }
    }

    let pods: Vec<&Pod> = owned.iter().map(|p| p.as_ref()).collect();
    let status = compute_status(&set, &pods, &current_name, &update_name, collisions, now);
    if set.status.as_ref() != Some(&status) && !update_status(&ctx, &set, status.clone()).await? {
        return Ok(Action::requeue(CONFLICT_REQUEUE));
    }

    // History: keep what pods and the status use, and `revisionHistoryLimit` more.
    let mut live: HashSet<String> = pods
        .iter()
        .filter_map(|p| revision_of(p).map(String::from))
        .collect();
    live.extend(status.current_revision.clone());
    live.extend(status.update_revision.clone());
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    history::truncate(&ctx.client, &parent, &revs, &live, limit).await?;

    ctx.backoff.succeeded(&key);
    // Pods turn available without any event once minReadySeconds pass: look again then.
    let min_ready = min_ready(&set);
    if min_ready > 0 && status.available_replicas != status.ready_replicas {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::await_change())
}

/// Creates the claims of ordinal `ord` the cache lacks (upstream recreates claims deleted
/// under a live pod too).
async fn ensure_claims(ctx: &Ctx, set: &StatefulSet, ord: i32, pod: &Pod) -> Result<(), Error> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for claim in claims_for(set, ord) {
        let name = claim.name_any();
        if let Some(cached) = ctx.claims.get(&ObjectRef::new(&name).within(&ns)) {
            // Ownership as upstream's `updateClaimOwnerRefForSetAndPod` for a pod in range:
            // no reference to a (former, scaled-down) pod of this name, so the garbage
            // collector does not take the claim from under its new pod; and with
            // `whenDeleted: Delete` a reference to this set (a policy change, or a claim
            // orphaned with its former set).
            let uid = set.uid().unwrap_or_default();
            let wanted = claim.metadata.owner_references.is_some();
            let refs: Vec<OwnerReference> =
                cached.metadata.owner_references.clone().unwrap_or_default();
            let mut fixed: Vec<OwnerReference> = refs
                .iter()
                .filter(|r| !(r.kind == "Pod" && r.name == pod.name_any()))
                .cloned()
                .collect();
            if wanted && !fixed.iter().any(|r| r.uid == uid) {
                fixed.push(owner_ref(set, false));
            }
            let in_range = ord >= start(set) && ord < start(set) + replicas(set);
            if in_range && fixed != refs {
                let mut live = cached.as_ref().clone();
                live.metadata.owner_references = (!fixed.is_empty()).then_some(fixed);
                match api.replace(&name, &PostParams::default(), &live).await {
                    Ok(_) => {}
                    // The cache is behind; the claim's watch event brings the next pass.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => {
                        return Err(Error::api(format!(
                            "owning PersistentVolumeClaim {ns}/{name}"
                        ))(e))
                    }
                }
            }
            continue;
        }
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => ctx.events.record(
                object_ref(set),
                EventType::Normal,
                "SuccessfulCreate",
                format!(
                    "create Claim {name} Pod {} in StatefulSet {} success",
                    pod.name_any(),
                    set.name_any()
                ),
            ),
            Err(e) if crate::already_exists(&e) => {}
            Err(e) => {
                ctx.events.record(
                    object_ref(set),
                    EventType::Warning,
                    "FailedCreate",
                    format!(
                        "create Claim {name} for Pod {} in StatefulSet {} failed error: {}",
                        pod.name_any(),
                        set.name_any(),
                        api_message(&e)
                    ),
                );
                return Err(Error::api(format!(
                    "creating PersistentVolumeClaim {ns}/{name}"
                ))(e));
            }
        }
    }
    Ok(())
}

async fn create_pod(ctx: &Ctx, set: &StatefulSet, pod: Pod, ord: i32) -> Result<(), Error> {
    let ns = set.namespace().unwrap_or_default();
    let name = pod.name_any();
    ensure_claims(ctx, set, ord, &pod).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &pod).await {
        Ok(_) => {
            tracing::debug!(statefulset = %key(set), pod = %name, "created pod");
            ctx.events.record(
                object_ref(set),
                EventType::Normal,
                "SuccessfulCreate",
                format!(
                    "create Pod {name} in StatefulSet {} successful",
                    set.name_any()
                ),
            );
            Ok(())
        }
        // The cache lags our own create; the next pass sees the pod.
        Err(e) if crate::already_exists(&e) => Ok(()),
        Err(e) if crate::namespace_closed(&e) => Ok(()),
        Err(e) => {
            ctx.events.record(
                object_ref(set),
                EventType::Warning,
                "FailedCreate",
                format!(
                    "create Pod {name} in StatefulSet {} failed error: {}",
                    set.name_any(),
                    api_message(&e)
                ),
            );
            Err(Error::api(format!("creating pod {ns}/{name}"))(e))
        }
    }
}

async fn delete_pod(ctx: &Ctx, set: &StatefulSet, name: &str, uid: &str) -> Result<(), Error> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {
            tracing::debug!(statefulset = %key(set), pod = %name, "deleted pod");
            ctx.events.record(
                object_ref(set),
                EventType::Normal,
                "SuccessfulDelete",
                format!(
                    "delete Pod {name} in StatefulSet {} successful",
                    set.name_any()
                ),
            );
            Ok(())
        }
        // Gone already, or replaced by a newer pod of the same name: the cache was stale.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => {
            ctx.events.record(
                object_ref(set),
                EventType::Warning,
                "FailedDelete",
                format!(
                    "delete Pod {name} in StatefulSet {} failed error: {}",
                    set.name_any(),
                    api_message(&e)
                ),
            );
            Err(Error::api(format!("deleting pod {ns}/{name}"))(e))
        }
    }
}

/// With `whenScaled: Delete`, a condemned pod's claims become owned by the pod instead of the
/// set, so the garbage collector deletes them once the pod is gone (upstream's
/// `updateClaimOwnerRefForSetAndPod`).
async fn release_claims_with_pod(
    ctx: &Ctx,
    set: &StatefulSet,
    pod_name: &str,
    pod_uid: &str,
) -> Result<(), Error> {
    let when_scaled = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_scaled.as_deref());
    if when_scaled != Some("Delete") {
        return Ok(());
    }
    let Some(ord) = ordinal(&set.name_any(), pod_name) else {
        return Ok(());
    };
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for claim in claims_for(set, ord) {
        let name = claim.name_any();
        let what = || format!("giving PersistentVolumeClaim {ns}/{name} to pod {pod_name}");
        let Some(mut live) = api.get_opt(&name).await.map_err(Error::api(what()))? else {
            continue;
        };
        let refs = live.metadata.owner_references.get_or_insert_with(Vec::new);
        if refs.iter().any(|r| r.uid == pod_uid) {
            continue;
        }
        // The set lets go (its `whenDeleted` reference would keep the claim alive).
        let set_uid = set.uid().unwrap_or_default();
        refs.retain(|r| r.uid != set_uid);
        refs.push(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod_name.into(),
            uid: pod_uid.into(),
            controller: None,
            block_owner_deletion: Some(true),
        });
        match api.replace(&name, &PostParams::default(), &live).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(Error::api(what())(e)),
        }
    }
    Ok(())
}

/// Writes the status with PUT (upstream's role grants only `update` on the subresource, and
/// no `get` on StatefulSets). False on a conflict: the cache is behind, and the watch event
/// that brings it up to date triggers the next pass.
async fn update_status(
    ctx: &Ctx,
    set: &StatefulSet,
    status: StatefulSetStatus,
) -> Result<bool, Error> {
    let api: Api<StatefulSet> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    let mut current = set.clone();
    current.status = Some(status);
    match api
        .replace_status(&set.name_any(), &PostParams::default(), &current)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(Error::api(format!(
            "updating the status of StatefulSet {}",
            key(set)
        ))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn set(replicas: i32, policy: &str, partition: Option<i32>) -> StatefulSet {
        let strategy = match partition {
            Some(p) => {
                serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"partition": p}})
            }
            None => serde_json::json!({"type": "OnDelete"}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "generation": 2},
            "spec": {
                "replicas": replicas,
                "podManagementPolicy": policy,
                "updateStrategy": strategy,
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                      "volumes": [{"name": "www", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                                          "spec": {"accessModes": ["ReadWriteOnce"]}}],
            }
        }))
        .unwrap()
    }

    fn pod(ord: i32, rev: &str, ready: bool) -> Pod {
        let now = Time(Timestamp::from_second(0).unwrap());
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("web-{ord}")),
                uid: Some(format!("uid-{ord}")),
                labels: Some(BTreeMap::from([(POD_REVISION_LABEL.into(), rev.into())])),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(if ready { "Running" } else { "Pending" }.into()),
                conditions: ready.then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(now),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn plan_of(set: &StatefulSet, pods: &[Pod]) -> Vec<Step> {
        let map: BTreeMap<i32, &Pod> = pods
            .iter()
            .map(|p| (ordinal("web", &p.name_any()).unwrap(), p))
            .collect();
        plan(set, &map, "web-new", Timestamp::from_second(100).unwrap())
    }

    #[test]
    fn ordinals_parse_only_member_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
        assert_eq!(ordinal("web", "web-"), None);
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_after_ready() {
        let s = set(3, "OrderedReady", Some(0));
        assert_eq!(plan_of(&s, &[]), [Step::Create(0, Which::Update)]);
        assert!(plan_of(&s, &[pod(0, "web-new", false)]).is_empty());
        assert_eq!(
            plan_of(&s, &[pod(0, "web-new", true)]),
            [Step::Create(1, Which::Update)]
        );
    }

    #[test]
    fn parallel_creates_all_at_once() {
        let s = set(3, "Parallel", Some(0));
        assert_eq!(
            plan_of(&s, &[pod(1, "web-new", false)]),
            [
                Step::Create(0, Which::Update),
                Step::Create(2, Which::Update)
            ]
        );
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first() {
        let s = set(1, "OrderedReady", Some(0));
        let pods = [
            pod(0, "web-new", true),
            pod(1, "web-new", true),
            pod(2, "web-new", true),
        ];
        assert_eq!(
            plan_of(&s, &pods),
            [Step::Delete("web-2".into(), "uid-2".into())]
        );
        let parallel = set(1, "Parallel", Some(0));
        assert_eq!(
            plan_of(&parallel, &pods),
            [
                Step::Delete("web-2".into(), "uid-2".into()),
                Step::Delete("web-1".into(), "uid-1".into())
            ]
        );
    }

    #[test]
    fn rolling_update_goes_from_the_top_down_to_the_partition() {
        let s = set(3, "OrderedReady", Some(1));
        let old = [
            pod(0, "web-old", true),
            pod(1, "web-old", true),
            pod(2, "web-old", true),
        ];
        assert_eq!(
            plan_of(&s, &old),
            [Step::Delete("web-2".into(), "uid-2".into())]
        );
        let mid = [
            pod(0, "web-old", true),
            pod(1, "web-old", true),
            pod(2, "web-new", true),
        ];
        assert_eq!(
            plan_of(&s, &mid),
            [Step::Delete("web-1".into(), "uid-1".into())]
        );
        let done = [
            pod(0, "web-old", true),
            pod(1, "web-new", true),
            pod(2, "web-new", true),
        ];
        assert!(
            plan_of(&s, &done).is_empty(),
            "ordinal 0 is below the partition"
        );
        // Below the partition, a missing pod comes back at the current revision.
        assert_eq!(plan_of(&s, &done[1..]), [Step::Create(0, Which::Current)]);
        // OnDelete: nothing is deleted for being out of date.
        assert!(plan_of(&set(3, "OrderedReady", None), &old).is_empty());
    }

    #[test]
    fn status_counts_revisions_and_completes_the_update() {
        let s = set(2, "OrderedReady", Some(0));
        let (a, b) = (pod(0, "web-new", true), pod(1, "web-old", true));
        let now = Timestamp::from_second(100).unwrap();
        let st = compute_status(&s, &[&a, &b], "web-old", "web-new", None, now);
        assert_eq!(
            (
                st.replicas,
                st.ready_replicas,
                st.current_replicas,
                st.updated_replicas
            ),
            (2, Some(2), Some(1), Some(1))
        );
        assert_eq!(st.observed_generation, Some(2));
        let b = pod(1, "web-new", true);
        let st = compute_status(&s, &[&a, &b], "web-old", "web-new", None, now);
        assert_eq!(st.current_revision.as_deref(), Some("web-new"));
        assert_eq!(st.current_replicas, Some(2));
    }

    #[test]
    fn pods_get_identity_and_their_claims() {
        let s = set(1, "OrderedReady", Some(0));
        let p = pod_for(&s, &s.spec.as_ref().unwrap().template, 3, "web-abc");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(p.name_any(), "web-3");
        assert_eq!(spec.hostname.as_deref(), Some("web-3"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(
            vols.len(),
            1,
            "the claim replaces the template volume of that name"
        );
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "www-web-3"
        );
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_REVISION_LABEL], "web-abc");
        assert_eq!(labels[POD_INDEX_LABEL], "3");
        let claims = claims_for(&s, 3);
        assert_eq!(claims[0].name_any(), "www-web-3");
        assert_eq!(claims[0].metadata.labels.as_ref().unwrap()["app"], "web");
        assert!(claims[0].metadata.owner_references.is_none(), "Retain");
    }
}

//! The ReplicaSet controller, as upstream's (`pkg/controller/replicaset`): keeps
//! `spec.replicas` active pods matching the selector.
//!
//! Each pass claims pods (adopts matching orphans, releases owned pods that stopped
//! matching), creates missing pods from the template in slow-start batches (1, 2, 4, …, so a
//! failing create such as a quota denial costs one request, not hundreds) or deletes the
//! surplus in upstream's order (unscheduled, pending, not ready, newest first), then reports
//! the status. Expectations remember what was created or deleted until the pod cache shows it,
//! so a lagging cache never makes it create or delete twice.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distro_client::labels::{self, Selector};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::expectations::{Expect, PodExpectations};
use crate::objects::{
    adopt_pod, api_message, controller_ref, delete_pods, object_ref, owners_to_wake,
    workload_selector, EventType, Recorder,
};
use crate::{Backoff, Clients, Error};

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "replicaset-controller";

/// Upstream's cap on pods created or deleted in one pass (`BurstReplicas`).
const BURST_REPLICAS: usize = 500;

/// Requeue delay while waiting for the pod cache to catch up with our own writes.
const EXPECTATIONS_REQUEUE: Duration = Duration::from_secs(1);

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    pods: Store<Pod>,
    backoff: Backoff,
    expectations: PodExpectations,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let sets = clients.informers.get::<ReplicaSet>();
    let pods = clients.informers.get::<Pod>();
    let ctx = Arc::new(Ctx {
        client: clients.writer("replicaset-controller"),
        events: Recorder::new(
            clients.writer("replicaset-controller").clone(),
            COMPONENT,
            None,
        ),
        pods: pods.store(),
        backoff: Backoff::default(),
        expectations: PodExpectations::default(),
    });
    let set_store = sets.store();
    let results = Controller::for_shared_stream(sets.subscribe(), sets.store())
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            // An orphan wakes every set whose selector matches: one of them may adopt it.
            owners_to_wake(&pod, &set_store, |rs: &ReplicaSet, pod| {
                rs.spec
                    .as_ref()
                    .is_some_and(|s| labels::matches(Some(&s.selector), &pod.metadata.labels))
            })
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

fn key(rs: &ReplicaSet) -> String {
    format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any())
}

/// Whether a pod counts towards replicas: not terminating, not finished (upstream's
/// `FilterActivePods`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH)
        })
}

/// Available: ready for at least `min_ready` seconds (upstream's `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready: i64, now: Timestamp) -> bool {
    ready_since(pod).is_some_and(|since| {
        min_ready <= 0 || since.as_second().saturating_add(min_ready) <= now.as_second()
    })
}

/// Upstream's deletion order (`ActivePodsWithRanks`): the pod that should go first sorts
/// first. `colocated` is how many of the set's active pods share each pod's node.
pub fn deletion_order(a: &Pod, b: &Pod, colocated: &HashMap<String, usize>) -> Ordering {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        Some(_) => 3,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let shared = |p: &Pod| {
        node(p)
            .and_then(|n| colocated.get(&n).copied())
            .unwrap_or(0)
    };
    // Unscheduled first.
    node(a)
        .is_some()
        .cmp(&node(b).is_some())
        // Pending < Unknown < Running.
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        // Not ready first.
        .then_with(|| ready_since(a).is_some().cmp(&ready_since(b).is_some()))
        // More pods of the set on the same node first.
        .then_with(|| shared(b).cmp(&shared(a)))
        // Ready for less time first.
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        // More restarts first.
        .then_with(|| restarts(b).cmp(&restarts(a)))
        // Newer first.
        .then_with(|| created(b).cmp(&created(a)))
}

/// The slow-start batches that create `n` pods: 1, 2, 4, … (upstream's `slowStartBatch`).
pub fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let (mut left, mut size) = (n, 1usize);
    while left > 0 {
        let b = size.min(left);
        batches.push(b);
        left -= b;
        size = size.saturating_mul(2);
    }
    batches
}

fn owner_ref(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.name_any(),
        uid: rs.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod the template describes, owned by `rs` (upstream's `GetPodFromTemplate`).
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone());
    let (tmeta, spec) = template
        .map(|t| (t.metadata.unwrap_or_default(), t.spec))
        .unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner_ref(rs)]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key(&rs);
    let ns = rs.namespace().unwrap_or_default();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let Some(selector) = workload_selector(&spec.selector, &key) else {
        return Ok(Action::await_change());
    };
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect();

    let satisfied = ctx.expectations.met(&key, &pods);
    let owned = claim(&ctx, &rs, &selector, &pods).await?;
    let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();

    let mut manage_err = None;
    let mut requeue = None;
    if !satisfied {
        requeue = Some(EXPECTATIONS_REQUEUE);
    } else if rs.metadata.deletion_timestamp.is_none() {
        manage_err = manage(&ctx, &rs, &active).await;
    }
    let now = Timestamp::now();
    let status = compute_status(&rs, &active, manage_err.as_ref(), now);
    if rs.status.as_ref() != Some(&status) && !update_status(&ctx, &rs, status).await? {
        return Ok(Action::await_change());
    }
    if let Some(e) = manage_err {
        return Err(e);
    }
    // Pods turn available without any event once minReadySeconds pass: look again then.
    let min_ready = spec.min_ready_seconds.unwrap_or(0) as i64;
    if min_ready > 0 {
        let wait = active
            .iter()
            .filter(|p| !is_available(p, min_ready, now))
            .filter_map(|p| ready_since(p))
            .map(|since| since.as_second() + min_ready - now.as_second())
            .min();
        if let Some(secs) = wait {
            let d = Duration::from_secs(secs.max(0) as u64 + 1);
            requeue = Some(requeue.map_or(d, |r| r.min(d)));
        }
    }
    ctx.backoff.succeeded(&key);
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Writes the status with PUT (upstream's role grants only `update` on the subresource),
/// re-reading once on a conflict as the cache may be behind. False if the set is gone.
async fn update_status(
    ctx: &Ctx,
    rs: &ReplicaSet,
    status: ReplicaSetStatus,
) -> Result<bool, Error> {
    let api: Api<ReplicaSet> =
        Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let name = rs.name_any();
    let what = || format!("updating the status of ReplicaSet {}", key(rs));
    let mut current = rs.clone();
    for attempt in 0..2 {
        current.status = Some(status.clone());
        match api
            .replace_status(&name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt == 0 => {
                match api.get_opt(&name).await.map_err(Error::api(what()))? {
                    Some(fresh) if fresh.uid() == rs.uid() => current = fresh,
                    _ => return Ok(false),
                }
            }
            Err(e) => return Err(Error::api(what())(e)),
        }
    }
    Ok(true)
}

fn error_policy(rs: Arc<ReplicaSet>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&rs)))
}

/// Adopts matching orphans and releases owned pods that no longer match (upstream's
/// `PodControllerRefManager`); returns the pods this set owns and that match.
async fn claim(
    ctx: &Ctx,
    rs: &ReplicaSet,
    selector: &Selector,
    pods: &[Arc<Pod>],
) -> Result<Vec<Pod>, Error> {
    let uid = rs.uid().unwrap_or_default();
    let ns = rs.namespace().unwrap_or_default();
    let matches = |p: &Pod| selector.matches(&p.metadata.labels);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut owned = Vec::new();
    // Adoption is re-checked against the live object, so a set being deleted (or replaced
    // under the same name) adopts nothing: upstream's `RecheckDeletionTimestamp`.
    let mut may_adopt: Option<bool> = None;
    for pod in pods {
        let name = pod.name_any();
        match controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches(pod) {
                    owned.push(pod.as_ref().clone());
                } else if rs.metadata.deletion_timestamp.is_none()
                    && pod.metadata.deletion_timestamp.is_none()
                {
                    let refs: Vec<&OwnerReference> = pod
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .collect();
                    let patch = json!({"metadata": {"uid": pod.uid(), "ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) }}});
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::debug!(replicaset = %key(rs), pod = %name, "released pod")
                        }
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => {}
                        Err(e) => return Err(Error::api(format!("releasing pod {ns}/{name}"))(e)),
                    }
                }
            }
            Some(_) => {}
            None => {
                if !matches(pod)
                    || pod.metadata.deletion_timestamp.is_some()
                    || rs.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                if may_adopt.is_none() {
                    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
                    let fresh = sets
                        .get_opt(&rs.name_any())
                        .await
                        .map_err(Error::api(format!("re-reading ReplicaSet {}", key(rs))))?;
                    may_adopt = Some(fresh.is_some_and(|f| {
                        f.uid().as_deref() == Some(uid.as_str())
                            && f.metadata.deletion_timestamp.is_none()
                    }));
                }
                if may_adopt != Some(true) {
                    continue;
                }
                owned.extend(adopt_pod(&ctx.client, owner_ref(rs), pod).await?);
            }
        }
    }
    Ok(owned)
}

/// Creates or deletes pods towards `spec.replicas`; returns the first failure.
async fn manage(ctx: &Ctx, rs: &ReplicaSet, active: &[&Pod]) -> Option<Error> {
    let key = key(rs);
    let ns = rs.namespace().unwrap_or_default();
    let want = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if active.len() < want {
        let n = (want - active.len()).min(BURST_REPLICAS);
        let template = pod_from_template(rs);
        let pp = PostParams::default();
        for batch in slow_start_batches(n) {
            let results =
                futures::future::join_all((0..batch).map(|_| api.create(&pp, &template))).await;
            let mut created = Vec::new();
            let mut failure = None;
            for r in results {
                match r {
                    Ok(pod) => {
                        let name = pod.name_any();
                        ctx.events.record(
                            object_ref(rs),
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        );
                        created.push(name);
                    }
                    Err(e) => {
                        // A closing namespace refuses new pods; that is not the set's failure.
                        if crate::namespace_closed(&e) {
                            continue;
                        }
                        ctx.events.record(
                            object_ref(rs),
                            EventType::Warning,
                            "FailedCreate",
                            format!("Error creating: {}", api_message(&e)),
                        );
                        failure.get_or_insert(e);
                    }
                }
            }
            ctx.expectations
                .expect(&key, created.into_iter().map(Expect::Create));
            if let Some(e) = failure {
                // Later batches are skipped: they would fail the same way.
                return Some(Error::api(format!("creating pods for ReplicaSet {key}"))(e));
            }
        }
    } else if active.len() > want {
        let n = (active.len() - want).min(BURST_REPLICAS);
        let mut colocated: HashMap<String, usize> = HashMap::new();
        for p in active {
            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *colocated.entry(node).or_default() += 1;
            }
        }
        let mut victims: Vec<&Pod> = active.to_vec();
        victims.sort_by(|a, b| deletion_order(a, b, &colocated));
        victims.truncate(n);
        ctx.expectations.expect(
            &key,
            victims.iter().filter_map(|p| p.uid()).map(Expect::Delete),
        );
        if let Err(e) = delete_pods(&ctx.client, &ctx.events, &object_ref(rs), &victims).await {
            // The failed deletes will not show up in the cache: stop waiting for them.
            ctx.expectations.forget(&key);
            return Some(Error::api(format!("deleting pods of ReplicaSet {key}"))(e));
        }
    }
    None
}

/// The status a pass reports (upstream's `calculateStatus`).
pub fn compute_status(
    rs: &ReplicaSet,
    active: &[&Pod],
    manage_err: Option<&Error>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let template_labels: BTreeMap<String, String> = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0) as i64;
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let fully_labeled = count(&|p| labels::set_matches(&template_labels, &p.metadata.labels));
    let ready = count(&|p| ready_since(p).is_some());
    let available = count(&|p| is_available(p, min_ready, now));
    let mut conditions: Vec<ReplicaSetCondition> = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_err {
        Some(e) if !has_failure => {
            let want = spec.and_then(|s| s.replicas).unwrap_or(1);
            let reason = if (active.len() as i32) < want {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            let message = match e {
                Error::Api { source, .. } => api_message(source),
                other => other.to_string(),
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: rs.meta().generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: rs.status.as_ref().and_then(|s| s.terminating_replicas),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(
        name: &str,
        created: i64,
        node: Option<&str>,
        phase: &str,
        ready_at: Option<i64>,
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn surplus_pods_go_in_upstream_order() {
        let mut pods = [
            pod("ready-old", 100, Some("n1"), "Running", Some(110)),
            pod("ready-new", 200, Some("n1"), "Running", Some(210)),
            pod("running-unready", 100, Some("n2"), "Running", None),
            pod("pending", 100, Some("n2"), "Pending", None),
            pod("unscheduled-old", 50, None, "Pending", None),
            pod("unscheduled-new", 300, None, "Pending", None),
        ];
        let colocated = HashMap::from([("n1".to_string(), 2), ("n2".to_string(), 2)]);
        pods.sort_by(|a, b| deletion_order(a, b, &colocated));
        let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            [
                "unscheduled-new",
                "unscheduled-old",
                "pending",
                "running-unready",
                "ready-new",
                "ready-old"
            ]
        );
    }

    #[test]
    fn create_failures_set_replica_failure_until_a_clean_pass() {
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                generation: Some(4),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        let now = Timestamp::from_second(1000).unwrap();
        let err = Error::api("creating pods")(kube::Error::Api(
            kube::core::Status::failure("exceeded quota: q", "Forbidden")
                .with_code(403)
                .boxed(),
        ));
        let status = compute_status(&rs, &[], Some(&err), now);
        let cond = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (
                cond.type_.as_str(),
                cond.status.as_str(),
                cond.reason.as_deref()
            ),
            ("ReplicaFailure", "True", Some("FailedCreate"))
        );
        assert_eq!(cond.message.as_deref(), Some("exceeded quota: q"));
        assert_eq!(status.observed_generation, Some(4));
        rs.status = Some(status);
        let clean = compute_status(&rs, &[], None, now);
        assert!(clean.conditions.is_none());
    }

    #[test]
    fn slow_start_doubles() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), vec![1]);
        assert_eq!(slow_start_batches(10), vec![1, 2, 4, 3]);
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let now = Timestamp::from_second(1000).unwrap();
        let p = pod("p", 0, Some("n"), "Running", Some(995));
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 5, now));
        assert!(!is_available(&p, 6, now));
        assert!(!is_available(&pod("q", 0, None, "Pending", None), 0, now));
    }

    #[test]
    fn template_pods_are_owned_and_named_after_the_set() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let p = pod_from_template(&rs);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.uid.as_str(), r.controller, r.block_owner_deletion),
            ("u1", Some(true), Some(true))
        );
    }
}

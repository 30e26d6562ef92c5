//! The disruption controller, as upstream's (`pkg/controller/disruption`): keeps each
//! PodDisruptionBudget's status current, so the eviction subresource can decide from it.
//!
//! Per budget: the selected pods; the expected pod count (for `maxUnavailable` and percentage
//! `minAvailable`, the scale of the pods' controllers: a ReplicaSet's or, if a Deployment owns
//! it, the Deployment's replicas, a StatefulSet's; else the number of pods); the healthy pods
//! (Ready, not terminating, not recently evicted); and from these `desiredHealthy`,
//! `disruptionsAllowed` and the `DisruptionAllowed` condition (`SufficientPods` /
//! `InsufficientPods`). Evictions recorded in `disruptedPods` are dropped once the pod is
//! going, or after two minutes if it never went.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distro_client::labels::{self, Selector};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};

use crate::objects::{controller_ref, object_ref, EventType, Recorder};
use crate::{Backoff, Clients, Error};

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "disruption-controller";

/// How long an eviction recorded in `disruptedPods` is trusted to be on its way (upstream's
/// `DeletionTimeout`).
const DELETION_TIMEOUT: i64 = 2 * 60;

/// The condition type and its reasons.
const CONDITION: &str = "DisruptionAllowed";

/// The caches of the controllers whose scale budgets count.
struct Owners {
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
}

/// The objects the controller reads and writes with.
struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    pods: Store<Pod>,
    owners: Owners,
    backoff: Backoff,
    /// Budgets already warned about unmanaged pods (upstream's recorder would aggregate
    /// the repeats; we record once).
    warned: Mutex<HashSet<String>>,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let pdbs = clients.informers.get::<PodDisruptionBudget>();
    let pods = clients.informers.get::<Pod>();
    let replicasets = clients.informers.get::<ReplicaSet>();
    let deployments = clients.informers.get::<Deployment>();
    let statefulsets = clients.informers.get::<StatefulSet>();
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        events: Recorder::new(clients.writer(COMPONENT).clone(), COMPONENT, None),
        pods: pods.store(),
        owners: Owners {
            replicasets: replicasets.store(),
            deployments: deployments.store(),
            statefulsets: statefulsets.store(),
        },
        backoff: Backoff::default(),
        warned: Mutex::default(),
    });
    let (s1, s2, s3, s4) = (pdbs.store(), pdbs.store(), pdbs.store(), pdbs.store());
    let results = Controller::for_shared_stream(pdbs.subscribe(), pdbs.store())
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            budgets_selecting(&s1, &pod)
        })
        .watches_shared_stream(replicasets.subscribe(), move |o: Arc<ReplicaSet>| {
            budgets_in(&s2, o.as_ref())
        })
        .watches_shared_stream(deployments.subscribe(), move |o: Arc<Deployment>| {
            budgets_in(&s3, o.as_ref())
        })
        .watches_shared_stream(statefulsets.subscribe(), move |o: Arc<StatefulSet>| {
            budgets_in(&s4, o.as_ref())
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

fn budgets_selecting(
    pdbs: &Store<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let ns = pod.namespace().unwrap_or_default();
    pdbs.state()
        .iter()
        .filter(|b| b.namespace().as_deref() == Some(ns.as_str()))
        .filter(|b| selector(b).matches(&pod.metadata.labels))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// A controller's scale changed: every budget of its namespace may count it.
fn budgets_in<K: Resource>(
    pdbs: &Store<PodDisruptionBudget>,
    obj: &K,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    pdbs.state()
        .iter()
        .filter(|b| b.namespace().as_deref() == Some(ns.as_str()))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// policy/v1: a missing selector selects nothing, an empty one every pod of the namespace;
/// an invalid one nothing (upstream fails the sync instead; the apiserver refuses it anyway).
fn selector(pdb: &PodDisruptionBudget) -> Selector {
    let sel = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
    labels::selector_or_nothing(sel, &key(pdb))
}

fn key(pdb: &PodDisruptionBudget) -> String {
    format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any())
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&pdb)))
}

/// An int-or-percent scaled to `total`, rounding up (upstream's
/// `GetScaledValueFromIntOrPercent(…, true)`). `None` for a malformed percentage.
pub fn scaled(v: &IntOrString, total: i32) -> Option<i32> {
    match v {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some(((pct * total as i64 + 99) / 100) as i32)
        }
    }
}

/// Why the expected count could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// A pod's controller is not in the cache (or is of a kind with no known scale).
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    /// A percentage that does not parse.
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    BadValue(String),
}

/// The scale of the pods' controllers and the pods without one (upstream's
/// `getExpectedScale`).
fn expected_scale(ctx: &Owners, pods: &[Arc<Pod>]) -> Result<(i32, Vec<String>), ScaleError> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let ns = pod.namespace().unwrap_or_default();
        let Some(owner) = controller_ref(&pod.metadata) else {
            unmanaged.push(pod.name_any());
            continue;
        };
        if scales.contains_key(&owner.uid) {
            continue;
        }
        let found = match (owner.kind.as_str(), owner.api_version.split('/').next()) {
            ("ReplicaSet", Some("apps")) => ctx
                .replicasets
                .get(&ObjectRef::new(&owner.name).within(&ns))
                .filter(|rs| rs.uid().as_deref() == Some(owner.uid.as_str()))
                .map(|rs| {
                    // A Deployment's ReplicaSets share its scale.
                    let deploy = controller_ref(&rs.metadata)
                        .filter(|d| d.kind == "Deployment")
                        .and_then(|d| {
                            ctx.deployments
                                .get(&ObjectRef::new(&d.name).within(&ns))
                                .filter(|dep| dep.uid().as_deref() == Some(d.uid.as_str()))
                                .map(|dep| {
                                    (
                                        d.uid.clone(),
                                        dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                                    )
                                })
                        });
                    deploy.unwrap_or_else(|| {
                        (
                            rs.uid().unwrap_or_default(),
                            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        )
                    })
                }),
            ("StatefulSet", Some("apps")) => ctx
                .statefulsets
                .get(&ObjectRef::new(&owner.name).within(&ns))
                .filter(|s| s.uid().as_deref() == Some(owner.uid.as_str()))
                .map(|s| {
                    (
                        owner.uid.clone(),
                        s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    )
                }),
            _ => None,
        };
        let Some((uid, scale)) = found else {
            return Err(ScaleError::NoController(pod.name_any()));
        };
        // Keyed by the pod's controller too, so its other pods skip the lookup.
        scales.insert(owner.uid.clone(), 0);
        scales.insert(uid, scale);
    }
    Ok((scales.values().sum(), unmanaged))
}

/// `(expectedPods, desiredHealthy, unmanaged pods)` (upstream's `getExpectedPodCount`).
fn expected_count(
    ctx: &Owners,
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
) -> Result<(i32, i32, Vec<String>), ScaleError> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max) = &spec.max_unavailable {
        let (expected, unmanaged) = expected_scale(ctx, pods)?;
        let max = scaled(max, expected).ok_or_else(|| ScaleError::BadValue(format!("{max:?}")))?;
        return Ok((expected, (expected - max).max(0), unmanaged));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n, Vec::new())),
        Some(pct @ IntOrString::String(_)) => {
            let (expected, unmanaged) = expected_scale(ctx, pods)?;
            let min =
                scaled(pct, expected).ok_or_else(|| ScaleError::BadValue(format!("{pct:?}")))?;
            Ok((expected, min, unmanaged))
        }
        None => Ok((pods.len() as i32, 0, Vec::new())),
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The evictions still expected to happen, and when the earliest expires (upstream's
/// `buildDisruptedPodMap`).
fn disrupted(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<i64>) {
    let recorded = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut keep = BTreeMap::new();
    let mut recheck: Option<i64> = None;
    for (name, at) in recorded {
        let Some(pod) = pods.iter().find(|p| p.name_any() == name) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let expires = at.0.as_second() + DELETION_TIMEOUT;
        if expires < now.as_second() {
            tracing::info!(pod = %name, "pod was expected to be deleted but it wasn't; counting it again");
            continue;
        }
        let left = expires - now.as_second();
        recheck = Some(recheck.map_or(left, |r| r.min(left)));
        keep.insert(name, at);
    }
    (keep, recheck)
}

/// The status for the counts, keeping the condition's transition time when it holds
/// (upstream's `updatePdbStatus` and `UpdateDisruptionAllowedCondition`).
pub fn status(
    pdb: &PodDisruptionBudget,
    current: i32,
    desired: i32,
    expected: i32,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut allowed = current - desired;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let (status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    condition_status(
        pdb,
        current,
        desired,
        expected,
        allowed,
        disrupted,
        status,
        reason,
        String::new(),
        now,
    )
}

#[allow(clippy::too_many_arguments)]
fn condition_status(
    pdb: &PodDisruptionBudget,
    current: i32,
    desired: i32,
    expected: i32,
    allowed: i32,
    disrupted: BTreeMap<String, Time>,
    cond_status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let generation = pdb.metadata.generation;
    let mut conditions: Vec<Condition> = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let previous = conditions.iter().position(|c| c.type_ == CONDITION);
    let transition = previous
        .filter(|&i| conditions[i].status == cond_status)
        .map(|i| conditions[i].last_transition_time.clone())
        .unwrap_or(Time(now));
    let cond = Condition {
        type_: CONDITION.into(),
        status: cond_status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    match previous {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
    PodDisruptionBudgetStatus {
        current_healthy: current,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: generation,
        conditions: Some(conditions),
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key(&pdb);
    let ns = pdb.namespace().unwrap_or_default();
    let selector = selector(&pdb);
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| selector.matches(&p.metadata.labels))
        .collect();
    if pods.is_empty() {
        record_once(
            &ctx,
            &pdb,
            "NoPods",
            EventType::Normal,
            "No matching pods found".into(),
        )
        .await;
    }
    let now = Timestamp::now();
    let (expected, desired, unmanaged) = match expected_count(&ctx.owners, &pdb, &pods) {
        Ok(v) => v,
        Err(e) => {
            ctx.events.record(
                object_ref(&*pdb),
                EventType::Warning,
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {e}"),
            );
            // Fail safe: no disruptions while the budget cannot be evaluated.
            let prev = pdb.status.clone().unwrap_or_default();
            let st = condition_status(
                &pdb,
                prev.current_healthy,
                prev.desired_healthy,
                prev.expected_pods,
                0,
                prev.disrupted_pods.unwrap_or_default(),
                "False",
                "SyncFailed",
                e.to_string(),
                now,
            );
            write_status(&ctx, &pdb, st).await?;
            return Err(Error::Content(format!("PodDisruptionBudget {key}: {e}")));
        }
    };
    if !unmanaged.is_empty() {
        let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
        record_once(
            &ctx,
            &pdb,
            "UnmanagedPods",
            EventType::Warning,
            format!(
                "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                selector.map(|s| serde_json::to_string(s).unwrap_or_default()).unwrap_or_default()
            ),
        )
        .await;
    }
    let (disrupted, recheck) = disrupted(&pdb, &pods, now);
    let current = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| ready(p))
        .count() as i32;
    let st = status(&pdb, current, desired, expected, disrupted, now);
    if pdb.status.as_ref() != Some(&st) {
        write_status(&ctx, &pdb, st).await?;
    }
    ctx.backoff.succeeded(&key);
    Ok(match recheck {
        Some(secs) => Action::requeue(Duration::from_secs(secs.max(0) as u64 + 1)),
        None => Action::await_change(),
    })
}

async fn record_once(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    reason: &str,
    kind: EventType,
    message: String,
) {
    let first = {
        let mut warned = ctx.warned.lock().unwrap_or_else(|e| e.into_inner());
        warned.insert(format!("{}/{reason}", pdb.uid().unwrap_or_default()))
    };
    if first {
        ctx.events.record(object_ref(pdb), kind, reason, message);
    }
}

/// Writes the status with PUT on the cached object: a conflict means an eviction (or a
/// newer spec) got there first, and the next pass sees it.
async fn write_status(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    st: PodDisruptionBudgetStatus,
) -> Result<(), Error> {
    let api: Api<PodDisruptionBudget> =
        Api::namespaced(ctx.client.clone(), &pdb.namespace().unwrap_or_default());
    let mut next = pdb.clone();
    next.status = Some(st);
    match api
        .replace_status(&pdb.name_any(), &PostParams::default(), &next)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::api(format!(
            "updating the status of PodDisruptionBudget {}",
            key(pdb)
        ))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;
    use kube::runtime::{reflector, watcher};

    fn store_of<K>(objs: Vec<K>) -> Store<K>
    where
        K: Resource + Clone + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, mut writer) = reflector::store::<K>();
        for o in objs {
            writer.apply_watcher_event(&watcher::Event::Apply(o));
        }
        store
    }

    fn meta(name: &str, uid: &str, owner: Option<(&str, &str, &str)>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            owner_references: owner.map(|(kind, name, uid)| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: kind.into(),
                    name: name.into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expected_pods_come_from_the_deployment_scale() {
        // Two ReplicaSets of one Deployment (mid-rollout): the Deployment's 5 counts, once.
        let rs = |name: &str, uid: &str, replicas: i32| ReplicaSet {
            metadata: meta(name, uid, Some(("Deployment", "web", "d1"))),
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        };
        let ctx = Owners {
            replicasets: store_of(vec![rs("old", "r1", 2), rs("new", "r2", 4)]),
            deployments: store_of(vec![Deployment {
                metadata: meta("web", "d1", None),
                spec: Some(DeploymentSpec {
                    replicas: Some(5),
                    ..Default::default()
                }),
                status: None,
            }]),
            statefulsets: store_of(Vec::<StatefulSet>::new()),
        };
        let pod = |name: &str, owner: Option<(&str, &str, &str)>| {
            Arc::new(Pod {
                metadata: meta(name, name, owner),
                ..Default::default()
            })
        };
        let pods = vec![
            pod("a", Some(("ReplicaSet", "old", "r1"))),
            pod("b", Some(("ReplicaSet", "new", "r2"))),
            pod("c", Some(("ReplicaSet", "new", "r2"))),
            pod("bare", None),
        ];
        let mut pdb = PodDisruptionBudget {
            spec: Some(k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::String("20%".into())),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (expected, desired, unmanaged) = expected_count(&ctx, &pdb, &pods).unwrap();
        assert_eq!(
            (expected, desired, unmanaged),
            (5, 4, vec!["bare".to_string()])
        );
        // An integer minAvailable counts the pods themselves.
        pdb.spec = Some(k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(2)),
            ..Default::default()
        });
        assert_eq!(expected_count(&ctx, &pdb, &pods).unwrap().0, 4);
        // A pod whose controller is unknown makes the count fail (the budget then fails safe).
        let lost = vec![pod("x", Some(("StatefulSet", "gone", "s1")))];
        pdb.spec = Some(k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            ..Default::default()
        });
        assert!(expected_count(&ctx, &pdb, &lost).is_err());
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("34%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("0%".into()), 3), Some(0));
        assert_eq!(scaled(&IntOrString::Int(2), 10), Some(2));
        assert_eq!(scaled(&IntOrString::String("half".into()), 3), None);
    }

    #[test]
    fn status_allows_the_surplus_and_keeps_transition_times() {
        let mut pdb = PodDisruptionBudget::default();
        pdb.metadata.generation = Some(3);
        let t0 = Timestamp::from_second(100).unwrap();
        let st = status(&pdb, 3, 2, 3, BTreeMap::new(), t0);
        assert_eq!(
            (st.disruptions_allowed, st.observed_generation),
            (1, Some(3))
        );
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "SufficientPods")
        );
        pdb.status = Some(st);
        let t1 = Timestamp::from_second(200).unwrap();
        let same = status(&pdb, 4, 2, 4, BTreeMap::new(), t1);
        assert_eq!(
            same.conditions.as_ref().unwrap()[0].last_transition_time,
            Time(t0)
        );
        let none = status(&pdb, 2, 2, 3, BTreeMap::new(), t1);
        let c = &none.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (none.disruptions_allowed, c.reason.as_str()),
            (0, "InsufficientPods")
        );
        assert_eq!(c.last_transition_time, Time(t1));
        assert_eq!(
            status(&pdb, 3, 1, 0, BTreeMap::new(), t1).disruptions_allowed,
            0
        );
    }
}

//! The node lifecycle controller, as upstream's (`pkg/controller/nodelifecycle`): watches
//! each node's heartbeat (its Lease in `kube-node-lease`, or the Ready condition's
//! `lastHeartbeatTime`) and, when none arrives within the monitor grace period, turns the
//! node's conditions `Unknown` so everyone stops trusting what the kubelet last said.
//!
//! It also keeps the node's condition taints in step with its conditions (upstream's
//! `TaintNodesByCondition` and taint-based evictions): `NoSchedule` taints for every
//! unhealthy condition and for cordoned nodes, so the scheduler keeps new pods off, and a
//! `NoExecute` taint (`not-ready` for Ready=False, `unreachable` for Ready=Unknown) that the
//! taint eviction controller acts on. Pods on a node that is not Ready are marked not Ready,
//! so Services stop sending them traffic.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::objects::{object_ref, EventType, Recorder};
use crate::{Backoff, Clients, Error};

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "node-controller";

/// Where kubelets keep their heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// How long a node that never posted a status gets before it is marked Unknown (upstream's
/// `--node-startup-grace-period`), unless the monitor grace period is longer.
const STARTUP_GRACE: Duration = Duration::from_secs(60);

/// How often a node already marked unhealthy is looked at again without any change (upstream
/// polls every `--node-monitor-period`, 5 s; here watches wake us, this is only a resync).
const RESYNC: Duration = Duration::from_secs(30);

/// The conditions a kubelet reports and this controller turns Unknown when it goes silent.
/// NetworkUnavailable is left alone: the network plugin owns it, not the kubelet.
const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// `node.kubernetes.io/not-ready`: the node reports Ready=False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// `node.kubernetes.io/unreachable`: the node's Ready status is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// `node.kubernetes.io/unschedulable`: the node is cordoned.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Upstream's map from (condition, status) to the `NoSchedule` taint it implies.
const CONDITION_TAINTS: &[(&str, &str, &str)] = &[
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    leases: Store<Lease>,
    pods: Store<Pod>,
    grace: Duration,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves; `grace` is the monitor grace period.
pub async fn run(
    clients: Clients,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let nodes = clients.informers.get::<Node>();
    let leases = clients.informers.get::<Lease>();
    let pods = clients.informers.get::<Pod>();
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        events: Recorder::new(clients.writer(COMPONENT).clone(), COMPONENT, None),
        leases: leases.store(),
        pods: pods.store(),
        grace,
        backoff: Backoff::default(),
    });
    let node_store = nodes.store();
    let results = Controller::for_shared_stream(nodes.subscribe(), nodes.store())
        .watches_shared_stream(leases.subscribe(), |lease: Arc<Lease>| {
            (lease.namespace().as_deref() == Some(LEASE_NAMESPACE))
                .then(|| ObjectRef::new(&lease.name_any()))
        })
        // A pod landing on (or reporting Ready on) a node that is not Ready must be marked.
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            let node = pod.spec.as_ref()?.node_name.clone()?;
            let n = node_store.get(&ObjectRef::new(&node))?;
            (ready_status(&n) != Some("True")).then(|| ObjectRef::new(&node))
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

fn error_policy(node: Arc<Node>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&node.name_any()))
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of the node's Ready condition, if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The last time the node was heard from: the newest of its Lease's renewal, its Ready
/// condition's heartbeat and its creation (so a new node gets a full grace period).
pub fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let posted = condition(node, "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    [renewed, posted, created].into_iter().flatten().max()
}

/// The conditions of a node whose kubelet went silent (upstream's `tryUpdateNodeHealth`):
/// each kubelet condition turns Unknown, keeping its last heartbeat; conditions never posted
/// are added as Unknown with reason NodeStatusNeverUpdated. Returns `None` if nothing changes.
pub fn silenced_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == *type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: (*type_).into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// Whether `key`/`effect` is a taint this controller owns.
fn managed(t: &Taint) -> bool {
    match t.effect.as_str() {
        "NoExecute" => t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE,
        "NoSchedule" => {
            t.key == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == t.key)
        }
        _ => false,
    }
}

/// The taints the node should carry: its own unmanaged taints, plus upstream's condition
/// taints. Managed taints already present are kept as they are (their `timeAdded` is when
/// the trouble started, which eviction timing depends on).
pub fn desired_taints(node: &Node, now: Timestamp) -> Vec<Taint> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut want: Vec<(String, &'static str)> = Vec::new();
    for (type_, status, key) in CONDITION_TAINTS {
        if condition(node, type_).is_some_and(|c| c.status == *status) {
            want.push(((*key).to_string(), "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        want.push((TAINT_UNSCHEDULABLE.to_string(), "NoSchedule"));
    }
    match ready_status(node) {
        Some("False") => want.push((TAINT_NOT_READY.to_string(), "NoExecute")),
        Some("Unknown") => want.push((TAINT_UNREACHABLE.to_string(), "NoExecute")),
        _ => {}
    }
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || want.iter().any(|(k, e)| t.key == *k && t.effect == *e))
        .cloned()
        .collect();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key,
                effect: effect.into(),
                value: None,
                // Only NoExecute taints carry the time they were added (API contract).
                time_added: (effect == "NoExecute").then_some(Time(now)),
            });
        }
    }
    out
}

fn node_ref(node: &Node) -> ObjectReference {
    // Upstream records node events with the node's name as UID, in the default namespace.
    ObjectReference {
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.name.clone(),
        ..Default::default()
    }
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.name_any();
    let now = Timestamp::now();
    let lease = ctx
        .leases
        .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
    let heartbeat = last_heartbeat(&node, lease.as_deref()).unwrap_or(now);
    let grace = if condition(&node, "Ready").is_none() {
        ctx.grace.max(STARTUP_GRACE)
    } else {
        ctx.grace
    };
    let silent_for = Duration::from_millis(
        now.as_millisecond()
            .saturating_sub(heartbeat.as_millisecond())
            .max(0) as u64,
    );
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut node = node.as_ref().clone();
    let was_ready = ready_status(&node) == Some("True");
    if silent_for > grace {
        if let Some(conditions) = silenced_conditions(&node, now) {
            let mut updated = node.clone();
            updated
                .status
                .get_or_insert_with(Default::default)
                .conditions = Some(conditions);
            node = match api
                .replace_status(&name, &PostParams::default(), &updated)
                .await
            {
                Ok(n) => n,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
                Err(e) => return Err(Error::api(format!("marking node {name} status Unknown"))(e)),
            };
            tracing::info!(node = %name, silent_for = ?silent_for, "node stopped posting status; conditions now Unknown");
            if was_ready {
                ctx.events.record(
                    node_ref(&node),
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
            }
        }
    }

    let taints = desired_taints(&node, now);
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if taints != current {
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints},
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::debug!(node = %name, "node taints updated"),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(Error::api(format!("updating the taints of node {name}"))(e)),
        }
    }

    if ready_status(&node) != Some("True") {
        mark_pods_not_ready(&ctx, &name).await?;
    }
    ctx.backoff.succeeded(&name);
    if silent_for > grace {
        return Ok(Action::requeue(RESYNC));
    }
    // Look again just after the grace period would run out without a new heartbeat.
    let left = grace.saturating_sub(silent_for) + Duration::from_millis(100);
    Ok(Action::requeue(left.min(RESYNC)))
}

/// Sets the Ready condition of every pod on `node` to False (upstream's `MarkPodsNotReady`),
/// with the Warning event upstream records on each.
async fn mark_pods_not_ready(ctx: &Ctx, node: &str) -> Result<(), Error> {
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status != "False"))
        })
        .collect();
    for pod in pods {
        let ns = pod.namespace().unwrap_or_default();
        let pod_name = pod.name_any();
        let mut updated = pod.as_ref().clone();
        let now = Time(Timestamp::now());
        for c in updated
            .status
            .iter_mut()
            .flat_map(|s| s.conditions.iter_mut())
            .flatten()
        {
            if c.type_ == "Ready" {
                c.status = "False".into();
                c.last_transition_time = Some(now.clone());
            }
        }
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .replace_status(&pod_name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {
                tracing::debug!(node, pod = %format!("{ns}/{pod_name}"), "marked pod not ready");
                ctx.events.record(
                    object_ref(&*pod),
                    EventType::Warning,
                    "NodeNotReady",
                    "Node is not ready".into(),
                );
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::api(format!(
                    "marking pod {ns}/{pod_name} on node {node} not ready"
                ))(e))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn node(ready: Option<&str>, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                creation_timestamp: Some(Time(ts(100))),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: ready.map(|s| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        reason: Some("KubeletReady".into()),
                        last_heartbeat_time: Some(Time(ts(200))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn heartbeat_is_the_newest_signal() {
        let n = node(Some("True"), vec![]);
        assert_eq!(last_heartbeat(&n, None), Some(ts(200)));
        let lease = Lease {
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    ts(300),
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(last_heartbeat(&n, Some(&lease)), Some(ts(300)));
    }

    #[test]
    fn silent_nodes_turn_unknown_keeping_the_heartbeat() {
        let n = node(Some("True"), vec![]);
        let cs = silenced_conditions(&n, ts(400)).expect("changed");
        let ready = cs.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_heartbeat_time, Some(Time(ts(200))));
        assert_eq!(ready.last_transition_time, Some(Time(ts(400))));
        let mem = cs.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(mem.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        let mut again = n.clone();
        again.status.as_mut().unwrap().conditions = Some(cs);
        assert!(silenced_conditions(&again, ts(500)).is_none(), "idempotent");
    }

    #[test]
    fn taints_follow_ready() {
        let user = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            value: Some("db".into()),
            time_added: None,
        };
        let t = desired_taints(&node(Some("Unknown"), vec![user.clone()]), ts(10));
        let keys: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute")
            ]
        );
        assert_eq!(t[2].time_added, Some(Time(ts(10))));
        assert_eq!(t[1].time_added, None);
        // Ready=False swaps unreachable for not-ready; Ready=True clears both.
        let t2 = desired_taints(&node(Some("False"), t.clone()), ts(20));
        assert!(t2.iter().all(|t| t.key != TAINT_UNREACHABLE));
        assert!(t2
            .iter()
            .any(|t| t.key == TAINT_NOT_READY && t.effect == "NoExecute"));
        assert_eq!(desired_taints(&node(Some("True"), t2), ts(30)), vec![user]);
        // An existing managed taint keeps its timeAdded.
        let t3 = desired_taints(&node(Some("Unknown"), t.clone()), ts(99));
        assert_eq!(t3, t);
    }
}

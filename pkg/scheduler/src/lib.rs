//! The scheduler: assigns pods whose `spec.schedulerName` is `default-scheduler` to nodes, as
//! upstream's kube-scheduler, through the API like any other client.
//!
//! # Design
//! Pods and nodes come from shared watch caches ([`distro_client::Informers`]). Unbound pods
//! enter a [`queue::Queue`]; one loop takes them in turn, runs the filters and scores of
//! [`fit`] (pure functions) over a snapshot of the caches, and binds the pod to the best node
//! through `pods/<name>/binding` (ties broken at random). A pod that fits nowhere gets a
//! `PodScheduled=False` condition (reason `Unschedulable`) and a `FailedScheduling` event in
//! upstream's words, and is parked until a node or a bound pod changes, then retried with
//! a 1 s → 10 s backoff. Pods just bound are counted on their node ("assumed") until the cache
//! shows the binding, so a burst of pods does not overfill a node.
//!
//! The queue hands out higher-priority pods first. A pod that fits nowhere may preempt
//! ([`preemption`]): lower-priority victims on one node get a `DisruptionTarget` condition, a
//! `Preempted` event and are deleted, and the pod is nominated to that node
//! (`status.nominatedNodeName`) until they are gone.
//!
//! Binding is asynchronous, as upstream's binding cycle: the pod is assumed on its node at
//! once and the next pod is scheduled while the `binding` request (and its `Scheduled` event)
//! is in flight, at most [`MAX_BINDS_IN_FLIGHT`] at a time. A failed binding forgets the
//! assumption and retries the pod with backoff.
//!
//! # Limits
//! - Not implemented: scheduling profiles and extenders, default topology spread constraints,
//!   dynamic volume provisioning (unbound claims are refused as upstream does for immediate
//!   binding), and PodDisruptionBudgets in victim
//!   selection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use distro_client::events::{EventType, Recorder};
use distro_client::{Client, Informers};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use rand::seq::SliceRandom;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub mod cycle;
pub mod fit;
pub mod image;
pub mod interpod;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod selector;
pub mod spread;
pub mod volume;

use cycle::{Cluster, Cycle};
use fit::{Diagnosis, NodeInfo};
use preemption::Candidate;
use queue::Queue;

/// The scheduler name this scheduler answers to (upstream's default profile).
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// How long a pod just bound counts on its node without the cache showing it; after that the
/// cache is trusted (the binding failed or the pod is gone).
const ASSUME_TTL: Duration = Duration::from_secs(30);

/// Bindings in flight at once. Each is a durable write (two, with its event), so overlapping
/// them turns the datastore's group commit into throughput; past this many the loop stops
/// taking pods from the queue until one finishes (backpressure on the apiserver).
pub const MAX_BINDS_IN_FLIGHT: usize = 32;

/// Errors of one scheduling attempt; each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("{step}: {source}")]
    Api {
        /// What we were doing, e.g. "binding default/web to node-1".
        step: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// Runs the scheduler until `shutdown` turns true. `informers` watch pods and nodes;
/// `client` writes (bindings, pod status, events); `instance` names this scheduler in events'
/// `reportingInstance` (upstream: `default-scheduler-<host>`).
///
/// # Cancel safety
/// Dropping the future stops scheduling between API calls; nothing is left half-done but a
/// binding in flight, which the apiserver completes or refuses as a whole.
pub async fn run(
    informers: Informers,
    client: Client,
    instance: String,
    shutdown: watch::Receiver<bool>,
) {
    // One future for the whole run: polling it again after a lost race is cancel-safe.
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    let pods = informers.get::<Pod>();
    let nodes = informers.get::<Node>();
    let namespaces = informers.get::<Namespace>();
    let claims = informers.get::<PersistentVolumeClaim>();
    let volumes = informers.get::<PersistentVolume>();
    let synced = async {
        let _ = futures::join!(
            pods.wait_synced(),
            nodes.wait_synced(),
            namespaces.wait_synced(),
            claims.wait_synced(),
            volumes.wait_synced(),
        );
    };
    tokio::select! {
        _ = synced => {}
        _ = &mut stop => {
            informers.shutdown().await;
            return;
        }
    }
    // Both streams are cancel-safe: `next` on an unfold stream keeps its state in the stream.
    let mut pod_events = pods.subscribe().boxed();
    let mut node_events = nodes.subscribe().boxed();
    // Claims and volumes being bound may let a waiting pod in, as a node change does.
    let mut volume_events = futures::stream::select(
        claims.subscribe().map(|_| ()),
        volumes.subscribe().map(|_| ()),
    )
    .boxed();
    let mut sched = Scheduler {
        client: client.clone(),
        pods: pods.store(),
        nodes: nodes.store(),
        namespaces: namespaces.store(),
        claims: claims.store(),
        volumes: volumes.store(),
        queue: Queue::default(),
        assumed: HashMap::new(),
        events: Recorder::series(client.clone(), SCHEDULER_NAME, &instance),
        binds: JoinSet::new(),
    };
    tracing::info!("scheduler started");
    loop {
        let now = Instant::now();
        let next = sched.queue.next_due();
        let due = next.is_some_and(|t| t <= now);
        tokio::select! {
            _ = &mut stop => break,
            pod = pod_events.next() => match pod {
                Some(pod) => sched.pod_changed(&pod),
                None => break,
            },
            node = node_events.next() => match node {
                Some(_) => sched.queue.cluster_changed(),
                None => break,
            },
            change = volume_events.next() => match change {
                Some(()) => sched.queue.cluster_changed(),
                None => break,
            },
            Some(done) = sched.binds.join_next(), if !sched.binds.is_empty() => {
                if let Ok((key, uid, result)) = done {
                    sched.bound(&key, uid, result);
                }
            }
            _ = std::future::ready(()), if due && sched.binds.len() < MAX_BINDS_IN_FLIGHT => {
                if let Some(key) = sched.queue.pop(now) {
                    sched.schedule_one(&key).await;
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or(now)), if next.is_some() && !due => {}
        }
    }
    // Bindings in flight complete or fail as a whole at the apiserver; wait for them so their
    // events are written before the caches stop.
    while sched.binds.join_next().await.is_some() {}
    informers.shutdown().await;
    tracing::info!("scheduler stopped");
}

/// Resolves once `rx` turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

struct Scheduler {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    queue: Queue,
    /// Pods bound by us that the cache may not show bound yet: key → (pod with nodeName, when).
    assumed: HashMap<String, (Pod, Instant)>,
    /// Events in events.k8s.io/v1, as upstream's scheduler writes them.
    events: Recorder,
    /// Bindings in flight: each ends with (pod key, pod uid, outcome).
    binds: JoinSet<(String, Option<String>, Result<(), Error>)>,
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn lookup(store: &Store<Pod>, key: &str) -> Option<Arc<Pod>> {
    let (ns, name) = key.split_once('/')?;
    store.get(&ObjectRef::new(name).within(ns))
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether this scheduler should place `pod` now: unbound, ours, not deleting, not finished,
/// and without scheduling gates.
pub fn wants(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    node_name(pod).is_none()
        && spec.scheduler_name.as_deref().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && spec.scheduling_gates.as_ref().is_none_or(|g| g.is_empty())
        && pod.metadata.deletion_timestamp.is_none()
        && !terminal(pod)
}

impl Scheduler {
    fn pod_changed(&mut self, pod: &Pod) {
        let key = key_of(pod);
        // The event carries the object; the cache tells whether it still exists.
        let current = lookup(&self.pods, &key);
        match current.as_deref() {
            Some(p) if wants(p) => self
                .queue
                .add(&key, preemption::priority(p), Instant::now()),
            _ => {
                self.queue.remove(&key);
                // A bound pod that changed or left may have freed room.
                if node_name(pod).is_some() {
                    self.queue.cluster_changed();
                }
            }
        }
    }

    /// Node infos from the caches plus the pods assumed bound, plus the pods nominated to a
    /// node by a preemption that are at least as important as `pod` (upstream reserves room
    /// for them, so a lesser pod does not take what a preemption freed).
    fn snapshot(&mut self, pod: &Pod) -> Vec<NodeInfo> {
        let mut infos: HashMap<String, NodeInfo> = self
            .nodes
            .state()
            .into_iter()
            .map(|n| (n.name_any(), NodeInfo::new((*n).clone())))
            .collect();
        let now = Instant::now();
        let pods = &self.pods;
        // Keep an assumed pod until the cache shows it bound, gone or replaced (same name,
        // new uid), or the TTL passes.
        self.assumed.retain(|key, (assumed, at)| {
            now.duration_since(*at) < ASSUME_TTL
                && lookup(pods, key).is_some_and(|p| {
                    node_name(&p).is_none() && p.metadata.uid == assumed.metadata.uid
                })
        });
        let all = self.pods.state();
        let me = preemption::priority(pod);
        for p in &all {
            let nominated = p
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref())
                .filter(|n| !n.is_empty());
            let place = match (node_name(p), nominated) {
                (Some(node), _) if !terminal(p) => Some(node),
                (None, Some(node))
                    if wants(p)
                        && p.metadata.uid != pod.metadata.uid
                        && preemption::priority(p) >= me
                        && !self.assumed.contains_key(&key_of(p)) =>
                {
                    Some(node)
                }
                _ => None,
            };
            if let Some(info) = place.and_then(|n| infos.get_mut(n)) {
                info.add_shared(p.clone());
            }
        }
        for (assumed, _) in self.assumed.values() {
            if let Some(info) = node_name(assumed).and_then(|n| infos.get_mut(n)) {
                info.add_pod(assumed);
            }
        }
        let mut infos: Vec<NodeInfo> = infos.into_values().collect();
        infos.sort_by_key(|a| a.node.name_any());
        infos
    }

    /// Namespace labels, claims and volumes from the caches.
    fn cluster(&self) -> Cluster {
        let namespaces = self
            .namespaces
            .state()
            .iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect();
        let claims = self
            .claims
            .state()
            .iter()
            .map(|c| (key_of_claim(c), (**c).clone()))
            .collect();
        let volumes = self
            .volumes
            .state()
            .iter()
            .map(|v| (v.name_any(), (**v).clone()))
            .collect();
        Cluster {
            namespaces,
            volumes: volume::Volumes { claims, volumes },
        }
    }

    /// Whether we bound this very pod (not a namesake created since) and wait for the cache.
    fn is_assumed(&self, key: &str, pod: &Pod) -> bool {
        self.assumed
            .get(key)
            .is_some_and(|(a, _)| a.metadata.uid == pod.metadata.uid)
    }

    async fn schedule_one(&mut self, key: &str) {
        let pod = match lookup(&self.pods, key) {
            Some(p) if wants(&p) && !self.is_assumed(key, &p) => p,
            _ => {
                self.queue.remove(key);
                return;
            }
        };
        let infos = self.snapshot(&pod);
        let cluster = self.cluster();
        let result = match decide(&pod, &infos, &cluster) {
            Decision::Bind(node) => {
                self.start_binding(key, &pod, node);
                return;
            }
            Decision::Unschedulable(message) => {
                self.queue.unschedulable(key, Instant::now());
                tracing::debug!(pod = %key, %message, "unschedulable");
                self.report_unschedulable(&pod, &message, None).await
            }
            Decision::Preempt { message, candidate } => {
                self.queue.unschedulable(key, Instant::now());
                tracing::debug!(pod = %key, node = %candidate.node, victims = candidate.victims.len(), "preempting");
                self.preempt(&pod, &candidate).await;
                let nominated = Some(candidate.node.as_str());
                self.report_unschedulable(&pod, &message, nominated).await
            }
        };
        match result {
            Err(Error::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {
                tracing::debug!(pod = %key, reason = %s.reason, "pod gone under the scheduler");
                self.queue.remove(key);
            }
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "reporting an unschedulable pod failed");
            }
            Ok(()) => {}
        }
    }

    /// Assumes `pod` on `node` and starts its binding in the background (upstream's assume,
    /// then binding cycle), so the next pod is scheduled meanwhile and counts this one.
    fn start_binding(&mut self, key: &str, pod: &Arc<Pod>, node: String) {
        self.queue.remove(key);
        let mut bound = (**pod).clone();
        bound.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
        self.assumed
            .insert(key.to_string(), (bound, Instant::now()));
        let (client, events, pod, key) = (
            self.client.clone(),
            self.events.clone(),
            pod.clone(),
            key.to_string(),
        );
        self.binds.spawn(async move {
            let result = bind(&client, &events, &pod, &node).await;
            (key, pod.metadata.uid.clone(), result)
        });
    }

    /// A binding finished: on failure the assumption is dropped and the pod retried (or
    /// forgotten, if it was deleted or bound by someone else meanwhile).
    fn bound(&mut self, key: &str, uid: Option<String>, result: Result<(), Error>) {
        let Err(e) = result else { return };
        if self
            .assumed
            .get(key)
            .is_some_and(|(a, _)| a.metadata.uid == uid)
        {
            self.assumed.remove(key);
        }
        match e {
            Error::Api {
                source: kube::Error::Api(s),
                ..
            } if s.code == 404 || s.code == 409 => {
                // Deleted, or bound by someone else meanwhile: the cache will catch up.
                tracing::debug!(pod = %key, reason = %s.reason, "pod changed under the scheduler");
                self.queue.remove(key);
            }
            e => {
                tracing::warn!(pod = %key, error = %e, "binding failed; retrying with backoff");
                let now = Instant::now();
                if let Some(p) = lookup(&self.pods, key).filter(|p| wants(p)) {
                    self.queue.add(key, preemption::priority(&p), now);
                }
                self.queue.failed(key, now);
            }
        }
    }

    /// Evicts the victims of a preemption, as upstream's `PrepareCandidate`: each gets a
    /// `DisruptionTarget` condition, is deleted, and gets a `Preempted` event. Best effort:
    /// a victim already gone is fine, other failures are logged and the next attempt retries.
    async fn preempt(&mut self, preemptor: &Pod, candidate: &Candidate) {
        let uid = preemptor.metadata.uid.clone().unwrap_or_default();
        for victim in &candidate.victims {
            let (ns, name) = (victim.namespace().unwrap_or_default(), victim.name_any());
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let scheduler = victim
                .spec
                .as_ref()
                .and_then(|s| s.scheduler_name.clone())
                .unwrap_or_else(|| SCHEDULER_NAME.into());
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            let result = async {
                api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await?;
                api.delete(&name, &DeleteParams::default()).await?;
                Ok::<_, kube::Error>(())
            }
            .await;
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => {
                    tracing::warn!(victim = %format!("{ns}/{name}"), error = %e, "preempting a pod failed");
                    continue;
                }
            }
            let note = format!("Preempted by pod {uid} on node {}", candidate.node);
            self.events.record_action(
                pod_ref(victim, true),
                Some(pod_ref(preemptor, false)),
                EventType::Normal,
                "Preempted",
                "Preempting",
                note,
            );
        }
    }

    /// Sets `PodScheduled=False/Unschedulable` with the message (unless already so) and the
    /// nominated node of a preemption, and records a `FailedScheduling` event.
    async fn report_unschedulable(
        &mut self,
        pod: &Pod,
        message: &str,
        nominated: Option<&str>,
    ) -> Result<(), Error> {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        self.events.record_action(
            pod_ref(pod, true),
            None,
            EventType::Warning,
            "FailedScheduling",
            "Scheduling",
            message.to_string(),
        );
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        let nominated_now = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref());
        if current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        }) && (nominated.is_none() || nominated == nominated_now)
        {
            return Ok(());
        }
        let mut patch = serde_json::json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        if let Some(node) = nominated {
            patch["status"]["nominatedNodeName"] = serde_json::json!(node);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|source| Error::Api {
                step: format!("setting PodScheduled=False on {ns}/{name}"),
                source,
            })?;
        Ok(())
    }
}

fn key_of_claim(c: &PersistentVolumeClaim) -> String {
    format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
}

/// What one scheduling attempt decided.
#[derive(Debug)]
pub enum Decision {
    /// Bind to this node.
    Bind(String),
    /// Nothing fits, in upstream's words (including what preemption found).
    Unschedulable(String),
    /// Nothing fits, but evicting `candidate`'s victims makes room: the message (without a
    /// preemption part, as upstream's when preemption succeeds) and the candidate.
    Preempt {
        /// The `FailedScheduling` message.
        message: String,
        /// The node and its victims.
        candidate: Candidate,
    },
}

/// Picks the node for `pod` among `nodes`, or explains in upstream's words why none fits and
/// whether preemption can make room.
pub fn decide(pod: &Pod, nodes: &[NodeInfo], cluster: &Cluster) -> Decision {
    let cycle = Cycle::new(pod, nodes, cluster);
    let mut diagnosis = Diagnosis::default();
    let mut feasible = Vec::new();
    if let Some(message) = cycle.prefilter_error() {
        diagnosis.nodes = nodes.len();
        diagnosis.prefilter = Some(message.to_string());
    } else {
        for info in nodes {
            match cycle.filter(info) {
                Ok(()) => feasible.push(info),
                Err(reasons) => diagnosis.add(&info.node.name_any(), &reasons),
            }
        }
    }
    if feasible.is_empty() {
        let post = match preemption::ineligible(pod, nodes) {
            Some(message) => Err(message),
            None => preemption::find(pod, nodes, cluster, &diagnosis),
        };
        return match post {
            Ok(candidate) => Decision::Preempt {
                message: diagnosis.message(""),
                candidate,
            },
            Err(post) => Decision::Unschedulable(diagnosis.message(&post)),
        };
    }
    let scores = cycle.score(nodes, &feasible);
    let best = scores.iter().copied().max().unwrap_or(0);
    let top: Vec<&NodeInfo> = feasible
        .iter()
        .zip(&scores)
        .filter(|(_, s)| **s == best)
        .map(|(n, _)| *n)
        .collect();
    let chosen = top
        .choose(&mut rand::thread_rng())
        .map(|n| n.node.name_any())
        .unwrap_or_default();
    Decision::Bind(chosen)
}

/// Binds `pod` to `node` through `pods/<name>/binding` and records the `Scheduled` event
/// (one per pod, so it needs no aggregation).
async fn bind(client: &Client, events: &Recorder, pod: &Pod, node: &str) -> Result<(), Error> {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.into()),
            api_version: Some("v1".into()),
            ..Default::default()
        },
    };
    api.create_subresource::<_, serde_json::Value>(
        "binding",
        &name,
        &PostParams::default(),
        &binding,
    )
    .await
    .map_err(|source| Error::Api {
        step: format!("binding {ns}/{name} to {node}"),
        source,
    })?;
    tracing::debug!(pod = %format!("{ns}/{name}"), %node, "bound");
    let note = format!("Successfully assigned {ns}/{name} to {node}");
    events.record_action(
        pod_ref(pod, true),
        None,
        EventType::Normal,
        "Scheduled",
        "Binding",
        note,
    );
    Ok(())
}

/// How the scheduler's events name a pod: the regarding pod with the resource version it
/// saw (`with_version`), a related one without.
fn pod_ref(pod: &Pod, with_version: bool) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name_any()),
        namespace: pod.namespace(),
        uid: pod.metadata.uid.clone(),
        resource_version: if with_version {
            pod.metadata.resource_version.clone()
        } else {
            None
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {
                    "allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "10"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }))
            .expect("node"),
        )
    }

    fn pod(cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
        }))
        .expect("pod")
    }

    fn bind(pod: &Pod, nodes: &[NodeInfo]) -> Result<String, String> {
        match decide(pod, nodes, &Cluster::default()) {
            Decision::Bind(n) => Ok(n),
            Decision::Unschedulable(m) => Err(m),
            Decision::Preempt { candidate, .. } => Err(format!("preempt on {}", candidate.node)),
        }
    }

    #[test]
    fn decide_picks_a_fitting_node_breaking_ties_at_random() {
        let nodes = [node("small", "1"), node("large", "8")];
        assert_eq!(bind(&pod("2"), &nodes).as_deref(), Ok("large"));
        let twins = [node("a", "2"), node("b", "2")];
        let picks: std::collections::HashSet<String> = (0..64)
            .filter_map(|_| bind(&pod("1"), &twins).ok())
            .collect();
        assert_eq!(picks.len(), 2, "equal nodes are both chosen: {picks:?}");
        assert_eq!(
            bind(&pod("16"), &nodes),
            Err(
                "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are \
                 available: 2 No preemption victims found for incoming pod."
                    .into()
            )
        );
    }

    #[test]
    fn only_unbound_live_pods_of_this_scheduler_are_wanted() {
        let base = pod("1");
        assert!(wants(&base));
        let mut other = base.clone();
        other.spec.as_mut().expect("spec").scheduler_name = Some("custom".into());
        assert!(!wants(&other));
        let mut bound = base.clone();
        bound.spec.as_mut().expect("spec").node_name = Some("n".into());
        assert!(!wants(&bound));
        let mut gated = base.clone();
        gated.spec.as_mut().expect("spec").scheduling_gates =
            Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "g".into(),
            }]);
        assert!(!wants(&gated));
    }
}

//! The simulated runtime: drives pods bound to our nodes through their lifecycle without
//! starting anything, reporting what a kubelet would.
//!
//! - Pending → Running and Ready once the node has its pod range (`spec.podCIDRs`, from the
//!   server's node IPAM controller, as a real kubelet waits for it before its network is
//!   ready): podIP(s) from that range (one per family), hostIP, container statuses
//!   `running`, and a `Started` event per container. A node the controller could not give a
//!   range (`CIDRNotAvailable`) keeps its pods Pending.
//! - Pods whose restart policy is `Never` or `OnFailure` exit after the annotation
//!   [`RUN_SECONDS`] (default [`DEFAULT_RUN_SECONDS`]) with the code in [`EXIT_CODE`]
//!   (default 0): `Succeeded`, or `Failed` for `Never`; `OnFailure` restarts a failed
//!   container (restartCount + 1) as a kubelet would. `Always` pods run until deleted.
//! - A terminating pod is removed at once (grace 0), as a kubelet does once its containers
//!   are gone.
//!
//! All nodes of the process share one pod watch and one Node watch. Work per pod is level-triggered from what
//! the watch shows, at most [`WORKERS`] API writes in flight.
//!
//! Each node also serves the kubelet API ([`crate::kubelet`]) with its pods and their
//! simulated usage ([`crate::usage`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distro_client::Informers;
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::node::Registered;
use distro_client::events::EventType;

/// Annotation: seconds a `Never`/`OnFailure` pod's containers run before they exit.
pub const RUN_SECONDS: &str = "fake.distro.io/run-seconds";

/// Annotation: the exit code of a pod's containers (default 0).
pub const EXIT_CODE: &str = "fake.distro.io/exit-code";

/// How long `Never`/`OnFailure` pods run without [`RUN_SECONDS`].
pub const DEFAULT_RUN_SECONDS: f64 = 2.0;

/// API writes in flight at once: enough to start thousands of pods in seconds, bounded so a
/// burst does not open thousands of requests.
pub const WORKERS: usize = 32;

/// What we do to a pod next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    Start,
    Run,
    Remove,
}

/// Pod addresses handed out per node.
#[derive(Default)]
struct Pool {
    by_uid: HashMap<String, u8>,
    used: HashSet<u8>,
    next: u8,
}

impl Pool {
    /// The pod's address offset in the node's range: the one it has, or a free one
    /// (2–`max`; .1 is the gateway).
    fn get(&mut self, uid: &str, max: u8) -> u8 {
        if let Some(o) = self.by_uid.get(uid) {
            return *o;
        }
        let max = max.max(2);
        let mut pick = None;
        for _ in 2..=max {
            self.next = if self.next < 2 || self.next >= max {
                2
            } else {
                self.next + 1
            };
            if !self.used.contains(&self.next) {
                pick = Some(self.next);
                break;
            }
        }
        // A full range reuses addresses (a real node would refuse more than its range holds).
        let o = pick.unwrap_or(self.next);
        self.used.insert(o);
        self.by_uid.insert(uid.to_string(), o);
        o
    }

    fn release(&mut self, uid: &str) {
        if let Some(o) = self.by_uid.remove(uid) {
            self.used.remove(&o);
        }
    }
}

struct Node {
    reg: Arc<Registered>,
    pool: Mutex<Pool>,
}

struct Shared {
    nodes: HashMap<String, Node>,
    /// Every Node, for our nodes' pod ranges.
    node_objects: Store<k8s_openapi::api::core::v1::Node>,
    /// Bumped when one of our Nodes changes, so pods waiting for its range look again.
    node_changed: watch::Sender<u64>,
    usage: Arc<crate::usage::Usage>,
    /// Steps started (and not to be repeated) per pod UID; forgotten when the pod is removed.
    taken: Mutex<HashSet<(String, Step)>>,
    permits: Semaphore,
}

/// Runs the simulated runtime for `nodes`, and their kubelet APIs on `listeners`, until
/// `shutdown` turns true.
pub async fn run(
    nodes: Vec<Arc<Registered>>,
    listeners: Vec<crate::kubelet::Listener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(first) = nodes.first() else {
        return;
    };
    let informers = Informers::new(first.client.clone());
    let pods = informers.get::<Pod>();
    let node_objects = informers.get::<k8s_openapi::api::core::v1::Node>();
    let usage = Arc::new(crate::usage::Usage::default());
    let mut servers = tokio::task::JoinSet::new();
    for l in listeners {
        let Some(reg) = nodes.iter().find(|r| r.name == l.node) else {
            continue;
        };
        let api = Arc::new(distro_kubelet::server::KubeletApi {
            provider: Arc::new(crate::kubelet::FakeNode {
                node: l.node.clone(),
                pods: pods.store(),
                usage: usage.clone(),
            }),
            authorizer: distro_kubelet::server::SarAuthorizer::new(reg.client.clone(), &l.node),
        });
        servers.spawn(distro_kubelet::server::serve(
            l.listener,
            l.tls,
            api,
            shutdown.clone(),
        ));
    }
    let shared = Arc::new(Shared {
        usage,
        node_objects: node_objects.store(),
        node_changed: watch::channel(0).0,
        nodes: nodes
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    Node {
                        reg: r.clone(),
                        pool: Mutex::default(),
                    },
                )
            })
            .collect(),
        taken: Mutex::default(),
        permits: Semaphore::new(WORKERS),
    });
    let mut changes = std::pin::pin!(pods.subscribe());
    let mut node_changes = std::pin::pin!(node_objects.subscribe());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(node) = node_changes.next() => {
                if shared.nodes.contains_key(&node.name_any()) {
                    shared.node_changed.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
            pod = changes.next() => match pod {
                Some(pod) => consider(&shared, &pod, &mut tasks),
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    tasks.abort_all();
    while servers.join_next().await.is_some() {}
    informers.shutdown().await;
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Decides the next step for `pod` and starts it unless it is under way or done.
fn consider(shared: &Arc<Shared>, pod: &Pod, tasks: &mut tokio::task::JoinSet<()>) {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return;
    };
    if !shared.nodes.contains_key(node) {
        return;
    }
    if phase(pod) == "Running" {
        // A changed usage annotation takes effect from now, not from the next scrape.
        shared.usage.observe(pod, node, Timestamp::now());
    }
    let uid = pod.uid().unwrap_or_default();
    let step = if pod.metadata.deletion_timestamp.is_some() {
        Step::Remove
    } else {
        match phase(pod) {
            "Succeeded" | "Failed" => {
                if let Some(n) = shared.nodes.get(node) {
                    n.pool
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .release(&uid);
                }
                return;
            }
            "Running" if restart_policy(pod) != "Always" => Step::Run,
            "Running" => return,
            _ => Step::Start,
        }
    };
    {
        let mut taken = shared.taken.lock().unwrap_or_else(|e| e.into_inner());
        if !taken.insert((uid.clone(), step)) {
            return;
        }
    }
    let (shared, pod) = (shared.clone(), pod.clone());
    let node = node.to_string();
    tasks.spawn(async move {
        let result = match step {
            Step::Start => start(&shared, &node, &pod).await,
            Step::Run => run_to_exit(&shared, &node, &pod).await,
            Step::Remove => remove(&shared, &node, &pod).await,
        };
        if let Err(e) = result {
            tracing::warn!(pod = %pod.name_any(), ?step, error = %e, "simulated kubelet step failed; retrying on the next change");
            // Forget the step so the next watch event (or resync) tries again.
            let mut taken = shared.taken.lock().unwrap_or_else(|e| e.into_inner());
            taken.remove(&(uid, step));
        }
    });
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `conditions` with the ones named in `ours` replaced (others, e.g. from controllers, kept).
fn merge_conditions(pod: &Pod, ours: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !ours.iter().any(|o| o["type"] == c.type_.as_str()))
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    out.extend(ours.iter().cloned());
    out
}

fn condition(t: &str, status: bool, reason: Option<&str>, now: &str) -> Value {
    let mut c = json!({"type": t, "status": if status { "True" } else { "False" },
                       "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

fn container_id(pod: &Pod, container: &str) -> String {
    format!("fake://{}/{container}", pod.uid().unwrap_or_default())
}

fn image_of(c: &k8s_openapi::api::core::v1::Container) -> String {
    c.image.clone().unwrap_or_default()
}

async fn patch_status(
    shared: &Shared,
    node: &str,
    pod: &Pod,
    body: &Value,
) -> Result<(), kube::Error> {
    let Some(n) = shared.nodes.get(node) else {
        return Ok(());
    };
    let _permit = shared.permits.acquire().await;
    let api: Api<Pod> = Api::namespaced(n.reg.client.clone(), &pod.namespace().unwrap_or_default());
    match api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(body),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing to report.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The node's pod ranges, waiting until the node IPAM controller gave them.
async fn wait_ranges(shared: &Shared, node: &str) -> Vec<IpNet> {
    let mut changed = shared.node_changed.subscribe();
    loop {
        let found = shared
            .node_objects
            .state()
            .iter()
            .find(|n| n.name_any() == node)
            .map(|n| crate::network::pod_cidrs(n))
            .unwrap_or_default();
        if !found.is_empty() {
            return found;
        }
        tracing::debug!(%node, "waiting for the node's pod CIDR before starting pods");
        if changed.changed().await.is_err() {
            return Vec::new();
        }
    }
}

/// The largest address offset a pod may get in `range`: below its broadcast address, at
/// most 254 (a /24's worth, enough for a simulated node).
fn max_offset(range: &IpNet) -> u8 {
    let host_bits = u32::from(range.max_prefix_len() - range.prefix_len());
    let last = 1u128.checked_shl(host_bits).map_or(u128::MAX, |n| n - 1);
    u8::try_from(last.saturating_sub(1).min(254)).unwrap_or(254)
}

/// The address at `offset` in `range`.
fn nth(range: &IpNet, offset: u8) -> std::net::IpAddr {
    match range {
        IpNet::V4(n) => {
            std::net::Ipv4Addr::from(u32::from(n.network()).wrapping_add(u32::from(offset))).into()
        }
        IpNet::V6(n) => {
            std::net::Ipv6Addr::from(u128::from(n.network()).wrapping_add(u128::from(offset)))
                .into()
        }
    }
}

/// Reports the pod Running and Ready, once its node has a pod range.
async fn start(shared: &Shared, node: &str, pod: &Pod) -> Result<(), kube::Error> {
    let Some(n) = shared.nodes.get(node) else {
        return Ok(());
    };
    let ranges = wait_ranges(shared, node).await;
    let Some(first) = ranges.first() else {
        return Ok(());
    };
    let uid = pod.uid().unwrap_or_default();
    let max = ranges.iter().map(max_offset).min().unwrap_or(2);
    let offset = n
        .pool
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&uid, max);
    let pod_ip = nth(first, offset).to_string();
    let pod_ips: Vec<Value> = ranges
        .iter()
        .map(|r| json!({"ip": nth(r, offset).to_string()}))
        .collect();
    let now = now();
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": image_of(c), "imageID": format!("fake://{}", image_of(c)),
                   "containerID": container_id(pod, &c.name), "ready": true, "started": true,
                   "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let inits: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            json!({"name": c.name, "image": image_of(c), "imageID": format!("fake://{}", image_of(c)),
                   "containerID": container_id(pod, &c.name), "ready": true, "started": false,
                   "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                   "startedAt": now, "finishedAt": now, "containerID": container_id(pod, &c.name)}}})
        })
        .collect();
    let conditions = merge_conditions(
        pod,
        &[
            condition("PodReadyToStartContainers", true, None, &now),
            condition("Initialized", true, None, &now),
            condition("Ready", true, None, &now),
            condition("ContainersReady", true, None, &now),
            condition("PodScheduled", true, None, &now),
        ],
    );
    let mut status = json!({
        "phase": "Running",
        "hostIP": n.reg.host_ip,
        "hostIPs": [{"ip": n.reg.host_ip}],
        "podIP": pod_ip,
        "podIPs": pod_ips,
        "startTime": now,
        "conditions": conditions,
        "containerStatuses": containers,
        "qosClass": qos_class(&spec),
    });
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits);
    }
    patch_status(shared, node, pod, &json!({ "status": status })).await?;
    for c in &spec.containers {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            field_path: Some(format!("spec.containers{{{}}}", c.name)),
            ..Default::default()
        };
        n.reg.events.record(
            regarding,
            EventType::Normal,
            "Started",
            format!("Started container {} (simulated: nothing runs)", c.name),
        );
    }
    Ok(())
}

/// Upstream's QoS class from requests and limits.
fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        if !requests.is_empty() || !limits.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (requests.get(res), limits.get(res)) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Lets the pod's containers run for their time, then reports their exit; `OnFailure` pods
/// that fail are restarted and run again.
async fn run_to_exit(shared: &Shared, node: &str, pod: &Pod) -> Result<(), kube::Error> {
    let seconds = annotation(pod, RUN_SECONDS)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(DEFAULT_RUN_SECONDS);
    let code = annotation(pod, EXIT_CODE)
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(0);
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let elapsed = Timestamp::now()
        .duration_since(started)
        .as_secs_f64()
        .max(0.0);
    tokio::time::sleep(Duration::from_secs_f64((seconds - elapsed).max(0.0))).await;
    let mut restarts = 0i32;
    let spec = pod.spec.clone().unwrap_or_default();
    loop {
        let now = now();
        let restart = code != 0 && restart_policy(pod) == "OnFailure";
        let terminated = |c: &str| {
            json!({"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                   "startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "finishedAt": now,
                   "containerID": container_id(pod, c)})
        };
        let containers: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| {
                let mut s = json!({"name": c.name, "image": image_of(c),
                    "imageID": format!("fake://{}", image_of(c)),
                    "containerID": container_id(pod, &c.name)});
                if restart {
                    s["ready"] = json!(true);
                    s["started"] = json!(true);
                    s["restartCount"] = json!(restarts + 1);
                    s["lastState"] = json!({"terminated": terminated(&c.name)});
                    s["state"] = json!({"running": {"startedAt": now}});
                } else {
                    s["ready"] = json!(false);
                    s["started"] = json!(false);
                    s["restartCount"] = json!(restarts);
                    s["state"] = json!({"terminated": terminated(&c.name)});
                }
                s
            })
            .collect();
        let body = if restart {
            json!({"status": {"containerStatuses": containers}})
        } else {
            let phase = if code == 0 { "Succeeded" } else { "Failed" };
            let conditions = merge_conditions(
                pod,
                &[
                    condition("PodReadyToStartContainers", false, None, &now),
                    condition("Ready", false, Some("PodCompleted"), &now),
                    condition("ContainersReady", false, Some("PodCompleted"), &now),
                ],
            );
            json!({"status": {"phase": phase, "conditions": conditions, "containerStatuses": containers}})
        };
        patch_status(shared, node, pod, &body).await?;
        if !restart {
            if let Some(n) = shared.nodes.get(node) {
                n.pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(&pod.uid().unwrap_or_default());
            }
            return Ok(());
        }
        restarts += 1;
        tokio::time::sleep(Duration::from_secs_f64(seconds.max(1.0))).await;
    }
}

/// Removes a terminating pod for good (grace 0, only this incarnation), as a kubelet does
/// once its containers are stopped.
async fn remove(shared: &Shared, node: &str, pod: &Pod) -> Result<(), kube::Error> {
    let Some(n) = shared.nodes.get(node) else {
        return Ok(());
    };
    let uid = pod.uid().unwrap_or_default();
    let _permit = shared.permits.acquire().await;
    let api: Api<Pod> = Api::namespaced(n.reg.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {}
        // Gone already, or a new pod of the same name: not ours to delete.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e),
    }
    n.pool
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .release(&uid);
    let mut taken = shared.taken.lock().unwrap_or_else(|e| e.into_inner());
    taken.retain(|(u, _)| *u != uid);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_out_distinct_addresses_and_reuses_released_ones() {
        let mut p = Pool::default();
        let a = p.get("a", 254);
        assert_eq!(p.get("a", 254), a, "stable per pod");
        let b = p.get("b", 254);
        assert_ne!(a, b);
        assert!((2..=254).contains(&a) && (2..=254).contains(&b));
        p.release("a");
        let mut seen = HashSet::new();
        for i in 0..252 {
            seen.insert(p.get(&format!("x{i}"), 254));
        }
        assert!(seen.contains(&a), "released address handed out again");
        assert!(!seen.contains(&b), "b still in use");
        // A small range: offsets stay below its broadcast address.
        let mut small = Pool::default();
        for i in 0..10 {
            assert!((2..=6).contains(&small.get(&format!("s{i}"), 6)));
        }
    }

    #[test]
    fn addresses_come_from_the_nodes_range() {
        let v4: IpNet = "10.70.3.0/24".parse().unwrap();
        let v6: IpNet = "fd70:0:0:3::/64".parse().unwrap();
        let small: IpNet = "10.70.4.0/29".parse().unwrap();
        assert_eq!(max_offset(&v4), 254);
        assert_eq!(max_offset(&v6), 254);
        assert_eq!(max_offset(&small), 6);
        assert_eq!(nth(&v4, 7).to_string(), "10.70.3.7");
        assert_eq!(nth(&v6, 7).to_string(), "fd70:0:0:3::7");
    }
}

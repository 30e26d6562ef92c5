//! Pod admission on the node, as upstream's kubelet admit handlers run them before a new
//! pod gets a worker: first the eviction manager's (no new pods while the node is short of
//! a resource), then the general predicates the scheduler also checks (resources, node
//! affinity, host ports, NoExecute taints), because a pod bound by name
//! (`spec.nodeName` set directly) never went through the scheduler.
//!
//! A refused pod is not run: it goes `phase: Failed` with the handler's reason and
//! "Pod was rejected: <message>", and a Warning Event with the same reason
//! ([`Rejection`]; written by the pod workers).
//!
//! # Limits
//! - Critical pods (static, mirror, priority ≥ system-critical) are admitted without the
//!   resource checks; upstream instead evicts lower-priority pods to make room for them.
//! - No device-plugin, topology-manager, sysctl or AppArmor handlers.
//! - Simulated nodes (`--runtime fake`) run no pod workers and admit every pod.
//! - A pod seen again before its refusal is written (a rare watch race) may be refused and
//!   recorded twice.

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use distro_scheduler::fit::{host_ports, matches_node_selector, tolerates};
use distro_scheduler::resources::{self, CPU, EPHEMERAL_STORAGE, MEMORY, PODS};

use crate::qos::{pod_qos, QosClass};

/// Priority at and above which a pod is critical (upstream's `SystemCriticalPriority`, the
/// value of `system-cluster-critical`).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The eviction handler's reason (upstream's eviction `Reason`).
pub const EVICTED: &str = "Evicted";

/// Which resources the node is short of, as the eviction manager observes them: the
/// node's MemoryPressure, DiskPressure and PIDPressure conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    /// `memory.available` below its threshold.
    pub memory: bool,
    /// `nodefs.*` or `imagefs.*` below a threshold.
    pub disk: bool,
    /// `pid.available` below its threshold.
    pub pid: bool,
}

impl Pressure {
    /// The condition types that are true, in upstream's order.
    pub fn conditions(&self) -> Vec<&'static str> {
        [
            (self.memory, "MemoryPressure"),
            (self.disk, "DiskPressure"),
            (self.pid, "PIDPressure"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Why a pod was refused, in upstream's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// One word: `Evicted`, `OutOfcpu`, `NodeAffinity`, ... (status reason, Event reason).
    pub reason: String,
    /// What the Event says.
    pub message: String,
}

impl Rejection {
    fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// `status.message` of the refused pod (upstream's `rejectPod`).
    pub fn status_message(&self) -> String {
        format!("Pod was rejected: {}", self.message)
    }
}

/// Whether upstream counts `pod` as critical: static and mirror pods, and pods of
/// system-critical priority.
pub fn is_critical(pod: &Pod) -> bool {
    crate::static_pods::is_static(pod)
        || crate::static_pods::is_mirror(pod)
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
}

/// Whether `pod` is new to this node and must pass admission: not yet started by a kubelet
/// (no `status.startTime`), not terminal, not being deleted. Pods adopted after a restart
/// are running already and are never refused.
pub fn needs_admission(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.start_time.as_ref()).is_none()
        && matches!(
            status.and_then(|s| s.phase.as_deref()),
            None | Some("Pending")
        )
}

fn tolerates_taint(pod: &Pod, key: &str, effect: &str) -> bool {
    let taint = Taint {
        key: key.into(),
        effect: effect.into(),
        ..Default::default()
    };
    pod.spec
        .iter()
        .flat_map(|s| s.tolerations.iter().flatten())
        .any(|t| tolerates(t, &taint))
}

/// The eviction manager's handler: under memory pressure alone, BestEffort pods are
/// refused (unless they tolerate the memory-pressure taint); under any other pressure every
/// pod is; critical pods always pass.
pub fn admit_pressure(pod: &Pod, pressure: Pressure) -> Result<(), Rejection> {
    let conditions = pressure.conditions();
    if conditions.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if conditions == ["MemoryPressure"] {
        let best_effort = pod_qos(&pod.spec.clone().unwrap_or_default()) == QosClass::BestEffort;
        if !best_effort || tolerates_taint(pod, "node.kubernetes.io/memory-pressure", "NoSchedule")
        {
            return Ok(());
        }
    }
    Err(Rejection::new(
        EVICTED,
        // Go's %v of a []NodeConditionType.
        format!("The node had condition: [{}]. ", conditions.join(" ")),
    ))
}

/// The general predicates against `node` with `others` (the pods already admitted, not
/// terminal) on it, in upstream's order: resources, node affinity, host ports, NoExecute
/// taints.
pub fn admit_predicates<'a>(
    pod: &Pod,
    node: Option<&Node>,
    others: impl IntoIterator<Item = &'a Pod> + Clone,
) -> Result<(), Rejection> {
    let Some(node) = node else {
        return Err(Rejection::new(
            "InvalidNodeInfo",
            "Kubelet cannot get node info.",
        ));
    };
    if !is_critical(pod) {
        fits(pod, node, others.clone())?;
    }
    let predicate =
        |name: &str, desc: &str| Rejection::new(name, format!("Predicate {name} failed: {desc}"));
    if !matches_node_selector(pod, node) {
        return Err(predicate(
            "NodeAffinity",
            "node(s) didn't match Pod's node affinity/selector",
        ));
    }
    let used: Vec<_> = others.into_iter().flat_map(host_ports).collect();
    let conflict = host_ports(pod).iter().any(|(proto, ip, port)| {
        used.iter().any(|(p, i, n)| {
            p == proto && n == port && (i == ip || i == "0.0.0.0" || ip == "0.0.0.0")
        })
    });
    if conflict {
        return Err(predicate(
            "NodePorts",
            "node(s) didn't have free ports for the requested pod ports",
        ));
    }
    // The kubelet only looks at NoExecute taints; static pods are exempt.
    let untolerated = node
        .spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter(|t| t.effect == "NoExecute")
        .any(|t| {
            !pod.spec
                .iter()
                .flat_map(|s| s.tolerations.iter().flatten())
                .any(|tol| tolerates(tol, t))
        });
    if untolerated && !crate::static_pods::is_static(pod) {
        return Err(predicate(
            "TaintToleration",
            "node(s) had taints that the pod didn't tolerate",
        ));
    }
    Ok(())
}

/// Upstream's `noderesources.Fits` with its numbers: pods, then cpu (millicores), memory,
/// ephemeral storage, then other requested resources.
fn fits<'a>(
    pod: &Pod,
    node: &Node,
    others: impl IntoIterator<Item = &'a Pod>,
) -> Result<(), Rejection> {
    let allocatable = resources::list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
    let mut used = resources::Resources::new();
    let mut count = 0i64;
    for p in others {
        count += 1;
        for (k, v) in resources::pod_requests(p) {
            *used.entry(k).or_default() += v;
        }
    }
    let out_of = |name: &str, requested: i64, used: i64, capacity: i64| {
        Rejection::new(
            format!("OutOf{name}"),
            format!(
                "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
            ),
        )
    };
    let pod_slots = allocatable.get(PODS).copied().unwrap_or(0);
    if count + 1 > pod_slots {
        return Err(out_of(PODS, 1, count, pod_slots));
    }
    let wanted = resources::pod_requests(pod);
    let mut names: Vec<&str> = vec![CPU, MEMORY, EPHEMERAL_STORAGE];
    names.extend(
        wanted
            .keys()
            .map(String::as_str)
            .filter(|n| ![CPU, MEMORY, EPHEMERAL_STORAGE, PODS].contains(n)),
    );
    for name in names {
        let want = wanted.get(name).copied().unwrap_or(0);
        if want <= 0 {
            continue;
        }
        let have = used.get(name).copied().unwrap_or(0);
        let capacity = allocatable.get(name).copied().unwrap_or(0);
        if have + want > capacity {
            return Err(out_of(name, want, have, capacity));
        }
    }
    Ok(())
}

/// All handlers in upstream's order: eviction first, then the predicates.
///
/// # Errors
/// The first handler's [`Rejection`].
pub fn admit<'a>(
    pod: &Pod,
    node: Option<&Node>,
    others: impl IntoIterator<Item = &'a Pod> + Clone,
    pressure: Pressure,
) -> Result<(), Rejection> {
    admit_pressure(pod, pressure)?;
    admit_predicates(pod, node, others)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn container(requests: serde_json::Value) -> serde_json::Value {
        json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": requests}}]})
    }

    fn node() -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "labels": {"disk": "ssd"}},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "3"}},
        }))
        .unwrap()
    }

    #[test]
    fn pressure_refuses_as_upstream() {
        let best_effort = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
        let burstable = pod(container(json!({"memory": "10Mi"})));
        let memory = Pressure {
            memory: true,
            ..Default::default()
        };
        let disk = Pressure {
            disk: true,
            ..Default::default()
        };
        assert!(admit_pressure(&best_effort, Pressure::default()).is_ok());
        assert!(admit_pressure(&burstable, memory).is_ok());
        let r = admit_pressure(&best_effort, memory).unwrap_err();
        assert_eq!(r.reason, "Evicted");
        assert_eq!(r.message, "The node had condition: [MemoryPressure]. ");
        let r = admit_pressure(&burstable, disk).unwrap_err();
        assert_eq!(
            r.status_message(),
            "Pod was rejected: The node had condition: [DiskPressure]. "
        );
        let both = Pressure {
            memory: true,
            pid: true,
            ..Default::default()
        };
        assert_eq!(
            admit_pressure(&burstable, both).unwrap_err().message,
            "The node had condition: [MemoryPressure PIDPressure]. "
        );
        // Tolerating the memory-pressure taint lets a BestEffort pod in.
        let tolerant = pod(json!({"containers": [{"name": "c", "image": "i"}],
            "tolerations": [{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert!(admit_pressure(&tolerant, memory).is_ok());
        // Critical pods always pass.
        let critical =
            pod(json!({"containers": [{"name": "c", "image": "i"}], "priority": 2_000_001_000}));
        assert!(admit_pressure(&critical, disk).is_ok());
    }

    #[test]
    fn resources_are_counted_with_upstream_numbers() {
        let n = node();
        let big = pod(container(json!({"cpu": "1500m"})));
        let other = pod(container(json!({"cpu": "1"})));
        assert!(admit_predicates(&big, Some(&n), [] as [&Pod; 0]).is_ok());
        let r = admit_predicates(&big, Some(&n), [&other]).unwrap_err();
        assert_eq!(r.reason, "OutOfcpu");
        assert_eq!(
            r.message,
            "Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000"
        );
        let mem = pod(container(json!({"memory": "2Gi"})));
        assert_eq!(
            admit_predicates(&mem, Some(&n), [] as [&Pod; 0])
                .unwrap_err()
                .reason,
            "OutOfmemory"
        );
        let small = pod(container(json!({})));
        let r = admit_predicates(&small, Some(&n), [&small, &small, &small]).unwrap_err();
        assert_eq!(r.reason, "OutOfpods");
        assert_eq!(
            r.message,
            "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"
        );
    }

    #[test]
    fn node_affinity_ports_and_taints() {
        let mut n = node();
        let wrong = pod(
            json!({"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"disk": "hdd"}}),
        );
        let r = admit_predicates(&wrong, Some(&n), [] as [&Pod; 0]).unwrap_err();
        assert_eq!(r.reason, "NodeAffinity");
        assert_eq!(
            r.message,
            "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
        );
        let right = pod(
            json!({"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"disk": "ssd"}}),
        );
        assert!(admit_predicates(&right, Some(&n), [] as [&Pod; 0]).is_ok());
        let port = pod(
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        assert_eq!(
            admit_predicates(&port, Some(&n), [&port])
                .unwrap_err()
                .reason,
            "NodePorts"
        );
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(vec![Taint {
                key: "k".into(),
                effect: "NoExecute".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            admit_predicates(&right, Some(&n), [] as [&Pod; 0])
                .unwrap_err()
                .reason,
            "TaintToleration"
        );
        assert_eq!(
            admit_predicates(&right, None, [] as [&Pod; 0])
                .unwrap_err()
                .reason,
            "InvalidNodeInfo"
        );
    }

    #[test]
    fn only_new_pods_need_admission() {
        let mut p = pod(json!({"containers": []}));
        assert!(needs_admission(&p));
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        assert!(!needs_admission(&p));
    }
}

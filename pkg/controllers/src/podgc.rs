//! The pod garbage collector, as upstream's (`pkg/controller/podgc`): force-deletes (grace 0)
//! pods nobody else will ever finish deleting:
//! - terminated pods (Succeeded, Failed) beyond `--terminated-pod-gc-threshold`, oldest first;
//! - orphans: pods bound to a node that no longer exists, once the node has been gone for
//!   upstream's 40 s quarantine (and a fresh read confirms it), marked Failed with the
//!   `DisruptionTarget` condition (reason `DeletionByPodGC`) first;
//! - terminating pods that were never scheduled (no kubelet will confirm their end);
//! - terminating pods on a not-Ready node carrying the `node.kubernetes.io/out-of-service`
//!   taint (the administrator declared the node's workloads dead).
//!
//! Upstream scans every 20 s; this one also scans (at most once a second) when pods or nodes
//! change, so cleanup follows events promptly.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::passes::Passes;
use crate::Clients;

/// The name logs are reported under, as upstream.
pub const COMPONENT: &str = "pod-garbage-collector";

/// Upstream's `gcCheckPeriod`.
const PERIOD: Duration = Duration::from_secs(20);
/// Upstream's `quarantineTime`: how long a node must be gone before its pods are orphans.
const QUARANTINE: Duration = Duration::from_secs(40);
/// Shortest gap between two event-triggered scans.
const MIN_GAP: Duration = Duration::from_secs(1);

/// The taint that says a node's workloads are gone for good.
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

struct Gc {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    threshold: usize,
    /// Missing node name → when we first saw pods bound to it while it was missing.
    missing_since: HashMap<String, Instant>,
}

/// Runs until `shutdown` resolves; `threshold` is `--terminated-pod-gc-threshold` (0: keep all
/// terminated pods).
pub async fn run(
    clients: Clients,
    threshold: u32,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let pods = clients.informers.get::<Pod>();
    let nodes = clients.informers.get::<Node>();
    let mut gc = Gc {
        client: clients.writer(COMPONENT),
        pods: pods.store(),
        nodes: nodes.store(),
        threshold: threshold as usize,
        missing_since: HashMap::new(),
    };
    let changes = futures::stream::select(
        pods.subscribe().map(|_| ()).boxed(),
        nodes.subscribe().map(|_| ()).boxed(),
    );
    let mut passes = Passes::new(changes, PERIOD, MIN_GAP, shutdown);
    while passes.due().await {
        gc.pass().await;
    }
}

/// Terminated pods to delete so that at most `threshold` remain: the oldest first
/// (upstream's `gcTerminated`). `threshold` 0 keeps them all.
pub fn terminated_victims(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut done: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .cloned()
        .collect();
    if done.len() <= threshold {
        return Vec::new();
    }
    done.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let n = done.len() - threshold;
    done.truncate(n);
    done
}

fn node_name(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Whether a node is not Ready and carries the out-of-service NoExecute taint.
pub fn out_of_service(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == TAINT_OUT_OF_SERVICE && t.effect == "NoExecute")
        });
    !ready && tainted
}

impl Gc {
    async fn pass(&mut self) {
        let pods = self.pods.state();
        for pod in terminated_victims(&pods, self.threshold) {
            self.delete(&pod, None).await;
        }
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && node_name(p).is_none())
        {
            self.delete(pod, None).await;
        }
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
        {
            let Some(n) = node_name(pod) else { continue };
            if self
                .nodes
                .get(&ObjectRef::new(n))
                .is_some_and(|node| out_of_service(&node))
            {
                self.delete(pod, None).await;
            }
        }
        self.orphans(&pods).await;
    }

    /// Deletes pods bound to nodes gone for longer than the quarantine.
    async fn orphans(&mut self, pods: &[Arc<Pod>]) {
        let missing: HashSet<String> = pods
            .iter()
            .filter_map(|p| node_name(p))
            .filter(|n| self.nodes.get(&ObjectRef::new(n)).is_none())
            .map(String::from)
            .collect();
        self.missing_since.retain(|n, _| missing.contains(n));
        let now = Instant::now();
        let nodes: Api<Node> = Api::all(self.client.clone());
        for name in missing {
            let since = *self.missing_since.entry(name.clone()).or_insert(now);
            if since.elapsed() < QUARANTINE {
                continue;
            }
            // The cache may lag: only a fresh read saying "not found" makes them orphans.
            match nodes.get_opt(&name).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    self.missing_since.remove(&name);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "checking a missing node failed");
                    continue;
                }
            }
            for pod in pods.iter().filter(|p| node_name(p) == Some(name.as_str())) {
                self.delete(pod, Some("PodGC: node no longer exists")).await;
            }
            self.missing_since.remove(&name);
        }
    }

    /// Force-deletes a pod; with `disruption`, first marks it Failed with the
    /// `DisruptionTarget` condition as upstream does for orphans.
    async fn delete(&self, pod: &Pod, disruption: Option<&str>) {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Some(message) = disruption {
            let terminal = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            let mut status = json!({"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByPodGC",
                "message": message,
                "lastTransitionTime": Timestamp::now().to_string(),
            }]});
            if !terminal {
                status["phase"] = json!("Failed");
            }
            let patch = json!({ "status": status });
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "marking an orphan pod failed");
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: pod.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "garbage-collected pod"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting pod failed; retrying next pass")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodStatus, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn pod(name: &str, created: i64, phase: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn oldest_terminated_pods_go_first() {
        let pods = vec![
            pod("new-done", 300, "Succeeded"),
            pod("running", 50, "Running"),
            pod("old-failed", 100, "Failed"),
            pod("mid-done", 200, "Succeeded"),
        ];
        let names = |v: Vec<Arc<Pod>>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(terminated_victims(&pods, 1)),
            ["old-failed", "mid-done"]
        );
        assert!(terminated_victims(&pods, 3).is_empty());
        assert!(terminated_victims(&pods, 0).is_empty(), "0 keeps all");
    }

    #[test]
    fn out_of_service_needs_taint_and_not_ready() {
        let node = |ready: &str, taint: bool| Node {
            metadata: ObjectMeta::default(),
            spec: Some(NodeSpec {
                taints: taint.then(|| {
                    vec![Taint {
                        key: TAINT_OUT_OF_SERVICE.into(),
                        effect: "NoExecute".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        assert!(out_of_service(&node("False", true)));
        assert!(out_of_service(&node("Unknown", true)));
        assert!(!out_of_service(&node("True", true)));
        assert!(!out_of_service(&node("False", false)));
    }
}

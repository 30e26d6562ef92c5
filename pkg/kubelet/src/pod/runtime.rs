//! What the runtime has for one pod: its CRI sandbox and container statuses, newest first,
//! with the lookups upstream's `kubecontainer.PodStatus` offers.

use distro_cri::api::{
    ContainerState, ContainerStatus, NamespaceMode, PodSandboxState, PodSandboxStatus,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;

use super::container::{ANNOTATION_HASH, ANNOTATION_RESTART_COUNT};

/// Reason containerd gives a container that could not be started at all.
pub const REASON_CONTAINER_CANNOT_RUN: &str = "ContainerCannotRun";

/// A pod's sandboxes and containers as CRI reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimePod {
    /// Sandboxes, newest first.
    pub sandboxes: Vec<PodSandboxStatus>,
    /// Containers of every attempt, newest first.
    pub containers: Vec<ContainerStatus>,
}

impl RuntimePod {
    /// Sorts both lists newest first (by creation time), which every lookup relies on.
    pub fn new(mut sandboxes: Vec<PodSandboxStatus>, mut containers: Vec<ContainerStatus>) -> Self {
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        RuntimePod {
            sandboxes,
            containers,
        }
    }

    /// The newest status of the container called `name`.
    pub fn latest(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| container_name(c) == name)
    }

    /// The newest sandbox.
    pub fn latest_sandbox(&self) -> Option<&PodSandboxStatus> {
        self.sandboxes.first()
    }

    /// The IPs of the newest ready sandbox, primary first.
    pub fn pod_ips(&self) -> Vec<String> {
        let Some(sb) = self
            .sandboxes
            .iter()
            .find(|s| s.state == PodSandboxState::SandboxReady as i32)
        else {
            return Vec::new();
        };
        let Some(net) = sb.network.as_ref() else {
            return Vec::new();
        };
        std::iter::once(net.ip.clone())
            .chain(net.additional_ips.iter().map(|i| i.ip.clone()))
            .filter(|ip| !ip.is_empty())
            .collect()
    }
}

/// The container name a status belongs to.
pub fn container_name(c: &ContainerStatus) -> &str {
    c.metadata.as_ref().map_or("", |m| m.name.as_str())
}

/// The state as the enum (unknown values read as Unknown).
pub fn state(c: &ContainerStatus) -> ContainerState {
    ContainerState::try_from(c.state).unwrap_or(ContainerState::ContainerUnknown)
}

/// The restart count the kubelet stamped on the container (its attempt otherwise).
pub fn restart_count(c: &ContainerStatus) -> i32 {
    c.annotations
        .get(ANNOTATION_RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| c.metadata.as_ref().map_or(0, |m| m.attempt as i32))
}

/// The spec hash the kubelet stamped on the container.
pub fn hash(c: &ContainerStatus) -> Option<&str> {
    c.annotations.get(ANNOTATION_HASH).map(String::as_str)
}

/// A CRI time (nanoseconds, 0 = unset) as a timestamp.
pub fn cri_time(nanos: i64) -> Option<Timestamp> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
}

/// `restartPolicy`, defaulting to Always.
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// An init container with `restartPolicy: Always` is a sidecar.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Upstream's `ShouldContainerBeRestarted`: never after deletion; always when never
/// started, created-but-not-started, or in an unknown state; else per `restartPolicy`
/// and the last exit code.
pub fn should_container_be_restarted(
    container: &Container,
    pod: &Pod,
    runtime: &RuntimePod,
) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = runtime.latest(&container.name) else {
        return true;
    };
    match state(status) {
        ContainerState::ContainerRunning => false,
        ContainerState::ContainerUnknown | ContainerState::ContainerCreated => true,
        ContainerState::ContainerExited => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => status.exit_code != 0,
            _ => true,
        },
    }
}

/// Upstream `PodSandboxChanged`: (needs a new sandbox, attempt, current sandbox ID). A new
/// one is needed when there is none, several are ready, the newest is not ready, its network
/// namespace mode no longer matches `hostNetwork`, or it has no IP on the pod network.
pub fn sandbox_changed(pod: &Pod, rt: &RuntimePod) -> (bool, u32, Option<String>) {
    let Some(latest) = rt.latest_sandbox() else {
        return (true, 0, None);
    };
    let attempt = latest.metadata.as_ref().map_or(0, |m| m.attempt);
    let ready =
        |s: &distro_cri::api::PodSandboxStatus| s.state == PodSandboxState::SandboxReady as i32;
    let id = Some(latest.id.clone());
    if rt.sandboxes.iter().filter(|s| ready(s)).count() > 1 || !ready(latest) {
        return (true, attempt + 1, id);
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let want = if host_network {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    } as i32;
    let have = latest
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network);
    if have.is_some_and(|h| h != want) {
        return (true, attempt + 1, None);
    }
    if !host_network && latest.network.as_ref().is_some_and(|n| n.ip.is_empty()) {
        return (true, attempt + 1, id);
    }
    (false, attempt, id)
}

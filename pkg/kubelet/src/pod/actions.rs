//! What to do next for a pod: upstream's `computePodActions` as a pure function from the
//! desired spec and the runtime's state to a list of actions, plus the CrashLoopBackOff and
//! image-pull backoff checks the sync loop applies before each start.
//!
//! # Limits
//! In-place resize is not planned here; a sidecar that fails during initialization is
//! restarted like any init container rather than by upstream's separate sidecar path.

use std::collections::HashSet;

use distro_cri::api::{ContainerState, ContainerStatus};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;

use super::container::container_hash;
use super::format_pod;
use super::runtime::{
    self, container_name, cri_time, is_sidecar, restart_policy, should_container_be_restarted,
    RuntimePod,
};
use super::status::crash_loop_message;
use crate::backoff::Backoff;

/// Why a running container is to be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Its spec hash changed (image edited).
    SpecChanged,
    /// Its liveness probe failed.
    LivenessProbe,
    /// Its startup probe failed.
    StartupProbe,
    /// The runtime does not know its state; kill before starting a fresh one.
    Unknown,
}

/// One container to stop, with upstream's event message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillContainer {
    /// CRI container ID.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Why, as upstream words the Killing event.
    pub message: String,
    /// Why, as a value.
    pub reason: KillReason,
}

/// The plan for one sync of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and the sandbox (before anything else).
    pub kill_pod: bool,
    /// Create a new sandbox (after killing the old one).
    pub create_sandbox: bool,
    /// The current sandbox, when there is one.
    pub sandbox_id: Option<String>,
    /// The attempt number of the sandbox to create (or of the current one).
    pub attempt: u32,
    /// Index into `initContainers` of the next one to start.
    pub next_init_container: Option<usize>,
    /// Indexes into `initContainers` of sidecars to (re)start once initialization is done.
    pub sidecars_to_start: Vec<usize>,
    /// Indexes into `containers` to start.
    pub containers_to_start: Vec<usize>,
    /// Running containers to stop.
    pub containers_to_kill: Vec<KillContainer>,
    /// Indexes into `ephemeralContainers` to start (`kubectl debug`; never restarted).
    pub ephemeral_to_start: Vec<usize>,
}

/// The pod's ephemeral containers as containers (the same fields but `targetContainerName`),
/// in `ephemeralContainers` order, to be configured and started like any other.
pub fn ephemeral_containers(pod: &Pod) -> Vec<Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter_map(|e| serde_json::to_value(e).ok())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// The container whose process namespace ephemeral container `name` joins (`--target`).
pub fn ephemeral_target<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .find(|e| e.name == name)
        .and_then(|e| e.target_container_name.as_deref())
}

/// Probe failures known for running containers, by CRI container ID.
#[derive(Debug, Clone, Default)]
pub struct ProbeFailures {
    /// Containers whose liveness probe failed.
    pub liveness: HashSet<String>,
    /// Containers whose startup probe failed.
    pub startup: HashSet<String>,
    /// Running containers with a startup probe that has not succeeded yet: a sidecar in
    /// this set holds back the init containers after it.
    pub not_started: HashSet<String>,
}

fn exited_ok(s: &ContainerStatus) -> bool {
    runtime::state(s) == ContainerState::ContainerExited && s.exit_code == 0
}

fn init_failed(s: &ContainerStatus) -> bool {
    match runtime::state(s) {
        ContainerState::ContainerExited => s.exit_code != 0,
        ContainerState::ContainerUnknown => true,
        ContainerState::ContainerCreated => s.reason == runtime::REASON_CONTAINER_CANNOT_RUN,
        ContainerState::ContainerRunning => false,
    }
}

/// Where initialization stands.
enum Init<'a> {
    /// All init containers done (or a regular container already ran).
    Done,
    /// One is running: wait.
    InProgress,
    /// Start this one next; the status is its last failed attempt, if any.
    Next(usize, Option<&'a ContainerStatus>),
    /// This running sidecar failed its startup probe: kill it and start it again.
    RestartSidecar(usize, &'a ContainerStatus),
}

/// Upstream `findNextInitContainerToRun`; a sidecar counts as done once it has started
/// (running, and its startup probe, if any, succeeded).
fn next_init<'a>(pod: &Pod, rt: &'a RuntimePod, probes: &ProbeFailures) -> Init<'a> {
    let spec = pod.spec.as_ref();
    let inits = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    if inits.is_empty() {
        return Init::Done;
    }
    if containers.iter().any(|c| {
        rt.latest(&c.name)
            .is_some_and(|s| runtime::state(s) == ContainerState::ContainerRunning)
    }) {
        return Init::Done;
    }
    for (i, c) in inits.iter().enumerate() {
        let Some(s) = rt.latest(&c.name) else {
            return Init::Next(i, None);
        };
        if is_sidecar(c) {
            if runtime::state(s) != ContainerState::ContainerRunning {
                return Init::Next(i, None);
            }
            if probes.startup.contains(&s.id) {
                return Init::RestartSidecar(i, s);
            }
            if probes.not_started.contains(&s.id) {
                return Init::InProgress;
            }
            continue;
        }
        if exited_ok(s) {
            continue;
        }
        if init_failed(s) {
            return Init::Next(i, Some(s));
        }
        if runtime::state(s) == ContainerState::ContainerRunning {
            return Init::InProgress;
        }
        return Init::Next(i, None);
    }
    Init::Done
}

/// Upstream `computePodActions`.
pub fn compute_pod_actions(pod: &Pod, rt: &RuntimePod, probes: &ProbeFailures) -> PodActions {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = restart_policy(pod);
    let restart_on_failure = policy != "Never";
    let (create, attempt, sandbox_id) = runtime::sandbox_changed(pod, rt);
    let mut a = PodActions {
        kill_pod: create,
        create_sandbox: create,
        sandbox_id,
        attempt,
        ..Default::default()
    };

    if pod.metadata.deletion_timestamp.is_some() {
        return PodActions {
            kill_pod: true,
            create_sandbox: false,
            ..a
        };
    }

    if create {
        // A finished pod that must not restart gets no new sandbox, only cleanup.
        if !restart_on_failure && attempt != 0 && !rt.containers.is_empty() {
            a.create_sandbox = false;
            return a;
        }
        let to_start: Vec<usize> = spec
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| !(policy == "OnFailure" && rt.latest(&c.name).is_some_and(exited_ok)))
            .map(|(i, _)| i)
            .collect();
        if to_start.is_empty() && matches!(next_init(pod, rt, probes), Init::Done) {
            a.create_sandbox = false;
            return a;
        }
        if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
            a.next_init_container = Some(0);
            return a;
        }
        a.containers_to_start = to_start;
        return a;
    }

    // As upstream: ephemeral containers start even before initialization completes, once,
    // and are never restarted.
    for (i, c) in ephemeral_containers(pod).iter().enumerate() {
        if rt.latest(&c.name).is_none() {
            a.ephemeral_to_start.push(i);
        }
    }

    match next_init(pod, rt, probes) {
        Init::InProgress => return a,
        Init::Next(i, failed) => {
            if failed.is_some() && !restart_on_failure {
                a.kill_pod = true;
            } else {
                if let Some(s) =
                    failed.filter(|s| runtime::state(s) == ContainerState::ContainerUnknown)
                {
                    a.containers_to_kill.push(KillContainer {
                        id: s.id.clone(),
                        name: container_name(s).to_string(),
                        message:
                            "Init container is in \"unknown\" state, try killing it before restart"
                                .into(),
                        reason: KillReason::Unknown,
                    });
                }
                a.next_init_container = Some(i);
            }
            return a;
        }
        Init::RestartSidecar(i, s) => {
            a.containers_to_kill
                .push(sidecar_kill(s, KillReason::StartupProbe));
            a.next_init_container = Some(i);
            return a;
        }
        Init::Done => {}
    }

    // Sidecars that stopped, or failed a probe, are restarted regardless of the pod's policy.
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        if !is_sidecar(c) {
            continue;
        }
        let running = rt
            .latest(&c.name)
            .filter(|s| runtime::state(s) == ContainerState::ContainerRunning);
        let Some(s) = running else {
            a.sidecars_to_start.push(i);
            continue;
        };
        let reason = if probes.liveness.contains(&s.id) {
            KillReason::LivenessProbe
        } else if probes.startup.contains(&s.id) {
            KillReason::StartupProbe
        } else {
            continue;
        };
        a.containers_to_kill.push(sidecar_kill(s, reason));
        a.sidecars_to_start.push(i);
    }

    let mut keep = 0;
    for (i, c) in spec.containers.iter().enumerate() {
        let status = rt.latest(&c.name);
        let Some(s) = status.filter(|s| runtime::state(s) == ContainerState::ContainerRunning)
        else {
            if should_container_be_restarted(c, pod, rt) {
                a.containers_to_start.push(i);
                if let Some(s) =
                    status.filter(|s| runtime::state(s) == ContainerState::ContainerUnknown)
                {
                    a.containers_to_kill.push(KillContainer {
                        id: s.id.clone(),
                        name: c.name.clone(),
                        message: "Container is in \"unknown\" state, try killing it before restart"
                            .into(),
                        reason: KillReason::Unknown,
                    });
                }
            }
            continue;
        };
        let mut restart = restart_on_failure;
        let (mut message, reason) = if runtime::hash(s) != Some(container_hash(c).as_str()) {
            restart = true; // a changed spec restarts whatever the policy
            (
                format!("Container {} definition changed", c.name),
                KillReason::SpecChanged,
            )
        } else if probes.liveness.contains(&s.id) {
            (
                format!("Container {} failed liveness probe", c.name),
                KillReason::LivenessProbe,
            )
        } else if probes.startup.contains(&s.id) {
            (
                format!("Container {} failed startup probe", c.name),
                KillReason::StartupProbe,
            )
        } else {
            keep += 1;
            continue;
        };
        if restart {
            message.push_str(", will be restarted");
            a.containers_to_start.push(i);
        }
        a.containers_to_kill.push(KillContainer {
            id: s.id.clone(),
            name: c.name.clone(),
            message,
            reason,
        });
    }
    if keep == 0 && a.containers_to_start.is_empty() {
        a.kill_pod = true;
        a.sidecars_to_start.clear();
        a.ephemeral_to_start.clear();
    }
    a
}

/// Upstream's kill of a sidecar whose probe failed (its message has no ", will be
/// restarted": a sidecar always is).
fn sidecar_kill(s: &ContainerStatus, reason: KillReason) -> KillContainer {
    let name = container_name(s).to_string();
    let probe = if reason == KillReason::LivenessProbe {
        "liveness"
    } else {
        "startup"
    };
    KillContainer {
        id: s.id.clone(),
        message: format!("Init container {name} failed {probe} probe"),
        name,
        reason,
    }
}

/// Upstream's stable backoff key: pod name, namespace, UID, container name and spec hash.
pub fn backoff_key(pod: &Pod, container: &Container) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}_{}_{}_{}",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or(""),
        container.name,
        container_hash(container)
    )
}

/// Upstream `doBackOff` before (re)starting `container`: `Some((message, wait))` (reason
/// CrashLoopBackOff, and how long the backoff still lasts) while the last exit is within its
/// backoff; otherwise records this restart (doubling the next delay) and returns `None`.
pub fn container_backoff(
    backoff: &mut Backoff,
    pod: &Pod,
    container: &Container,
    rt: &RuntimePod,
    now: Timestamp,
) -> Option<(String, std::time::Duration)> {
    let exited = rt.containers.iter().find(|c| {
        container_name(c) == container.name && runtime::state(c) == ContainerState::ContainerExited
    })?;
    let finished = cri_time(exited.finished_at).unwrap_or(now);
    let key = backoff_key(pod, container);
    let wait = backoff.remaining_since(&key, finished, now);
    if !wait.is_zero() {
        return Some((
            crash_loop_message(backoff.get(&key), &container.name, pod),
            wait,
        ));
    }
    backoff.next(&key, finished, now);
    None
}

/// The image-pull backoff key: per pod and image, as upstream's image manager.
pub fn image_backoff_key(pod: &Pod, image: &str) -> String {
    format!("{}_{image}", pod.metadata.uid.as_deref().unwrap_or(""))
}

/// Before pulling: `Some(message)` (reason ImagePullBackOff) while a failed pull of this
/// image for this pod is within its backoff.
pub fn image_pull_backoff(
    backoff: &Backoff,
    pod: &Pod,
    image: &str,
    now: Timestamp,
) -> Option<String> {
    let key = image_backoff_key(pod, image);
    backoff
        .is_in_backoff_since_update(&key, now)
        .then(|| format!("Back-off pulling image {image:?}"))
}

/// After a failed pull (reason ErrImagePull): the next attempt waits longer.
pub fn record_pull_failure(backoff: &mut Backoff, pod: &Pod, image: &str, now: Timestamp) {
    backoff.next(&image_backoff_key(pod, image), now, now);
}

/// What to do about a container's image before creating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDecision {
    /// Pull it (first checking [`image_pull_backoff`]).
    Pull,
    /// Use the image already on the node; the message is upstream's Pulled event.
    Present(String),
    /// `imagePullPolicy: Never` and the image is absent: reason ErrImageNeverPull, this message.
    NeverPull(String),
}

/// The effective pull policy: the field, else the API's default (Always for `:latest` or an
/// untagged, undigested reference; IfNotPresent otherwise).
pub fn pull_policy(container: &Container) -> &str {
    if let Some(p) = container
        .image_pull_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        return p;
    }
    let image = container.image.as_deref().unwrap_or("");
    if image.contains('@') {
        return "IfNotPresent";
    }
    // A tag is what follows the last ':' after the last '/' (a registry port is not a tag).
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// Upstream `shouldPullImage` with its event and error messages.
pub fn image_decision(container: &Container, image_present: bool) -> ImageDecision {
    let image = container.image.as_deref().unwrap_or("");
    match (pull_policy(container), image_present) {
        ("Never", false) => ImageDecision::NeverPull(format!(
            "Container image {image:?} is not present with pull policy of Never"
        )),
        ("Never" | "IfNotPresent", true) => ImageDecision::Present(format!(
            "Container image {image:?} already present on machine"
        )),
        _ => ImageDecision::Pull,
    }
}

/// Upstream's floor on the time a container gets to stop.
pub const MIN_GRACE_PERIOD_SECONDS: i64 = 2;

/// Seconds a container gets between SIGTERM and SIGKILL (upstream
/// `setTerminationGracePeriod`): the deletion's grace period, else a failed probe's own
/// `terminationGracePeriodSeconds`, else the pod's (default 30).
pub fn termination_grace_period(
    pod: &Pod,
    container: &Container,
    reason: Option<KillReason>,
) -> i64 {
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        return g;
    }
    let probe = match reason {
        Some(KillReason::LivenessProbe) => container.liveness_probe.as_ref(),
        Some(KillReason::StartupProbe) => container.startup_probe.as_ref(),
        _ => None,
    };
    if let Some(g) = probe.and_then(|p| p.termination_grace_period_seconds) {
        return g;
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

/// The stop timeout to pass to CRI: what is left of `grace` after a preStop hook ran for
/// `hook_seconds` (0 without a hook; upstream runs the hook only when `grace > 0`), never
/// under 2 s, so no container is SIGKILLed without a chance to exit.
pub fn grace_after_pre_stop(grace: i64, hook_seconds: i64) -> i64 {
    (grace - hook_seconds).max(MIN_GRACE_PERIOD_SECONDS)
}

/// Events name the pod as upstream does in its messages.
pub fn backoff_event_message(pod: &Pod, container: &str) -> String {
    format!(
        "Back-off restarting failed container {container} in pod {}",
        format_pod(pod)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::container::{ANNOTATION_HASH, ANNOTATION_RESTART_COUNT};
    use distro_cri::api::{
        ContainerMetadata, PodSandboxMetadata, PodSandboxNetworkStatus, PodSandboxState,
        PodSandboxStatus,
    };
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::time::Duration;

    const SEC: i64 = 1_000_000_000;
    const BASE: i64 = 1_700_000_000 * SEC;

    fn spec_container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    fn pod(policy: &str, containers: &[&str], inits: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                containers: containers.iter().map(|n| spec_container(n)).collect(),
                init_containers: (!inits.is_empty())
                    .then(|| inits.iter().map(|n| spec_container(n)).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sandbox(id: &str, attempt: u32, ready: bool, created: i64) -> PodSandboxStatus {
        PodSandboxStatus {
            id: id.into(),
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt,
            }),
            state: if ready {
                PodSandboxState::SandboxReady
            } else {
                PodSandboxState::SandboxNotready
            } as i32,
            created_at: BASE + created,
            network: Some(PodSandboxNetworkStatus {
                ip: "10.42.0.3".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ctr(name: &str, n: u32, state: ContainerState, exit: i32) -> ContainerStatus {
        let created = BASE + i64::from(n) * 10 * SEC;
        ContainerStatus {
            id: format!("{name}-{n}"),
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: n,
            }),
            state: state as i32,
            created_at: created,
            started_at: created + SEC,
            finished_at: if state == ContainerState::ContainerExited {
                created + 2 * SEC
            } else {
                0
            },
            exit_code: exit,
            annotations: [
                (
                    ANNOTATION_HASH.to_string(),
                    container_hash(&spec_container(name)),
                ),
                (ANNOTATION_RESTART_COUNT.to_string(), n.to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn ready(containers: Vec<ContainerStatus>) -> RuntimePod {
        RuntimePod::new(vec![sandbox("sb", 0, true, 0)], containers)
    }

    fn plan(p: &Pod, rt: &RuntimePod) -> PodActions {
        compute_pod_actions(p, rt, &ProbeFailures::default())
    }

    use ContainerState::{
        ContainerExited as Exited, ContainerRunning as Running, ContainerUnknown as Unknown,
    };

    #[test]
    fn ephemeral_containers_start_once_and_never_restart() {
        let mut p = pod("Always", &["a"], &[]);
        p.spec.as_mut().unwrap().ephemeral_containers = Some(vec![serde_json::from_value(
            serde_json::json!({"name": "dbg", "image": "busybox", "targetContainerName": "a"}),
        )
        .unwrap()]);
        assert_eq!(ephemeral_containers(&p)[0].name, "dbg");
        assert_eq!(ephemeral_target(&p, "dbg"), Some("a"));
        let a = plan(&p, &ready(vec![ctr("a", 0, Running, 0)]));
        assert_eq!(a.ephemeral_to_start, vec![0]);
        assert!(!a.kill_pod);
        let a = plan(
            &p,
            &ready(vec![ctr("a", 0, Running, 0), ctr("dbg", 0, Exited, 1)]),
        );
        assert!(a.ephemeral_to_start.is_empty() && !a.kill_pod, "{a:?}");
    }

    #[test]
    fn fresh_pod_creates_sandbox_then_containers() {
        let a = plan(&pod("Always", &["a", "b"], &[]), &RuntimePod::default());
        assert!(a.kill_pod && a.create_sandbox);
        assert_eq!(
            (
                a.attempt,
                a.sandbox_id.as_deref(),
                a.containers_to_start.as_slice()
            ),
            (0, None, &[0, 1][..])
        );
        let a = plan(
            &pod("Always", &["a"], &["i1", "i2"]),
            &RuntimePod::default(),
        );
        assert_eq!(
            (a.next_init_container, a.containers_to_start.len()),
            (Some(0), 0)
        );
        // Sandbox up, nothing started yet.
        let a = plan(&pod("Always", &["a", "b"], &[]), &ready(vec![]));
        assert!(!a.kill_pod && !a.create_sandbox);
        assert_eq!(a.containers_to_start, vec![0, 1]);
        assert_eq!(a.sandbox_id.as_deref(), Some("sb"));
    }

    #[test]
    fn steady_state_does_nothing() {
        let a = plan(
            &pod("Always", &["a"], &[]),
            &ready(vec![ctr("a", 0, Running, 0)]),
        );
        assert_eq!(
            a,
            PodActions {
                sandbox_id: Some("sb".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn restarts_per_policy() {
        let exited = |code| ready(vec![ctr("a", 0, Exited, code)]);
        assert_eq!(
            plan(&pod("Always", &["a"], &[]), &exited(0)).containers_to_start,
            vec![0]
        );
        assert_eq!(
            plan(&pod("OnFailure", &["a"], &[]), &exited(1)).containers_to_start,
            vec![0]
        );
        let done = plan(&pod("OnFailure", &["a"], &[]), &exited(0));
        assert!(
            done.containers_to_start.is_empty() && done.kill_pod,
            "finished pod: stop the sandbox"
        );
        let never = plan(&pod("Never", &["a"], &[]), &exited(1));
        assert!(never.containers_to_start.is_empty() && never.kill_pod && !never.create_sandbox);
        // One still running keeps the pod.
        let a = plan(
            &pod("Never", &["a", "b"], &[]),
            &ready(vec![ctr("a", 0, Exited, 0), ctr("b", 1, Running, 0)]),
        );
        assert!(!a.kill_pod && a.containers_to_start.is_empty());
    }

    #[test]
    fn kills_changed_and_probe_failed_containers() {
        let mut p = pod("Always", &["a"], &[]);
        p.spec.as_mut().unwrap().containers[0].image = Some("busybox:2".into());
        let a = plan(&p, &ready(vec![ctr("a", 0, Running, 0)]));
        assert_eq!(a.containers_to_start, vec![0]);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container a definition changed, will be restarted"
        );
        assert_eq!(a.containers_to_kill[0].reason, KillReason::SpecChanged);
        assert!(!a.kill_pod);

        let rt = ready(vec![ctr("a", 0, Running, 0)]);
        let probes = ProbeFailures {
            liveness: ["a-0".to_string()].into(),
            ..Default::default()
        };
        let a = compute_pod_actions(&pod("Always", &["a"], &[]), &rt, &probes);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container a failed liveness probe, will be restarted"
        );
        let a = compute_pod_actions(&pod("Never", &["a"], &[]), &rt, &probes);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container a failed liveness probe"
        );
        assert!(a.containers_to_start.is_empty() && a.kill_pod);
        let probes = ProbeFailures {
            startup: ["a-0".to_string()].into(),
            ..Default::default()
        };
        let a = compute_pod_actions(&pod("Always", &["a"], &[]), &rt, &probes);
        assert_eq!(a.containers_to_kill[0].reason, KillReason::StartupProbe);

        let a = plan(
            &pod("Always", &["a"], &[]),
            &ready(vec![ctr("a", 0, Unknown, 0)]),
        );
        assert_eq!(
            (
                a.containers_to_start.as_slice(),
                a.containers_to_kill[0].reason
            ),
            (&[0][..], KillReason::Unknown)
        );
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container is in \"unknown\" state, try killing it before restart"
        );
    }

    #[test]
    fn sandbox_replacement() {
        let p = pod("Always", &["a"], &[]);
        let dead = RuntimePod::new(
            vec![sandbox("old", 2, false, 0)],
            vec![ctr("a", 0, Exited, 0)],
        );
        let a = plan(&p, &dead);
        assert!(a.kill_pod && a.create_sandbox);
        assert_eq!((a.attempt, a.sandbox_id.as_deref()), (3, Some("old")));
        assert_eq!(a.containers_to_start, vec![0]);
        // Never with containers that ran: clean up, no new sandbox.
        let a = plan(&pod("Never", &["a"], &[]), &dead);
        assert!(a.kill_pod && !a.create_sandbox);
        // OnFailure whose containers all succeeded: nothing to start, no new sandbox.
        let a = plan(&pod("OnFailure", &["a"], &[]), &dead);
        assert!(!a.create_sandbox);
        // Two ready sandboxes: start over.
        let two = RuntimePod::new(
            vec![sandbox("x", 0, true, 0), sandbox("y", 1, true, SEC)],
            vec![],
        );
        let a = plan(&p, &two);
        assert!(a.create_sandbox);
        assert_eq!((a.attempt, a.sandbox_id.as_deref()), (2, Some("y")));
        // A sandbox without an IP on the pod network is replaced.
        let mut no_ip = sandbox("z", 0, true, 0);
        no_ip.network = Some(PodSandboxNetworkStatus::default());
        assert!(plan(&p, &RuntimePod::new(vec![no_ip], vec![])).create_sandbox);
    }

    #[test]
    fn init_containers_in_order() {
        let p = pod("Always", &["a"], &["i1", "i2"]);
        let a = plan(&p, &ready(vec![]));
        assert_eq!(a.next_init_container, Some(0));
        let a = plan(&p, &ready(vec![ctr("i1", 0, Exited, 0)]));
        assert_eq!(
            (a.next_init_container, a.containers_to_start.len()),
            (Some(1), 0)
        );
        let a = plan(
            &p,
            &ready(vec![ctr("i1", 0, Exited, 0), ctr("i2", 1, Running, 0)]),
        );
        assert_eq!(
            a,
            PodActions {
                sandbox_id: Some("sb".into()),
                ..Default::default()
            },
            "wait for i2"
        );
        let a = plan(
            &p,
            &ready(vec![ctr("i1", 0, Exited, 0), ctr("i2", 1, Exited, 0)]),
        );
        assert_eq!(
            (a.next_init_container, a.containers_to_start.as_slice()),
            (None, &[0][..])
        );
        // A failed init container is retried, or fails the pod under Never.
        let failed = ready(vec![ctr("i1", 0, Exited, 0), ctr("i2", 1, Exited, 1)]);
        assert_eq!(plan(&p, &failed).next_init_container, Some(1));
        let a = plan(&pod("Never", &["a"], &["i1", "i2"]), &failed);
        assert!(a.kill_pod && a.next_init_container.is_none());
        // Once a regular container ran, init containers are not rerun.
        let a = plan(
            &p,
            &ready(vec![ctr("i1", 0, Exited, 0), ctr("a", 1, Running, 0)]),
        );
        assert_eq!(a.next_init_container, None);
    }

    #[test]
    fn sidecars_start_in_order_and_restart() {
        let mut p = pod("Never", &["a"], &["side", "i2"]);
        p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].restart_policy =
            Some("Always".into());
        assert_eq!(plan(&p, &ready(vec![])).next_init_container, Some(0));
        let a = plan(&p, &ready(vec![ctr("side", 0, Running, 0)]));
        assert_eq!(
            a.next_init_container,
            Some(1),
            "a running sidecar lets initialization go on"
        );
        let a = plan(
            &p,
            &ready(vec![
                ctr("side", 0, Exited, 1),
                ctr("i2", 1, Exited, 0),
                ctr("a", 2, Running, 0),
            ]),
        );
        assert_eq!(
            (a.sidecars_to_start.as_slice(), a.kill_pod),
            (&[0][..], false),
            "sidecars restart even under Never"
        );
    }

    #[test]
    fn sidecars_failing_probes_are_restarted() {
        let mut p = pod("Always", &["a"], &["side"]);
        p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].restart_policy =
            Some("Always".into());
        // Initializing: a failed startup probe restarts the sidecar, an unknown one waits.
        let rt = ready(vec![ctr("side", 0, Running, 0)]);
        let probes = ProbeFailures {
            startup: ["side-0".to_string()].into(),
            not_started: ["side-0".to_string()].into(),
            ..Default::default()
        };
        let a = compute_pod_actions(&p, &rt, &probes);
        assert_eq!(a.next_init_container, Some(0));
        assert_eq!(
            (
                a.containers_to_kill[0].message.as_str(),
                a.containers_to_kill[0].reason
            ),
            (
                "Init container side failed startup probe",
                KillReason::StartupProbe
            )
        );
        let waiting = ProbeFailures {
            not_started: ["side-0".to_string()].into(),
            ..Default::default()
        };
        let a = compute_pod_actions(&p, &rt, &waiting);
        assert!(a.next_init_container.is_none() && a.containers_to_start.is_empty());
        // Initialized: a failed liveness probe restarts it, the app keeps running.
        let rt = ready(vec![ctr("side", 0, Running, 0), ctr("a", 1, Running, 0)]);
        let probes = ProbeFailures {
            liveness: ["side-0".to_string()].into(),
            ..Default::default()
        };
        let a = compute_pod_actions(&p, &rt, &probes);
        assert_eq!(a.sidecars_to_start, vec![0]);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Init container side failed liveness probe"
        );
        assert!(!a.kill_pod && a.containers_to_start.is_empty());
    }

    #[test]
    fn deleted_pod_is_killed() {
        let mut p = pod("Always", &["a"], &[]);
        p.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        let a = plan(&p, &ready(vec![ctr("a", 0, Exited, 1)]));
        assert!(a.kill_pod && !a.create_sandbox && a.containers_to_start.is_empty());
    }

    #[test]
    fn crash_loop_backoff_from_finish_time() {
        let p = pod("Always", &["a"], &[]);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut b = Backoff::default();
        let at = |s: i64| Timestamp::from_nanosecond(i128::from(BASE + s * SEC)).unwrap();
        // Attempt 0 finished at +2 s: the first restart is immediate and arms 10 s.
        let rt = ready(vec![ctr("a", 0, Exited, 1)]);
        assert_eq!(container_backoff(&mut b, &p, c, &rt, at(3)), None);
        // Attempt 1 (created +10 s) finished at +12 s: it waits the armed 10 s from then.
        let rt = ready(vec![ctr("a", 0, Exited, 1), ctr("a", 1, Exited, 1)]);
        assert_eq!(
            container_backoff(&mut b, &p, c, &rt, at(13)),
            Some((
                "back-off 10s restarting failed container=a pod=p_ns(u)".to_string(),
                Duration::from_secs(9)
            ))
        );
        assert_eq!(
            container_backoff(&mut b, &p, c, &rt, at(22)),
            None,
            "10 s after +12 s the restart may go"
        );
        assert_eq!(b.get(&backoff_key(&p, c)), Duration::from_secs(20));
        // Attempt 2 (created +20 s) finished at +22 s: now 20 s.
        let rt = ready(vec![ctr("a", 1, Exited, 1), ctr("a", 2, Exited, 1)]);
        assert_eq!(
            container_backoff(&mut b, &p, c, &rt, at(30)),
            Some((
                "back-off 20s restarting failed container=a pod=p_ns(u)".to_string(),
                Duration::from_secs(12)
            ))
        );
        assert_eq!(container_backoff(&mut b, &p, c, &rt, at(42)), None);
        assert_eq!(b.get(&backoff_key(&p, c)), Duration::from_secs(40));
        // Never exited: no backoff at all.
        assert_eq!(
            container_backoff(&mut b, &p, c, &ready(vec![]), at(40)),
            None
        );
        assert!(backoff_key(&p, c).starts_with("p_ns_u_a_"));
        assert_eq!(
            backoff_event_message(&p, "a"),
            "Back-off restarting failed container a in pod p_ns(u)"
        );
    }

    #[test]
    fn pull_policies_and_decisions() {
        let c = |image: &str, policy: Option<&str>| Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(Into::into),
            ..Default::default()
        };
        for (image, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("localhost:5000/busybox", "Always"),
            ("localhost:5000/busybox:1.0", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(&c(image, None)), want, "{image}");
        }
        assert_eq!(pull_policy(&c("busybox", Some("Never"))), "Never");
        assert_eq!(
            image_decision(&c("busybox:1", None), false),
            ImageDecision::Pull
        );
        assert_eq!(
            image_decision(&c("busybox:1", None), true),
            ImageDecision::Present(
                "Container image \"busybox:1\" already present on machine".into()
            )
        );
        assert_eq!(
            image_decision(&c("busybox:1", Some("Always")), true),
            ImageDecision::Pull
        );
        assert_eq!(
            image_decision(&c("busybox:1", Some("Never")), false),
            ImageDecision::NeverPull(
                "Container image \"busybox:1\" is not present with pull policy of Never".into()
            )
        );
    }

    #[test]
    fn grace_periods() {
        use k8s_openapi::api::core::v1::Probe;
        let mut p = pod("Always", &["a"], &[]);
        let mut c = spec_container("a");
        assert_eq!(termination_grace_period(&p, &c, None), 30);
        p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(60);
        c.liveness_probe = Some(Probe {
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        });
        assert_eq!(termination_grace_period(&p, &c, None), 60);
        assert_eq!(
            termination_grace_period(&p, &c, Some(KillReason::LivenessProbe)),
            5
        );
        assert_eq!(
            termination_grace_period(&p, &c, Some(KillReason::StartupProbe)),
            60
        );
        p.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(
            termination_grace_period(&p, &c, Some(KillReason::LivenessProbe)),
            0
        );
        assert_eq!(grace_after_pre_stop(30, 10), 20);
        assert_eq!(grace_after_pre_stop(30, 29), 2);
    }

    #[test]
    fn image_pull_backoff_doubles() {
        let p = pod("Always", &["a"], &[]);
        let mut b = Backoff::default();
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        assert_eq!(image_pull_backoff(&b, &p, "reg/x:1", t(0)), None);
        record_pull_failure(&mut b, &p, "reg/x:1", t(0));
        assert_eq!(
            image_pull_backoff(&b, &p, "reg/x:1", t(5)).as_deref(),
            Some("Back-off pulling image \"reg/x:1\"")
        );
        assert_eq!(
            image_pull_backoff(&b, &p, "reg/y:1", t(5)),
            None,
            "per image"
        );
        assert_eq!(
            image_pull_backoff(&b, &p, "reg/x:1", t(10)),
            None,
            "10 s after the failure"
        );
        record_pull_failure(&mut b, &p, "reg/x:1", t(11));
        assert_eq!(
            b.get(&image_backoff_key(&p, "reg/x:1")),
            Duration::from_secs(20)
        );
        assert!(image_pull_backoff(&b, &p, "reg/x:1", t(30)).is_some());
        assert!(image_pull_backoff(&b, &p, "reg/x:1", t(31)).is_none());
    }
}

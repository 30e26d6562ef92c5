//! A pod's `status` from what the runtime reports, as upstream's `generateAPIPodStatus`,
//! `convertToAPIContainerStatuses`, `getPhase` and the status package's condition
//! generators build it.
//!
//! # Limits
//! Resize status, `allocatedResources`, `volumeMounts`/`user` in container statuses and
//! static-pod phase exceptions are not produced.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use distro_cri::api::{ContainerState, ContainerStatus as CriStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::container::{
    ANNOTATION_TERMINATION_MESSAGE_PATH, ANNOTATION_TERMINATION_MESSAGE_POLICY,
};
use super::format_pod;
use super::runtime::{self, container_name, cri_time, is_sidecar, restart_count, RuntimePod};
use crate::backoff::go_duration;
use crate::qos::pod_qos;

/// Waiting reason while the sandbox and image are prepared.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// Waiting reason of containers while init containers run.
pub const POD_INITIALIZING: &str = "PodInitializing";
/// Waiting reason while a crashed container waits out its backoff.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// Waiting reason after a failed pull.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// Waiting reason while a failed pull waits out its backoff.
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
/// Waiting reason when the container config cannot be made (see `ConfigError`).
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
/// Waiting reason when `imagePullPolicy: Never` and the image is absent.
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
/// Waiting reason when the runtime refused to create or start the container.
pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";

/// Terminated reason of a container that vanished while running.
pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

/// Upstream caps a termination message read from file at 4 KiB...
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// ...and one taken from the log at 2 KiB and 80 lines.
pub const MAX_TERMINATION_LOG_BYTES: usize = 2048;
/// Lines of log upstream keeps for `FallbackToLogsOnError`.
pub const MAX_TERMINATION_LOG_LINES: usize = 80;

/// Why a container is waiting, from the last sync (upstream's reason cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingReason {
    /// e.g. [`CRASH_LOOP_BACK_OFF`], [`ERR_IMAGE_PULL`].
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

impl WaitingReason {
    /// A container whose config could not be made (upstream `CreateContainerConfigError`,
    /// with the error's text as message).
    pub fn config_error(err: &super::ConfigError) -> Self {
        WaitingReason {
            reason: CREATE_CONTAINER_CONFIG_ERROR.into(),
            message: err.to_string(),
        }
    }

    /// A container waiting out its restart backoff; `message` from [`crash_loop_message`].
    pub fn crash_loop(message: String) -> Self {
        WaitingReason {
            reason: CRASH_LOOP_BACK_OFF.into(),
            message,
        }
    }

    /// A failed pull; `message` is the runtime's error.
    pub fn image_pull(message: String) -> Self {
        WaitingReason {
            reason: ERR_IMAGE_PULL.into(),
            message,
        }
    }

    /// A pull waiting out its backoff; `message` from `actions::image_pull_backoff`.
    pub fn image_pull_backoff(message: String) -> Self {
        WaitingReason {
            reason: IMAGE_PULL_BACK_OFF.into(),
            message,
        }
    }

    /// The runtime refused to create or start the container.
    pub fn run_error(message: String) -> Self {
        WaitingReason {
            reason: RUN_CONTAINER_ERROR.into(),
            message,
        }
    }
}

/// Upstream's CrashLoopBackOff message.
pub fn crash_loop_message(backoff: Duration, container: &str, pod: &Pod) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={}",
        go_duration(backoff),
        format_pod(pod)
    )
}

/// Everything besides the pod and the runtime that status depends on.
#[derive(Debug, Clone)]
pub struct StatusInputs<'a> {
    /// Last sync failure per container name.
    pub reasons: &'a HashMap<String, WaitingReason>,
    /// Readiness probe results by container ID (absent: no result yet).
    pub readiness: &'a HashMap<String, bool>,
    /// Startup probe results by container ID.
    pub startup: &'a HashMap<String, bool>,
    /// Termination messages read for exited containers, by container ID.
    pub termination_messages: &'a HashMap<String, String>,
    /// The node's IPs, primary first.
    pub host_ips: &'a [String],
    /// The pod worker has decided the pod is done (deleted, or all containers finished
    /// under a non-restarting policy): its phase becomes terminal.
    pub pod_is_terminal: bool,
    /// Now, for transition times and `startTime`.
    pub now: Timestamp,
    /// The runtime's ID prefix, `containerd`.
    pub runtime_name: &'a str,
}

fn t(ts: Option<Timestamp>) -> Option<Time> {
    ts.map(Time)
}

/// One CRI container status as an API state (upstream `convertContainerStatus`).
fn convert_state(cs: &CriStatus, id: &str, inputs: &StatusInputs<'_>) -> ApiState {
    match runtime::state(cs) {
        ContainerState::ContainerRunning => ApiState {
            running: Some(ContainerStateRunning {
                started_at: t(cri_time(cs.started_at)),
            }),
            ..Default::default()
        },
        ContainerState::ContainerExited => {
            let mut message = cs.message.clone();
            if let Some(tm) = inputs
                .termination_messages
                .get(&cs.id)
                .filter(|m| !m.is_empty())
            {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(tm);
            }
            ApiState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: cs.exit_code,
                    reason: Some(cs.reason.clone()).filter(|r| !r.is_empty()),
                    message: Some(message).filter(|m| !m.is_empty()),
                    started_at: t(cri_time(cs.started_at)),
                    finished_at: t(cri_time(cs.finished_at)),
                    container_id: Some(id.to_string()),
                    signal: None,
                }),
                ..Default::default()
            }
        }
        ContainerState::ContainerCreated | ContainerState::ContainerUnknown => ApiState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        },
    }
}

fn waiting(reason: &str, message: Option<String>) -> ApiState {
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

/// Statuses of `containers` (regular or init), as upstream `convertToAPIContainerStatuses`.
fn container_statuses(
    pod: &Pod,
    runtime: &RuntimePod,
    old: &[ContainerStatus],
    containers: &[Container],
    init: bool,
    inputs: &StatusInputs<'_>,
) -> Vec<ContainerStatus> {
    let has_init = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.init_containers.as_ref().is_some_and(|i| !i.is_empty()));
    let default_reason = if has_init {
        POD_INITIALIZING
    } else {
        CONTAINER_CREATING
    };
    let mut out: Vec<ContainerStatus> = containers
        .iter()
        .map(|c| {
            let base = ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: Some(waiting(default_reason, None)),
                ..Default::default()
            };
            // Containers the runtime has forgotten (GC'd) keep what status said about them.
            match old.iter().find(|o| o.name == c.name) {
                Some(o) if o.state.as_ref().is_some_and(|s| s.terminated.is_some()) => o.clone(),
                Some(o) => ContainerStatus {
                    restart_count: o.restart_count,
                    last_state: o.last_state.clone(),
                    ..base
                },
                None => base,
            }
        })
        .collect();

    // A container that was running and has vanished from the runtime (removed, or the
    // runtime lost it) is shown as stopped, not as waiting to be created, so the pod does
    // not fall back to Pending.
    for st in out.iter_mut() {
        let gone = !runtime
            .containers
            .iter()
            .any(|c| container_name(c) == st.name);
        let was_running = old
            .iter()
            .find(|o| o.name == st.name)
            .and_then(|o| o.state.as_ref())
            .is_some_and(|s| s.running.is_some());
        let default_waiting = st
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .is_some_and(|w| w.reason.as_deref() == Some(default_reason));
        let has_last = st
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some());
        if gone && was_running && default_waiting && !has_last {
            st.last_state = Some(ApiState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some(CONTAINER_STATUS_UNKNOWN.into()),
                    message: Some(
                        "The container could not be located when the pod was deleted.  The container used to be Running"
                            .into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            });
            if pod.metadata.deletion_timestamp.is_none() {
                st.restart_count += 1;
            }
        }
    }

    for st in out.iter_mut() {
        let mut seen = runtime
            .containers
            .iter()
            .filter(|c| container_name(c) == st.name);
        if let Some(cur) = seen.next() {
            let id = format!("{}://{}", inputs.runtime_name, cur.id);
            st.state = Some(convert_state(cur, &id, inputs));
            st.container_id = Some(id);
            st.restart_count = restart_count(cur);
            st.image = cur
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .filter(|i| !i.is_empty())
                .unwrap_or(st.image.clone());
            st.image_id = cur.image_ref.clone();
            // A container that was running and is now unknown to the runtime is reported as
            // terminated (upstream's ContainerStatusUnknown), counting one more restart.
            let was_running = old
                .iter()
                .find(|o| o.name == st.name)
                .and_then(|o| o.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            if runtime::state(cur) == ContainerState::ContainerUnknown && was_running {
                st.state = Some(ApiState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some(CONTAINER_STATUS_UNKNOWN.into()),
                        message: Some(
                            "The container could not be located when the pod was terminated".into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                st.restart_count = old
                    .iter()
                    .find(|o| o.name == st.name)
                    .map_or(0, |o| o.restart_count)
                    + 1;
            }
            if let Some(prev) = seen.next() {
                let prev_id = format!("{}://{}", inputs.runtime_name, prev.id);
                st.last_state = Some(convert_state(prev, &prev_id, inputs));
            }
        }
    }

    // Containers that will be (re)started show why they are waiting.
    for (c, st) in containers.iter().zip(out.iter_mut()) {
        let latest = runtime.latest(&c.name);
        if init && !is_sidecar(c) {
            let succeeded = latest.is_some_and(|s| {
                runtime::state(s) == ContainerState::ContainerExited && s.exit_code == 0
            });
            if succeeded {
                continue;
            }
        }
        if !runtime::should_container_be_restarted(c, pod, runtime) {
            continue;
        }
        let Some(r) = inputs.reasons.get(&c.name) else {
            continue;
        };
        if st.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
            st.last_state = st.state.take();
        }
        st.state = Some(waiting(
            &r.reason,
            Some(r.message.clone()).filter(|m| !m.is_empty()),
        ));
    }

    // Probe-driven started/ready (upstream's prober manager `UpdatePodStatus`).
    for (c, st) in containers.iter().zip(out.iter_mut()) {
        let state = st.state.clone().unwrap_or_default();
        let id = st
            .container_id
            .as_deref()
            .and_then(|i| i.split_once("://"))
            .map(|(_, i)| i.to_string());
        let result = |m: &HashMap<String, bool>| id.as_ref().and_then(|i| m.get(i)).copied();
        let running = state.running.is_some();
        let started =
            running && (c.startup_probe.is_none() || result(inputs.startup) == Some(true));
        let probe_ready = c.readiness_probe.is_none() || result(inputs.readiness) == Some(true);
        st.started = Some(started);
        st.ready = if init && !is_sidecar(c) {
            state.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
        } else {
            started && probe_ready
        };
    }
    // Upstream lists init containers in spec order and the others by name.
    if !init {
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// What to read for an exited container's termination message (upstream
/// `getTerminationMessage`): the host file behind its `terminationMessagePath` mount, and
/// whether to fall back to the log's tail when that is empty.
pub fn termination_message_source(cs: &CriStatus) -> (Option<&str>, bool) {
    let path = cs
        .annotations
        .get(ANNOTATION_TERMINATION_MESSAGE_PATH)
        .map(String::as_str)
        .unwrap_or("");
    let fallback = cs
        .annotations
        .get(ANNOTATION_TERMINATION_MESSAGE_POLICY)
        .map(String::as_str)
        == Some("FallbackToLogsOnError")
        && cs.exit_code != 0
        && cs.reason != runtime::REASON_CONTAINER_CANNOT_RUN;
    if path.is_empty() {
        return (None, fallback);
    }
    let file = cs
        .mounts
        .iter()
        .find(|m| m.container_path == path)
        .map(|m| m.host_path.as_str());
    (file, fallback)
}

/// Reads an exited container's termination message: the tail of its message file, or
/// the tail of its CRI log when the policy says so.
///
/// # Blocking
/// Reads files: call it from `spawn_blocking`.
pub fn read_termination_message(cs: &CriStatus, log_directory: &Path) -> String {
    let (file, fallback) = termination_message_source(cs);
    if let Some(file) = file {
        match std::fs::read(file) {
            Ok(data) => {
                let tail = &data[data.len().saturating_sub(MAX_TERMINATION_MESSAGE)..];
                if !tail.is_empty() || !fallback {
                    return String::from_utf8_lossy(tail).into_owned();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return format!("Error on reading termination log {file}: {e}"),
        }
    }
    if !fallback || cs.log_path.is_empty() {
        return String::new();
    }
    let log = log_directory.join(&cs.log_path);
    std::fs::read_to_string(log)
        .map(|text| log_tail(&text))
        .unwrap_or_default()
}

/// The content of the last 80 CRI log lines (`<time> <stream> <P|F> <content>`), at most
/// 2 KiB, partial lines joined as written.
pub fn log_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(MAX_TERMINATION_LOG_LINES);
    let mut out = String::new();
    for line in &lines[start..] {
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, content) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next().unwrap_or(""),
        );
        out.push_str(content);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    let cut = out.len().saturating_sub(MAX_TERMINATION_LOG_BYTES);
    let cut = (cut..=out.len())
        .find(|&i| out.is_char_boundary(i))
        .unwrap_or(out.len());
    out[cut..].to_string()
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn state_of(s: &ContainerStatus) -> ApiState {
    s.state.clone().unwrap_or_default()
}

fn last_terminated(s: &ContainerStatus) -> Option<ContainerStateTerminated> {
    s.last_state.as_ref().and_then(|l| l.terminated.clone())
}

/// Any regular container running or terminated: the pod was initialized once.
fn any_regular_started(pod: &Pod, statuses: &[ContainerStatus]) -> bool {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers
        .iter()
        .filter_map(|c| find(statuses, &c.name))
        .any(|s| {
            let st = state_of(s);
            st.running.is_some() || st.terminated.is_some()
        })
}

/// Upstream's `getPhase`.
pub fn phase(
    pod: &Pod,
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
    pod_is_terminal: bool,
) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let (mut pending_init, mut failed_init) = (0, 0);
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| !is_sidecar(c))
    {
        let Some(s) = find(init_statuses, &c.name) else {
            pending_init += 1;
            continue;
        };
        let st = state_of(s);
        if st.running.is_some() {
            pending_init += 1;
        } else if let Some(term) = &st.terminated {
            failed_init += usize::from(term.exit_code != 0);
        } else if st.waiting.is_some() {
            match last_terminated(s) {
                Some(l) => failed_init += usize::from(l.exit_code != 0),
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    // Sidecars count like regular containers, except that a stopped one is ignored.
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
    {
        let Some(s) = find(init_statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        let st = state_of(s);
        let stopped_once =
            st.terminated.is_some() || (st.waiting.is_some() && last_terminated(s).is_some());
        if stopped_once {
            continue; // a stopped (or restarting) sidecar does not decide the phase
        }
        if st.running.is_some() {
            pending_init += usize::from(s.started != Some(true));
            running += 1;
        } else if st.waiting.is_some() {
            pending_init += 1;
            waiting += 1;
        } else {
            pending_init += 1;
            unknown += 1;
        }
    }
    for c in &spec.containers {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        let st = state_of(s);
        if st.running.is_some() {
            running += 1;
        } else if let Some(term) = &st.terminated {
            stopped += 1;
            succeeded += usize::from(term.exit_code == 0);
        } else if st.waiting.is_some() {
            if last_terminated(s).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if (pending_init > 0 && !any_regular_started(pod, statuses)) || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if pod_is_terminal {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        return match policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

/// Go's `%s` of a string slice: `[a b]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.map(str::to_string),
        message,
        ..Default::default()
    }
}

/// Upstream `GeneratePodInitializedCondition`.
pub fn initialized_condition(
    pod: &Pod,
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let spec = pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.unwrap_or_default();
    if inits.is_empty() {
        return condition("Initialized", true, None, None);
    }
    let (mut unknown, mut incomplete) = (Vec::new(), Vec::new());
    for c in &inits {
        match find(init_statuses, &c.name) {
            None => unknown.push(c.name.clone()),
            Some(s) if is_sidecar(c) => {
                if s.started != Some(true) {
                    incomplete.push(c.name.clone());
                }
            }
            Some(s) => {
                if !s.ready {
                    incomplete.push(c.name.clone());
                }
            }
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("Initialized", true, Some("PodCompleted"), None);
    }
    if any_regular_started(pod, statuses) {
        return condition("Initialized", true, None, None);
    }
    match containers_message(&[("unknown", &unknown), ("incomplete", &incomplete)]) {
        None => condition("Initialized", true, None, None),
        Some(msg) => condition(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(msg),
        ),
    }
}

/// Upstream's "containers with <state> status: [a b]" messages, joined; `None` when every
/// list is empty.
fn containers_message(groups: &[(&str, &Vec<String>)]) -> Option<String> {
    let msgs: Vec<String> = groups
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(state, names)| format!("containers with {state} status: {}", go_list(names)))
        .collect();
    (!msgs.is_empty()).then(|| msgs.join(", "))
}

/// Upstream `GenerateContainersReadyCondition`.
pub fn containers_ready_condition(
    pod: &Pod,
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let spec = pod.spec.clone().unwrap_or_default();
    let (mut unknown, mut unready) = (Vec::new(), Vec::new());
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
        .map(|c| (c, init_statuses));
    for (c, list) in sidecars.chain(spec.containers.iter().map(|c| (c, statuses))) {
        match find(list, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("ContainersReady", false, Some("PodCompleted"), None);
    }
    if phase == "Failed" {
        return condition("ContainersReady", false, Some("PodFailed"), None);
    }
    match containers_message(&[("unknown", &unknown), ("unready", &unready)]) {
        None => condition("ContainersReady", true, None, None),
        Some(msg) => condition(
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(msg),
        ),
    }
}

/// Upstream `GeneratePodReadyCondition`: ContainersReady, then the readiness gates.
pub fn ready_condition(
    pod: &Pod,
    containers_ready: &PodCondition,
    other_conditions: &[PodCondition],
) -> PodCondition {
    if containers_ready.status != "True" {
        let mut c = containers_ready.clone();
        c.type_ = "Ready".into();
        return c;
    }
    let mut msgs = Vec::new();
    for gate in pod
        .spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten())
    {
        match other_conditions
            .iter()
            .find(|c| c.type_ == gate.condition_type)
        {
            None => msgs.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => msgs.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if msgs.is_empty() {
        condition("Ready", true, None, None)
    } else {
        condition(
            "Ready",
            false,
            Some("ReadinessGatesNotReady"),
            Some(msgs.join(", ")),
        )
    }
}

/// Condition types the kubelet owns; others (set by controllers) are kept as they are.
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
];

/// The pod's new `status`.
pub fn pod_status(pod: &Pod, runtime: &RuntimePod, inputs: &StatusInputs<'_>) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let init_statuses = container_statuses(
        pod,
        runtime,
        old.init_container_statuses.as_deref().unwrap_or_default(),
        &inits,
        true,
        inputs,
    );
    let statuses = container_statuses(
        pod,
        runtime,
        old.container_statuses.as_deref().unwrap_or_default(),
        &spec.containers,
        false,
        inputs,
    );

    let ephemeral = super::actions::ephemeral_containers(pod);
    let ephemeral_statuses = container_statuses(
        pod,
        runtime,
        old.ephemeral_container_statuses
            .as_deref()
            .unwrap_or_default(),
        &ephemeral,
        false,
        inputs,
    );

    let old_phase = old.phase.as_deref().unwrap_or("");
    let phase = if matches!(old_phase, "Succeeded" | "Failed") {
        old_phase // terminal phases never go back
    } else {
        phase(pod, &init_statuses, &statuses, inputs.pod_is_terminal)
    };

    let host_network = spec.host_network.unwrap_or(false);
    let pod_ips = if host_network {
        inputs.host_ips.to_vec()
    } else {
        runtime.pod_ips()
    };
    // Upstream: ready to start containers exactly when no new sandbox is needed.
    let sandbox_ready = !runtime::sandbox_changed(pod, runtime).0;

    let others: Vec<PodCondition> = old
        .conditions
        .iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let containers_ready = containers_ready_condition(pod, &init_statuses, &statuses, phase);
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None),
        initialized_condition(pod, &init_statuses, &statuses, phase),
        ready_condition(pod, &containers_ready, &others),
        containers_ready,
        condition("PodScheduled", true, None, None),
    ];
    for c in conditions.iter_mut() {
        let prev = old.conditions.iter().flatten().find(|o| o.type_ == c.type_);
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status && p.last_transition_time.is_some() => {
                p.last_transition_time.clone()
            }
            _ => Some(Time(inputs.now)),
        };
    }
    conditions.extend(others);

    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: inputs.host_ips.first().cloned(),
        host_ips: Some(
            inputs
                .host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect(),
        )
        .filter(|v: &Vec<_>| !v.is_empty()),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: Some(pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect())
            .filter(|v: &Vec<_>| !v.is_empty()),
        start_time: old.start_time.clone().or(Some(Time(inputs.now))),
        qos_class: Some(pod_qos(&spec).as_str().to_string()),
        init_container_statuses: (!inits.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral_statuses),
        nominated_node_name: old.nominated_node_name.clone(),
        // The reason and message belong to the phase: kept only while it stays the same.
        message: old.message.clone().filter(|_| old_phase == phase),
        reason: old.reason.clone().filter(|_| old_phase == phase),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distro_cri::api::{
        ContainerMetadata, ImageSpec, PodSandboxMetadata, PodSandboxNetworkStatus, PodSandboxState,
        PodSandboxStatus,
    };
    use k8s_openapi::api::core::v1::{PodReadinessGate, PodSpec, Probe};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const SEC: i64 = 1_000_000_000;
    const BASE: i64 = 1_700_000_000 * SEC;

    fn pod(policy: &str, containers: &[&str], inits: &[&str]) -> Pod {
        let c = |n: &&str| Container {
            name: n.to_string(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                containers: containers.iter().map(c).collect(),
                init_containers: (!inits.is_empty()).then(|| inits.iter().map(c).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sandbox(ready: bool) -> PodSandboxStatus {
        PodSandboxStatus {
            id: "sb1".into(),
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            state: if ready {
                PodSandboxState::SandboxReady
            } else {
                PodSandboxState::SandboxNotready
            } as i32,
            created_at: BASE,
            network: Some(PodSandboxNetworkStatus {
                ip: "10.42.0.7".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A CRI container `name` at attempt `n`, created at BASE + n*10 s.
    fn ctr(name: &str, n: u32, state: ContainerState, exit: i32, reason: &str) -> CriStatus {
        let created = BASE + i64::from(n) * 10 * SEC;
        let exited = state == ContainerState::ContainerExited;
        CriStatus {
            id: format!("{name}-{n}"),
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: n,
            }),
            state: state as i32,
            created_at: created,
            started_at: created + SEC,
            finished_at: if exited { created + 5 * SEC } else { 0 },
            exit_code: exit,
            reason: reason.into(),
            image: Some(ImageSpec {
                image: "docker.io/library/busybox:latest".into(),
                ..Default::default()
            }),
            image_ref: "sha256:beef".into(),
            annotations: [(
                crate::pod::container::ANNOTATION_RESTART_COUNT.to_string(),
                n.to_string(),
            )]
            .into(),
            ..Default::default()
        }
    }

    struct World {
        reasons: HashMap<String, WaitingReason>,
        readiness: HashMap<String, bool>,
        startup: HashMap<String, bool>,
        messages: HashMap<String, String>,
        hosts: Vec<String>,
        terminal: bool,
    }

    impl World {
        fn new() -> Self {
            World {
                reasons: HashMap::new(),
                readiness: HashMap::new(),
                startup: HashMap::new(),
                messages: HashMap::new(),
                hosts: vec!["192.168.1.2".into()],
                terminal: false,
            }
        }
        fn status(&self, pod: &Pod, rt: &RuntimePod) -> PodStatus {
            let inputs = StatusInputs {
                reasons: &self.reasons,
                readiness: &self.readiness,
                startup: &self.startup,
                termination_messages: &self.messages,
                host_ips: &self.hosts,
                pod_is_terminal: self.terminal,
                now: Timestamp::from_second(1_800_000_000).unwrap(),
                runtime_name: "containerd",
            };
            pod_status(pod, rt, &inputs)
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    fn cs<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
        s.container_statuses
            .iter()
            .chain(s.init_container_statuses.iter())
            .flatten()
            .find(|c| c.name == name)
            .unwrap()
    }

    fn reason(st: &Option<ApiState>) -> Option<String> {
        st.as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
    }

    #[test]
    fn nothing_running_yet() {
        let p = pod("Always", &["app"], &[]);
        let s = World::new().status(&p, &RuntimePod::default());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            reason(&cs(&s, "app").state).as_deref(),
            Some(CONTAINER_CREATING)
        );
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
        assert_eq!(cond(&s, "Initialized").status, "True");
        let ready = cond(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("ContainersNotReady"))
        );
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [app]")
        );
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(s.host_ip.as_deref(), Some("192.168.1.2"));
        assert!(s.pod_ip.is_none());
    }

    #[test]
    fn running_and_ready() {
        let p = pod("Always", &["app"], &[]);
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("app", 0, ContainerState::ContainerRunning, 0, "")],
        );
        let s = World::new().status(&p, &rt);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let c = cs(&s, "app");
        assert!(c.ready && c.started == Some(true));
        assert_eq!(c.container_id.as_deref(), Some("containerd://app-0"));
        assert_eq!(c.image, "docker.io/library/busybox:latest");
        assert_eq!(c.image_id, "sha256:beef");
        let started = c
            .state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at
            .as_ref()
            .unwrap();
        assert_eq!(started.0.as_second(), 1_700_000_001);
        for t in [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ] {
            assert_eq!(cond(&s, t).status, "True", "{t}");
        }
        assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.7"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.42.0.7");
    }

    #[test]
    fn probes_gate_started_and_ready() {
        let mut p = pod("Always", &["app"], &[]);
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.readiness_probe = Some(Probe::default());
        c.startup_probe = Some(Probe::default());
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("app", 0, ContainerState::ContainerRunning, 0, "")],
        );
        let mut w = World::new();
        let s = w.status(&p, &rt);
        assert_eq!(
            (cs(&s, "app").started, cs(&s, "app").ready),
            (Some(false), false)
        );
        w.startup.insert("app-0".into(), true);
        let s = w.status(&p, &rt);
        assert_eq!(
            (cs(&s, "app").started, cs(&s, "app").ready),
            (Some(true), false)
        );
        w.readiness.insert("app-0".into(), true);
        assert!(cs(&w.status(&p, &rt), "app").ready);
    }

    #[test]
    fn crash_loop_back_off() {
        let p = pod("Always", &["app"], &[]);
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![
                ctr("app", 0, ContainerState::ContainerExited, 1, "Error"),
                ctr("app", 2, ContainerState::ContainerExited, 137, "OOMKilled"),
                ctr("app", 1, ContainerState::ContainerExited, 2, "Error"),
            ],
        );
        let mut w = World::new();
        let msg = crash_loop_message(Duration::from_secs(20), "app", &p);
        assert_eq!(
            msg,
            "back-off 20s restarting failed container=app pod=p_ns(u)"
        );
        w.reasons.insert(
            "app".into(),
            WaitingReason {
                reason: CRASH_LOOP_BACK_OFF.into(),
                message: msg.clone(),
            },
        );
        let s = w.status(&p, &rt);
        let c = cs(&s, "app");
        assert_eq!(c.restart_count, 2);
        let st = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(
            (st.reason.as_deref(), st.message.as_deref()),
            (Some(CRASH_LOOP_BACK_OFF), Some(msg.as_str()))
        );
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (last.exit_code, last.reason.as_deref()),
            (137, Some("OOMKilled"))
        );
        assert_eq!(last.container_id.as_deref(), Some("containerd://app-2"));
        assert_eq!(
            s.phase.as_deref(),
            Some("Running"),
            "Always: restarting counts as running"
        );
        assert!(!c.ready);

        // Without a recorded reason the newest attempt shows as terminated, previous as last.
        let s = World::new().status(&p, &rt);
        let c = cs(&s, "app");
        assert_eq!(
            c.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            137
        );
        assert_eq!(
            c.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            2
        );
    }

    #[test]
    fn phase_by_restart_policy() {
        let done = |exit, reason| {
            RuntimePod::new(
                vec![sandbox(true)],
                vec![ctr("app", 0, ContainerState::ContainerExited, exit, reason)],
            )
        };
        let phase_of = |policy, rt: &RuntimePod, terminal| {
            let mut w = World::new();
            w.terminal = terminal;
            w.status(&pod(policy, &["app"], &[]), rt)
        };
        let s = phase_of("Never", &done(0, "Completed"), false);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let ready = cond(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
        assert_eq!(
            cond(&s, "ContainersReady").reason.as_deref(),
            Some("PodCompleted")
        );
        let term = cs(&s, "app").state.clone().unwrap().terminated.unwrap();
        assert_eq!(
            (
                term.reason.as_deref(),
                term.finished_at.unwrap().0.as_second()
            ),
            (Some("Completed"), 1_700_000_005)
        );
        let s = phase_of("Never", &done(1, "Error"), false);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodFailed"));
        assert_eq!(
            phase_of("OnFailure", &done(1, "Error"), false)
                .phase
                .as_deref(),
            Some("Running")
        );
        assert_eq!(
            phase_of("OnFailure", &done(0, "Completed"), false)
                .phase
                .as_deref(),
            Some("Succeeded")
        );
        assert_eq!(
            phase_of("Always", &done(0, "Completed"), false)
                .phase
                .as_deref(),
            Some("Running")
        );
        assert_eq!(
            phase_of("Always", &done(0, "Completed"), true)
                .phase
                .as_deref(),
            Some("Succeeded")
        );
        assert_eq!(
            phase_of("Always", &done(1, "Error"), true).phase.as_deref(),
            Some("Failed")
        );
        // A terminal phase never goes back.
        let mut p = pod("Always", &["app"], &[]);
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        });
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("app", 0, ContainerState::ContainerRunning, 0, "")],
        );
        assert_eq!(
            World::new().status(&p, &rt).phase.as_deref(),
            Some("Failed")
        );
    }

    #[test]
    fn init_containers() {
        let p = pod("Always", &["app"], &["init-a", "init-b"]);
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("init-a", 0, ContainerState::ContainerRunning, 0, "")],
        );
        let s = World::new().status(&p, &rt);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            reason(&cs(&s, "app").state).as_deref(),
            Some(POD_INITIALIZING)
        );
        assert_eq!(
            reason(&cs(&s, "init-b").state).as_deref(),
            Some(POD_INITIALIZING)
        );
        let init = cond(&s, "Initialized");
        assert_eq!(
            (init.status.as_str(), init.reason.as_deref()),
            ("False", Some("ContainersNotInitialized"))
        );
        assert_eq!(
            init.message.as_deref(),
            Some("containers with incomplete status: [init-a init-b]")
        );

        // Both done: initialized, app creating.
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![
                ctr("init-a", 0, ContainerState::ContainerExited, 0, "Completed"),
                ctr("init-b", 1, ContainerState::ContainerExited, 0, "Completed"),
                ctr("app", 2, ContainerState::ContainerRunning, 0, ""),
            ],
        );
        let s = World::new().status(&p, &rt);
        assert!(cs(&s, "init-a").ready && cs(&s, "init-b").ready);
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(s.phase.as_deref(), Some("Running"));

        // A failed init container fails a Never pod, and is retried (Pending) otherwise.
        let failed = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr(
                "init-a",
                0,
                ContainerState::ContainerExited,
                3,
                "Error",
            )],
        );
        assert_eq!(
            World::new()
                .status(&pod("Never", &["app"], &["init-a"]), &failed)
                .phase
                .as_deref(),
            Some("Failed")
        );
        let s = World::new().status(&pod("Always", &["app"], &["init-a"]), &failed);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert!(!cs(&s, "init-a").ready);
    }

    #[test]
    fn waiting_reasons_from_sync() {
        let p = pod("Always", &["app"], &[]);
        let mut w = World::new();
        w.reasons.insert(
            "app".into(),
            WaitingReason {
                reason: ERR_IMAGE_PULL.into(),
                message: "pull failed".into(),
            },
        );
        let s = w.status(&p, &RuntimePod::new(vec![sandbox(true)], vec![]));
        let st = cs(&s, "app").state.clone().unwrap().waiting.unwrap();
        assert_eq!(
            (st.reason.as_deref(), st.message.as_deref()),
            (Some(ERR_IMAGE_PULL), Some("pull failed"))
        );
        // A running container ignores stale reasons.
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("app", 0, ContainerState::ContainerRunning, 0, "")],
        );
        assert!(cs(&w.status(&p, &rt), "app")
            .state
            .as_ref()
            .unwrap()
            .running
            .is_some());
    }

    #[test]
    fn running_container_gone_unknown() {
        let mut p = pod("Always", &["app"], &[]);
        p.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                restart_count: 4,
                state: Some(ApiState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("app", 4, ContainerState::ContainerUnknown, 0, "")],
        );
        let s = World::new().status(&p, &rt);
        let c = cs(&s, "app");
        let term = c.state.clone().unwrap().terminated.unwrap();
        assert_eq!(
            (term.exit_code, term.reason.as_deref()),
            (137, Some(CONTAINER_STATUS_UNKNOWN))
        );
        assert_eq!(c.restart_count, 5);
        // Unknown without having been running: just waiting.
        p.status = None;
        assert!(cs(&World::new().status(&p, &rt), "app")
            .state
            .clone()
            .unwrap()
            .waiting
            .is_some());
    }

    #[test]
    fn vanished_running_container_is_stopped_not_pending() {
        let mut p = pod("Always", &["zeta", "alpha"], &[]);
        let running = ApiState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            reason: Some("Old".into()),
            container_statuses: Some(vec![
                ContainerStatus {
                    name: "zeta".into(),
                    restart_count: 1,
                    state: Some(running.clone()),
                    ..Default::default()
                },
                ContainerStatus {
                    name: "alpha".into(),
                    state: Some(running),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        });
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("alpha", 0, ContainerState::ContainerRunning, 0, "")],
        );
        let s = World::new().status(&p, &rt);
        let names: Vec<_> = s
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, vec!["alpha", "zeta"], "sorted by name");
        let z = cs(&s, "zeta");
        let last = z.last_state.clone().unwrap().terminated.unwrap();
        assert_eq!(
            (last.exit_code, last.reason.as_deref()),
            (137, Some(CONTAINER_STATUS_UNKNOWN))
        );
        assert_eq!(z.restart_count, 2);
        assert_eq!(s.phase.as_deref(), Some("Running"), "stopped, not waiting");
        assert_eq!(
            s.reason.as_deref(),
            Some("Old"),
            "reason kept while the phase holds"
        );
    }

    #[test]
    fn sidecars_and_phase() {
        let mut p = pod("Always", &["app"], &["side"]);
        p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].restart_policy =
            Some("Always".into());
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("side", 0, ContainerState::ContainerRunning, 0, "")],
        );
        let s = World::new().status(&p, &rt);
        assert_eq!(s.phase.as_deref(), Some("Pending"), "app not started yet");
        assert!(
            cs(&s, "side").ready,
            "a running sidecar is ready like a regular container"
        );
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![
                ctr("side", 0, ContainerState::ContainerExited, 1, "Error"),
                ctr("app", 1, ContainerState::ContainerRunning, 0, ""),
            ],
        );
        let s = World::new().status(&p, &rt);
        assert_eq!(
            s.phase.as_deref(),
            Some("Running"),
            "a stopped sidecar does not decide the phase"
        );
        assert_eq!(cond(&s, "Initialized").status, "True");
        let cr = cond(&s, "ContainersReady");
        assert_eq!(
            cr.message.as_deref(),
            Some("containers with unready status: [side]")
        );
    }

    #[test]
    fn termination_message_is_appended() {
        let p = pod("Never", &["app"], &[]);
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("app", 0, ContainerState::ContainerExited, 1, "Error")],
        );
        let mut w = World::new();
        w.messages.insert("app-0".into(), "disk full".into());
        let term = cs(&w.status(&p, &rt), "app")
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(term.message.as_deref(), Some("disk full"));
    }

    #[test]
    fn transition_times_and_gates() {
        let mut p = pod("Always", &["app"], &[]);
        let rt = RuntimePod::new(
            vec![sandbox(true)],
            vec![ctr("app", 0, ContainerState::ContainerRunning, 0, "")],
        );
        let then = Time(Timestamp::from_second(1_750_000_000).unwrap());
        p.status = Some(PodStatus {
            conditions: Some(vec![
                PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(then.clone()),
                    ..Default::default()
                },
                PodCondition {
                    type_: "Initialized".into(),
                    status: "False".into(),
                    last_transition_time: Some(then.clone()),
                    ..Default::default()
                },
                PodCondition {
                    type_: "example.com/gate".into(),
                    status: "False".into(),
                    ..Default::default()
                },
            ]),
            start_time: Some(then.clone()),
            ..Default::default()
        });
        let s = World::new().status(&p, &rt);
        assert_eq!(
            cond(&s, "Ready").last_transition_time,
            Some(then.clone()),
            "unchanged status keeps its time"
        );
        assert_eq!(
            cond(&s, "Initialized")
                .last_transition_time
                .as_ref()
                .unwrap()
                .0
                .as_second(),
            1_800_000_000
        );
        assert_eq!(
            cond(&s, "example.com/gate").status,
            "False",
            "others' conditions are kept"
        );
        assert_eq!(s.start_time, Some(then));

        p.spec.as_mut().unwrap().readiness_gates = Some(vec![
            PodReadinessGate {
                condition_type: "example.com/gate".into(),
            },
            PodReadinessGate {
                condition_type: "example.com/missing".into(),
            },
        ]);
        let ready = cond(&World::new().status(&p, &rt), "Ready").clone();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("ReadinessGatesNotReady"))
        );
        assert_eq!(
            ready.message.as_deref(),
            Some("the status of pod readiness gate \"example.com/gate\" is not \"True\", but False, corresponding condition of pod readiness gate \"example.com/missing\" does not exist.")
        );
    }

    #[test]
    fn host_network_uses_host_ips() {
        let mut p = pod("Always", &["app"], &[]);
        p.spec.as_mut().unwrap().host_network = Some(true);
        let mut sb = sandbox(true);
        sb.network = None;
        let s = World::new().status(&p, &RuntimePod::new(vec![sb], vec![]));
        assert_eq!(s.pod_ip.as_deref(), Some("192.168.1.2"));
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");
    }

    #[test]
    fn termination_message_files_and_log_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let msg_file = dir.path().join("msg");
        std::fs::write(&msg_file, "x".repeat(5000) + "END").unwrap();
        let mut c = ctr("app", 0, ContainerState::ContainerExited, 1, "Error");
        c.annotations.insert(
            ANNOTATION_TERMINATION_MESSAGE_PATH.into(),
            "/dev/termination-log".into(),
        );
        c.annotations.insert(
            ANNOTATION_TERMINATION_MESSAGE_POLICY.into(),
            "FallbackToLogsOnError".into(),
        );
        c.mounts.push(distro_cri::api::Mount {
            container_path: "/dev/termination-log".into(),
            host_path: msg_file.to_string_lossy().into_owned(),
            ..Default::default()
        });
        c.log_path = "app/0.log".into();
        let m = read_termination_message(&c, dir.path());
        assert_eq!(m.len(), MAX_TERMINATION_MESSAGE);
        assert!(m.ends_with("END"));
        // Empty file: the log's tail instead.
        std::fs::write(&msg_file, "").unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::fs::write(
            dir.path().join("app/0.log"),
            "2024-01-01T00:00:00Z stdout F starting\n2024-01-01T00:00:01Z stderr P panic: \n2024-01-01T00:00:01Z stderr F boom\n",
        )
        .unwrap();
        assert_eq!(
            read_termination_message(&c, dir.path()),
            "starting\npanic: boom\n"
        );
        // Exit 0: no fallback.
        c.exit_code = 0;
        assert_eq!(read_termination_message(&c, dir.path()), "");
    }
}

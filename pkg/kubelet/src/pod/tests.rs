//! A pod's life through every piece together, the way the sync loop will call them: what the
//! config step writes into CRI labels and annotations must be what the status and decision
//! steps read back from containerd.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use distro_cri::api::{
    ContainerConfig, ContainerState, ContainerStatus, PodSandboxConfig, PodSandboxNetworkStatus,
    PodSandboxState, PodSandboxStatus,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, Container, EnvVar, EnvVarSource, Pod, PodSpec, Secret,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::actions::{compute_pod_actions, container_backoff, ProbeFailures};
use super::container::{container_config, ContainerInputs, ContainerSettings};
use super::dns::{ClusterDns, HostDns};
use super::env::{EnvContext, ObjectLookup};
use super::runtime::RuntimePod;
use super::sandbox::{sandbox_config, SandboxSettings};
use super::status::{pod_status, StatusInputs, WaitingReason};
use crate::backoff::Backoff;

struct Objects(Vec<ConfigMap>);
impl ObjectLookup for Objects {
    fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        self.0
            .iter()
            .find(|c| {
                c.metadata.namespace.as_deref() == Some(ns)
                    && c.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }
    fn secret(&self, _: &str, _: &str) -> Option<Secret> {
        None
    }
}

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * SEC;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(T0 + secs * SEC)).unwrap()
}

fn web() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some("u1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Always".into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox:latest".into()),
                command: Some(vec!["sh".into(), "-c".into(), "echo $(MODE)".into()]),
                env: Some(vec![EnvVar {
                    name: "MODE".into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "mode".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn make_config(
    pod: &Pod,
    objects: &Objects,
    restart_count: u32,
) -> Result<ContainerConfig, super::ConfigError> {
    let alloc: BTreeMap<String, Quantity> = BTreeMap::new();
    let ips = ["10.42.0.8".to_string()];
    let ctx = EnvContext {
        objects,
        services: &[],
        pod_ips: &ips,
        host_ips: &[],
        node_allocatable: &alloc,
    };
    let settings = ContainerSettings {
        memory_capacity: 1 << 32,
        restrict_oom_score_adj: true,
        seccomp_root: PathBuf::from("/var/lib/distro/agent/seccomp"),
        seccomp_default: false,
    };
    let inputs = ContainerInputs {
        restart_count,
        image_ref: "busybox:latest".into(),
        ..Default::default()
    };
    let c = &pod.spec.as_ref().unwrap().containers[0];
    container_config(pod, c, &inputs, &ctx, &settings).map(|(c, _)| c)
}

/// What containerd reports for a container created from `config`.
fn cri_status(
    config: &ContainerConfig,
    id: &str,
    created: i64,
    state: ContainerState,
    exit: Option<(i32, i64)>,
) -> ContainerStatus {
    ContainerStatus {
        id: id.into(),
        metadata: config.metadata.clone(),
        state: state as i32,
        created_at: T0 + created * SEC,
        started_at: T0 + (created + 1) * SEC,
        finished_at: exit.map_or(0, |(_, f)| T0 + f * SEC),
        exit_code: exit.map_or(0, |(c, _)| c),
        reason: match exit {
            Some((0, _)) => "Completed".into(),
            Some(_) => "Error".into(),
            None => String::new(),
        },
        image: config.image.clone(),
        image_ref: "sha256:feed".into(),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        log_path: config.log_path.clone(),
        ..Default::default()
    }
}

fn sandbox(config: &PodSandboxConfig) -> PodSandboxStatus {
    PodSandboxStatus {
        id: "sb1".into(),
        metadata: config.metadata.clone(),
        state: PodSandboxState::SandboxReady as i32,
        created_at: T0,
        network: Some(PodSandboxNetworkStatus {
            ip: "10.42.0.8".into(),
            ..Default::default()
        }),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        ..Default::default()
    }
}

fn status(
    pod: &Pod,
    rt: &RuntimePod,
    reasons: &HashMap<String, WaitingReason>,
    now: i64,
) -> k8s_openapi::api::core::v1::PodStatus {
    let empty = HashMap::new();
    let msgs = HashMap::new();
    let hosts = ["192.168.1.2".to_string()];
    let inputs = StatusInputs {
        reasons,
        readiness: &empty,
        startup: &empty,
        termination_messages: &msgs,
        host_ips: &hosts,
        pod_is_terminal: false,
        now: at(now),
        runtime_name: "containerd",
    };
    pod_status(pod, rt, &inputs)
}

fn waiting_reason(s: &k8s_openapi::api::core::v1::PodStatus) -> (Option<String>, Option<String>) {
    let w = s.container_statuses.as_ref().unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap_or_default();
    (w.reason, w.message)
}

#[test]
fn config_error_then_running_then_crash_loop() {
    let pod = web();
    let settings = SandboxSettings {
        cluster_dns: ClusterDns {
            servers: vec!["10.43.0.10".into()],
            domain: "cluster.local".into(),
        },
        host_dns: HostDns::default(),
        pod_log_root: PathBuf::from("/var/lib/distro/agent/pods"),
    };
    let (sb_config, _) = sandbox_config(&pod, 0, &settings).unwrap();
    let sb = sandbox(&sb_config);

    // 1. The ConfigMap is missing: CreateContainerConfigError with upstream's message.
    let err = make_config(&pod, &Objects(vec![]), 0).unwrap_err();
    let mut reasons = HashMap::from([("app".to_string(), WaitingReason::config_error(&err))]);
    let rt = RuntimePod::new(vec![sb.clone()], vec![]);
    let actions = compute_pod_actions(&pod, &rt, &ProbeFailures::default());
    assert_eq!(actions.containers_to_start, vec![0]);
    let s = status(&pod, &rt, &reasons, 1);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(
        waiting_reason(&s),
        (
            Some("CreateContainerConfigError".into()),
            Some("configmap \"cfg\" not found".into())
        )
    );

    // 2. It appears; the container runs. Hash and restart count round-trip through CRI.
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("cfg".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        data: Some([("mode".to_string(), "prod".to_string())].into()),
        ..Default::default()
    };
    let objects = Objects(vec![cm]);
    let config = make_config(&pod, &objects, 0).unwrap();
    assert_eq!(config.command, vec!["sh", "-c", "echo prod"]);
    reasons.clear();
    let running = cri_status(&config, "c0", 2, ContainerState::ContainerRunning, None);
    let rt = RuntimePod::new(vec![sb.clone()], vec![running]);
    let actions = compute_pod_actions(&pod, &rt, &ProbeFailures::default());
    assert!(
        actions.containers_to_start.is_empty()
            && actions.containers_to_kill.is_empty()
            && !actions.kill_pod
    );
    let s = status(&pod, &rt, &reasons, 3);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert!(s.container_statuses.as_ref().unwrap()[0].ready);
    assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.8"));

    // 3. It crashes twice: the first restart is immediate, the second waits 10 s.
    let mut backoff = Backoff::default();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let crashed0 = cri_status(
        &config,
        "c0",
        2,
        ContainerState::ContainerExited,
        Some((1, 5)),
    );
    let rt = RuntimePod::new(vec![sb.clone()], vec![crashed0.clone()]);
    assert_eq!(
        compute_pod_actions(&pod, &rt, &ProbeFailures::default()).containers_to_start,
        vec![0]
    );
    assert_eq!(container_backoff(&mut backoff, &pod, c, &rt, at(6)), None);
    let config1 = make_config(&pod, &objects, 1).unwrap();
    let crashed1 = cri_status(
        &config1,
        "c1",
        6,
        ContainerState::ContainerExited,
        Some((1, 8)),
    );
    let rt = RuntimePod::new(vec![sb], vec![crashed0, crashed1]);
    let (msg, _) = container_backoff(&mut backoff, &pod, c, &rt, at(9)).unwrap();
    assert_eq!(
        msg,
        "back-off 10s restarting failed container=app pod=web_shop(u1)"
    );
    reasons.insert("app".into(), WaitingReason::crash_loop(msg.clone()));
    let s = status(&pod, &rt, &reasons, 9);
    assert_eq!(
        waiting_reason(&s),
        (Some("CrashLoopBackOff".into()), Some(msg))
    );
    let app = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(app.restart_count, 1);
    assert_eq!(
        app.last_state
            .clone()
            .unwrap()
            .terminated
            .unwrap()
            .exit_code,
        1
    );
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(app.container_id.as_deref(), Some("containerd://c1"));
}

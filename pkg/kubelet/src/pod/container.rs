//! The CRI container config of one container (upstream's `generateContainerConfig`): image,
//! `$(VAR)`-expanded command and args, environment, mounts (volumes, `/etc/hosts`, the
//! termination-message file), Linux resources and security context, log path, and the labels
//! and annotations the kubelet reads back when it reconstructs status after a restart.

use std::collections::HashMap;
use std::path::PathBuf;

use distro_cri::api::{
    ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig, Mount,
};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::env::{make_environment, EnvContext};
use super::expansion::expand;
use super::sandbox::pod_identity_labels;
use super::security::{self, ImageUser};
use super::{resources, ConfigError};

/// Label naming the container (with the pod labels, the key to find it again).
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Annotation with the hash of the container spec fields whose change forces a restart.
pub const ANNOTATION_HASH: &str = "io.kubernetes.container.hash";
/// Annotation with the container's restart count.
pub const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Annotation with where the container writes its termination message.
pub const ANNOTATION_TERMINATION_MESSAGE_PATH: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Annotation with `File` or `FallbackToLogsOnError`.
pub const ANNOTATION_TERMINATION_MESSAGE_POLICY: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Annotation with the pod's `terminationGracePeriodSeconds`.
pub const ANNOTATION_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Annotation with the pod's `deletionGracePeriodSeconds`.
pub const ANNOTATION_DELETION_GRACE_PERIOD: &str = "io.kubernetes.pod.deletionGracePeriod";
/// Annotation with the preStop handler as JSON.
pub const ANNOTATION_PRE_STOP: &str = "io.kubernetes.container.preStopHandler";
/// Annotation with the container ports as JSON.
pub const ANNOTATION_PORTS: &str = "io.kubernetes.container.ports";

/// Upstream's default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The hash of the fields whose change means "restart this container". Upstream (1.31+,
/// in-place resize) hashes only name and image, so resource edits do not restart; the
/// value is FNV-1a 32 of their JSON, printed in hex.
pub fn container_hash(c: &Container) -> String {
    let json = serde_json::json!({ "name": c.name, "image": c.image }).to_string();
    let mut h: u32 = 0x811c_9dc5;
    for b in json.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:x}")
}

/// A container's log file, relative to the sandbox's log directory.
pub fn log_path(container_name: &str, restart_count: u32) -> String {
    format!("{container_name}/{restart_count}.log")
}

/// Creates the empty file one container attempt writes its termination message to, at
/// `<pod_dir>/containers/<container>/<attempt>-<unique>`, world-writable as upstream makes it
/// (0666 regardless of umask), so a container running as any user can write it.
///
/// # Blocking
/// Touches the disk: call it from `spawn_blocking`.
///
/// # Errors
/// Creating the directory or file, or setting its mode.
pub fn create_termination_log(
    pod_dir: &std::path::Path,
    container_name: &str,
    restart_count: u32,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = pod_dir.join("containers").join(container_name);
    std::fs::create_dir_all(&dir)?;
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let path = dir.join(format!("{restart_count}-{unique:x}"));
    std::fs::File::create(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(path)
}

/// Node-level settings the container translation depends on.
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    /// Node memory capacity in bytes (Burstable OOM scores are relative to it).
    pub memory_capacity: i64,
    /// The node refuses negative `oom_score_adj` (root without CAP_SYS_RESOURCE).
    pub restrict_oom_score_adj: bool,
    /// Where Localhost seccomp profiles live (`<kubelet root>/seccomp`).
    pub seccomp_root: PathBuf,
    /// The kubelet's `seccompDefault`: RuntimeDefault instead of Unconfined when unset.
    pub seccomp_default: bool,
}

/// Per-start inputs the sync loop has prepared for this container.
#[derive(Debug, Clone, Default)]
pub struct ContainerInputs {
    /// Attempt number (= restart count).
    pub restart_count: u32,
    /// The image reference to run (the resolved image ID, or the spec's image).
    pub image_ref: String,
    /// The image's declared user (from `ImageStatus`).
    pub image_user: ImageUser,
    /// Volume mounts the volume manager prepared, in `volumeMounts` order.
    pub volume_mounts: Vec<Mount>,
    /// The pod's managed hosts file, when it should be mounted.
    pub hosts_file: Option<PathBuf>,
    /// The file created for this attempt's termination message.
    pub termination_log: Option<PathBuf>,
}

/// The container config plus warnings for Events.
///
/// # Errors
/// Everything upstream reports as `CreateContainerConfigError`: environment sources,
/// `runAsNonRoot`, seccomp.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    inputs: &ContainerInputs,
    env_ctx: &EnvContext<'_>,
    settings: &ContainerSettings,
) -> Result<(ContainerConfig, Vec<String>), ConfigError> {
    security::verify_run_as_non_root(pod, container, &inputs.image_user)?;
    let env = make_environment(pod, container, env_ctx)?;
    let vars: HashMap<&str, &str> = env
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|s| expand(s, |n| vars.get(n).copied()))
            .collect()
    };
    let command = expand_all(&container.command);
    let args = expand_all(&container.args);

    let mut mounts = inputs.volume_mounts.clone();
    if let Some(hosts) = &inputs.hosts_file {
        if !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            mounts.push(Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.to_string_lossy().into_owned(),
                selinux_relabel: true,
                ..Default::default()
            });
        }
    }
    let tm_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into());
    if let Some(tlog) = inputs
        .termination_log
        .as_ref()
        .filter(|_| !tm_path.is_empty())
    {
        mounts.push(Mount {
            container_path: tm_path.clone(),
            host_path: tlog.to_string_lossy().into_owned(),
            selinux_relabel: true,
            ..Default::default()
        });
    }

    let mut labels = pod_identity_labels(pod);
    labels.insert(LABEL_CONTAINER_NAME.into(), container.name.clone());
    let mut annotations = HashMap::from([
        (ANNOTATION_HASH.to_string(), container_hash(container)),
        (
            ANNOTATION_RESTART_COUNT.to_string(),
            inputs.restart_count.to_string(),
        ),
        (ANNOTATION_TERMINATION_MESSAGE_PATH.to_string(), tm_path),
        (
            ANNOTATION_TERMINATION_MESSAGE_POLICY.to_string(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
    ]);
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        annotations.insert(ANNOTATION_DELETION_GRACE_PERIOD.into(), g.to_string());
    }
    if let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        annotations.insert(ANNOTATION_TERMINATION_GRACE_PERIOD.into(), g.to_string());
    }
    if let Some(h) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        annotations.insert(
            ANNOTATION_PRE_STOP.into(),
            serde_json::to_string(h).unwrap_or_default(),
        );
    }
    if let Some(p) = container.ports.as_ref().filter(|p| !p.is_empty()) {
        annotations.insert(
            ANNOTATION_PORTS.into(),
            serde_json::to_string(p).unwrap_or_default(),
        );
    }

    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt: inputs.restart_count,
        }),
        image: Some(ImageSpec {
            image: inputs.image_ref.clone(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .vars
            .iter()
            .map(|(key, value)| KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts,
        labels,
        annotations,
        log_path: log_path(&container.name, inputs.restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources::container_resources(
                pod,
                container,
                settings.memory_capacity,
                settings.restrict_oom_score_adj,
            )),
            security_context: Some(security::container_security_context(
                pod,
                container,
                &inputs.image_user,
                &settings.seccomp_root,
                settings.seccomp_default,
            )?),
        }),
        ..Default::default()
    };
    Ok((config, env.warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::env::ObjectLookup;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ContainerPort, EnvVar, ExecAction, Lifecycle, LifecycleHandler,
        PodSecurityContext, PodSpec, ResourceRequirements, Secret,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    struct NoObjects;
    impl ObjectLookup for NoObjects {
        fn config_map(&self, _: &str, _: &str) -> Option<ConfigMap> {
            None
        }
        fn secret(&self, _: &str, _: &str) -> Option<Secret> {
            None
        }
    }

    fn settings() -> ContainerSettings {
        ContainerSettings {
            memory_capacity: 4 << 30,
            restrict_oom_score_adj: true,
            seccomp_root: "/var/lib/distro/agent/kubelet/seccomp".into(),
            seccomp_default: false,
        }
    }

    fn web() -> Container {
        Container {
            name: "web".into(),
            image: Some("busybox:latest".into()),
            command: Some(vec!["sh".into(), "-c".into()]),
            args: Some(vec![
                "echo $(GREETING) $(MISSING) $$(GREETING) && httpd -p $(PORT)".into(),
            ]),
            working_dir: Some("/srv".into()),
            env: Some(vec![
                EnvVar {
                    name: "GREETING".into(),
                    value: Some("hi".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "PORT".into(),
                    value: Some("8080".into()),
                    ..Default::default()
                },
            ]),
            ports: Some(vec![ContainerPort {
                container_port: 8080,
                ..Default::default()
            }]),
            tty: Some(true),
            stdin: Some(true),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_string(), Q("1".into())),
                        ("memory".to_string(), Q("1Gi".into())),
                    ]
                    .into(),
                ),
                limits: Some(
                    [
                        ("cpu".to_string(), Q("1".into())),
                        ("memory".to_string(), Q("1Gi".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["sleep".into(), "1".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(c: Container, sc: Option<PodSecurityContext>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("u-9".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![c],
                termination_grace_period_seconds: Some(30),
                security_context: sc,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn build(p: &Pod, inputs: &ContainerInputs) -> Result<ContainerConfig, ConfigError> {
        let alloc = BTreeMap::new();
        let ctx = EnvContext {
            objects: &NoObjects,
            services: &[],
            pod_ips: &["10.42.0.9".to_string()],
            host_ips: &[],
            node_allocatable: &alloc,
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        container_config(p, c, inputs, &ctx, &settings()).map(|(c, _)| c)
    }

    #[test]
    fn full_container_config() {
        let p = pod(web(), None);
        let inputs = ContainerInputs {
            restart_count: 3,
            image_ref: "sha256:abc".into(),
            volume_mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: "/v/data".into(),
                ..Default::default()
            }],
            hosts_file: Some("/pods/u-9/etc-hosts".into()),
            termination_log: Some("/pods/u-9/containers/web/f00d".into()),
            ..Default::default()
        };
        let cfg = build(&p, &inputs).unwrap();
        assert_eq!(cfg.metadata.as_ref().unwrap().attempt, 3);
        let img = cfg.image.as_ref().unwrap();
        assert_eq!(
            (img.image.as_str(), img.user_specified_image.as_str()),
            ("sha256:abc", "busybox:latest")
        );
        assert_eq!(cfg.command, vec!["sh", "-c"]);
        assert_eq!(
            cfg.args,
            vec!["echo hi $(MISSING) $(GREETING) && httpd -p 8080"]
        );
        assert_eq!(cfg.working_dir, "/srv");
        assert_eq!(cfg.log_path, "web/3.log");
        assert!(cfg.tty && cfg.stdin && !cfg.stdin_once);
        let paths: Vec<_> = cfg
            .mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.host_path.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("/data", "/v/data"),
                ("/etc/hosts", "/pods/u-9/etc-hosts"),
                ("/dev/termination-log", "/pods/u-9/containers/web/f00d")
            ]
        );
        assert_eq!(cfg.labels[LABEL_CONTAINER_NAME], "web");
        assert_eq!(cfg.labels["io.kubernetes.pod.uid"], "u-9");
        assert_eq!(cfg.annotations[ANNOTATION_RESTART_COUNT], "3");
        assert_eq!(cfg.annotations[ANNOTATION_HASH], container_hash(&web()));
        assert_eq!(
            cfg.annotations[ANNOTATION_TERMINATION_MESSAGE_POLICY],
            "File"
        );
        assert_eq!(cfg.annotations[ANNOTATION_TERMINATION_GRACE_PERIOD], "30");
        assert!(cfg.annotations[ANNOTATION_PRE_STOP].contains("sleep"));
        assert!(cfg.annotations[ANNOTATION_PORTS].contains("8080"));
        let linux = cfg.linux.unwrap();
        let r = linux.resources.unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (1024, 100_000, 1 << 30)
        );
        assert_eq!(
            r.oom_score_adj, 0,
            "Guaranteed -997 is clamped where negative scores are refused"
        );
        assert!(linux.security_context.is_some());
    }

    #[test]
    fn user_hosts_mount_wins_and_empty_termination_path_skips() {
        let mut c = web();
        c.termination_message_path = Some(String::new());
        let p = pod(c, None);
        let inputs = ContainerInputs {
            volume_mounts: vec![Mount {
                container_path: "/etc/hosts".into(),
                host_path: "/mine".into(),
                ..Default::default()
            }],
            hosts_file: Some("/managed".into()),
            termination_log: Some("/t".into()),
            ..Default::default()
        };
        let cfg = build(&p, &inputs).unwrap();
        assert_eq!(cfg.mounts.len(), 1);
        assert_eq!(cfg.mounts[0].host_path, "/mine");
    }

    #[test]
    fn config_errors_surface() {
        let nonroot = PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        let p = pod(web(), Some(nonroot));
        let inputs = ContainerInputs {
            image_user: ImageUser {
                uid: Some(0),
                username: String::new(),
            },
            ..Default::default()
        };
        assert!(matches!(
            build(&p, &inputs),
            Err(ConfigError::ImageRunsAsRoot { .. })
        ));
    }

    #[test]
    fn termination_log_file_is_world_writable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = create_termination_log(dir.path(), "web", 0).unwrap();
        let b = create_termination_log(dir.path(), "web", 1).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(dir.path().join("containers/web")));
        assert_eq!(
            std::fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o666
        );
        assert_eq!(std::fs::read(&b).unwrap(), b"");
    }

    #[test]
    fn hash_follows_name_and_image_only() {
        let a = web();
        let mut b = web();
        b.resources = None;
        b.args = None;
        assert_eq!(container_hash(&a), container_hash(&b));
        b.image = Some("busybox:1.36".into());
        assert_ne!(container_hash(&a), container_hash(&b));
    }
}

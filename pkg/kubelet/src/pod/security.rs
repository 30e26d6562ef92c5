//! Security contexts for the sandbox and containers, as upstream's kuberuntime derives them:
//! the pod's context with the container's fields on top, namespaces by host* flags,
//! seccomp by field, `/proc` masking by `procMount`, and the `runAsNonRoot` check.

use std::path::Path;

use distro_cri::api::{
    security_profile::ProfileType, Capability, Int64Value, LinuxContainerSecurityContext,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, SecurityProfile,
};
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
};

use super::{format_pod, ConfigError};

/// The `/proc` and `/sys` paths runtimes mask by default (upstream's `DefaultMaskedPaths`).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The `/proc` paths runtimes make read-only by default (upstream's `DefaultReadonlyPaths`).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The user an image declares (from CRI `ImageStatus`): a numeric uid, or a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUser {
    /// The uid when the image's user is numeric.
    pub uid: Option<i64>,
    /// The user name when it is not.
    pub username: String,
}

/// Namespace modes for the pod: host network/IPC/PID, or a PID namespace shared by the pod
/// (`shareProcessNamespace`) or per container.
pub fn namespaces(pod: &Pod) -> NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |host: Option<bool>, otherwise: NamespaceMode| {
        if host.unwrap_or(false) {
            NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    let pid_otherwise = if spec.share_process_namespace.unwrap_or(false) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    NamespaceOption {
        network: mode(spec.host_network, NamespaceMode::Pod),
        pid: mode(spec.host_pid, pid_otherwise),
        ipc: mode(spec.host_ipc, NamespaceMode::Pod),
        ..Default::default()
    }
}

fn pod_sc(pod: &Pod) -> PodSecurityContext {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default()
}

/// `fsGroup` first, then `supplementalGroups` (upstream's order).
fn supplemental_groups(sc: &PodSecurityContext) -> Vec<i64> {
    sc.fs_group
        .into_iter()
        .chain(sc.supplemental_groups.iter().flatten().copied())
        .collect()
}

/// The sandbox's security context. Upstream always runs the pause container under the
/// runtime's default seccomp profile and marks the sandbox privileged when any container is.
pub fn sandbox_security_context(pod: &Pod) -> LinuxSandboxSecurityContext {
    let sc = pod_sc(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let privileged = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    LinuxSandboxSecurityContext {
        namespace_options: Some(namespaces(pod)),
        run_as_user: sc.run_as_user.map(|value| Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| Int64Value { value }),
        supplemental_groups: supplemental_groups(&sc),
        privileged,
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    }
}

/// The pod's security context overlaid with the container's (upstream's
/// `DetermineEffectiveSecurityContext`).
pub fn effective_security_context(pod: &Pod, container: &Container) -> SecurityContext {
    let p = pod_sc(pod);
    let mut sc = SecurityContext {
        run_as_user: p.run_as_user,
        run_as_group: p.run_as_group,
        run_as_non_root: p.run_as_non_root,
        se_linux_options: p.se_linux_options,
        seccomp_profile: p.seccomp_profile,
        app_armor_profile: p.app_armor_profile,
        ..Default::default()
    };
    let Some(c) = container.security_context.clone() else {
        return sc;
    };
    macro_rules! over {
        ($($f:ident),*) => { $( if c.$f.is_some() { sc.$f = c.$f; } )* };
    }
    over!(
        run_as_user,
        run_as_group,
        run_as_non_root,
        se_linux_options,
        seccomp_profile,
        app_armor_profile,
        capabilities,
        privileged,
        read_only_root_filesystem,
        allow_privilege_escalation,
        proc_mount
    );
    sc
}

/// Upstream's `verifyRunAsNonRoot`: with `runAsNonRoot: true`, refuse uid 0 from the spec or
/// the image, and an image user that is a name (its uid cannot be checked).
///
/// # Errors
/// The three upstream messages, shown as `CreateContainerConfigError`.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image: &ImageUser,
) -> Result<(), ConfigError> {
    let sc = effective_security_context(pod, container);
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let who = || (format_pod(pod), container.name.clone());
    if let Some(uid) = sc.run_as_user {
        if uid == 0 {
            let (pod, container) = who();
            return Err(ConfigError::RunAsUserIsRoot { pod, container });
        }
        return Ok(());
    }
    match (image.uid, image.username.as_str()) {
        (Some(0), _) => {
            let (pod, container) = who();
            Err(ConfigError::ImageRunsAsRoot { pod, container })
        }
        (None, user) if !user.is_empty() => {
            let (pod, container) = who();
            Err(ConfigError::NonNumericUser {
                user: user.to_string(),
                pod,
                container,
            })
        }
        _ => Ok(()),
    }
}

/// The seccomp profile by field: container, then pod, then `fallback_runtime_default`
/// (the kubelet's `seccompDefault`) or Unconfined. Localhost profiles are files under
/// `seccomp_root`.
///
/// # Errors
/// [`ConfigError::SeccompLocalhostMissing`] for a Localhost profile without a file name.
pub fn seccomp_profile(
    pod: &Pod,
    container: &Container,
    seccomp_root: &Path,
    fallback_runtime_default: bool,
) -> Result<SecurityProfile, ConfigError> {
    let field: Option<SeccompProfile> = container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.clone())
        .or_else(|| pod_sc(pod).seccomp_profile);
    let profile = |t: ProfileType, r: String| SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r,
    };
    Ok(match field {
        None if fallback_runtime_default => profile(ProfileType::RuntimeDefault, String::new()),
        None => profile(ProfileType::Unconfined, String::new()),
        Some(f) => match f.type_.as_str() {
            "RuntimeDefault" => profile(ProfileType::RuntimeDefault, String::new()),
            "Localhost" => match f.localhost_profile.as_deref().filter(|p| !p.is_empty()) {
                Some(p) => profile(
                    ProfileType::Localhost,
                    seccomp_root.join(p).to_string_lossy().into_owned(),
                ),
                None => return Err(ConfigError::SeccompLocalhostMissing),
            },
            _ => profile(ProfileType::Unconfined, String::new()),
        },
    })
}

/// The container's security context (upstream's `determineEffectiveSecurityContext`).
///
/// Without an explicit `runAsUser` the image's uid (or user name) is passed on, as upstream.
///
/// # Errors
/// See [`seccomp_profile`].
pub fn container_security_context(
    pod: &Pod,
    container: &Container,
    image: &ImageUser,
    seccomp_root: &Path,
    seccomp_default: bool,
) -> Result<LinuxContainerSecurityContext, ConfigError> {
    let sc = effective_security_context(pod, container);
    let caps = sc.capabilities.as_ref().map(|c| Capability {
        add_capabilities: c.add.clone().unwrap_or_default(),
        drop_capabilities: c.drop.clone().unwrap_or_default(),
        ..Default::default()
    });
    let run_as_user = sc
        .run_as_user
        .or(image.uid)
        .map(|value| Int64Value { value });
    let run_as_username = if run_as_user.is_none() {
        image.username.clone()
    } else {
        String::new()
    };
    let unmasked = sc.proc_mount.as_deref() == Some("Unmasked");
    let paths = |p: &[&str]| {
        if unmasked {
            Vec::new()
        } else {
            p.iter().map(|s| s.to_string()).collect()
        }
    };
    Ok(LinuxContainerSecurityContext {
        capabilities: caps,
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(namespaces(pod)),
        run_as_user,
        run_as_group: sc.run_as_group.map(|value| Int64Value { value }),
        run_as_username,
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(&pod_sc(pod)),
        // Only an explicit `allowPrivilegeEscalation: false` sets no_new_privs.
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: paths(DEFAULT_MASKED_PATHS),
        readonly_paths: paths(DEFAULT_READONLY_PATHS),
        seccomp: Some(seccomp_profile(
            pod,
            container,
            seccomp_root,
            seccomp_default,
        )?),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Capabilities, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(sc: Option<PodSecurityContext>, containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                security_context: sc,
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ctr(sc: Option<SecurityContext>) -> Container {
        Container {
            name: "app".into(),
            security_context: sc,
            ..Default::default()
        }
    }

    #[test]
    fn namespace_modes() {
        let mut p = pod(None, vec![]);
        let ns = namespaces(&p);
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (
                NamespaceMode::Pod as i32,
                NamespaceMode::Container as i32,
                NamespaceMode::Pod as i32
            )
        );
        let spec = p.spec.as_mut().unwrap();
        spec.share_process_namespace = Some(true);
        spec.host_network = Some(true);
        spec.host_ipc = Some(true);
        let ns = namespaces(&p);
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (
                NamespaceMode::Node as i32,
                NamespaceMode::Pod as i32,
                NamespaceMode::Node as i32
            )
        );
        p.spec.as_mut().unwrap().host_pid = Some(true);
        assert_eq!(namespaces(&p).pid, NamespaceMode::Node as i32);
    }

    #[test]
    fn container_overrides_pod() {
        let psc = PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            fs_group: Some(2000),
            supplemental_groups: Some(vec![4000, 5000]),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        };
        let c = ctr(Some(SecurityContext {
            run_as_user: Some(1001),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }));
        let p = pod(Some(psc), vec![c.clone()]);
        let sc = container_security_context(
            &p,
            &c,
            &ImageUser::default(),
            Path::new("/var/lib/k/seccomp"),
            false,
        )
        .unwrap();
        assert_eq!(sc.run_as_user, Some(Int64Value { value: 1001 }));
        assert_eq!(sc.run_as_group, Some(Int64Value { value: 3000 }));
        assert_eq!(sc.supplemental_groups, vec![2000, 4000, 5000]);
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        let caps = sc.capabilities.unwrap();
        assert_eq!(
            (caps.add_capabilities, caps.drop_capabilities),
            (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
        );
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            ProfileType::RuntimeDefault as i32
        );
        assert_eq!(sc.masked_paths.len(), DEFAULT_MASKED_PATHS.len());
        assert_eq!(sc.readonly_paths, DEFAULT_READONLY_PATHS);

        let sb = sandbox_security_context(&p);
        assert_eq!(sb.run_as_user, Some(Int64Value { value: 1000 }));
        assert_eq!(sb.supplemental_groups, vec![2000, 4000, 5000]);
        assert_eq!(
            sb.seccomp.unwrap().profile_type,
            ProfileType::RuntimeDefault as i32
        );
        assert!(!sb.privileged);
    }

    #[test]
    fn defaults_image_user_unmasked_privileged() {
        let c = ctr(Some(SecurityContext {
            proc_mount: Some("Unmasked".into()),
            privileged: Some(true),
            ..Default::default()
        }));
        let p = pod(None, vec![c.clone()]);
        let img = ImageUser {
            uid: Some(65534),
            username: String::new(),
        };
        let sc = container_security_context(&p, &c, &img, Path::new("/s"), false).unwrap();
        assert_eq!(
            sc.run_as_user,
            Some(Int64Value { value: 65534 }),
            "image uid is passed on"
        );
        assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
        assert!(sc.privileged && !sc.no_new_privs);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            ProfileType::Unconfined as i32,
            "no seccompDefault: Unconfined"
        );
        assert!(sandbox_security_context(&p).privileged);
        let named = ImageUser {
            uid: None,
            username: "www".into(),
        };
        let sc = container_security_context(&p, &ctr(None), &named, Path::new("/s"), true).unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_username.as_str()), (None, "www"));
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            ProfileType::RuntimeDefault as i32
        );
    }

    #[test]
    fn seccomp_localhost() {
        let local = |p: Option<&str>| SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: p.map(Into::into),
        };
        let c = ctr(Some(SecurityContext {
            seccomp_profile: Some(local(Some("prof.json"))),
            ..Default::default()
        }));
        let pod_level = PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        };
        let p = pod(Some(pod_level), vec![]);
        let s = seccomp_profile(&p, &c, Path::new("/root/seccomp"), false).unwrap();
        assert_eq!(
            (s.profile_type, s.localhost_ref.as_str()),
            (ProfileType::Localhost as i32, "/root/seccomp/prof.json")
        );
        assert_eq!(
            seccomp_profile(&p, &ctr(None), Path::new("/r"), true)
                .unwrap()
                .profile_type,
            ProfileType::Unconfined as i32,
            "pod field beats the default"
        );
        let bad = ctr(Some(SecurityContext {
            seccomp_profile: Some(local(None)),
            ..Default::default()
        }));
        assert_eq!(
            seccomp_profile(&p, &bad, Path::new("/r"), false),
            Err(ConfigError::SeccompLocalhostMissing)
        );
    }

    #[test]
    fn run_as_non_root_messages() {
        let nonroot = PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        let p = pod(Some(nonroot), vec![]);
        let root_img = ImageUser {
            uid: Some(0),
            username: String::new(),
        };
        assert_eq!(
            verify_run_as_non_root(&p, &ctr(None), &root_img).unwrap_err().to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: app)"
        );
        let explicit_root = ctr(Some(SecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        }));
        assert_eq!(
            verify_run_as_non_root(&p, &explicit_root, &ImageUser::default())
                .unwrap_err()
                .to_string(),
            "container's runAsUser breaks non-root policy (pod: \"p_ns(u1)\", container: app)"
        );
        let named = ImageUser {
            uid: None,
            username: "nginx".into(),
        };
        assert_eq!(
            verify_run_as_non_root(&p, &ctr(None), &named).unwrap_err().to_string(),
            "container has runAsNonRoot and image has non-numeric user (nginx), cannot verify user is non-root (pod: \"p_ns(u1)\", container: app)"
        );
        // A non-zero runAsUser overrides a root image; no runAsNonRoot means no check.
        let as_1000 = ctr(Some(SecurityContext {
            run_as_user: Some(1000),
            ..Default::default()
        }));
        assert!(verify_run_as_non_root(&p, &as_1000, &root_img).is_ok());
        assert!(verify_run_as_non_root(&pod(None, vec![]), &ctr(None), &root_img).is_ok());
        // The container can switch the check off.
        let off = ctr(Some(SecurityContext {
            run_as_non_root: Some(false),
            ..Default::default()
        }));
        assert!(verify_run_as_non_root(&p, &off, &root_img).is_ok());
    }
}

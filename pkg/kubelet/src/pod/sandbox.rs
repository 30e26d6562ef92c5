//! The CRI sandbox config of a pod (upstream's `generatePodSandboxConfig`): metadata,
//! hostname, log directory, DNS, port mappings, labels and the Linux part (cgroup parent by
//! QoS, namespaces, sysctls, security context, overhead and resources).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use distro_cri::api::{
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::dns::{pod_dns, ClusterDns, DnsWarning, HostDns};
use super::{resources, security, ConfigError};
use crate::qos::{pod_qos, QosClass};

/// Label naming the pod of a sandbox or container, as upstream's kubelet sets it.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// Label naming the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label naming the pod's UID: the key to find a pod's sandboxes and containers again.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";

/// Node-level settings the translation depends on.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// Cluster DNS server and domain.
    pub cluster_dns: ClusterDns,
    /// The node's resolver (its resolv.conf), for `Default` and the host search list.
    pub host_dns: HostDns,
    /// Root of pod log directories (`<root>/<ns>_<name>_<uid>`), upstream `/var/log/pods`.
    pub pod_log_root: PathBuf,
}

/// Kernel limit on a hostname.
const MAX_HOSTNAME: usize = 63;
/// Upstream's limit on an FQDN hostname (`setHostnameAsFQDN`).
const MAX_FQDN: usize = 64;

/// Is `s` a DNS-1123 label? Returns upstream's reason when not.
fn dns1123_label_error(s: &str) -> Option<String> {
    if s.len() > MAX_HOSTNAME {
        return Some("must be no more than 63 characters".into());
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into()
    })
}

/// The pod's hostname and, with a subdomain, its domain `<subdomain>.<ns>.svc.<domain>`
/// (upstream's `GeneratePodHostNameAndDomain`). Pod names longer than 63 characters are
/// truncated and stripped of trailing `-` and `.`.
///
/// # Errors
/// An invalid `hostname`/`subdomain`, or a name that truncates to nothing.
pub fn hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, Option<String>), ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let mut hostname = pod_name.clone();
    if let Some(h) = spec.hostname.filter(|h| !h.is_empty()) {
        if let Some(reason) = dns1123_label_error(&h) {
            return Err(ConfigError::InvalidDnsLabel {
                field: "Hostname",
                value: h,
                reason,
            });
        }
        hostname = h;
    }
    if hostname.len() > MAX_HOSTNAME {
        hostname = hostname[..MAX_HOSTNAME]
            .trim_end_matches(['-', '.'])
            .to_string();
        if hostname.is_empty() {
            return Err(ConfigError::InvalidHostname {
                pod: pod_name,
                hostname,
            });
        }
    }
    let domain = match spec.subdomain.filter(|s| !s.is_empty()) {
        Some(sub) => {
            if let Some(reason) = dns1123_label_error(&sub) {
                return Err(ConfigError::InvalidDnsLabel {
                    field: "Subdomain",
                    value: sub,
                    reason,
                });
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            Some(format!("{sub}.{ns}.svc.{cluster_domain}"))
        }
        None => None,
    };
    Ok((hostname, domain))
}

/// The hostname the sandbox gets: empty on the host network (the node's own), else the pod
/// hostname, or its FQDN with `setHostnameAsFQDN`.
///
/// # Errors
/// See [`hostname_and_domain`]; an FQDN over 64 characters.
pub fn sandbox_hostname(pod: &Pod, cluster_domain: &str) -> Result<String, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.host_network.unwrap_or(false) {
        return Ok(String::new());
    }
    let (hostname, domain) = hostname_and_domain(pod, cluster_domain)?;
    match (spec.set_hostname_as_fqdn.unwrap_or(false), domain) {
        (true, Some(d)) => {
            let fqdn = format!("{hostname}.{d}");
            if fqdn.len() > MAX_FQDN {
                let len = fqdn.len();
                return Err(ConfigError::FqdnTooLong { fqdn, len });
            }
            Ok(fqdn)
        }
        _ => Ok(hostname),
    }
}

/// The pod's log directory: `<root>/<namespace>_<name>_<uid>`.
pub fn log_directory(root: &Path, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    root.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    ))
}

/// The pod's cgroup parent in the cgroupfs layout: `/kubepods/pod<uid>` for Guaranteed,
/// `/kubepods/burstable/pod<uid>` and `/kubepods/besteffort/pod<uid>` otherwise.
pub fn cgroup_parent(pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    match pod_qos(&pod.spec.clone().unwrap_or_default()) {
        QosClass::Guaranteed => format!("/kubepods/pod{uid}"),
        QosClass::Burstable => format!("/kubepods/burstable/pod{uid}"),
        QosClass::BestEffort => format!("/kubepods/besteffort/pod{uid}"),
    }
}

/// The three pod-identity labels every sandbox and container carries.
pub fn pod_identity_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    HashMap::from([
        (
            LABEL_POD_NAME.to_string(),
            m.name.clone().unwrap_or_default(),
        ),
        (
            LABEL_POD_NAMESPACE.to_string(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (LABEL_POD_UID.to_string(), m.uid.clone().unwrap_or_default()),
    ])
}

/// Port mappings of one container (upstream's `MakePortMappings`): every declared port,
/// the first of each name (or default name) only.
pub fn container_port_mappings(c: &Container) -> Vec<PortMapping> {
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in c.ports.iter().flatten() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let family = match p.host_ip.as_deref() {
            Some(ip) if ip.contains(':') => "v6",
            Some(ip) if !ip.is_empty() => "v4",
            _ => "",
        };
        let name = match p.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => format!("{}-{n}", c.name),
            None => format!("{}-{family}{proto}:{}", c.name, p.container_port),
        };
        if !names.insert(name) {
            continue;
        }
        out.push(PortMapping {
            protocol: Protocol::from_str_name(proto).unwrap_or(Protocol::Tcp) as i32,
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        });
    }
    out
}

/// Sysctl names may use `/` as separator; runtimes expect dots (upstream swaps the two).
fn sysctl_name(name: &str) -> String {
    if !name.contains('/') {
        return name.to_string();
    }
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// The full sandbox config for `pod` at sandbox `attempt`, plus DNS warnings for Events.
///
/// # Errors
/// Hostname problems (see [`sandbox_hostname`]).
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    settings: &SandboxSettings,
) -> Result<(PodSandboxConfig, Vec<DnsWarning>), ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let m = &pod.metadata;
    let (dns, warnings) = pod_dns(pod, &settings.cluster_dns, &settings.host_dns);
    let mut labels: HashMap<String, String> =
        m.labels.clone().unwrap_or_default().into_iter().collect();
    labels.extend(pod_identity_labels(pod));
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .map(|v| {
            v.iter()
                .map(|s| (sysctl_name(&s.name), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: sandbox_hostname(pod, &settings.cluster_dns.domain)?,
        log_directory: log_directory(&settings.pod_log_root, pod)
            .to_string_lossy()
            .into_owned(),
        dns_config: Some(dns),
        port_mappings: spec
            .containers
            .iter()
            .flat_map(container_port_mappings)
            .collect(),
        labels,
        annotations: m
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(pod),
            security_context: Some(security::sandbox_security_context(pod)),
            sysctls,
            overhead: resources::overhead_resources(&spec),
            resources: Some(resources::sandbox_resources(&spec)),
        }),
        windows: None,
    };
    Ok((config, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, PodSecurityContext, PodSpec, ResourceRequirements, Sysctl,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                uid: Some("1234-abcd".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some([("note".to_string(), "x".to_string())].into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn settings() -> SandboxSettings {
        SandboxSettings {
            cluster_dns: ClusterDns {
                servers: vec!["10.43.0.10".into()],
                domain: "cluster.local".into(),
            },
            host_dns: HostDns::default(),
            pod_log_root: PathBuf::from("/var/lib/distro/agent/pods"),
        }
    }

    #[test]
    fn hostnames() {
        let p = pod(
            "web-0",
            PodSpec {
                hostname: Some("db".into()),
                subdomain: Some("dbs".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            hostname_and_domain(&p, "cluster.local").unwrap(),
            ("db".into(), Some("dbs.shop.svc.cluster.local".into()))
        );
        // 63-character truncation strips trailing '-' and '.'.
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let p = pod(&long, PodSpec::default());
        assert_eq!(
            hostname_and_domain(&p, "cluster.local").unwrap().0,
            "a".repeat(62)
        );
        let bad = pod(
            "x",
            PodSpec {
                hostname: Some("Bad_Name".into()),
                ..Default::default()
            },
        );
        let err = hostname_and_domain(&bad, "cluster.local")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "pod Hostname \"Bad_Name\" is not a valid DNS label: a lowercase RFC 1123 label"
            ),
            "{err}"
        );
        // FQDN as hostname, and its 64-character limit.
        let fq = pod(
            "a",
            PodSpec {
                subdomain: Some("s".into()),
                set_hostname_as_fqdn: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(
            sandbox_hostname(&fq, "cluster.local").unwrap(),
            "a.s.shop.svc.cluster.local"
        );
        let too_long = pod(
            &"h".repeat(50),
            PodSpec {
                subdomain: Some("s".into()),
                set_hostname_as_fqdn: Some(true),
                ..Default::default()
            },
        );
        assert!(matches!(
            sandbox_hostname(&too_long, "cluster.local"),
            Err(ConfigError::FqdnTooLong { len: 75, .. })
        ));
        let host = pod(
            "a",
            PodSpec {
                host_network: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(sandbox_hostname(&host, "cluster.local").unwrap(), "");
    }

    #[test]
    fn ports() {
        let c = Container {
            name: "web".into(),
            ports: Some(vec![
                ContainerPort {
                    container_port: 80,
                    host_port: Some(8080),
                    name: Some("http".into()),
                    ..Default::default()
                },
                ContainerPort {
                    container_port: 53,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
                ContainerPort {
                    container_port: 81,
                    name: Some("http".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let pm = container_port_mappings(&c);
        assert_eq!(pm.len(), 2, "the duplicate name is dropped");
        assert_eq!(
            (pm[0].container_port, pm[0].host_port, pm[0].protocol),
            (80, 8080, Protocol::Tcp as i32)
        );
        assert_eq!(
            (pm[1].container_port, pm[1].host_port, pm[1].protocol),
            (53, 0, Protocol::Udp as i32)
        );
    }

    #[test]
    fn full_config() {
        let res = |cpu: &str, mem: &str| ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), Q(cpu.into())),
                    ("memory".to_string(), Q(mem.into())),
                ]
                .into(),
            ),
            limits: None,
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(res("500m", "64Mi")),
                ..Default::default()
            }],
            security_context: Some(PodSecurityContext {
                sysctls: Some(vec![
                    Sysctl {
                        name: "net.ipv4.ip_local_port_range".into(),
                        value: "1024 65535".into(),
                    },
                    Sysctl {
                        name: "net/ipv4/conf/eth0.100/forwarding".into(),
                        value: "1".into(),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = pod("web", spec);
        let (cfg, w) = sandbox_config(&p, 2, &settings()).unwrap();
        assert!(w.is_empty());
        let md = cfg.metadata.unwrap();
        assert_eq!(
            (
                md.name.as_str(),
                md.namespace.as_str(),
                md.uid.as_str(),
                md.attempt
            ),
            ("web", "shop", "1234-abcd", 2)
        );
        assert_eq!(cfg.hostname, "web");
        assert_eq!(
            cfg.log_directory,
            "/var/lib/distro/agent/pods/shop_web_1234-abcd"
        );
        assert_eq!(cfg.labels["app"], "web");
        assert_eq!(cfg.labels[LABEL_POD_UID], "1234-abcd");
        assert_eq!(cfg.labels[LABEL_POD_NAMESPACE], "shop");
        assert_eq!(cfg.annotations["note"], "x");
        assert_eq!(cfg.dns_config.unwrap().options, vec!["ndots:5"]);
        let linux = cfg.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/burstable/pod1234-abcd");
        assert_eq!(linux.sysctls["net.ipv4.ip_local_port_range"], "1024 65535");
        assert_eq!(linux.sysctls["net.ipv4.conf.eth0/100.forwarding"], "1");
        assert_eq!(linux.resources.unwrap().cpu_shares, 512);
        assert!(linux.overhead.is_none());
        assert_eq!(
            cgroup_parent(&pod("x", PodSpec::default())),
            "/kubepods/besteffort/pod1234-abcd"
        );
    }
}

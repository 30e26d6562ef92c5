//! The cluster-wide settings an agent learns from its server after joining, so that
//! `distro agent --join URL --token T` needs no `--cluster-cidr`, `--cluster-dns` or
//! `--cluster-domain` of its own (k3s agents read them from the server's config endpoint).
//!
//! # Design
//! The server writes them into the ConfigMap `kube-system/distro-config` at every start
//! ([`ClusterConfig::to_data`]); nodes may `get` it (Role `distro:nodes-distro-config` in
//! `bundled/rbac.yaml`), as kubeadm's joining nodes read `kube-system/kubeadm-config`. A
//! ConfigMap rather than a route of our own: it is an ordinary API object, so kubectl shows
//! what agents are told, RBAC decides who reads it, and no new endpoint needs its own
//! authentication.
//!
//! Flags given on the agent win ([`Given`]), with a warning when they differ from the
//! server's: a node whose pod range differs from the cluster's masquerades pod-to-pod traffic.
//!
//! # Limits
//! - Read once at start (as k3s' agents do): a server restarted with other ranges needs its
//!   agents restarted.
//! - A server that does not publish the ConfigMap (older, or a reader without the Role)
//!   leaves the agent on its flags and k3s' defaults, with a warning.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::{Config, Error};

/// The ConfigMap's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The ConfigMap's name.
pub const NAME: &str = "distro-config";

const CLUSTER_CIDR: &str = "cluster-cidr";
const SERVICE_CIDR: &str = "service-cidr";
const CLUSTER_DNS: &str = "cluster-dns";
const CLUSTER_DOMAIN: &str = "cluster-domain";

/// What the server publishes: its `--cluster-cidr`, `--service-cidr`, `--cluster-dns` and
/// `--cluster-domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Pod range(s), one per family.
    pub cluster_cidrs: Vec<IpNet>,
    /// Service range(s), one per family.
    pub service_cidrs: Vec<IpNet>,
    /// The cluster DNS service address(es).
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain.
    pub cluster_domain: String,
}

/// Which of the cluster-wide settings were given to this agent by flag (or environment or
/// config file): those are kept even when the server says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    /// `--cluster-cidr`.
    pub cluster_cidr: bool,
    /// `--cluster-dns`.
    pub cluster_dns: bool,
    /// `--cluster-domain`.
    pub cluster_domain: bool,
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn split<T: std::str::FromStr>(
    data: &BTreeMap<String, String>,
    key: &str,
) -> Result<Vec<T>, String> {
    let value = data.get(key).ok_or_else(|| format!("no {key:?} key"))?;
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("{key} {s:?} does not parse")))
        .collect()
}

impl ClusterConfig {
    /// The ConfigMap's `data`.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CLUSTER_CIDR.to_string(), join(&self.cluster_cidrs)),
            (SERVICE_CIDR.to_string(), join(&self.service_cidrs)),
            (CLUSTER_DNS.to_string(), join(&self.cluster_dns)),
            (CLUSTER_DOMAIN.to_string(), self.cluster_domain.clone()),
        ])
    }

    /// Parses the ConfigMap's `data`.
    ///
    /// # Errors
    /// A message naming the missing or bad key.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, String> {
        let c = ClusterConfig {
            cluster_cidrs: split(data, CLUSTER_CIDR)?,
            service_cidrs: split(data, SERVICE_CIDR)?,
            cluster_dns: split(data, CLUSTER_DNS)?,
            cluster_domain: data
                .get(CLUSTER_DOMAIN)
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .ok_or_else(|| format!("no {CLUSTER_DOMAIN:?} key"))?,
        };
        if c.cluster_cidrs.is_empty() || c.cluster_dns.is_empty() {
            return Err(format!("empty {CLUSTER_CIDR} or {CLUSTER_DNS}"));
        }
        Ok(c)
    }
}

/// Takes the server's settings into `config` where no flag gave them; returns a warning for
/// every flag that disagrees with the server, and for a cluster DNS address outside the
/// server's service range (pods would ask an address no Service has).
pub fn apply(config: &mut Config, server: &ClusterConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    let given = config.cluster_flags;
    let mut differs = |flag: &str, ours: String, theirs: String| {
        warnings.push(format!(
            "{flag} {ours} differs from the server's {theirs}; using {flag} (drop the flag to follow the server)"
        ));
    };
    if !given.cluster_cidr {
        config.network.cluster_cidrs = server.cluster_cidrs.clone();
    } else if config.network.cluster_cidrs != server.cluster_cidrs {
        differs(
            "--cluster-cidr",
            join(&config.network.cluster_cidrs),
            join(&server.cluster_cidrs),
        );
    }
    if !given.cluster_dns {
        config.dns.cluster_dns = server.cluster_dns.clone();
    } else if config.dns.cluster_dns != server.cluster_dns {
        differs(
            "--cluster-dns",
            join(&config.dns.cluster_dns),
            join(&server.cluster_dns),
        );
    }
    if !given.cluster_domain {
        config.dns.cluster_domain = server.cluster_domain.clone();
    } else if config.dns.cluster_domain.trim_end_matches('.')
        != server.cluster_domain.trim_end_matches('.')
    {
        differs(
            "--cluster-domain",
            config.dns.cluster_domain.clone(),
            server.cluster_domain.clone(),
        );
    }
    for ip in &config.dns.cluster_dns {
        if !server.service_cidrs.iter().any(|c| c.contains(ip)) {
            warnings.push(format!(
                "the cluster DNS address {ip} is outside the server's service range {}: \
                 pods reach it only on nodes that serve it",
                join(&server.service_cidrs)
            ));
        }
    }
    warnings
}

/// Reads the server's [`ClusterConfig`] with the node's `client`; `None` (logged) when the
/// server does not publish it or publishes something unreadable.
///
/// # Errors
/// [`Error::Api`] for API failures other than "not found" and "forbidden".
pub async fn fetch(client: &distro_client::Client) -> Result<Option<ClusterConfig>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let cm = match api.get_opt(NAME).await {
        Ok(cm) => cm,
        Err(kube::Error::Api(s)) if s.code == 403 => None,
        Err(e) => return Err(Error::api(format!("reading {NAMESPACE}/{NAME}"))(e)),
    };
    let Some(cm) = cm else {
        tracing::warn!(
            "the server publishes no {NAMESPACE}/{NAME}: using this agent's flags for the cluster's ranges"
        );
        return Ok(None);
    };
    match ClusterConfig::from_data(&cm.data.unwrap_or_default()) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            tracing::warn!(error = %e, "the server's {NAMESPACE}/{NAME} is unreadable: using this agent's flags");
            Ok(None)
        }
    }
}

/// `config` with the server's settings taken in ([`fetch`], [`apply`]), warnings logged.
///
/// # Errors
/// As [`fetch`].
pub async fn adopt(client: &distro_client::Client, mut config: Config) -> Result<Config, Error> {
    if let Some(server) = fetch(client).await? {
        for w in apply(&mut config, &server) {
            tracing::warn!("{w}");
        }
        tracing::info!(
            cluster_cidr = %join(&config.network.cluster_cidrs),
            cluster_dns = %join(&config.dns.cluster_dns),
            cluster_domain = %config.dns.cluster_domain,
            "cluster settings"
        );
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ClusterConfig {
        ClusterConfig {
            cluster_cidrs: vec![
                "10.60.0.0/16".parse().unwrap(),
                "fd60::/56".parse().unwrap(),
            ],
            service_cidrs: vec!["10.61.0.0/16".parse().unwrap()],
            cluster_dns: vec!["10.61.0.10".parse().unwrap()],
            cluster_domain: "example.internal".into(),
        }
    }

    fn config() -> Config {
        Config {
            server: String::new(),
            token: distro_pki::JoinToken {
                ca_hash: None,
                username: "server".into(),
                secret: String::new(),
            },
            data_dir: "/nonexistent".into(),
            node_name: "n".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            fake_capacity: BTreeMap::new(),
            fake_nodes: None,
            containerd: None,
            kubelet_port: 0,
            cni_bridge: "cni0".into(),
            image_gc: Default::default(),
            eviction_hard: Default::default(),
            eviction_pressure_transition_period: std::time::Duration::ZERO,
            eviction_soft: Default::default(),
            eviction_max_pod_grace_period: 0,
            container_logs: Default::default(),
            network: Default::default(),
            dns: Default::default(),
            cluster_flags: Given::default(),
        }
    }

    #[test]
    fn data_round_trips() {
        let data = server().to_data();
        assert_eq!(data["cluster-cidr"], "10.60.0.0/16,fd60::/56");
        assert_eq!(ClusterConfig::from_data(&data), Ok(server()));
        let mut bad = data.clone();
        bad.insert("cluster-dns".into(), "ten".into());
        assert!(ClusterConfig::from_data(&bad)
            .unwrap_err()
            .contains("cluster-dns \"ten\""));
        bad.remove("cluster-domain");
        assert!(ClusterConfig::from_data(&bad).is_err());
    }

    #[test]
    fn the_server_fills_what_no_flag_gave() {
        let mut c = config();
        assert!(apply(&mut c, &server()).is_empty());
        assert_eq!(c.network.cluster_cidrs, server().cluster_cidrs);
        assert_eq!(c.dns.cluster_dns, server().cluster_dns);
        assert_eq!(c.dns.cluster_domain, "example.internal");
    }

    #[test]
    fn flags_win_with_a_warning() {
        let mut c = config();
        c.cluster_flags = Given {
            cluster_cidr: true,
            cluster_dns: true,
            cluster_domain: false,
        };
        let w = apply(&mut c, &server());
        assert_eq!(c.network.cluster_cidrs[0].to_string(), "10.42.0.0/16");
        assert_eq!(c.dns.cluster_dns[0].to_string(), "10.43.0.10");
        assert_eq!(c.dns.cluster_domain, "example.internal");
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains(
            "--cluster-cidr 10.42.0.0/16 differs from the server's 10.60.0.0/16,fd60::/56"
        ));
        assert!(w[1].contains("--cluster-dns 10.43.0.10 differs"));
        assert!(w[2].contains("outside the server's service range 10.61.0.0/16"));
        // Agreeing flags say nothing.
        let mut c = config();
        c.cluster_flags.cluster_domain = true;
        c.dns.cluster_domain = "example.internal.".into();
        assert!(apply(&mut c, &server()).is_empty());
    }
}

//! A pod's resolver configuration per `dnsPolicy` and `dnsConfig`, as upstream's
//! `pkg/kubelet/network/dns` builds it, including its limits on search entries.

use distro_cri::api::DnsConfig;
use k8s_openapi::api::core::v1::Pod;

/// Upstream's `MaxDNSNameservers`.
pub const MAX_NAMESERVERS: usize = 3;
/// Upstream's `MaxDNSSearchPaths`.
pub const MAX_SEARCH_PATHS: usize = 32;
/// Upstream's `MaxDNSSearchListChars`.
pub const MAX_SEARCH_CHARS: usize = 2048;

/// The node's resolver as read from its resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDns {
    /// `nameserver` lines.
    pub servers: Vec<String>,
    /// `search` (or `domain`) entries, trailing dots removed.
    pub searches: Vec<String>,
    /// `options` entries.
    pub options: Vec<String>,
}

/// Parses resolv.conf text like upstream's `parseResolvConf`: the last `search`/`domain`
/// line wins, comments (`#`, `;`) are ignored.
pub fn parse_resolv_conf(text: &str) -> HostDns {
    let mut dns = HostDns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => dns.servers.extend(fields.next().map(str::to_string)),
            Some("search" | "domain") => {
                dns.searches = fields
                    .map(|s| s.trim_end_matches('.').to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            Some("options") => dns.options = fields.map(str::to_string).collect(),
            _ => {}
        }
    }
    dns
}

/// Cluster DNS settings of this kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// Cluster DNS server IPs (distro: `10.43.0.10`). Empty falls back to the host's.
    pub servers: Vec<String>,
    /// Cluster domain (distro: `cluster.local`).
    pub domain: String,
}

/// Longest search entry upstream keeps (glibc aborts on longer ones).
pub const MAX_SEARCH_ENTRY: usize = 253;

impl Default for ClusterDns {
    /// distro's defaults, the same as k3s's: `10.43.0.10`, `cluster.local`.
    fn default() -> Self {
        ClusterDns {
            servers: vec!["10.43.0.10".into()],
            domain: "cluster.local".into(),
        }
    }
}

/// Problems worth a Warning Event on the pod; `Display` is upstream's message and
/// [`DnsWarning::reason`] its Event reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsWarning {
    /// ClusterFirst was asked but no cluster DNS is configured (the policy asked for).
    MissingClusterDns(String),
    /// Nameservers beyond three were dropped; the applied line follows.
    NameserversExceeded(String),
    /// Search entries beyond the limits were dropped; the applied line follows.
    SearchExceeded(String),
}

impl DnsWarning {
    /// The Event reason upstream uses.
    pub fn reason(&self) -> &'static str {
        match self {
            DnsWarning::MissingClusterDns(_) => "MissingClusterDNS",
            DnsWarning::NameserversExceeded(_) | DnsWarning::SearchExceeded(_) => {
                "DNSConfigForming"
            }
        }
    }
}

impl std::fmt::Display for DnsWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsWarning::MissingClusterDns(policy) => write!(
                f,
                "kubelet does not have ClusterDNS IP configured and cannot create Pod using {policy:?} policy. Falling back to \"Default\" policy."
            ),
            DnsWarning::NameserversExceeded(line) => write!(
                f,
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {line}"
            ),
            DnsWarning::SearchExceeded(line) => write!(
                f,
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {line}"
            ),
        }
    }
}

/// The resolver for `pod`, plus warnings.
///
/// `None` in `dnsPolicy` reads as upstream's default, ClusterFirst; ClusterFirst on a
/// hostNetwork pod means the host's resolver (use ClusterFirstWithHostNet to get the
/// cluster's).
pub fn pod_dns(pod: &Pod, cluster: &ClusterDns, host: &HostDns) -> (DnsConfig, Vec<DnsWarning>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let mut warnings = Vec::new();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let mut cluster_first = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!host_network),
        _ => Some(false), // "Default"
    };
    if cluster_first == Some(true) && cluster.servers.is_empty() {
        warnings.push(DnsWarning::MissingClusterDns(policy.to_string()));
        cluster_first = Some(false);
    }
    let mut cfg = match cluster_first {
        None => DnsConfig::default(),
        Some(false) => DnsConfig {
            servers: host.servers.clone(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
        Some(true) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = &cluster.domain;
            let mut searches = if d.is_empty() {
                vec![]
            } else {
                vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()]
            };
            searches.extend(host.searches.iter().cloned());
            DnsConfig {
                servers: cluster.servers.clone(),
                searches: dedup(searches),
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(pc) = &spec.dns_config {
        let mut servers = std::mem::take(&mut cfg.servers);
        servers.extend(pc.nameservers.iter().flatten().cloned());
        cfg.servers = dedup(servers);
        let mut searches = std::mem::take(&mut cfg.searches);
        searches.extend(pc.searches.iter().flatten().cloned());
        cfg.searches = dedup(searches);
        for o in pc.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            let opt = match o.value.as_deref().filter(|v| !v.is_empty()) {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            };
            match cfg
                .options
                .iter()
                .position(|e| e.split(':').next() == Some(name))
            {
                Some(i) => cfg.options[i] = opt,
                None => cfg.options.push(opt),
            }
        }
    }
    if cfg.servers.len() > MAX_NAMESERVERS {
        cfg.servers.truncate(MAX_NAMESERVERS);
        warnings.push(DnsWarning::NameserversExceeded(cfg.servers.join(" ")));
    }
    let mut exceeded = false;
    if cfg.searches.len() > MAX_SEARCH_PATHS {
        cfg.searches.truncate(MAX_SEARCH_PATHS);
        exceeded = true;
    }
    let before = cfg.searches.len();
    cfg.searches.retain(|s| s.len() <= MAX_SEARCH_ENTRY);
    exceeded |= cfg.searches.len() != before;
    let mut line_len = cfg.searches.join(" ").len();
    while line_len > MAX_SEARCH_CHARS {
        let Some(last) = cfg.searches.pop() else {
            break;
        };
        line_len = line_len.saturating_sub(last.len() + 1);
        exceeded = true;
    }
    if exceeded {
        warnings.push(DnsWarning::SearchExceeded(cfg.searches.join(" ")));
    }
    (cfg, warnings)
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(policy: Option<&str>, host_network: bool, dns_config: Option<PodDNSConfig>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("p".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(Into::into),
                host_network: Some(host_network),
                dns_config,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            servers: vec!["10.43.0.10".into()],
            domain: "cluster.local".into(),
        }
    }

    fn host() -> HostDns {
        parse_resolv_conf("# generated\nnameserver 192.168.1.1\nnameserver 1.1.1.1 ; x\nsearch lan. example.com\noptions edns0 ndots:2\n")
    }

    #[test]
    fn parses_resolv_conf() {
        let h = host();
        assert_eq!(h.servers, vec!["192.168.1.1", "1.1.1.1"]);
        assert_eq!(h.searches, vec!["lan", "example.com"]);
        assert_eq!(h.options, vec!["edns0", "ndots:2"]);
    }

    #[test]
    fn policies() {
        let (c, w) = pod_dns(&pod(None, false, None), &cluster(), &host());
        assert!(w.is_empty());
        assert_eq!(c.servers, vec!["10.43.0.10"]);
        assert_eq!(
            c.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "lan",
                "example.com"
            ]
        );
        assert_eq!(c.options, vec!["ndots:5"]);
        // ClusterFirst on the host network falls back to the host's resolver...
        let (c, _) = pod_dns(&pod(Some("ClusterFirst"), true, None), &cluster(), &host());
        assert_eq!(c.servers, vec!["192.168.1.1", "1.1.1.1"]);
        assert_eq!(c.options, vec!["edns0", "ndots:2"]);
        // ...unless asked for explicitly.
        let (c, _) = pod_dns(
            &pod(Some("ClusterFirstWithHostNet"), true, None),
            &cluster(),
            &host(),
        );
        assert_eq!(c.servers, vec!["10.43.0.10"]);
        let (c, _) = pod_dns(&pod(Some("Default"), false, None), &cluster(), &host());
        assert_eq!(c.searches, vec!["lan", "example.com"]);
        let (c, _) = pod_dns(&pod(Some("None"), false, None), &cluster(), &host());
        assert_eq!(c, DnsConfig::default());
        let (c, w) = pod_dns(
            &pod(None, false, None),
            &ClusterDns {
                servers: vec![],
                domain: "cluster.local".into(),
            },
            &host(),
        );
        assert_eq!(
            w,
            vec![DnsWarning::MissingClusterDns("ClusterFirst".into())]
        );
        assert_eq!(
            w[0].to_string(),
            "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy."
        );
        assert_eq!(w[0].reason(), "MissingClusterDNS");
        assert_eq!(c.servers, vec!["192.168.1.1", "1.1.1.1"]);
    }

    #[test]
    fn dns_config_merges_and_limits() {
        let opt = |n: &str, v: Option<&str>| PodDNSConfigOption {
            name: Some(n.into()),
            value: v.map(Into::into),
        };
        let pc = PodDNSConfig {
            nameservers: Some(vec![
                "10.43.0.10".into(),
                "8.8.8.8".into(),
                "9.9.9.9".into(),
                "4.4.4.4".into(),
            ]),
            searches: Some(vec!["svc.cluster.local".into(), "extra.example".into()]),
            options: Some(vec![opt("ndots", Some("2")), opt("edns0", None)]),
        };
        let (c, w) = pod_dns(&pod(None, false, Some(pc)), &cluster(), &HostDns::default());
        assert_eq!(
            c.servers,
            vec!["10.43.0.10", "8.8.8.8", "9.9.9.9"],
            "duplicates dropped, then three kept"
        );
        assert_eq!(
            c.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "extra.example"
            ]
        );
        assert_eq!(
            c.options,
            vec!["ndots:2", "edns0"],
            "pod options override by name"
        );
        assert_eq!(
            w,
            vec![DnsWarning::NameserversExceeded(
                "10.43.0.10 8.8.8.8 9.9.9.9".into()
            )]
        );

        // None + dnsConfig: only what the pod says; 40 searches cut to 32.
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let pc = PodDNSConfig {
            nameservers: Some(vec!["1.2.3.4".into()]),
            searches: Some(many),
            options: None,
        };
        let (c, w) = pod_dns(&pod(Some("None"), false, Some(pc)), &cluster(), &host());
        assert_eq!(c.searches.len(), 32);
        assert_eq!(c.searches[31], "d31.example");
        assert!(matches!(&w[..], [DnsWarning::SearchExceeded(_)]));

        // Long names: cut from the end until the line fits 2048 characters.
        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(250))).collect();
        let pc = PodDNSConfig {
            searches: Some(long),
            ..Default::default()
        };
        let (c, _) = pod_dns(&pod(Some("None"), false, Some(pc)), &cluster(), &host());
        assert_eq!(c.searches.len(), 8);
        assert!(c.searches.join(" ").len() <= MAX_SEARCH_CHARS);

        // One entry over 253 characters is dropped on its own.
        let pc = PodDNSConfig {
            searches: Some(vec!["ok.example".into(), "y".repeat(254), "also.ok".into()]),
            ..Default::default()
        };
        let (c, w) = pod_dns(&pod(Some("None"), false, Some(pc)), &cluster(), &host());
        assert_eq!(c.searches, vec!["ok.example", "also.ok"]);
        assert_eq!(
            w[0].to_string(),
            "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: ok.example also.ok"
        );
        assert_eq!(w[0].reason(), "DNSConfigForming");
    }
}

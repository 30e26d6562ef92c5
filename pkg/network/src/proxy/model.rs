//! What the proxy programs, as plain values: Services and EndpointSlices reduced to one
//! [`ServicePort`] per (service, port, IP family), with its endpoints already chosen as
//! upstream kube-proxy chooses them (`CategorizeEndpoints`). Pure, so rule rendering is
//! tested without a cluster.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's Service (upstream `discovery.LabelServiceName`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services carrying this label belong to another proxy (upstream skips them too).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// An IP family: one nftables table each (`ip` / `ip6`), as upstream's one proxier per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`table ip`).
    V4,
    /// IPv6 (`table ip6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The EndpointSlice `addressType` of this family.
    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A transport protocol a Service port may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the API's `protocol` (absent means TCP, as defaulting sets it).
    pub(crate) fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nft's name of the protocol (`meta l4proto tcp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One backend of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The endpoint's address (of the port's family).
    pub ip: IpAddr,
    /// The endpoint's port (the service's `targetPort`, resolved by the EndpointSlice
    /// controller, named ports included).
    pub port: u16,
    /// On this node (`nodeName`), for the `Local` traffic policies.
    pub local: bool,
}

/// One port of one Service in one IP family, with the endpoints each kind of traffic uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The port's name ("" for a single unnamed port).
    pub port_name: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The address family of every address below.
    pub family: Family,
    /// The service port.
    pub port: u16,
    /// The cluster IP of this family (`None` for a headless-less LoadBalancer without one).
    pub cluster_ip: Option<IpAddr>,
    /// The NodePort, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip` of this family: treated as
    /// external traffic, as upstream.
    pub external_ips: Vec<IpAddr>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local` (NodePort/LoadBalancer/externalIPs).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local` (cluster IP).
    pub internal_local: bool,
    /// Usable endpoints cluster-wide: ready ones, or if none is ready, serving and
    /// terminating ones (upstream's fallback for terminating endpoints).
    pub cluster_endpoints: Vec<Endpoint>,
    /// Usable endpoints on this node, chosen by the same rule among local ones.
    pub local_endpoints: Vec<Endpoint>,
    /// Whether the service has a usable endpoint anywhere (upstream's `hasAnyEndpoints`):
    /// without one, traffic is rejected; with one but none usable for a Local policy, it is
    /// dropped (as upstream).
    pub any_endpoints: bool,
}

impl ServicePort {
    /// `<namespace>/<name>/<proto>/<port name>`: upstream's `ServicePortName` string, the base
    /// of the port's chain names.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.nft(),
            self.port_name
        )
    }

    /// Whether anything reaches this port from outside the cluster IP.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// One endpoint as a slice states it, before selection.
#[derive(Debug, Clone)]
struct Candidate {
    ep: Endpoint,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// Upstream's choice: every ready endpoint; if none is ready, every serving-and-terminating
/// one (so connections drain to pods being replaced rather than failing).
fn usable<'a>(cands: impl Iterator<Item = &'a Candidate> + Clone) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = cands
        .clone()
        .filter(|c| c.ready)
        .map(|c| c.ep.clone())
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    cands
        .filter(|c| c.serving && c.terminating)
        .map(|c| c.ep.clone())
        .collect()
}

/// Reduces Services and EndpointSlices to the ports this node programs, sorted by id.
///
/// Skipped as upstream: ExternalName services, headless services (`clusterIP: None`),
/// services labelled with another `service-proxy-name`, and ports of unknown protocols.
/// Endpoints of several slices of one service are merged by address.
pub fn service_ports(
    services: &[impl Borrow<Service>],
    slices: &[impl Borrow<EndpointSlice>],
    node_name: &str,
) -> Vec<ServicePort> {
    // (namespace, service, family) → slices
    let mut by_service: BTreeMap<(String, String, Family), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let s: &EndpointSlice = s.borrow();
        let (Some(ns), Some(svc)) = (
            s.metadata.namespace.as_deref(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        let family = match s.address_type.as_str() {
            t if t == Family::V4.address_type() => Family::V4,
            t if t == Family::V6.address_type() => Family::V6,
            _ => continue, // FQDN slices are not proxied
        };
        by_service
            .entry((ns.to_string(), svc.clone(), family))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let svc: &Service = svc.borrow();
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName")
            || spec.cluster_ip.as_deref() == Some("None")
            || svc
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
        {
            continue;
        }
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let mut external: Vec<IpAddr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if spec.type_.as_deref() == Some("LoadBalancer") {
            // ipMode Proxy means the load balancer itself proxies: upstream adds no rule.
            external.extend(
                svc.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                    .filter_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok()),
            );
        }
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let families: BTreeSet<Family> = cluster_ips.iter().map(Family::of).collect();
        for family in families {
            let cluster_ip = cluster_ips
                .iter()
                .find(|ip| Family::of(ip) == family)
                .copied();
            let family_slices = by_service
                .get(&(ns.to_string(), name.to_string(), family))
                .map(Vec::as_slice)
                .unwrap_or_default();
            for p in spec.ports.iter().flatten() {
                let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                    continue;
                };
                let Ok(port) = u16::try_from(p.port) else {
                    continue;
                };
                let port_name = p.name.clone().unwrap_or_default();
                let cands = candidates(family_slices, &port_name, protocol, node_name);
                let cluster_endpoints = usable(cands.iter());
                let local_endpoints = usable(cands.iter().filter(|c| c.ep.local));
                out.push(ServicePort {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    port_name,
                    protocol,
                    family,
                    port,
                    cluster_ip,
                    node_port: p
                        .node_port
                        .filter(|_| node_ports)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n != 0),
                    external_ips: external
                        .iter()
                        .filter(|ip| Family::of(ip) == family)
                        .copied()
                        .collect(),
                    affinity_timeout,
                    external_local,
                    internal_local,
                    cluster_endpoints,
                    local_endpoints,
                    any_endpoints: cands
                        .iter()
                        .any(|c| c.ready || (c.serving && c.terminating)),
                });
            }
        }
    }
    out.sort_by_key(|p| (p.family, p.id()));
    out
}

/// The endpoints of the slices' port named `port_name` with `protocol`, one per address.
fn candidates(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Candidate> {
    let mut seen = BTreeMap::new();
    for s in slices {
        let Some(port) = s.ports.iter().flatten().find_map(|p| {
            (p.name.as_deref().unwrap_or("") == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol))
            .then_some(p.port)
            .flatten()
            .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for e in &s.endpoints {
            let cond = e.conditions.as_ref();
            // Upstream: an unknown `ready` or `serving` counts as true, `terminating` as false.
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let local = e.node_name.as_deref() == Some(node_name);
            for ip in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                seen.entry(ip).or_insert(Candidate {
                    ep: Endpoint { ip, port, local },
                    ready,
                    serving,
                    terminating,
                });
            }
        }
    }
    seen.into_values().collect()
}

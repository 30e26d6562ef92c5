//! The cluster's DNS data in memory: Services, the ready addresses of their EndpointSlices
//! and the namespaces that exist, converted from the API objects the way CoreDNS's
//! `kubernetes` plugin converts them (`object/service.go`, `object/endpoint.go`), plus a
//! reverse index for PTR answers.
//!
//! A [`Snapshot`] is immutable: the watch task builds a new one on every change and swaps it
//! in, so queries never wait on a lock held by an update.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A service port (or an endpoint port): its name, protocol (`TCP`, `UDP`, `SCTP`) and
/// number. CoreDNS marks "no ports at all" with port -1, which answers A but never SRV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// `ports[].name` (may be empty).
    pub name: String,
    /// `ports[].protocol`.
    pub protocol: String,
    /// `ports[].port`; -1 stands for "no ports declared".
    pub port: i32,
}

/// What a Service answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A virtual IP per family.
    ClusterIp {
        /// `spec.clusterIPs` (or `spec.clusterIP`).
        ips: Vec<IpAddr>,
        /// `spec.ports`.
        ports: Vec<Port>,
    },
    /// `clusterIP: None`: the ready endpoints' addresses.
    Headless,
    /// `type: ExternalName`: a CNAME to `spec.externalName`.
    ExternalName(String),
}

/// One Service as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// How it is answered.
    pub kind: Kind,
}

/// One ready endpoint address of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address.
    pub ip: IpAddr,
    /// `endpoints[].hostname` (set for pods whose `subdomain` names a headless Service).
    pub hostname: Option<String>,
    /// The slice's ports (a single port -1 when it declares none).
    pub ports: Vec<Port>,
}

impl Endpoint {
    /// CoreDNS's `endpointHostname`: the endpoint's hostname, else its address with dashes
    /// (`10-42-0-5`, `fd00--5`).
    pub fn dns_label(&self) -> String {
        if let Some(h) = self.hostname.as_deref().filter(|h| !h.is_empty()) {
            return h.to_string();
        }
        match self.ip {
            IpAddr::V4(ip) => ip.to_string().replace('.', "-"),
            IpAddr::V6(ip) => ip.to_string().replace(':', "-"),
        }
    }
}

/// Everything the answers are computed from, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The cluster domain as an FQDN, lowercase (`cluster.local.`).
    pub zone: Name,
    /// The cluster DNS addresses, answered for `ns.dns.<zone>`.
    pub dns_ips: Vec<IpAddr>,
    /// The SOA serial: seconds since the epoch of the last change, as CoreDNS's `Modified`.
    pub serial: u32,
    /// Whether the first complete lists arrived; before, name errors are SERVFAIL (CoreDNS
    /// answers so while its API connection has not synced), so clients retry rather than
    /// cache a false NXDOMAIN.
    pub synced: bool,
    namespaces: HashSet<String>,
    services: HashMap<(String, String), Svc>,
    endpoints: HashMap<(String, String), Vec<Endpoint>>,
    /// Names for PTR answers, by address: a service's name for its cluster IPs, else each
    /// endpoint's `<label>.<svc>.<ns>.svc.<zone>`.
    reverse: HashMap<IpAddr, Vec<Name>>,
}

impl Snapshot {
    /// An empty, unsynced snapshot for `zone`.
    pub fn empty(zone: Name, dns_ips: Vec<IpAddr>) -> Snapshot {
        Snapshot {
            zone: zone.to_lowercase(),
            dns_ips,
            serial: 0,
            synced: false,
            namespaces: HashSet::new(),
            services: HashMap::new(),
            endpoints: HashMap::new(),
            reverse: HashMap::new(),
        }
    }

    /// Builds a snapshot from the API objects.
    pub fn build<'a>(
        zone: Name,
        dns_ips: Vec<IpAddr>,
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Snapshot {
        let mut s = Snapshot::empty(zone, dns_ips);
        s.synced = true;
        s.namespaces = namespaces
            .into_iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for svc in services.into_iter().filter_map(service) {
            s.services
                .insert((svc.namespace.clone(), svc.name.clone()), svc);
        }
        // Sorted by slice name so answers do not reorder between identical snapshots.
        let mut by_service: BTreeMap<(String, String, String), Vec<Endpoint>> = BTreeMap::new();
        for slice in slices {
            if let Some((key, eps)) = endpoints(slice) {
                by_service.insert(key, eps);
            }
        }
        for ((ns, svc, _), eps) in by_service {
            s.endpoints.entry((ns, svc)).or_default().extend(eps);
        }
        s.index_reverse();
        s
    }

    /// Adds the reverse index: cluster IPs first; endpoint addresses only where no service
    /// holds the address (CoreDNS's `serviceRecordForIP`).
    fn index_reverse(&mut self) {
        let mut reverse: HashMap<IpAddr, Vec<Name>> = HashMap::new();
        let mut keys: Vec<&(String, String)> = self.services.keys().collect();
        keys.sort();
        for key in &keys {
            let svc = &self.services[*key];
            if let Kind::ClusterIp { ips, .. } = &svc.kind {
                let Some(name) = self.service_name(&svc.namespace, &svc.name) else {
                    continue;
                };
                for ip in ips {
                    reverse.entry(*ip).or_insert_with(|| vec![name.clone()]);
                }
            }
        }
        let mut endpoint_names: HashMap<IpAddr, Vec<Name>> = HashMap::new();
        let mut keys: Vec<&(String, String)> = self.endpoints.keys().collect();
        keys.sort();
        for key in keys {
            let Some(base) = self.service_name(&key.0, &key.1) else {
                continue;
            };
            for ep in &self.endpoints[key] {
                if reverse.contains_key(&ep.ip) {
                    continue;
                }
                if let Ok(name) = base.prepend_label(ep.dns_label()) {
                    let names = endpoint_names.entry(ep.ip).or_default();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        reverse.extend(endpoint_names);
        self.reverse = reverse;
    }

    /// `<svc>.<ns>.svc.<zone>`.
    pub fn service_name(&self, namespace: &str, name: &str) -> Option<Name> {
        Name::from_ascii(format!("{name}.{namespace}.svc"))
            .ok()?
            .append_domain(&self.zone)
            .ok()
    }

    /// Whether the namespace exists.
    pub fn namespace_exists(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Svc> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// The ready endpoints of the Service `namespace/name`.
    pub fn endpoints(&self, namespace: &str, name: &str) -> &[Endpoint] {
        self.endpoints
            .get(&(namespace.to_string(), name.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// The PTR targets of an address.
    pub fn reverse(&self, ip: IpAddr) -> &[Name] {
        self.reverse.get(&ip).map_or(&[], Vec::as_slice)
    }
}

/// A Service as DNS sees it; `None` for one without a name or namespace.
pub fn service(s: &Service) -> Option<Svc> {
    let namespace = s.metadata.namespace.clone()?;
    let name = s.metadata.name.clone()?;
    let spec = s.spec.as_ref();
    let kind = match spec.and_then(|s| s.type_.as_deref()) {
        Some("ExternalName") => Kind::ExternalName(
            spec.and_then(|s| s.external_name.clone())
                .unwrap_or_default(),
        ),
        _ if spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None") => Kind::Headless,
        _ => {
            let mut raw: Vec<&String> = spec
                .and_then(|s| s.cluster_ips.as_ref())
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            if raw.is_empty() {
                raw.extend(spec.and_then(|s| s.cluster_ip.as_ref()));
            }
            let ports = spec
                .and_then(|s| s.ports.as_ref())
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| Port {
                            name: p.name.clone().unwrap_or_default(),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            port: p.port,
                        })
                        .collect()
                })
                .unwrap_or_default();
            Kind::ClusterIp {
                ips: raw.iter().filter_map(|ip| ip.parse().ok()).collect(),
                ports,
            }
        }
    };
    Some(Svc {
        namespace,
        name,
        kind,
    })
}

/// The ready endpoints of a slice, keyed by (namespace, service, slice name); `None` for a
/// slice without a service-name label or of the FQDN address type. As in CoreDNS, an
/// endpoint whose `ready` condition is unset counts as ready.
pub fn endpoints(slice: &EndpointSlice) -> Option<((String, String, String), Vec<Endpoint>)> {
    let namespace = slice.metadata.namespace.clone()?;
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    if slice.address_type == "FQDN" {
        return None;
    }
    let mut ports: Vec<Port> = slice
        .ports
        .as_ref()
        .map(|ports| {
            ports
                .iter()
                .map(|p| Port {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: p.port.unwrap_or(-1),
                })
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        ports.push(Port {
            name: String::new(),
            protocol: String::new(),
            port: -1,
        });
    }
    let mut out = Vec::new();
    for e in &slice.endpoints {
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        if !ready {
            continue;
        }
        for addr in &e.addresses {
            if let Ok(ip) = addr.parse() {
                out.push(Endpoint {
                    ip,
                    hostname: e.hostname.clone(),
                    ports: ports.clone(),
                });
            }
        }
    }
    let name = slice.metadata.name.clone().unwrap_or_default();
    Some(((namespace, service, name), out))
}

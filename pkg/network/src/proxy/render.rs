//! Rule rendering: [`ServicePort`]s → one nftables table per family, as text for `nft -f`.
//!
//! The layout follows upstream kube-proxy's nftables mode (pkg/proxy/nftables), so its
//! documentation and debugging habits carry over:
//!
//! ```text
//! table ip distro-proxy {
//!   chain nat-prerouting  { type nat hook prerouting priority dstnat; jump services }
//!   chain nat-output      { type nat hook output priority -100; jump services }
//!   chain nat-postrouting { type nat hook postrouting priority srcnat; jump masquerading }
//!   chain filter-input / filter-forward / filter-output / filter-output-post-dnat
//!       (ct state new: reject or drop traffic for services without usable endpoints)
//!   chain services { ip daddr . meta l4proto . th dport vmap @service-ips
//!                    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports }
//!   chain service-<H>-<ns>/<svc>/<proto>/<port>    # cluster IP: masquerade off-cluster
//!       clients, affinity lookups, then numgen random mod N vmap { i : goto endpoint-… }
//!   chain local-<H>-…      # the same over this node's endpoints (Local traffic policies)
//!   chain external-<H>-…   # NodePort/external IPs: masquerade (Cluster) or keep the
//!                          # client address and use local endpoints (Local)
//!   chain endpoint-<H>-…__<ip>/<port>  # hairpin masquerade, affinity update, dnat
//!   set affinity-<H>-…     # ClientIP affinity: client addresses with a timeout, per endpoint
//! }
//! ```
//!
//! Like upstream's nftables mode, NodePorts answer on every local address except loopback
//! (no `route_localnet` tricks).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::model::{Endpoint, Family, ServicePort};

/// The packet mark bit that asks `nat-postrouting` to masquerade (upstream's 0x4000).
pub const MASQUERADE_MARK: &str = "0x4000";

/// The map of cluster IPs, external IPs and load balancer IPs to service chains.
const SERVICE_IPS: &str = "service-ips";
/// The map of NodePorts to external chains.
const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Addresses and ports of services without usable endpoints, to `reject-chain` or drop.
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// NodePorts of services without usable endpoints.
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Every cluster IP, so a port the service does not have is refused, not routed away.
const CLUSTER_IPS: &str = "cluster-ips";

/// What the proxy of one node programs besides the services themselves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// nft table name (one per family).
    pub table: String,
    /// The pods' ranges: traffic from elsewhere to a cluster IP is masqueraded, pod traffic
    /// keeps its source; pod traffic to a Local external address is treated as internal.
    pub cluster_cidrs: Vec<IpNet>,
}

/// One family's rendered table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// The family.
    pub family: Option<Family>,
    /// Regular (non-base) chains, which a later sync deletes when no longer wanted.
    pub chains: BTreeSet<String>,
    /// Affinity sets (kept across syncs: their elements are the affinity state).
    pub affinity_sets: BTreeSet<String>,
    /// The commands that fill the table (after `flush table`), without deletions.
    pub body: String,
}

impl Family {
    /// The nft family keyword (`ip`, `ip6`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    fn localhost(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1",
        }
    }
}

/// The first 8 hex digits of SHA-256: keeps chain names unique even when the readable part
/// is ambiguous, as upstream's hashed prefixes do.
fn hash(s: &str) -> String {
    hex::encode_upper(&Sha256::digest(s.as_bytes())[..4])
}

/// A chain-name-safe form of an address (nft identifiers cannot hold `:`).
fn ip_name(ip: &IpAddr) -> String {
    ip.to_string().replace(':', ".")
}

fn service_chain(p: &ServicePort) -> String {
    let id = p.id();
    format!("service-{}-{id}", hash(&id))
}

fn local_chain(p: &ServicePort) -> String {
    let id = p.id();
    format!("local-{}-{id}", hash(&id))
}

fn external_chain(p: &ServicePort) -> String {
    let id = p.id();
    format!("external-{}-{id}", hash(&id))
}

fn endpoint_base(p: &ServicePort, e: &Endpoint) -> String {
    format!("{}__{}/{}", p.id(), ip_name(&e.ip), e.port)
}

fn endpoint_chain(p: &ServicePort, e: &Endpoint) -> String {
    let base = endpoint_base(p, e);
    format!("endpoint-{}-{base}", hash(&base))
}

/// The affinity set of an endpoint; the timeout is part of the hash, because a set's
/// timeout cannot change in place: a new timeout makes a new set.
fn affinity_set(p: &ServicePort, e: &Endpoint, timeout: u32) -> String {
    let base = endpoint_base(p, e);
    format!("affinity-{}-{base}", hash(&format!("{base}/{timeout}")))
}

fn addr(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Renders one family's table for `ports` (only those of `family` are used).
pub fn render(settings: &Settings, family: Family, ports: &[ServicePort]) -> Table {
    let f = family.nft();
    let t = &settings.table;
    let mut out = Table {
        family: Some(family),
        ..Default::default()
    };
    let s = &mut out.body;
    let local = family.localhost();
    let cidrs: Vec<String> = settings
        .cluster_cidrs
        .iter()
        .filter(|c| {
            matches!(
                (c, family),
                (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)
            )
        })
        .map(ToString::to_string)
        .collect();
    let cidr_match = match cidrs.len() {
        0 => None,
        1 => Some(cidrs[0].clone()),
        _ => Some(format!("{{ {} }}", cidrs.join(", "))),
    };

    // Base chains (hooks), re-declared each time: `add` of an identical chain is a no-op.
    let base: &[(&str, &str)] = &[
        (
            "nat-prerouting",
            "type nat hook prerouting priority dstnat; policy accept;",
        ),
        (
            "nat-output",
            "type nat hook output priority -100; policy accept;",
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
        ),
        (
            "filter-input",
            "type filter hook input priority -110; policy accept;",
        ),
        (
            "filter-forward",
            "type filter hook forward priority -110; policy accept;",
        ),
        (
            "filter-output",
            "type filter hook output priority -110; policy accept;",
        ),
        (
            "filter-output-post-dnat",
            "type filter hook output priority -90; policy accept;",
        ),
    ];
    for (name, spec) in base {
        let _ = writeln!(s, "add chain {f} {t} {name} {{ {spec} }}");
    }
    let mut chain = |s: &mut String, name: &str| {
        out.chains.insert(name.to_string());
        let _ = writeln!(s, "add chain {f} {t} {name}");
    };
    for name in [
        "services",
        "masquerading",
        "mark-for-masquerade",
        "service-endpoints-check",
        "nodeport-endpoints-check",
        "cluster-ips-check",
        "reject-chain",
    ] {
        chain(s, name);
    }
    let addr_t = family.addr_type();
    for (name, ty) in [
        (
            SERVICE_IPS,
            format!("{addr_t} . inet_proto . inet_service : verdict"),
        ),
        (
            SERVICE_NODEPORTS,
            "inet_proto . inet_service : verdict".to_string(),
        ),
        (
            NO_ENDPOINT_SERVICES,
            format!("{addr_t} . inet_proto . inet_service : verdict"),
        ),
        (
            NO_ENDPOINT_NODEPORTS,
            "inet_proto . inet_service : verdict".to_string(),
        ),
    ] {
        let _ = writeln!(s, "add map {f} {t} {name} {{ type {ty}; }}");
        let _ = writeln!(s, "flush map {f} {t} {name}");
    }
    let _ = writeln!(s, "add set {f} {t} {CLUSTER_IPS} {{ type {addr_t}; }}");
    let _ = writeln!(s, "flush set {f} {t} {CLUSTER_IPS}");

    let rule = |s: &mut String, chain: &str, r: &str| {
        let _ = writeln!(s, "add rule {f} {t} {chain} {r}");
    };
    rule(s, "nat-prerouting", "jump services");
    rule(s, "nat-output", "jump services");
    rule(s, "nat-postrouting", "jump masquerading");
    rule(
        s,
        "filter-input",
        "ct state new jump nodeport-endpoints-check",
    );
    rule(
        s,
        "filter-input",
        "ct state new jump service-endpoints-check",
    );
    rule(
        s,
        "filter-forward",
        "ct state new jump service-endpoints-check",
    );
    rule(s, "filter-forward", "ct state new jump cluster-ips-check");
    rule(
        s,
        "filter-output",
        "ct state new jump service-endpoints-check",
    );
    rule(
        s,
        "filter-output-post-dnat",
        "ct state new jump cluster-ips-check",
    );
    rule(
        s,
        "mark-for-masquerade",
        &format!("mark set mark or {MASQUERADE_MARK}"),
    );
    rule(
        s,
        "masquerading",
        &format!("mark and {MASQUERADE_MARK} == 0 return"),
    );
    rule(
        s,
        "masquerading",
        &format!("mark set mark xor {MASQUERADE_MARK}"),
    );
    rule(s, "masquerading", "masquerade fully-random");
    rule(
        s,
        "services",
        &format!("{f} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
    );
    rule(
        s,
        "services",
        &format!(
            "fib daddr type local {f} daddr != {local} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
        ),
    );
    rule(
        s,
        "service-endpoints-check",
        &format!("{f} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
    );
    rule(
        s,
        "nodeport-endpoints-check",
        &format!(
            "fib daddr type local {f} daddr != {local} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
        ),
    );
    rule(
        s,
        "cluster-ips-check",
        &format!("{f} daddr @{CLUSTER_IPS} reject comment \"port not served by the service\""),
    );
    rule(s, "reject-chain", "reject");

    let mut elements: Vec<(&str, String)> = Vec::new();
    let mut cluster_ips = BTreeSet::new();
    for p in ports.iter().filter(|p| p.family == family) {
        let proto = p.protocol.nft();
        let no_eps_verdict = if p.any_endpoints {
            "drop"
        } else {
            "goto reject-chain"
        };
        // Endpoint chains (and affinity sets) for every endpoint any chain may pick.
        let mut eps: BTreeSet<&Endpoint> = p.cluster_endpoints.iter().collect();
        eps.extend(&p.local_endpoints);
        for e in &eps {
            let name = endpoint_chain(p, e);
            chain(s, &name);
            let (ip, port) = (e.ip, e.port);
            rule(
                s,
                &name,
                &format!("{f} saddr {ip} jump mark-for-masquerade"),
            );
            if let Some(timeout) = p.affinity_timeout {
                let set = affinity_set(p, e, timeout);
                let _ = writeln!(
                    s,
                    "add set {f} {t} {set} {{ type {addr_t}; flags dynamic,timeout; timeout {timeout}s; }}"
                );
                out.affinity_sets.insert(set.clone());
                rule(s, &name, &format!("update @{set} {{ {f} saddr }}"));
            }
            rule(
                s,
                &name,
                &format!("meta l4proto {proto} dnat to {}:{port}", addr(&ip)),
            );
        }
        // A chain spreading over `eps` at random, after affinity lookups.
        let spread = |s: &mut String, chain: &str, eps: &[Endpoint]| {
            if let Some(timeout) = p.affinity_timeout {
                for e in eps {
                    rule(
                        s,
                        chain,
                        &format!(
                            "{f} saddr @{} goto {}",
                            affinity_set(p, e, timeout),
                            endpoint_chain(p, e)
                        ),
                    );
                }
            }
            let targets: Vec<String> = eps
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{i} : goto {}", endpoint_chain(p, e)))
                .collect();
            rule(
                s,
                chain,
                &format!(
                    "numgen random mod {} vmap {{ {} }}",
                    eps.len(),
                    targets.join(", ")
                ),
            );
        };
        let cluster = (!p.cluster_endpoints.is_empty()).then(|| service_chain(p));
        if let Some(name) = &cluster {
            chain(s, name);
            if let (Some(cip), Some(cidr)) = (p.cluster_ip, &cidr_match) {
                rule(
                    s,
                    name,
                    &format!(
                        "{f} daddr {cip} {proto} dport {} {f} saddr != {cidr} jump mark-for-masquerade",
                        p.port
                    ),
                );
            }
            spread(s, name, &p.cluster_endpoints);
        }
        let needs_local = p.internal_local || (p.external_local && p.has_external());
        let local = (needs_local && !p.local_endpoints.is_empty()).then(|| local_chain(p));
        if let Some(name) = &local {
            chain(s, name);
            spread(s, name, &p.local_endpoints);
        }
        // Cluster IP traffic.
        if let Some(cip) = p.cluster_ip {
            cluster_ips.insert(cip);
            let target = if p.internal_local { &local } else { &cluster };
            let key = format!("{cip} . {proto} . {}", p.port);
            match target {
                Some(chain) => elements.push((SERVICE_IPS, format!("{key} : goto {chain}"))),
                None => elements.push((NO_ENDPOINT_SERVICES, format!("{key} : {no_eps_verdict}"))),
            }
        }
        if !p.has_external() {
            continue;
        }
        // External traffic: NodePorts, external IPs, load balancer IPs.
        let external = cluster.as_ref().map(|cluster| {
            let name = external_chain(p);
            chain(s, &name);
            if p.external_local {
                // Pods and the node itself reaching an external address are not "external":
                // they use the whole cluster (upstream short-circuits them the same way).
                if let Some(cidr) = &cidr_match {
                    rule(s, &name, &format!("{f} saddr {cidr} goto {cluster}"));
                }
                rule(s, &name, "fib saddr type local jump mark-for-masquerade");
                rule(s, &name, &format!("fib saddr type local goto {cluster}"));
                match &local {
                    Some(l) => rule(s, &name, &format!("goto {l}")),
                    None => rule(s, &name, "drop comment \"no local endpoints\""),
                }
            } else {
                rule(s, &name, "jump mark-for-masquerade");
                rule(s, &name, &format!("goto {cluster}"));
            }
            name
        });
        for ip in &p.external_ips {
            let key = format!("{ip} . {proto} . {}", p.port);
            match &external {
                Some(chain) => elements.push((SERVICE_IPS, format!("{key} : goto {chain}"))),
                None => elements.push((NO_ENDPOINT_SERVICES, format!("{key} : {no_eps_verdict}"))),
            }
        }
        if let Some(np) = p.node_port {
            let key = format!("{proto} . {np}");
            match &external {
                Some(chain) => elements.push((SERVICE_NODEPORTS, format!("{key} : goto {chain}"))),
                None => elements.push((NO_ENDPOINT_NODEPORTS, format!("{key} : {no_eps_verdict}"))),
            }
        }
    }
    for ip in &cluster_ips {
        let _ = writeln!(s, "add element {f} {t} {CLUSTER_IPS} {{ {ip} }}");
    }
    for (map, element) in elements {
        let _ = writeln!(s, "add element {f} {t} {map} {{ {element} }}");
    }
    out
}

/// The whole transaction for one sync of one family: create the table if missing, empty
/// every chain and map, refill them, and delete the chains and affinity sets `previous`
/// had that `next` no longer wants. With `previous` `None` (first sync) the table is
/// deleted and recreated first, so whatever an earlier run left is gone.
///
/// Applied with `nft -f` it is one netlink transaction: packets see the old rules or the
/// new ones, never a mix.
pub fn transaction(table: &str, previous: Option<&Table>, next: &Table) -> String {
    let Some(family) = next.family else {
        return String::new();
    };
    let f = family.nft();
    let mut s = format!("add table {f} {table}\n");
    match previous {
        None => {
            let _ = writeln!(s, "delete table {f} {table}\nadd table {f} {table}");
        }
        Some(_) => {
            let _ = writeln!(s, "flush table {f} {table}");
        }
    }
    s.push_str(&next.body);
    if let Some(prev) = previous {
        for c in prev.chains.difference(&next.chains) {
            let _ = writeln!(s, "delete chain {f} {table} {c}");
        }
        for set in prev.affinity_sets.difference(&next.affinity_sets) {
            let _ = writeln!(s, "delete set {f} {table} {set}");
        }
    }
    s
}

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
//!
//! A sync is a diff, as upstream's partial syncs: [`render`] gives the whole wanted table as
//! values, and [`transaction`] turns the difference from the last applied one into nft
//! commands (only changed chains are flushed and refilled, only changed map elements
//! replaced), so one Service changing among thousands costs a few lines, not the table.

use std::collections::{BTreeMap, BTreeSet};
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

/// The chains attached to netfilter hooks, with their hook specs.
const BASE_CHAINS: &[(&str, &str)] = &[
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

/// What the proxy of one node programs besides the services themselves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// nft table name (one per family).
    pub table: String,
    /// The pods' ranges: traffic from elsewhere to a cluster IP is masqueraded, pod traffic
    /// keeps its source; pod traffic to a Local external address is treated as internal.
    pub cluster_cidrs: Vec<IpNet>,
}

/// One family's wanted table, as values (so two can be compared and diffed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The family.
    pub family: Family,
    /// Every chain (base chains included) with its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity sets and their timeouts in seconds (kept across syncs: their elements are
    /// the affinity state).
    pub affinity_sets: BTreeMap<String, u32>,
    /// Elements of the fixed maps (`key : verdict`) and of the `cluster-ips` set (`key`,
    /// empty verdict), by map and key.
    pub elements: BTreeMap<&'static str, BTreeMap<String, String>>,
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

impl Table {
    fn rule(&mut self, chain: &str, rule: String) {
        self.chains.entry(chain.to_string()).or_default().push(rule);
    }

    fn chain(&mut self, chain: &str) {
        self.chains.entry(chain.to_string()).or_default();
    }

    fn element(&mut self, map: &'static str, key: String, verdict: String) {
        self.elements.entry(map).or_default().insert(key, verdict);
    }
}

/// Renders one family's table for `ports` (only those of `family` are used).
pub fn render(settings: &Settings, family: Family, ports: &[ServicePort]) -> Table {
    let f = family.nft();
    let mut t = Table {
        family,
        chains: BTreeMap::new(),
        affinity_sets: BTreeMap::new(),
        elements: BTreeMap::new(),
    };
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
    for name in [
        "services",
        "masquerading",
        "mark-for-masquerade",
        "service-endpoints-check",
        "nodeport-endpoints-check",
        "cluster-ips-check",
        "reject-chain",
    ] {
        t.chain(name);
    }
    for map in [
        SERVICE_IPS,
        SERVICE_NODEPORTS,
        NO_ENDPOINT_SERVICES,
        NO_ENDPOINT_NODEPORTS,
        CLUSTER_IPS,
    ] {
        t.elements.entry(map).or_default();
    }
    t.rule("nat-prerouting", "jump services".into());
    t.rule("nat-output", "jump services".into());
    t.rule("nat-postrouting", "jump masquerading".into());
    t.rule(
        "filter-input",
        "ct state new jump nodeport-endpoints-check".into(),
    );
    t.rule(
        "filter-input",
        "ct state new jump service-endpoints-check".into(),
    );
    t.rule(
        "filter-forward",
        "ct state new jump service-endpoints-check".into(),
    );
    t.rule(
        "filter-forward",
        "ct state new jump cluster-ips-check".into(),
    );
    t.rule(
        "filter-output",
        "ct state new jump service-endpoints-check".into(),
    );
    t.rule(
        "filter-output-post-dnat",
        "ct state new jump cluster-ips-check".into(),
    );
    t.rule(
        "mark-for-masquerade",
        format!("mark set mark or {MASQUERADE_MARK}"),
    );
    t.rule(
        "masquerading",
        format!("mark and {MASQUERADE_MARK} == 0 return"),
    );
    t.rule(
        "masquerading",
        format!("mark set mark xor {MASQUERADE_MARK}"),
    );
    t.rule("masquerading", "masquerade fully-random".into());
    t.rule(
        "services",
        format!("{f} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
    );
    t.rule(
        "services",
        format!(
            "fib daddr type local {f} daddr != {local} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
        ),
    );
    t.rule(
        "service-endpoints-check",
        format!("{f} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
    );
    t.rule(
        "nodeport-endpoints-check",
        format!(
            "fib daddr type local {f} daddr != {local} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
        ),
    );
    t.rule(
        "cluster-ips-check",
        format!("{f} daddr @{CLUSTER_IPS} reject comment \"port not served by the service\""),
    );
    t.rule("reject-chain", "reject".into());

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
            let (ip, port) = (e.ip, e.port);
            t.rule(&name, format!("{f} saddr {ip} jump mark-for-masquerade"));
            if let Some(timeout) = p.affinity_timeout {
                let set = affinity_set(p, e, timeout);
                t.rule(&name, format!("update @{set} {{ {f} saddr }}"));
                t.affinity_sets.insert(set, timeout);
            }
            t.rule(
                &name,
                format!("meta l4proto {proto} dnat to {}:{port}", addr(&ip)),
            );
        }
        // A chain spreading over `eps` at random, after affinity lookups.
        let spread = |t: &mut Table, chain: &str, eps: &[Endpoint]| {
            if let Some(timeout) = p.affinity_timeout {
                for e in eps {
                    t.rule(
                        chain,
                        format!(
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
            t.rule(
                chain,
                format!(
                    "numgen random mod {} vmap {{ {} }}",
                    eps.len(),
                    targets.join(", ")
                ),
            );
        };
        let cluster = (!p.cluster_endpoints.is_empty()).then(|| service_chain(p));
        if let Some(name) = &cluster {
            if let (Some(cip), Some(cidr)) = (p.cluster_ip, &cidr_match) {
                t.rule(
                    name,
                    format!(
                        "{f} daddr {cip} {proto} dport {} {f} saddr != {cidr} jump mark-for-masquerade",
                        p.port
                    ),
                );
            }
            spread(&mut t, name, &p.cluster_endpoints);
        }
        let needs_local = p.internal_local || (p.external_local && p.has_external());
        let local = (needs_local && !p.local_endpoints.is_empty()).then(|| local_chain(p));
        if let Some(name) = &local {
            spread(&mut t, name, &p.local_endpoints);
        }
        // Cluster IP traffic.
        if let Some(cip) = p.cluster_ip {
            t.element(CLUSTER_IPS, cip.to_string(), String::new());
            let target = if p.internal_local { &local } else { &cluster };
            let key = format!("{cip} . {proto} . {}", p.port);
            match target {
                Some(chain) => t.element(SERVICE_IPS, key, format!("goto {chain}")),
                None => t.element(NO_ENDPOINT_SERVICES, key, no_eps_verdict.into()),
            }
        }
        if !p.has_external() {
            continue;
        }
        // External traffic: NodePorts, external IPs, load balancer IPs.
        let external = cluster.as_ref().map(|cluster| {
            let name = external_chain(p);
            if p.external_local {
                // Pods and the node itself reaching an external address are not "external":
                // they use the whole cluster (upstream short-circuits them the same way).
                if let Some(cidr) = &cidr_match {
                    t.rule(&name, format!("{f} saddr {cidr} goto {cluster}"));
                }
                t.rule(
                    &name,
                    "fib saddr type local jump mark-for-masquerade".into(),
                );
                t.rule(&name, format!("fib saddr type local goto {cluster}"));
                match &local {
                    Some(l) => t.rule(&name, format!("goto {l}")),
                    None => t.rule(&name, "drop comment \"no local endpoints\"".into()),
                }
            } else {
                t.rule(&name, "jump mark-for-masquerade".into());
                t.rule(&name, format!("goto {cluster}"));
            }
            name
        });
        for ip in &p.external_ips {
            let key = format!("{ip} . {proto} . {}", p.port);
            match &external {
                Some(chain) => t.element(SERVICE_IPS, key, format!("goto {chain}")),
                None => t.element(NO_ENDPOINT_SERVICES, key, no_eps_verdict.into()),
            }
        }
        if let Some(np) = p.node_port {
            let key = format!("{proto} . {np}");
            match &external {
                Some(chain) => t.element(SERVICE_NODEPORTS, key, format!("goto {chain}")),
                None => t.element(NO_ENDPOINT_NODEPORTS, key, no_eps_verdict.into()),
            }
        }
    }
    t
}

/// `add element` / `delete element` of one entry.
fn element_cmd(verb: &str, f: &str, table: &str, map: &str, key: &str, verdict: &str) -> String {
    if verdict.is_empty() || verb == "delete" {
        format!("{verb} element {f} {table} {map} {{ {key} }}\n")
    } else {
        format!("{verb} element {f} {table} {map} {{ {key} : {verdict} }}\n")
    }
}

/// The nft commands taking the kernel from `previous` (the last applied table; `None`: unknown,
/// so the table is deleted and rebuilt) to `next`.
///
/// Order matters within the one transaction: stale map elements go first (so nothing points
/// at chains about to change), then changed and stale chains are flushed, new chains and
/// sets declared, rules and elements added, and at last stale chains and sets deleted, once
/// nothing refers to them. Applied with `nft -f` it is one netlink transaction: packets see
/// the old rules or the new ones, never a mix.
pub fn transaction(table: &str, previous: Option<&Table>, next: &Table) -> String {
    let f = next.family.nft();
    let mut s = String::new();
    let empty = Table {
        family: next.family,
        chains: BTreeMap::new(),
        affinity_sets: BTreeMap::new(),
        elements: BTreeMap::new(),
    };
    let prev = match previous {
        Some(p) => p,
        None => {
            let addr_t = next.family.addr_type();
            let _ = writeln!(
                s,
                "add table {f} {table}\ndelete table {f} {table}\nadd table {f} {table}"
            );
            for (name, spec) in BASE_CHAINS {
                let _ = writeln!(s, "add chain {f} {table} {name} {{ {spec} }}");
            }
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
                let _ = writeln!(s, "add map {f} {table} {name} {{ type {ty}; }}");
            }
            let _ = writeln!(s, "add set {f} {table} {CLUSTER_IPS} {{ type {addr_t}; }}");
            &empty
        }
    };
    let no_elements = BTreeMap::new();
    // 1. Elements that go or change.
    for (map, old) in &prev.elements {
        let new = next.elements.get(map).unwrap_or(&no_elements);
        for (key, verdict) in old {
            if new.get(key) != Some(verdict) {
                s.push_str(&element_cmd("delete", f, table, map, key, verdict));
            }
        }
    }
    // 2. Chains that change or go are emptied.
    let is_base = |name: &str| BASE_CHAINS.iter().any(|(b, _)| *b == name);
    for (name, rules) in &prev.chains {
        match next.chains.get(name) {
            Some(new) if new == rules => {}
            _ if rules.is_empty() => {}
            _ => {
                let _ = writeln!(s, "flush chain {f} {table} {name}");
            }
        }
    }
    // 3. New chains and affinity sets.
    for name in next.chains.keys() {
        if !prev.chains.contains_key(name) && !is_base(name) {
            let _ = writeln!(s, "add chain {f} {table} {name}");
        }
    }
    for (set, timeout) in &next.affinity_sets {
        if !prev.affinity_sets.contains_key(set) {
            let addr_t = next.family.addr_type();
            let _ = writeln!(
                s,
                "add set {f} {table} {set} {{ type {addr_t}; flags dynamic,timeout; timeout {timeout}s; }}"
            );
        }
    }
    // 4. Rules of new and changed chains, then new and changed elements.
    for (name, rules) in &next.chains {
        if prev.chains.get(name) == Some(rules) {
            continue;
        }
        for r in rules {
            let _ = writeln!(s, "add rule {f} {table} {name} {r}");
        }
    }
    for (map, new) in &next.elements {
        let old = prev.elements.get(map).unwrap_or(&no_elements);
        for (key, verdict) in new {
            if old.get(key) != Some(verdict) {
                s.push_str(&element_cmd("add", f, table, map, key, verdict));
            }
        }
    }
    // 5. What nothing refers to any more.
    for name in prev.chains.keys() {
        if !next.chains.contains_key(name) {
            let _ = writeln!(s, "delete chain {f} {table} {name}");
        }
    }
    for set in prev.affinity_sets.keys() {
        if !next.affinity_sets.contains_key(set) {
            let _ = writeln!(s, "delete set {f} {table} {set}");
        }
    }
    s
}

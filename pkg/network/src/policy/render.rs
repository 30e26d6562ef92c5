//! Rule rendering: each local pod's [`Access`] → one `inet` nftables table, as text for
//! `nft -f`, replacing the previous table in one transaction.
//!
//! ```text
//! table inet distro-policy {
//!   map egress-pods4  { type ipv4_addr : verdict; elements = { <pod IP> : jump egress-<H> } }
//!   map ingress-pods4 { ... }   (and egress-pods6 / ingress-pods6)
//!   chain egress-forward  { type filter hook forward priority 0; policy accept;
//!     iifname <bridge> ct state established,related accept
//!     iifname <bridge> icmpv6 type { nd-* } accept
//!     iifname <bridge> ip saddr vmap @egress-pods4; ... ip6 saddr vmap @egress-pods6 }
//!   chain egress-input    { type filter hook input priority 0; ... }  (pod → this node)
//!   chain ingress-forward { type filter hook forward priority 1; ...
//!     oifname <bridge> ip daddr vmap @ingress-pods4 ... }
//!   chain egress-<H>  { ip daddr { <peer pods> } meta l4proto tcp th dport { 80 } accept; ...; drop }
//!   chain ingress-<H> { ip saddr 10.0.0.0/8 ip saddr != { 10.1.0.0/16 } accept; ...; drop }
//! }
//! ```
//!
//! Egress and ingress are separate base chains on the same hook, so a packet between two
//! local pods must be accepted by both (an `accept` ends only its own base chain); a `drop`
//! is final. Pods with the same rules share one chain (named by the hash of its rules).
//! The forward hook sees same-bridge traffic because the bridge hands IP packets to
//! netfilter (`bridge-nf-call-iptables`), and sees it after the service proxy's DNAT
//! (prerouting), so policies apply to the real pod behind a ClusterIP.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use super::model::{Access, Peers, PortMatch, Rule};

/// Where the table goes: its name and the node's pod bridge (only traffic through that
/// bridge is filtered, so several test nodes sharing one kernel never filter each other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// nft table name (family `inet`).
    pub table: String,
    /// The CNI bridge of this node's pods.
    pub bridge: String,
}

/// The ICMPv6 types a pod needs for IPv6 to work at all (neighbour and router discovery):
/// never filtered, as Calico's default rules let them through.
const NDP: &str =
    "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert }";

#[derive(Clone, Copy)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }

    /// The peer's address in a packet: the source of ingress, the destination of egress.
    fn peer_field(self) -> &'static str {
        match self {
            Dir::Ingress => "saddr",
            Dir::Egress => "daddr",
        }
    }
}

fn family(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    }
}

/// The peer matches of a rule (`""`: any peer); empty when it can match no address.
fn peer_matches(dir: Dir, peers: &Peers) -> Vec<String> {
    let field = dir.peer_field();
    let (pods, blocks) = match peers {
        Peers::Any => return vec![String::new()],
        Peers::Some { pods, blocks } => (pods, blocks),
    };
    let mut out = Vec::new();
    for fam in ["ip", "ip6"] {
        let ips: Vec<String> = pods
            .iter()
            .filter(|ip| family(ip) == fam)
            .map(|ip| ip.to_string())
            .collect();
        if !ips.is_empty() {
            out.push(format!("{fam} {field} {{ {} }}", ips.join(", ")));
        }
    }
    for b in blocks {
        let fam = family(&b.cidr.addr());
        let mut m = format!("{fam} {field} {}", b.cidr);
        let except: Vec<String> = b
            .except
            .iter()
            .filter(|e| family(&e.addr()) == fam)
            .map(|e| e.to_string())
            .collect();
        if !except.is_empty() {
            let _ = write!(m, " {fam} {field} != {{ {} }}", except.join(", "));
        }
        out.push(m);
    }
    out
}

/// The port matches of a rule (`""`: any protocol and port), one per protocol.
fn port_matches(ports: Option<&[PortMatch]>) -> Vec<String> {
    let Some(ports) = ports else {
        return vec![String::new()];
    };
    let mut by_proto: BTreeMap<_, Option<BTreeSet<(u16, u16)>>> = BTreeMap::new();
    for m in ports {
        let entry = by_proto
            .entry(m.protocol)
            .or_insert_with(|| Some(BTreeSet::new()));
        match (m.range, entry.as_mut()) {
            (None, _) => *entry = None, // every port of the protocol
            (Some(r), Some(set)) => {
                set.insert(r);
            }
            (Some(_), None) => {}
        }
    }
    by_proto
        .into_iter()
        .map(|(proto, ranges)| {
            let p = proto.nft();
            match ranges {
                None => format!("meta l4proto {p}"),
                Some(ranges) => {
                    let list: Vec<String> = ranges
                        .iter()
                        .map(|(lo, hi)| {
                            if lo == hi {
                                lo.to_string()
                            } else {
                                format!("{lo}-{hi}")
                            }
                        })
                        .collect();
                    format!("meta l4proto {p} th dport {{ {} }}", list.join(", "))
                }
            }
        })
        .collect()
}

/// The rules of one pod chain: every allow match, then drop.
fn chain_rules(dir: Dir, rules: &[Rule]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        for peer in peer_matches(dir, &r.peers) {
            for port in port_matches(r.ports.as_deref()) {
                let m = [peer.as_str(), port.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if m.is_empty() {
                    out.push("accept".to_string());
                } else {
                    out.push(format!("{m} accept"));
                }
            }
        }
    }
    out.dedup();
    out.push("drop".to_string());
    out
}

fn hash(lines: &[String]) -> String {
    hex::encode_upper(&Sha256::digest(lines.join("\n").as_bytes())[..6])
}

/// Renders the whole table for `access` (by local pod address) as one `nft -f` script that
/// replaces any previous table of that name atomically.
pub fn render(settings: &Settings, access: &BTreeMap<IpAddr, Access>) -> String {
    let t = &settings.table;
    let br = &settings.bridge;
    // chain name → rules, and map name → (address → chain).
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut maps: BTreeMap<String, BTreeMap<IpAddr, String>> = BTreeMap::new();
    for (ip, a) in access {
        for (dir, rules) in [(Dir::Ingress, &a.ingress), (Dir::Egress, &a.egress)] {
            let Some(rules) = rules else { continue };
            let lines = chain_rules(dir, rules);
            let chain = format!("{}-{}", dir.name(), hash(&lines));
            chains.insert(chain.clone(), lines);
            let fam = match ip {
                IpAddr::V4(_) => "4",
                IpAddr::V6(_) => "6",
            };
            maps.entry(format!("{}-pods{fam}", dir.name()))
                .or_default()
                .insert(*ip, chain);
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "add table inet {t}\ndelete table inet {t}\nadd table inet {t}"
    );
    for (name, hook, prio) in [
        ("egress-forward", "forward", 0),
        ("egress-input", "input", 0),
        ("ingress-forward", "forward", 1),
    ] {
        let _ = writeln!(
            s,
            "add chain inet {t} {name} {{ type filter hook {hook} priority {prio}; policy accept; }}"
        );
    }
    for dir in ["egress", "ingress"] {
        for (fam, ty) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
            let _ = writeln!(
                s,
                "add map inet {t} {dir}-pods{fam} {{ type {ty} : verdict; }}"
            );
        }
    }
    for (name, rules) in &chains {
        let _ = writeln!(s, "add chain inet {t} {name}");
        for r in rules {
            let _ = writeln!(s, "add rule inet {t} {name} {r}");
        }
    }
    for (map, elements) in &maps {
        let list: Vec<String> = elements
            .iter()
            .map(|(ip, chain)| format!("{ip} : jump {chain}"))
            .collect();
        let _ = writeln!(s, "add element inet {t} {map} {{ {} }}", list.join(", "));
    }
    for (chain, dev, dir, field) in [
        ("egress-forward", "iifname", "egress", "saddr"),
        ("egress-input", "iifname", "egress", "saddr"),
        ("ingress-forward", "oifname", "ingress", "daddr"),
    ] {
        let _ = writeln!(
            s,
            "add rule inet {t} {chain} {dev} \"{br}\" ct state established,related accept"
        );
        let _ = writeln!(s, "add rule inet {t} {chain} {dev} \"{br}\" {NDP} accept");
        let _ = writeln!(
            s,
            "add rule inet {t} {chain} {dev} \"{br}\" ip {field} vmap @{dir}-pods4"
        );
        let _ = writeln!(
            s,
            "add rule inet {t} {chain} {dev} \"{br}\" ip6 {field} vmap @{dir}-pods6"
        );
    }
    s
}

/// The script that removes the table (when the node stops enforcing, e.g. in tests).
pub fn delete(table: &str) -> String {
    format!("add table inet {table}\ndelete table inet {table}\n")
}

//! The policy engine: Pods, Namespaces and NetworkPolicies → what each local pod may send and
//! receive, as plain values (no nftables, no cluster), so upstream's semantics are tested here.
//!
//! Upstream semantics (networking.k8s.io/v1):
//! - A pod selected by no policy of a type (`Ingress`/`Egress` in `policyTypes`) is
//!   unrestricted in that direction; once selected, only traffic matching some rule of some
//!   selecting policy is allowed (rules add up, never subtract).
//! - A rule matches when one of its peers and one of its ports match; no `from`/`to` means
//!   every peer, no `ports` every port and protocol.
//! - Peers: `podSelector` alone (pods of the policy's namespace), `namespaceSelector` alone
//!   (every pod of the selected namespaces), both (pods selected by the first in namespaces
//!   selected by the second), `ipBlock` (a CIDR minus its `except` ranges).
//! - Ports: TCP (default), UDP or SCTP; a number with an optional `endPort` range, or a
//!   container port name: for ingress resolved against the selected pod's containers, for
//!   egress against each destination pod's (a name no pod declares matches nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use distro_client::labels;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The transport protocols policies name are the Services' (same API values, same nft names).
pub use crate::proxy::model::Protocol;

/// One allowed protocol with its destination ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMatch {
    /// The protocol.
    pub protocol: Protocol,
    /// An inclusive destination port range; `None`: every port of the protocol.
    pub range: Option<(u16, u16)>,
}

/// An `ipBlock` peer: `cidr` minus `except`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpBlock {
    /// The range allowed.
    pub cidr: IpNet,
    /// Ranges inside it that are not.
    pub except: Vec<IpNet>,
}

/// Who a rule allows to talk (ingress: sources; egress: destinations).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peers {
    /// Every address (a rule without `from`/`to`).
    Any,
    /// These pod addresses and address blocks.
    Some {
        /// Addresses of the selected pods.
        pods: BTreeSet<IpAddr>,
        /// ipBlocks.
        blocks: Vec<IpBlock>,
    },
}

/// One allow rule: a peer of `peers` on one of `ports`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// Allowed peers.
    pub peers: Peers,
    /// Allowed protocols and ports; `None`: all of them.
    pub ports: Option<Vec<PortMatch>>,
}

/// What one local pod is restricted to, per direction: `None` when no policy of that type
/// selects it (unrestricted), else the rules of which one must match (none: deny all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Access {
    /// Incoming connections allowed.
    pub ingress: Option<Vec<Rule>>,
    /// Outgoing connections allowed.
    pub egress: Option<Vec<Rule>>,
}

/// The cluster state the engine reads (the informers' caches).
#[derive(Debug, Clone, Copy)]
pub struct State<'a> {
    /// Every Pod of the cluster (peers may run on any node).
    pub pods: &'a [Arc<Pod>],
    /// Every Namespace (for `namespaceSelector`).
    pub namespaces: &'a [Arc<Namespace>],
    /// Every NetworkPolicy.
    pub policies: &'a [Arc<NetworkPolicy>],
}

/// The addresses of a pod that has its own network and is not finished (a finished pod's
/// address may already belong to another pod, as upstream's network plugins reason).
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Vec::new();
    }
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    ips
}

fn namespace_of(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The `policyTypes` of a policy, defaulted as the apiserver does when absent: Ingress
/// always, Egress when it has egress rules.
fn policy_types(p: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = p.spec.as_ref() else {
        return (false, false);
    };
    match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        Some(types) => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        None => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// Resolves a container port name on `pod` (with its protocol) to a number.
fn named_port(pod: &Pod, name: &str, protocol: Protocol) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name)
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// A numeric policy port (with its `endPort`) as a match; `None` if out of range (the
/// apiserver refuses those, so this only guards against old stored objects).
fn numeric(protocol: Protocol, port: i32, end: Option<i32>) -> Option<PortMatch> {
    let start = u16::try_from(port).ok().filter(|p| *p > 0)?;
    let end = match end {
        Some(e) => u16::try_from(e).ok().filter(|e| *e >= start)?,
        None => start,
    };
    Some(PortMatch {
        protocol,
        range: Some((start, end)),
    })
}

/// Computes what each local pod may do: the pods with `spec.nodeName == node` that some
/// policy restricts, by address (both families of a dual-stack pod get the same `Access`).
/// Pods absent from the result are unrestricted.
pub fn compute(state: &State<'_>, node: &str) -> BTreeMap<IpAddr, Access> {
    let engine = Engine::new(state);
    let mut out = BTreeMap::new();
    for pod in state.pods {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
            continue;
        }
        let ips = pod_ips(pod);
        if ips.is_empty() {
            continue;
        }
        let access = engine.access(pod);
        if access.ingress.is_none() && access.egress.is_none() {
            continue;
        }
        for ip in ips {
            out.insert(ip, access.clone());
        }
    }
    out
}

/// The state indexed once per computation.
struct Engine<'a> {
    state: &'a State<'a>,
    /// Namespace name → labels.
    namespaces: BTreeMap<&'a str, Option<&'a BTreeMap<String, String>>>,
    /// Pods with addresses (possible peers), with their addresses.
    peers: Vec<(&'a Pod, Vec<IpAddr>)>,
}

impl<'a> Engine<'a> {
    fn new(state: &'a State<'a>) -> Self {
        let namespaces = state
            .namespaces
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref())))
            .collect();
        let peers = state
            .pods
            .iter()
            .map(|p| (p.as_ref(), pod_ips(p)))
            .filter(|(_, ips)| !ips.is_empty())
            .collect();
        Engine {
            state,
            namespaces,
            peers,
        }
    }

    /// The Access of one pod: the rules of every policy of its namespace that selects it.
    fn access(&self, pod: &Pod) -> Access {
        let ns = namespace_of(pod);
        let mut access = Access::default();
        for policy in self.state.policies {
            if policy.metadata.namespace.as_deref().unwrap_or("default") != ns
                || policy.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let Some(spec) = policy.spec.as_ref() else {
                continue;
            };
            // A missing podSelector is the empty one (the apiserver's default).
            let selects = spec
                .pod_selector
                .as_ref()
                .is_none_or(|sel| labels::matches(Some(sel), &pod.metadata.labels));
            if !selects {
                continue;
            }
            let (ingress, egress) = policy_types(policy);
            if ingress {
                let rules = access.ingress.get_or_insert_with(Vec::new);
                for r in spec.ingress.iter().flatten() {
                    rules.extend(self.ingress_rule(ns, pod, r.from.as_deref(), r.ports.as_deref()));
                }
            }
            if egress {
                let rules = access.egress.get_or_insert_with(Vec::new);
                for r in spec.egress.iter().flatten() {
                    rules.extend(self.egress_rule(ns, r.to.as_deref(), r.ports.as_deref()));
                }
            }
        }
        for rules in [&mut access.ingress, &mut access.egress]
            .into_iter()
            .flatten()
        {
            rules.sort();
            rules.dedup();
        }
        access
    }

    /// An ingress rule of a policy in `ns` selecting `pod`: named ports resolve on `pod`.
    fn ingress_rule(
        &self,
        ns: &str,
        pod: &Pod,
        from: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
    ) -> Option<Rule> {
        let peers = self.peers_of(ns, from);
        let ports = match ports.filter(|p| !p.is_empty()) {
            None => None,
            Some(ports) => {
                let matches: Vec<PortMatch> = ports
                    .iter()
                    .filter_map(|p| {
                        let protocol = Protocol::parse(p.protocol.as_deref())?;
                        match &p.port {
                            None => Some(PortMatch {
                                protocol,
                                range: None,
                            }),
                            Some(IntOrString::Int(n)) => numeric(protocol, *n, p.end_port),
                            Some(IntOrString::String(name)) => {
                                let n = named_port(pod, name, protocol)?;
                                numeric(protocol, n.into(), None)
                            }
                        }
                    })
                    .collect();
                if matches.is_empty() {
                    return None; // only unresolvable ports: the rule matches nothing
                }
                Some(matches)
            }
        };
        Some(Rule { peers, ports })
    }

    /// An egress rule of a policy in `ns`: numeric ports make one rule over all its peers;
    /// each named port one rule per number it resolves to, over the peer pods declaring it.
    fn egress_rule(
        &self,
        ns: &str,
        to: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
    ) -> Vec<Rule> {
        let peers = self.peers_of(ns, to);
        let Some(ports) = ports.filter(|p| !p.is_empty()) else {
            return vec![Rule { peers, ports: None }];
        };
        let mut fixed = Vec::new();
        let mut named: BTreeMap<PortMatch, BTreeSet<IpAddr>> = BTreeMap::new();
        for p in ports {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            match &p.port {
                None => fixed.push(PortMatch {
                    protocol,
                    range: None,
                }),
                Some(IntOrString::Int(n)) => fixed.extend(numeric(protocol, *n, p.end_port)),
                Some(IntOrString::String(name)) => {
                    for (pod, ips) in &self.peers {
                        if !ips.iter().any(|ip| peers_contain(&peers, ip)) {
                            continue;
                        }
                        let Some(n) = named_port(pod, name, protocol) else {
                            continue;
                        };
                        if let Some(m) = numeric(protocol, n.into(), None) {
                            named.entry(m).or_default().extend(ips.iter().copied());
                        }
                    }
                }
            }
        }
        let mut rules = Vec::new();
        if !fixed.is_empty() {
            rules.push(Rule {
                peers: peers.clone(),
                ports: Some(fixed),
            });
        }
        for (m, pods) in named {
            rules.push(Rule {
                peers: Peers::Some {
                    pods,
                    blocks: Vec::new(),
                },
                ports: Some(vec![m]),
            });
        }
        rules
    }

    /// The peers of a rule in a policy of namespace `ns` (`None`/empty: everyone).
    fn peers_of(&self, ns: &str, list: Option<&[NetworkPolicyPeer]>) -> Peers {
        let Some(list) = list.filter(|l| !l.is_empty()) else {
            return Peers::Any;
        };
        let mut pods = BTreeSet::new();
        let mut blocks = Vec::new();
        for peer in list {
            if let Some(b) = &peer.ip_block {
                let Ok(cidr) = b.cidr.parse::<IpNet>() else {
                    continue;
                };
                let except = b
                    .except
                    .iter()
                    .flatten()
                    .filter_map(|e| e.parse::<IpNet>().ok())
                    .map(|e| e.trunc())
                    .collect();
                blocks.push(IpBlock {
                    cidr: cidr.trunc(),
                    except,
                });
                continue;
            }
            if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                continue; // the apiserver refuses an empty peer; it selects nothing here
            }
            // Invalid selectors select nothing, so a bad policy never widens what is allowed.
            let what = format!("NetworkPolicy peer in namespace {ns}");
            let compile = |sel: &LabelSelector| labels::selector_or_nothing(Some(sel), &what);
            let ns_sel = peer.namespace_selector.as_ref().map(compile);
            let pod_sel = peer.pod_selector.as_ref().map(compile);
            for (pod, ips) in &self.peers {
                let pod_ns = namespace_of(pod);
                let ns_ok = match &ns_sel {
                    None => pod_ns == ns,
                    Some(sel) => self.namespaces.get(pod_ns).is_some_and(|l| sel.matches(l)),
                };
                let pod_ok = pod_sel
                    .as_ref()
                    .is_none_or(|sel| sel.matches(&pod.metadata.labels));
                if ns_ok && pod_ok {
                    pods.extend(ips.iter().copied());
                }
            }
        }
        blocks.sort();
        blocks.dedup();
        Peers::Some { pods, blocks }
    }
}

/// Whether `ip` is one of `peers`.
pub fn peers_contain(peers: &Peers, ip: &IpAddr) -> bool {
    match peers {
        Peers::Any => true,
        Peers::Some { pods, blocks } => {
            pods.contains(ip)
                || blocks
                    .iter()
                    .any(|b| b.cidr.contains(ip) && !b.except.iter().any(|e| e.contains(ip)))
        }
    }
}

impl Access {
    /// Whether the rules of one direction let `peer` reach `port` over `protocol` (for tests
    /// and diagnostics; the kernel decides with the rendered rules).
    pub fn allows(rules: Option<&[Rule]>, peer: &IpAddr, protocol: Protocol, port: u16) -> bool {
        let Some(rules) = rules else { return true };
        rules.iter().any(|r| {
            peers_contain(&r.peers, peer)
                && r.ports.as_ref().is_none_or(|ports| {
                    ports.iter().any(|m| {
                        m.protocol == protocol
                            && m.range.is_none_or(|(lo, hi)| (lo..=hi).contains(&port))
                    })
                })
        })
    }
}

//! The node IPAM controller, as upstream's range allocator (`pkg/controller/nodeipam`, the
//! `RangeAllocator` of `--allocate-node-cidrs` with `--cluster-cidr`): every Node gets a pod
//! range per cluster CIDR family in `spec.podCIDR` / `spec.podCIDRs` (IPv4 first when the
//! cluster is dual-stack, as `--cluster-cidr` orders them), which the node's kubelet and
//! overlay use.
//!
//! # Design
//! Level-triggered: each pass reads every Node from the shared cache, marks the ranges they
//! hold as used (so the state is rebuilt from existing nodes at start, and a deleted node's
//! range is free again on the next pass) and gives the nodes without one the next free range,
//! rotating through the cluster CIDR as upstream's `CidrSet` does so a freed range is not
//! handed out again at once. Ranges patched but not yet seen in the cache are remembered until
//! the cache catches up, so two passes never hand out one range twice. The patch carries the
//! node's `resourceVersion`, so a node whose range the cache missed is never overwritten.
//! When a family is exhausted the node gets upstream's `CIDRNotAvailable` event (once).
//!
//! It writes as `node-controller`, upstream's identity for this controller.
//!
//! # Limits
//! - One range per family: as upstream, at most one IPv4 and one IPv6 cluster CIDR.
//! - A range on a node outside the cluster CIDR (set by hand) is left alone and not tracked.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use distro_network::pod_cidrs;
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::objects::{api_message, object_ref, EventType, Recorder};
use crate::passes::Passes;
use crate::Clients;

/// The identity the controller writes as (upstream's nodeipam uses `node-controller`'s).
pub const IDENTITY: &str = crate::nodelifecycle::COMPONENT;

/// The component its events are reported under, as upstream's range allocator.
pub const COMPONENT: &str = "cidrAllocator";

/// Upstream's limit on a cluster CIDR's subnet count (`clusterSubNetMaxDiff`): more than
/// 2^16 ranges per family are refused.
pub const MAX_SUBNET_BITS: u8 = 16;

/// Rescan period without any Node change (a safety net; watches wake the controller).
const RESYNC: Duration = Duration::from_secs(30);
/// Shortest gap between two event-triggered passes, so a burst of node updates (Leases do
/// not touch Nodes, but status reports do) costs one pass.
const MIN_GAP: Duration = Duration::from_millis(100);

/// Where node ranges come from: `--cluster-cidr` and `--node-cidr-mask-size-ipv4/-ipv6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// One range per family, in the order `--cluster-cidr` gives them.
    pub cluster_cidrs: Vec<IpNet>,
    /// Prefix length of an IPv4 node range (k3s: 24).
    pub mask_v4: u8,
    /// Prefix length of an IPv6 node range (k3s: 64).
    pub mask_v6: u8,
}

/// A bad `--cluster-cidr` / mask combination, in upstream's words where it has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Not a CIDR.
    #[error("--cluster-cidr {0:?} is not a CIDR like 10.42.0.0/16")]
    Parse(String),
    /// Two ranges of one family, or more than two.
    #[error("--cluster-cidr {0:?}: at most one IPv4 and one IPv6 range")]
    Families(String),
    /// The node mask does not fit the cluster range.
    #[error("--node-cidr-mask-size-{family} {mask} does not fit the cluster CIDR {cidr}: it must be at least its prefix and at most {max}")]
    Mask {
        /// `ipv4` or `ipv6`.
        family: &'static str,
        /// The node mask.
        mask: u8,
        /// The cluster range.
        cidr: IpNet,
        /// The largest usable mask.
        max: u8,
    },
    /// Too many node ranges.
    #[error("--node-cidr-mask-size-{family} {mask}: the cluster CIDR {cidr} would hold more than 2^{MAX_SUBNET_BITS} node ranges")]
    TooMany {
        /// `ipv4` or `ipv6`.
        family: &'static str,
        /// The node mask.
        mask: u8,
        /// The cluster range.
        cidr: IpNet,
    },
}

impl Settings {
    /// Parses `--cluster-cidr` (comma-separated) with the node masks, validating as
    /// upstream's controller manager does at start.
    ///
    /// # Errors
    /// [`SettingsError`] naming the flag at fault.
    pub fn parse(cluster_cidr: &str, mask_v4: u8, mask_v6: u8) -> Result<Self, SettingsError> {
        let mut cluster_cidrs: Vec<IpNet> = Vec::new();
        for part in cluster_cidr.split(',').map(str::trim) {
            let net: IpNet = part
                .parse()
                .map_err(|_| SettingsError::Parse(part.to_string()))?;
            let net = net.trunc();
            if cluster_cidrs
                .iter()
                .any(|c| c.addr().is_ipv4() == net.addr().is_ipv4())
            {
                return Err(SettingsError::Families(cluster_cidr.to_string()));
            }
            cluster_cidrs.push(net);
        }
        let settings = Settings {
            cluster_cidrs,
            mask_v4,
            mask_v6,
        };
        for cidr in &settings.cluster_cidrs {
            let (family, mask, max) = match cidr {
                IpNet::V4(_) => ("ipv4", mask_v4, 32),
                IpNet::V6(_) => ("ipv6", mask_v6, 128),
            };
            if mask < cidr.prefix_len() || mask > max {
                return Err(SettingsError::Mask {
                    family,
                    mask,
                    cidr: *cidr,
                    max,
                });
            }
            if mask - cidr.prefix_len() > MAX_SUBNET_BITS {
                return Err(SettingsError::TooMany {
                    family,
                    mask,
                    cidr: *cidr,
                });
            }
        }
        Ok(settings)
    }

    fn mask_for(&self, cidr: &IpNet) -> u8 {
        match cidr {
            IpNet::V4(_) => self.mask_v4,
            IpNet::V6(_) => self.mask_v6,
        }
    }
}

/// The node ranges of one cluster CIDR, as upstream's `CidrSet`: which are taken, and where
/// the next search starts.
#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: IpNet,
    mask: u8,
    used: BTreeSet<u32>,
    next: u32,
}

impl CidrSet {
    /// The ranges of prefix `mask` inside `cluster` (`mask` checked by [`Settings::parse`]).
    pub fn new(cluster: IpNet, mask: u8) -> Self {
        CidrSet {
            cluster: cluster.trunc(),
            mask,
            used: BTreeSet::new(),
            next: 0,
        }
    }

    /// How many node ranges the cluster CIDR holds.
    pub fn capacity(&self) -> u32 {
        1u32 << (self.mask - self.cluster.prefix_len())
    }

    fn width(&self) -> u32 {
        match self.cluster {
            IpNet::V4(_) => 32,
            IpNet::V6(_) => 128,
        }
    }

    fn base(&self) -> u128 {
        match self.cluster.network() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// The range with index `i`.
    fn range(&self, i: u32) -> IpNet {
        let shift = self.width() - u32::from(self.mask);
        let addr = self.base() + (u128::from(i) << shift);
        let ip = match self.cluster {
            IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(addr as u32)),
            IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(addr)),
        };
        // The prefix is valid for the family by construction.
        IpNet::new(ip, self.mask).unwrap_or(self.cluster)
    }

    /// The index of `net` if it is one of this set's ranges.
    fn index(&self, net: &IpNet) -> Option<u32> {
        if net.prefix_len() != self.mask || !self.cluster.contains(net) {
            return None;
        }
        let addr = match net.network() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let shift = self.width() - u32::from(self.mask);
        u32::try_from((addr - self.base()) >> shift).ok()
    }

    /// Marks `net` as taken; false if it is not one of this set's ranges.
    pub fn occupy(&mut self, net: &IpNet) -> bool {
        match self.index(net) {
            Some(i) => {
                self.used.insert(i);
                true
            }
            None => false,
        }
    }

    /// Frees every range (the next pass re-occupies those still held); the rotation point
    /// is kept.
    pub fn clear(&mut self) {
        self.used.clear();
    }

    /// Takes the next free range after the last one handed out, or `None` when all are taken.
    pub fn allocate(&mut self) -> Option<IpNet> {
        let cap = self.capacity();
        if self.used.len() as u64 >= u64::from(cap) {
            return None;
        }
        for k in 0..cap {
            let i = (self.next.wrapping_add(k)) % cap;
            if !self.used.contains(&i) {
                self.used.insert(i);
                self.next = (i + 1) % cap;
                return Some(self.range(i));
            }
        }
        None
    }
}

/// The allocator's state between passes.
pub struct Allocator {
    sets: Vec<CidrSet>,
    /// Ranges patched onto nodes the cache does not show yet: node name → ranges.
    pending: HashMap<String, Vec<IpNet>>,
    /// Nodes already told `CIDRNotAvailable` (one event per node, not one per pass).
    reported: HashSet<String>,
}

/// What one pass decided for a node without ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Give the node these ranges (one per cluster CIDR, in its order).
    Assign(Vec<IpNet>),
    /// A family is exhausted.
    Exhausted,
}

impl Allocator {
    /// An empty allocator for `settings`.
    pub fn new(settings: &Settings) -> Self {
        Allocator {
            sets: settings
                .cluster_cidrs
                .iter()
                .map(|c| CidrSet::new(*c, settings.mask_for(c)))
                .collect(),
            pending: HashMap::new(),
            reported: HashSet::new(),
        }
    }

    /// Plans a pass over `nodes` (name, ranges): rebuilds the used ranges from them and the
    /// pending ones, then picks ranges for the nodes without any. Pure, so it tests without
    /// a cluster; the caller patches and reports.
    pub fn plan(&mut self, nodes: &[(String, Vec<IpNet>)]) -> Vec<(String, Decision)> {
        let names: HashSet<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
        // Pending entries end once the cache shows the node with ranges, or without the node.
        self.pending.retain(|name, _| names.contains(name.as_str()));
        for (name, cidrs) in nodes {
            if !cidrs.is_empty() {
                self.pending.remove(name);
            }
        }
        self.reported.retain(|name| names.contains(name.as_str()));
        for set in &mut self.sets {
            set.clear();
        }
        let held = nodes
            .iter()
            .map(|(_, c)| c)
            .chain(self.pending.values())
            .flatten();
        for net in held {
            for set in &mut self.sets {
                if set.occupy(net) {
                    break;
                }
            }
        }
        let mut out = Vec::new();
        for (name, cidrs) in nodes {
            if !cidrs.is_empty() || self.pending.contains_key(name) {
                continue;
            }
            let mut got = Vec::new();
            for set in &mut self.sets {
                match set.allocate() {
                    Some(n) => got.push(n),
                    None => break,
                }
            }
            if got.len() == self.sets.len() {
                self.pending.insert(name.clone(), got.clone());
                self.reported.remove(name);
                out.push((name.clone(), Decision::Assign(got)));
            } else {
                // Give back what this node got from the other families.
                for net in &got {
                    for set in &mut self.sets {
                        if let Some(i) = set.index(net) {
                            set.used.remove(&i);
                        }
                    }
                }
                out.push((name.clone(), Decision::Exhausted));
            }
        }
        out
    }

    /// Forgets a range handed to `node` whose patch failed, so the next pass retries.
    pub fn failed(&mut self, node: &str) {
        self.pending.remove(node);
    }

    /// Whether `node` still has to be told `CIDRNotAvailable`; marks it told.
    fn first_report(&mut self, node: &str) -> bool {
        self.reported.insert(node.to_string())
    }
}

/// Runs until `shutdown` resolves.
pub async fn run(
    clients: Clients,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    if settings.cluster_cidrs.is_empty() {
        return;
    }
    let nodes = clients.informers.get::<Node>();
    let client = clients.writer(IDENTITY);
    let events = Recorder::new(client.clone(), COMPONENT, None);
    let store = nodes.store();
    let mut allocator = Allocator::new(&settings);
    let mut passes = Passes::new(nodes.subscribe().boxed(), RESYNC, MIN_GAP, shutdown);
    while passes.due().await {
        pass(&client, &events, &store, &mut allocator).await;
    }
}

async fn pass(client: &Client, events: &Recorder, store: &Store<Node>, allocator: &mut Allocator) {
    let nodes = store.state();
    let listed: Vec<(String, Vec<IpNet>)> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none() || !pod_cidrs(n).is_empty())
        .map(|n| (n.name_any(), pod_cidrs(n)))
        .collect();
    for (name, decision) in allocator.plan(&listed) {
        let Some(node) = nodes.iter().find(|n| n.name_any() == name) else {
            continue;
        };
        match decision {
            Decision::Assign(cidrs) => {
                let strs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                let patch = json!({
                    "metadata": {"resourceVersion": node.resource_version()},
                    "spec": {"podCIDR": strs[0], "podCIDRs": strs},
                });
                let api: Api<Node> = Api::all(client.clone());
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(node = %name, cidrs = ?strs, "pod CIDRs assigned");
                    }
                    Err(e) => {
                        // A conflict means the cache was stale; the next pass sees the node
                        // as it is now. Upstream reports other failures as an event.
                        allocator.failed(&name);
                        tracing::debug!(node = %name, error = %e, "assigning pod CIDRs failed");
                        if !matches!(&e, kube::Error::Api(s) if s.code == 409 || s.code == 404) {
                            events.record(
                                object_ref(node.as_ref()),
                                EventType::Warning,
                                "CIDRAssignmentFailed",
                                format!(
                                    "Node {name} status is now: CIDRAssignmentFailed ({})",
                                    api_message(&e)
                                ),
                            );
                        }
                    }
                }
            }
            Decision::Exhausted => {
                if allocator.first_report(&name) {
                    tracing::warn!(node = %name, "no pod CIDR left for the node");
                    events.record(
                        node_ref(&name),
                        EventType::Normal,
                        "CIDRNotAvailable",
                        format!("Node {name} status is now: CIDRNotAvailable"),
                    );
                }
            }
        }
    }
}

/// How upstream's events name a node (its name as UID).
fn node_ref(name: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: Some(name.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn assigned(d: &Decision) -> Vec<String> {
        match d {
            Decision::Assign(v) => v.iter().map(ToString::to_string).collect(),
            Decision::Exhausted => vec![],
        }
    }

    #[test]
    fn settings_parse_as_upstream() {
        let s = Settings::parse("10.42.0.0/16,fd42::/56", 24, 64).unwrap();
        assert_eq!(s.cluster_cidrs, vec![net("10.42.0.0/16"), net("fd42::/56")]);
        for (cidr, v4, v6, bad) in [
            ("10.42.0.0/16", 15, 64, "does not fit"),
            ("10.42.0.0/16", 33, 64, "does not fit"),
            ("10.0.0.0/8", 25, 64, "more than 2^16"),
            ("fd42::/48", 24, 80, "more than 2^16"),
            ("10.42.0.0/16,10.43.0.0/16", 24, 64, "at most one IPv4"),
            ("10.42.0.0", 24, 64, "is not a CIDR"),
        ] {
            let e = Settings::parse(cidr, v4, v6).unwrap_err().to_string();
            assert!(e.contains(bad), "{cidr} {v4} {v6}: {e}");
        }
    }

    #[test]
    fn distinct_ranges_rebuilt_released_and_rotated() {
        let s = Settings::parse("10.42.0.0/16,fd42::/56", 24, 64).unwrap();
        let mut a = Allocator::new(&s);
        // Existing nodes keep theirs and are not handed out again.
        let nodes = vec![
            ("a".to_string(), vec![net("10.42.0.0/24"), net("fd42::/64")]),
            ("b".to_string(), vec![]),
            ("c".to_string(), vec![]),
        ];
        let plan = a.plan(&nodes);
        assert_eq!(plan.len(), 2);
        assert_eq!(assigned(&plan[0].1), ["10.42.1.0/24", "fd42:0:0:1::/64"]);
        assert_eq!(assigned(&plan[1].1), ["10.42.2.0/24", "fd42:0:0:2::/64"]);
        // Not in the cache yet: pending, so not planned again.
        assert!(a.plan(&nodes).is_empty());
        // The cache catches up; "a" is deleted; a new node gets the next range, not a's.
        let nodes = vec![
            (
                "b".to_string(),
                vec![net("10.42.1.0/24"), net("fd42:0:0:1::/64")],
            ),
            (
                "c".to_string(),
                vec![net("10.42.2.0/24"), net("fd42:0:0:2::/64")],
            ),
            ("d".to_string(), vec![]),
        ];
        let plan = a.plan(&nodes);
        assert_eq!(assigned(&plan[0].1), ["10.42.3.0/24", "fd42:0:0:3::/64"]);
    }

    #[test]
    fn exhaustion_is_reported_once_and_frees_other_families() {
        let s = Settings::parse("10.42.0.0/23,fd42::/63", 24, 64).unwrap();
        let mut a = Allocator::new(&s);
        let mut nodes = vec![
            ("a".to_string(), vec![]),
            ("b".to_string(), vec![]),
            ("c".to_string(), vec![]),
        ];
        let plan = a.plan(&nodes);
        assert_eq!(assigned(&plan[1].1), ["10.42.1.0/24", "fd42:0:0:1::/64"]);
        assert_eq!(plan[2].1, Decision::Exhausted);
        assert!(a.first_report("c"));
        assert!(!a.first_report("c"));
        // "a" goes away: "c" gets its range (the rotation wraps around).
        nodes[1].1 = vec![net("10.42.1.0/24"), net("fd42:0:0:1::/64")];
        nodes.remove(0);
        let plan = a.plan(&nodes);
        assert_eq!(
            plan,
            vec![(
                "c".to_string(),
                Decision::Assign(vec![net("10.42.0.0/24"), net("fd42::/64")])
            )]
        );
    }

    #[test]
    fn patch_failure_retries() {
        let s = Settings::parse("10.42.0.0/16", 24, 64).unwrap();
        let mut a = Allocator::new(&s);
        let nodes = vec![("a".to_string(), vec![])];
        assert_eq!(a.plan(&nodes).len(), 1);
        a.failed("a");
        assert_eq!(a.plan(&nodes).len(), 1);
    }
}

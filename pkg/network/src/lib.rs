//! distro's pod network.
//!
//! Owns how a pod gets its network on a node. Today that is the CNI plugin ([`cni`]): the
//! distro binary is multi-call, and containerd runs it as `<bin_dir>/distro` with
//! `CNI_COMMAND` set. The plugin does in one program what k3s chains from the reference
//! plugins (`bridge` + `host-local` + `portmap`): a veth per pod on a node bridge, addresses
//! from the node's podCIDR kept as one file per IP, masquerade to outside the cluster, and
//! hostPort DNAT in one nftables table that distro owns.
//!
//! # Limits
//! - IPv6 (dual-stack) pods get an address, routes, masquerade and hostPorts, but a hostPort
//!   is not reachable from `::1` (the kernel has no `route_localnet` for IPv6, as with the
//!   reference portmap).
//! - [`overlay`]: routes, neighbour and FDB entries to other nodes' pod ranges (VXLAN or
//!   host-gw), as flannel's backends.
//!
//! [`proxy`] is the service proxy (kube-proxy's nftables mode) every node runs; [`policy`]
//! enforces NetworkPolicies on the node's pods with nftables.

pub mod cni;
mod error;
pub mod netlink;
pub mod overlay;
pub mod policy;
pub mod proxy;
pub mod resync;

pub use error::Error;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

/// The pod ranges a Node records (`spec.podCIDRs`, else `spec.podCIDR`): what the server's
/// node IPAM wrote and what the agent's network and overlay read.
pub fn pod_cidrs(node: &Node) -> Vec<IpNet> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let list: Vec<&String> = match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(l), _) if !l.is_empty() => l.iter().collect(),
        (_, Some(one)) if !one.is_empty() => vec![one],
        _ => Vec::new(),
    };
    list.iter().filter_map(|c| c.parse().ok()).collect()
}

//! The overlay between nodes: how a pod on one node reaches a pod on another, as flannel's
//! `vxlan` and `host-gw` backends do it.
//!
//! # Design
//! - [`Peer`] is what a node tells the others (its pod ranges, public address and VTEP MAC),
//!   read from and written to Node annotations ([`annotations`]). distro uses flannel's own
//!   annotation names (`flannel.alpha.coreos.com/backend-data`, `…/public-ip`,
//!   `…/backend-type`): users, docs and tools that inspect flannel nodes (and k3s nodes, which
//!   carry the same ones) read a distro node the same way, and nothing here is distro-specific.
//! - [`plan`] turns this node and its peers into the wanted kernel state ([`Wanted`]): per
//!   remote node one route `<podCIDR> via <vtep ip> dev distro.1 onlink`, one neighbour entry
//!   vtep ip → vtep MAC and one FDB entry vtep MAC → remote public IP (VXLAN), or one route
//!   `<podCIDR> via <node ip>` (host-gw). Pure, so it is tested without a kernel.
//! - [`link`] applies it with rtnetlink: creates the VXLAN device (VNI 1, UDP 8472, local =
//!   node IP, no learning, MTU = uplink − 50, or − 70 for IPv6), then converges routes,
//!   neighbours and FDB entries: adds or replaces what is missing, deletes what is stale.
//!   Routes it adds carry their own protocol number ([`ROUTE_PROTOCOL`]), so it deletes only
//!   routes it made.
//!
//! The VTEP address of a node is the first address of its pod range (`10.42.1.0` for
//! `10.42.1.0/24`), as flannel's, so no extra addresses are needed.
//!
//! # Limits
//! - No wireguard or ipsec backends; traffic between nodes is not encrypted.
//! - host-gw does not check that peers share the L2 segment: a peer behind a router gets an
//!   unreachable route (the kernel refuses it and the error is logged).

pub mod annotations;
pub mod link;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// The VXLAN network identifier flannel uses by default.
pub const VNI: u32 = 1;
/// The VXLAN UDP port (Linux's and flannel's default, 8472, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// The IPv4 VXLAN device.
pub const DEVICE_V4: &str = "distro.1";
/// The IPv6 VXLAN device (dual-stack clusters).
pub const DEVICE_V6: &str = "distro-v6.1";
/// Bytes the VXLAN encapsulation adds over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same over IPv6 (outer IP header 40).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// `rtm_protocol` of the routes the overlay adds (a number no routing daemon registers in
/// iproute2's `rt_protocols`; `ip route` shows `proto 151`), so it never deletes routes it
/// did not make.
pub const ROUTE_PROTOCOL: u8 = 151;

/// The backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A VXLAN device per family.
    Vxlan,
    /// Plain routes via each node's address.
    HostGw,
}

/// What a node shows the others, per address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// The node's pod ranges.
    pub pod_cidrs: Vec<IpNet>,
    /// The address other nodes send to (per family).
    pub public_ips: Vec<IpAddr>,
    /// The VTEP MAC per family (`true`: IPv4), for the VXLAN backend.
    pub vtep_macs: BTreeMap<bool, [u8; 6]>,
    /// The backend the node runs.
    pub backend: Option<String>,
}

/// One route the overlay wants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// A remote pod range.
    pub dst: IpNet,
    /// The remote VTEP address (vxlan) or node address (host-gw).
    pub via: IpAddr,
    /// Through the VXLAN device (`onlink`), else the kernel picks the interface.
    pub vxlan: bool,
}

/// One remote VTEP: neighbour entry `ip → mac` and FDB entry `mac → public`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vtep {
    /// The remote VTEP address (first address of its pod range).
    pub ip: IpAddr,
    /// The remote device's MAC.
    pub mac: [u8; 6],
    /// The remote node's address.
    pub public: IpAddr,
}

/// The wanted kernel state for one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Routes to remote pod ranges.
    pub routes: Vec<Route>,
    /// Remote VTEPs (VXLAN only).
    pub vteps: Vec<Vtep>,
}

/// The VTEP address of a pod range: its first address.
pub fn vtep_ip(pod_cidr: &IpNet) -> IpAddr {
    pod_cidr.network()
}

/// The MTU of a VXLAN device on an uplink of `uplink_mtu`.
pub fn vxlan_mtu(uplink_mtu: u32, ipv6: bool) -> u32 {
    let overhead = if ipv6 {
        VXLAN_OVERHEAD_V6
    } else {
        VXLAN_OVERHEAD_V4
    };
    uplink_mtu.saturating_sub(overhead)
}

/// The wanted state of family `v4` (true: IPv4) for `me` among `peers` (which may include
/// `me`; it is skipped). Peers without a range or address of the family are skipped, and
/// so are VXLAN peers that have not published a MAC yet (they get entries once they do).
pub fn plan(me: &str, peers: &[Peer], backend: Backend, v4: bool) -> Wanted {
    let mut wanted = Wanted::default();
    for p in peers.iter().filter(|p| p.name != me) {
        let Some(dst) = p.pod_cidrs.iter().find(|c| c.addr().is_ipv4() == v4) else {
            continue;
        };
        let Some(public) = p.public_ips.iter().find(|a| a.is_ipv4() == v4) else {
            continue;
        };
        match backend {
            Backend::HostGw => wanted.routes.push(Route {
                dst: *dst,
                via: *public,
                vxlan: false,
            }),
            Backend::Vxlan => {
                let Some(mac) = p.vtep_macs.get(&v4) else {
                    continue;
                };
                let ip = vtep_ip(dst);
                wanted.routes.push(Route {
                    dst: *dst,
                    via: ip,
                    vxlan: true,
                });
                wanted.vteps.push(Vtep {
                    ip,
                    mac: *mac,
                    public: *public,
                });
            }
        }
    }
    wanted.routes.sort();
    wanted.vteps.sort();
    wanted
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A stable, locally administered unicast MAC for this node's VTEP, from its name and
/// family: a restarted or re-created device keeps its MAC, so peers' entries stay right.
pub fn vtep_mac(node: &str, v4: bool) -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{node}/{}", if v4 { "v4" } else { "v6" }).as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, cidr: &str, ip: &str, mac: Option<[u8; 6]>) -> Peer {
        Peer {
            name: name.into(),
            pod_cidrs: vec![cidr.parse().unwrap()],
            public_ips: vec![ip.parse().unwrap()],
            vtep_macs: mac.map(|m| BTreeMap::from([(true, m)])).unwrap_or_default(),
            backend: Some("vxlan".into()),
        }
    }

    #[test]
    fn vxlan_plan_has_route_neighbour_and_fdb_per_remote_node() {
        let m = [2, 0, 0, 0, 0, 1];
        let peers = vec![
            peer("a", "10.42.0.0/24", "10.77.0.10", Some(m)),
            peer("b", "10.42.1.0/24", "10.77.0.11", Some(m)),
            peer("c", "10.42.2.0/24", "10.77.0.12", None),
        ];
        let w = plan("a", &peers, Backend::Vxlan, true);
        assert_eq!(
            w.routes,
            vec![Route {
                dst: "10.42.1.0/24".parse().unwrap(),
                via: "10.42.1.0".parse().unwrap(),
                vxlan: true
            }]
        );
        assert_eq!(
            w.vteps,
            vec![Vtep {
                ip: "10.42.1.0".parse().unwrap(),
                mac: m,
                public: "10.77.0.11".parse().unwrap()
            }]
        );
        assert_eq!(plan("a", &peers, Backend::Vxlan, false), Wanted::default());
    }

    #[test]
    fn host_gw_routes_via_node_ips() {
        let peers = vec![
            peer("a", "10.42.0.0/24", "10.77.0.10", None),
            peer("b", "10.42.1.0/24", "10.77.0.11", None),
        ];
        let w = plan("a", &peers, Backend::HostGw, true);
        assert_eq!(w.routes.len(), 1);
        assert_eq!(w.routes[0].via, "10.77.0.11".parse::<IpAddr>().unwrap());
        assert!(!w.routes[0].vxlan && w.vteps.is_empty());
    }

    #[test]
    fn macs_and_mtu() {
        let m = vtep_mac("node-1", true);
        assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(m, vtep_mac("node-1", true));
        assert_ne!(m, vtep_mac("node-1", false));
        assert_eq!(parse_mac(&format_mac(&m)), Some(m));
        assert_eq!(parse_mac("aa:bb"), None);
        assert_eq!(vxlan_mtu(1500, false), 1450);
        assert_eq!(vxlan_mtu(1500, true), 1430);
    }
}

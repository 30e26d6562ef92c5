//! The Node annotations a node publishes for its peers, under flannel's names and in
//! flannel's formats (`backend-data` is `{"VNI":1,"VtepMAC":"aa:bb:…"}`), so they read the
//! same as on a flannel or k3s node.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{format_mac, parse_mac, Backend, Peer, VNI};

/// The backend the node runs.
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
/// The IPv4 backend's data (VXLAN: VNI and VTEP MAC).
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
/// The IPv6 backend's data.
pub const BACKEND_V6_DATA: &str = "flannel.alpha.coreos.com/backend-v6-data";
/// The node's IPv4 address peers send to.
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
/// The node's IPv6 address peers send to.
pub const PUBLIC_IPV6: &str = "flannel.alpha.coreos.com/public-ipv6";
/// Set by flannel's Kubernetes subnet manager (ranges come from `spec.podCIDRs`).
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// flannel's VXLAN `backend-data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    /// The VNI.
    #[serde(rename = "VNI")]
    pub vni: u32,
    /// The VTEP MAC, `aa:bb:cc:dd:ee:ff`.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// The annotations this node publishes: backend type, public address(es) and, for VXLAN,
/// each family's VTEP MAC.
pub fn publish(
    backend: Backend,
    public_ips: &[IpAddr],
    macs: &BTreeMap<bool, [u8; 6]>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([(KUBE_SUBNET_MANAGER.to_string(), "true".to_string())]);
    out.insert(
        BACKEND_TYPE.into(),
        match backend {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
        .into(),
    );
    for ip in public_ips {
        let (ip_key, data_key) = if ip.is_ipv4() {
            (PUBLIC_IP, BACKEND_DATA)
        } else {
            (PUBLIC_IPV6, BACKEND_V6_DATA)
        };
        out.insert(ip_key.into(), ip.to_string());
        let data = match (backend, macs.get(&ip.is_ipv4())) {
            (Backend::Vxlan, Some(mac)) => serde_json::to_string(&VxlanData {
                vni: VNI,
                vtep_mac: format_mac(mac),
            })
            .unwrap_or_else(|_| "null".into()),
            // flannel's host-gw writes JSON null.
            _ => "null".into(),
        };
        out.insert(data_key.into(), data);
    }
    out
}

/// What node `name` with pod ranges `pod_cidrs` tells its peers through `annotations`.
/// Unreadable annotations count as absent (the peer gets no entries until they are fixed).
pub fn peer(name: &str, pod_cidrs: Vec<IpNet>, annotations: &BTreeMap<String, String>) -> Peer {
    let mut public_ips = Vec::new();
    let mut vtep_macs = BTreeMap::new();
    for (v4, ip_key, data_key) in [
        (true, PUBLIC_IP, BACKEND_DATA),
        (false, PUBLIC_IPV6, BACKEND_V6_DATA),
    ] {
        if let Some(ip) = annotations
            .get(ip_key)
            .and_then(|s| s.parse::<IpAddr>().ok())
            .filter(|ip| ip.is_ipv4() == v4)
        {
            public_ips.push(ip);
        }
        if let Some(mac) = annotations
            .get(data_key)
            .and_then(|d| serde_json::from_str::<VxlanData>(d).ok())
            .and_then(|d| parse_mac(&d.vtep_mac))
        {
            vtep_macs.insert(v4, mac);
        }
    }
    Peer {
        name: name.to_string(),
        pod_cidrs,
        public_ips,
        vtep_macs,
        backend: annotations.get(BACKEND_TYPE).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_annotations_read_back_as_flannel_writes_them() {
        let ips: Vec<IpAddr> = vec!["10.77.0.10".parse().unwrap(), "fd77::10".parse().unwrap()];
        let macs = BTreeMap::from([(true, [2, 1, 2, 3, 4, 5]), (false, [2, 9, 9, 9, 9, 9])]);
        let a = publish(Backend::Vxlan, &ips, &macs);
        assert_eq!(a[BACKEND_TYPE], "vxlan");
        assert_eq!(
            a[BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"02:01:02:03:04:05"}"#
        );
        assert_eq!(a[PUBLIC_IP], "10.77.0.10");
        assert_eq!(a[PUBLIC_IPV6], "fd77::10");
        let p = peer("n", vec![], &a);
        assert_eq!(p.public_ips, ips);
        assert_eq!(p.vtep_macs, macs);
        let hg = publish(Backend::HostGw, &ips[..1], &BTreeMap::new());
        assert_eq!(hg[BACKEND_DATA], "null");
        assert!(peer("n", vec![], &hg).vtep_macs.is_empty());
    }
}

//! The node's place in the pod network: which ranges the cluster uses, which addresses this
//! node shows its peers, and waiting for the pod ranges the server's node IPAM controller
//! gives the node (`spec.podCIDRs`), as a kubelet with `--pod-cidr` unset waits for its
//! range before it writes the CNI config.
//!
//! # Limits
//! - The cluster CIDR comes from the server ([`crate::clusterconfig`]) unless
//!   `--cluster-cidr` is given. It only decides which destinations are not masqueraded.
//! - An IPv6-only cluster is not supported: the CNI plugin needs an IPv4 range.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::sync::watch;

use crate::Error;

/// How pod traffic crosses to other nodes (`--flannel-backend`, as k3s names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// A VXLAN device (VNI 1, UDP 8472): works across any IP network.
    #[default]
    Vxlan,
    /// Plain routes via each node's address: nodes must share one L2 segment.
    HostGw,
    /// No routes to other nodes (single node, or another network plugin does it).
    None,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            "none" => Ok(Backend::None),
            other => Err(format!(
                "--flannel-backend {other:?} is not one of vxlan, host-gw, none"
            )),
        }
    }
}

impl Backend {
    /// The name flannel puts in its `backend-type` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::None => "none",
        }
    }
}

/// The agent's network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cluster's pod ranges (`--cluster-cidr`), one per family.
    pub cluster_cidrs: Vec<IpNet>,
    /// How traffic reaches other nodes' pods.
    pub backend: Backend,
    /// `--node-ip`: the node's InternalIP(s), at most one per family; empty: the address
    /// this machine uses towards the server.
    pub node_ips: Vec<IpAddr>,
    /// `--node-external-ip`: addresses peers use for the overlay instead of the node IP (as
    /// k3s, where flannel then uses the external IP as the VTEP's public IP).
    pub node_external_ips: Vec<IpAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_cidrs: vec![IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 42, 0, 0), 16).unwrap_or_default(),
            )],
            backend: Backend::Vxlan,
            node_ips: Vec::new(),
            node_external_ips: Vec::new(),
        }
    }
}

impl Settings {
    /// The cluster range of the family of `ip`.
    pub fn cluster_cidr_for(&self, v4: bool) -> Option<IpNet> {
        self.cluster_cidrs
            .iter()
            .find(|c| matches!(c, IpNet::V4(_)) == v4)
            .copied()
    }
}

pub use distro_network::pod_cidrs;

/// Waits until the node `name` has its pod ranges (set by the server's node IPAM
/// controller), watching the Node; `None` if `shutdown` comes first.
///
/// # Errors
/// [`Error::PodCidr`] if the Node cannot be watched.
pub async fn wait_pod_cidrs(
    client: &distro_client::Client,
    name: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Option<Vec<IpNet>>, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let has = |n: Option<&Node>| n.is_some_and(|n| !pod_cidrs(n).is_empty());
    tracing::info!(node = %name, "waiting for the node's pod CIDR from the server");
    let cond = kube::runtime::wait::await_condition(api, name, has);
    tokio::select! {
        got = cond => {
            let node = got.map_err(|source| Error::PodCidr {
                node: name.to_string(),
                source,
            })?;
            Ok(node.as_ref().map(pod_cidrs))
        }
        _ = shutdown.wait_for(|s| *s) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_parses() {
        assert_eq!("vxlan".parse::<Backend>(), Ok(Backend::Vxlan));
        assert_eq!("host-gw".parse::<Backend>(), Ok(Backend::HostGw));
        assert!("wireguard"
            .parse::<Backend>()
            .unwrap_err()
            .contains("not one of vxlan, host-gw"));
    }

    #[test]
    fn pod_cidrs_prefer_the_list() {
        let mut n = Node::default();
        assert!(pod_cidrs(&n).is_empty());
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidr: Some("10.42.3.0/24".into()),
            pod_cidrs: Some(vec!["10.42.3.0/24".into(), "fd42:0:0:3::/64".into()]),
            ..Default::default()
        });
        assert_eq!(pod_cidrs(&n).len(), 2);
    }
}

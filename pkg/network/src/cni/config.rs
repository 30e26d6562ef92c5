//! The plugin's network configuration: what containerd passes on stdin, and the conflist the
//! agent writes for its node.
//!
//! Field names follow the reference `bridge` plugin where they mean the same (`bridge`, `mtu`,
//! `hairpinMode`, `isDefaultGateway`) and k3s' flannel-generated config elsewhere, so users'
//! habits carry over.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};

/// The plugin `type` distro's conflist uses (the name of the symlink in containerd's bin_dir).
pub const PLUGIN_TYPE: &str = "distro";
/// File name of the conflist the agent writes; `10-` sorts it before stray configs.
pub const CONFLIST_NAME: &str = "10-distro.conflist";
/// The nftables table (family `inet`) distro owns for pod NAT; nothing else is touched.
pub const DEFAULT_NFT_TABLE: &str = "distro-cni";
/// The CNI version distro writes and answers with by default.
pub const CNI_VERSION: &str = "1.0.0";

/// One plugin's configuration as the runtime passes it on stdin (the conflist entry with
/// `name`, `cniVersion`, `runtimeConfig` and `prevResult` filled in by libcni).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// CNI version of the config; the result is written in this version's format.
    pub cni_version: String,
    /// Network name; names the IPAM directory.
    pub name: String,
    /// Plugin type (the binary containerd ran).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Node bridge the pods' veths join.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The node's IPv4 pod CIDR; the bridge takes its first address as the pods' gateway.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Ipv4Net,
    /// The node's IPv6 pod CIDR on a dual-stack node: pods get an address from it too.
    #[serde(rename = "podCIDRv6", default)]
    pub pod_cidr_v6: Option<Ipv6Net>,
    /// The cluster's IPv6 pod CIDR, not masqueraded (defaults to `podCIDRv6`).
    #[serde(rename = "clusterCIDRv6", default)]
    pub cluster_cidr_v6: Option<Ipv6Net>,
    /// Traffic from pods to this CIDR is not masqueraded (pod-to-pod keeps its source).
    #[serde(rename = "clusterCIDR", default)]
    pub cluster_cidr: Option<Ipv4Net>,
    /// MTU of the bridge and both veth ends; the kernel default (1500) when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Where IPAM state lives (`<dataDir>/ipam/<name>/`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Hairpin on the host veth, so a pod reaches itself through a Service or hostPort.
    #[serde(default = "yes")]
    pub hairpin_mode: bool,
    /// Give the pod a default route via the bridge address.
    #[serde(default = "yes")]
    pub is_default_gateway: bool,
    /// Masquerade pod traffic leaving the cluster CIDR.
    #[serde(default = "yes")]
    pub ip_masq: bool,
    /// The nftables table (family inet) the plugin owns; tests pick unique ones.
    #[serde(default = "default_nft_table")]
    pub nft_table: String,
    /// Values for the declared capabilities (only `portMappings`).
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The previous result (CHECK, and chained plugins).
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
}

/// `runtimeConfig` as libcni fills it for the capabilities the conflist declares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// hostPort mappings of the pod (the `portMappings` capability).
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// One hostPort of a pod, as the CRI passes it to the `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the node.
    pub host_port: u16,
    /// Port in the pod.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (case-insensitive; empty means tcp).
    #[serde(default)]
    pub protocol: String,
    /// Node address the mapping is limited to; empty or absent means all.
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

fn default_bridge() -> String {
    "cni0".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/distro/agent/cni")
}
fn default_nft_table() -> String {
    DEFAULT_NFT_TABLE.into()
}
fn yes() -> bool {
    true
}

/// A name made of what libcni allows in network names and container ids.
fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks an interface name as the kernel and the reference plugins do.
pub(crate) fn valid_ifname(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!("interface name {s:?} must be 1 to 15 bytes"));
    }
    if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!(
            "interface name {s:?} contains '/', ':' or whitespace, or is a dot name"
        ));
    }
    Ok(())
}

impl NetConf {
    /// Decodes and validates the stdin config.
    ///
    /// # Errors
    /// [`Error::Decode`] for bad JSON or wrong field types, [`Error::InvalidConfig`] for a
    /// value that cannot work (name, bridge, CIDR too small, MTU).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(Error::Decode)?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<()> {
        if !is_plain_name(&self.name) {
            return Err(Error::InvalidConfig(format!(
                "network name {:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
                self.name
            )));
        }
        valid_ifname(&self.bridge).map_err(|e| Error::InvalidConfig(format!("bridge: {e}")))?;
        if self.pod_cidr.prefix_len() > 30 {
            return Err(Error::InvalidConfig(format!(
                "podCIDR {} is too small: it needs a gateway and at least one pod address (/30 or larger)",
                self.pod_cidr
            )));
        }
        if let Some(v6) = self.pod_cidr_v6 {
            if v6.prefix_len() > 126 {
                return Err(Error::InvalidConfig(format!(
                    "podCIDRv6 {v6} is too small: it needs a gateway and at least one pod address (/126 or larger)"
                )));
            }
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(Error::InvalidConfig(format!(
                    "mtu {mtu} is outside 68-65535"
                )));
            }
        }
        if self.nft_table.is_empty()
            || self.nft_table.len() > 64
            || !self
                .nft_table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::InvalidConfig(format!(
                "nftTable {:?} must be 1-64 letters, digits, '-' or '_'",
                self.nft_table
            )));
        }
        for pm in &self.runtime_config.port_mappings {
            pm.validate()?;
        }
        Ok(())
    }

    /// The pods' gateway: the first address of the pod CIDR, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        first_host(self.pod_cidr)
    }

    /// The pods' IPv6 gateway on a dual-stack node: the first address of `podCIDRv6`.
    pub fn gateway_v6(&self) -> Option<Ipv6Addr> {
        self.pod_cidr_v6
            .map(|net| Ipv6Addr::from(u128::from(net.network()).wrapping_add(1)))
    }
}

/// First usable address of a network (network address + 1).
pub(crate) fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(1))
}

impl PortMapping {
    /// The protocol in nftables' spelling.
    pub fn proto(&self) -> &str {
        if self.protocol.is_empty() {
            "tcp"
        } else if self.protocol.eq_ignore_ascii_case("udp") {
            "udp"
        } else if self.protocol.eq_ignore_ascii_case("sctp") {
            "sctp"
        } else {
            "tcp"
        }
    }

    /// The node address the mapping is limited to, if any; `None` for all addresses.
    /// An IPv6 hostIP never matches an IPv4 pod, as in the reference portmap.
    pub fn host_ip(&self) -> Option<std::net::IpAddr> {
        self.host_ip
            .parse()
            .ok()
            .filter(|ip: &std::net::IpAddr| !ip.is_unspecified())
    }

    fn validate(&self) -> Result<()> {
        if self.host_port == 0 || self.container_port == 0 {
            return Err(Error::InvalidConfig(format!(
                "port mapping {}->{}: ports must be 1-65535",
                self.host_port, self.container_port
            )));
        }
        if !(self.protocol.is_empty()
            || ["tcp", "udp", "sctp"]
                .iter()
                .any(|p| self.protocol.eq_ignore_ascii_case(p)))
        {
            return Err(Error::InvalidConfig(format!(
                "port mapping {}: protocol {:?} is not tcp, udp or sctp",
                self.host_port, self.protocol
            )));
        }
        if !self.host_ip.is_empty() && self.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidConfig(format!(
                "port mapping {}: hostIP {:?} is not an IP address",
                self.host_port, self.host_ip
            )));
        }
        Ok(())
    }
}

/// What the agent knows about its node's pod network, to render the conflist from.
#[derive(Debug, Clone)]
pub struct NodeNetwork {
    /// The node's IPv4 pod CIDR (from `Node.spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// The node's IPv6 pod CIDR, for dual-stack clusters.
    pub pod_cidr_v6: Option<Ipv6Net>,
    /// The cluster's pod CIDR, not masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// The cluster's IPv6 pod CIDR, for dual-stack clusters.
    pub cluster_cidr_v6: Option<Ipv6Net>,
    /// MTU for pod interfaces (the overlay's MTU once it exists).
    pub mtu: Option<u32>,
    /// IPAM state directory, e.g. `<data-dir>/agent/cni`.
    pub data_dir: PathBuf,
    /// Bridge name (`cni0` unless several nodes share one kernel).
    pub bridge: String,
}

/// Renders the conflist for a node: one `distro` plugin that declares the `portMappings`
/// capability, so containerd passes hostPorts in `runtimeConfig`.
pub fn render_conflist(node: &NodeNetwork) -> serde_json::Value {
    let mut plugin = json!({
        "type": PLUGIN_TYPE,
        "bridge": node.bridge,
        "podCIDR": node.pod_cidr.to_string(),
        "clusterCIDR": node.cluster_cidr.to_string(),
        "dataDir": node.data_dir,
        "hairpinMode": true,
        "isDefaultGateway": true,
        "ipMasq": true,
        "capabilities": { "portMappings": true },
    });
    if let Some(v6) = node.pod_cidr_v6 {
        plugin["podCIDRv6"] = json!(v6.to_string());
    }
    if let Some(v6) = node.cluster_cidr_v6 {
        plugin["clusterCIDRv6"] = json!(v6.to_string());
    }
    if let Some(mtu) = node.mtu {
        plugin["mtu"] = json!(mtu);
    }
    json!({ "cniVersion": CNI_VERSION, "name": "distro", "plugins": [plugin] })
}

/// Writes `<conf_dir>/10-distro.conflist` atomically (temp file + rename), so containerd,
/// which watches the directory, never reads half a file.
///
/// # Errors
/// [`Error::Io`] when the directory or file cannot be written.
pub fn write_conflist(conf_dir: &Path, node: &NodeNetwork) -> Result<PathBuf> {
    std::fs::create_dir_all(conf_dir).map_err(|e| Error::io("creating", conf_dir, e))?;
    let path = conf_dir.join(CONFLIST_NAME);
    let tmp = conf_dir.join(format!(".{CONFLIST_NAME}.tmp"));
    let body = serde_json::to_vec_pretty(&render_conflist(node)).map_err(Error::Decode)?;
    std::fs::write(&tmp, body).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("renaming into place", &path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Result<NetConf> {
        let cidr = if extra.contains(r#""podCIDR""#) {
            ""
        } else {
            r#","podCIDR":"10.42.0.0/24""#
        };
        NetConf::parse(
            format!(r#"{{"cniVersion":"1.0.0","name":"distro","type":"distro"{cidr}{extra}}}"#)
                .as_bytes(),
        )
    }

    #[test]
    fn defaults_and_gateway() {
        let c = conf("").unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(c.hairpin_mode && c.is_default_gateway && c.ip_masq);
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(c.nft_table, DEFAULT_NFT_TABLE);
    }

    #[test]
    fn bad_values_are_refused() {
        for (extra, code) in [
            (r#","podCIDR":"10.42.0.0/31""#, 7),
            (r#","bridge":"a-bridge-name-too-long""#, 7),
            (r#","mtu":10"#, 7),
            (r#","podCIDRv6":"fd00::/127""#, 7),
            (r#","nftTable":"x y""#, 7),
            (
                r#","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}"#,
                7,
            ),
            (
                r#","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":80,"protocol":"icmp"}]}"#,
                7,
            ),
            (r#","podCIDR":"nonsense""#, 6),
            (r#","mtu":"big""#, 6),
        ] {
            let err = conf(extra).unwrap_err();
            assert_eq!(err.cni_code(), code, "{extra}: {err}");
        }
        assert_eq!(NetConf::parse(b"{").unwrap_err().cni_code(), 6);
    }

    #[test]
    fn port_mapping_protocol_and_host_ip() {
        let c = conf(r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"UDP","hostIP":"0.0.0.0"}]}"#).unwrap();
        let pm = &c.runtime_config.port_mappings[0];
        assert_eq!(pm.proto(), "udp");
        assert_eq!(pm.host_ip(), None);
    }

    #[test]
    fn conflist_round_trips_into_netconf() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeNetwork {
            pod_cidr: "10.42.3.0/24".parse().unwrap(),
            pod_cidr_v6: Some("fd42:0:0:3::/64".parse().unwrap()),
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
            cluster_cidr_v6: Some("fd42::/56".parse().unwrap()),
            mtu: Some(1450),
            data_dir: dir.path().join("cni"),
            bridge: "cni0".into(),
        };
        let path = write_conflist(dir.path(), &node).unwrap();
        assert_eq!(path.file_name().unwrap(), CONFLIST_NAME);
        let list: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(list["cniVersion"], "1.0.0");
        // libcni hands each plugin its entry plus the list's name and version.
        let mut plugin = list["plugins"][0].clone();
        plugin["name"] = list["name"].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        let c = NetConf::parse(plugin.to_string().as_bytes()).unwrap();
        assert_eq!(c.pod_cidr, node.pod_cidr);
        assert_eq!(c.cluster_cidr, Some(node.cluster_cidr));
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.data_dir, node.data_dir);
        assert_eq!(c.gateway_v6(), Some("fd42:0:0:3::1".parse().unwrap()));
        assert_eq!(c.cluster_cidr_v6, node.cluster_cidr_v6);
    }
}

//! The JSON the plugin writes: results, errors and the VERSION answer (CNI spec 1.0.0, and the
//! 0.3/0.4 result shape for configs that ask for those versions).

use serde::{Deserialize, Serialize};

/// CNI versions this plugin speaks, oldest first (VERSION lists them; others are refused).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Whether `version` asks for the pre-1.0 result shape (IP entries carry `"version"`).
fn pre_1_0(version: &str) -> bool {
    version.starts_with("0.")
}

/// The result of ADD (and the `prevResult` CHECK verifies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// Version of this result's format (the config's `cniVersion`).
    pub cni_version: String,
    /// The bridge, the host veth and the container interface, in that order.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses given to the container.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes set in the container.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS settings (distro leaves DNS to the kubelet, so this is empty).
    #[serde(default)]
    pub dns: Dns,
}

/// One interface the plugin created or used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The netns path, for an interface inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address of the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"`, only in results for CNI versions before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length, e.g. `10.42.0.5/24`.
    pub address: String,
    /// The gateway for this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces` of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route in the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop; absent means the default gateway of the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS part of the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CniResult {
    /// Adapts the result to the shape of `version` (adds `"version":"4"` to IPs before 1.0.0).
    pub fn for_version(mut self, version: &str) -> Self {
        self.cni_version = version.to_string();
        let old = pre_1_0(version);
        for ip in &mut self.ips {
            ip.version = old.then(|| if ip.address.contains(':') { "6" } else { "4" }.to_string());
        }
        self
    }
}

/// The error JSON the spec asks for on stdout when a command fails.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply {
    /// Version of the format.
    pub cni_version: String,
    /// Spec error code (1-7, 11) or plugin-specific (100+, 999).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation (the causes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// The VERSION answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReply {
    /// Version of the format.
    pub cni_version: String,
    /// Every version the plugin accepts.
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_versions_get_ip_version_field() {
        let r = CniResult {
            cni_version: String::new(),
            interfaces: vec![],
            ips: vec![IpConfig {
                version: None,
                address: "10.0.0.2/24".into(),
                gateway: Some("10.0.0.1".into()),
                interface: Some(2),
            }],
            routes: vec![],
            dns: Dns::default(),
        };
        let v = serde_json::to_value(r.clone().for_version("0.4.0")).unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["cniVersion"], "0.4.0");
        let v = serde_json::to_value(r.for_version("1.0.0")).unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["dns"], serde_json::json!({}));
    }
}

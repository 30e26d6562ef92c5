//! The few kernel switches the pod network needs, written through /proc/sys.

use std::path::Path;

use crate::error::{Error, Result};

/// Sets a sysctl unless it already has the value (read first, so a read-only /proc/sys with
/// the right value already set is fine, as in a container that was set up for us).
fn ensure(path: &str, value: &str) -> Result<()> {
    let path = Path::new(path);
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == value => Ok(()),
        _ => std::fs::write(path, value).map_err(|e| Error::io("writing sysctl", path, e)),
    }
}

/// Turns on IPv4 forwarding, without which pod traffic never leaves the bridge.
pub(crate) fn enable_forwarding() -> Result<()> {
    ensure("/proc/sys/net/ipv4/ip_forward", "1")
}

/// Turns on IPv6 forwarding for a dual-stack node.
pub(crate) fn enable_forwarding_v6() -> Result<()> {
    ensure("/proc/sys/net/ipv6/conf/all/forwarding", "1")
}

/// Lets DNAT-ed packets from 127.0.0.1 leave through `bridge` (hostPort from localhost), as
/// the reference portmap plugin does.
pub(crate) fn enable_route_localnet(bridge: &str) -> Result<()> {
    ensure(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )
}

/// Makes the bridge hand IP packets to netfilter (`br_netfilter`'s `bridge-nf-call-*`), so
/// network policies see traffic between two pods on the same bridge, as kube-proxy and
/// every policy-enforcing CNI require.
pub(crate) fn enable_bridge_netfilter() -> Result<()> {
    ensure("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")?;
    ensure("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "1")
}

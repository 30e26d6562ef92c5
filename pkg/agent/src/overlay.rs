//! The overlay controller of a real node, as flannel's daemon with its Kubernetes subnet
//! manager: sets up this node's VXLAN device(s) ([`distro_network::overlay`]), publishes its
//! VTEP MAC and public address in its Node's annotations, then watches all Nodes and
//! converges routes, neighbour and FDB entries to every other node's pod range as nodes
//! come, go and change address.
//!
//! # Design
//! Level-triggered: any Node event marks the state dirty; one convergence (all peers, both
//! families) runs after a short quiet time ([`DEBOUNCE`]), and again every [`RESYNC`] so an
//! entry someone removed by hand comes back. Failures retry with capped, jittered backoff.
//! On shutdown the kernel state stays, so pods keep talking across an agent restart (as
//! flannel leaves its device).
//!
//! # Limits
//! - Without `--node-ip`, the node's address is followed by [`crate::address`]: a change
//!   re-creates the device and republishes, and peers follow.
//! - IPv6 across nodes needs an IPv6 `--node-ip`; without one the node has IPv6 pod addresses
//!   reachable only on the node.
//! - A node whose address is loopback (it reaches the server on 127.0.0.1) gets no overlay.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use distro_network::overlay::{self, annotations, link, Backend};
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::network::Settings;
use crate::Error;

/// Quiet time after a Node event before converging, so a burst of events costs one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Convergence without events (entries removed behind our back come back).
const RESYNC: Duration = Duration::from_secs(30);
/// Longest one convergence may take before it is abandoned and retried.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delays after a failed convergence: from 200 ms, doubling, capped.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// This node's overlay, set up and ready to follow its peers.
pub struct Overlay {
    netlink: link::Netlink,
    node: String,
    backend: Backend,
    /// Per family (`true`: IPv4) the VXLAN device index (`None` for host-gw).
    families: BTreeMap<bool, Option<u32>>,
    /// What this node publishes on its Node.
    published: BTreeMap<String, String>,
    /// The pods' MTU (the VXLAN device's), for the CNI config.
    pub mtu: Option<u32>,
    settings: Settings,
    pod_cidrs: Vec<IpNet>,
    /// The address towards the server, as last detected.
    detected: IpAddr,
}

/// The addresses peers use to reach this node: `--node-external-ip`, else `--node-ip`,
/// else `detected` (the address towards the server).
pub fn public_ips(settings: &Settings, detected: IpAddr) -> Vec<IpAddr> {
    if !settings.node_external_ips.is_empty() {
        settings.node_external_ips.clone()
    } else if !settings.node_ips.is_empty() {
        settings.node_ips.clone()
    } else {
        vec![detected]
    }
}

/// Sets up this node's side of the overlay for its `pod_cidrs`: the VXLAN device per family
/// that has a public address (nothing for host-gw). `None` when the backend is `none`.
/// `detected` is the node's address towards the server (used without `--node-ip`).
///
/// # Errors
/// [`Error::Overlay`] when the device cannot be created (no interface holds the node IP,
/// the kernel lacks VXLAN, …).
pub async fn setup(
    settings: &Settings,
    node: &str,
    detected: IpAddr,
    pod_cidrs: &[IpNet],
) -> Result<Option<Overlay>, Error> {
    let backend = match settings.backend {
        crate::network::Backend::None => return Ok(None),
        crate::network::Backend::Vxlan => Backend::Vxlan,
        crate::network::Backend::HostGw => Backend::HostGw,
    };
    let netlink = link::Netlink::open().map_err(Error::Overlay)?;
    let mut overlay = Overlay {
        netlink,
        node: node.to_string(),
        backend,
        families: BTreeMap::new(),
        published: BTreeMap::new(),
        mtu: None,
        settings: settings.clone(),
        pod_cidrs: pod_cidrs.to_vec(),
        detected,
    };
    overlay.configure().await?;
    Ok(Some(overlay))
}

impl Overlay {
    /// The node's own addresses: `--node-ip`, else the detected one.
    fn local_ips(&self) -> Vec<IpAddr> {
        if self.settings.node_ips.is_empty() {
            vec![self.detected]
        } else {
            self.settings.node_ips.clone()
        }
    }

    /// (Re)creates the devices for the current addresses and what to publish.
    async fn configure(&mut self) -> Result<(), Error> {
        let local_ips = self.local_ips();
        let mut families = BTreeMap::new();
        let mut macs = BTreeMap::new();
        let mut mtu: Option<u32> = None;
        for cidr in &self.pod_cidrs {
            let v4 = cidr.addr().is_ipv4();
            let Some(local) = local_ips.iter().find(|a| a.is_ipv4() == v4) else {
                tracing::warn!(%cidr, "no node address of this family: its pods reach only this node");
                continue;
            };
            if local.is_loopback() {
                // A node that reaches its server over loopback (one machine, as in
                // single-node tests) has no peers to tunnel to, and a device on `lo` would
                // be shared by every such node of the machine.
                tracing::info!(%cidr, %local, "node address is loopback: no overlay");
                continue;
            }
            match self.backend {
                Backend::HostGw => {
                    // A VXLAN device left from an earlier start with the vxlan backend.
                    let name = if v4 {
                        overlay::DEVICE_V4
                    } else {
                        overlay::DEVICE_V6
                    };
                    link::delete_link(self.netlink.handle(), name)
                        .await
                        .map_err(Error::Overlay)?;
                    families.insert(v4, None);
                }
                Backend::Vxlan => {
                    let h = self.netlink.handle();
                    let (uplink, uplink_mtu) =
                        link::uplink(h, *local).await.map_err(Error::Overlay)?;
                    let spec = link::VxlanSpec {
                        name: if v4 {
                            overlay::DEVICE_V4
                        } else {
                            overlay::DEVICE_V6
                        }
                        .to_string(),
                        local: *local,
                        uplink,
                        mtu: overlay::vxlan_mtu(uplink_mtu, !v4),
                        mac: overlay::vtep_mac(&self.node, v4),
                        vtep: IpNet::new(overlay::vtep_ip(cidr), if v4 { 32 } else { 128 })
                            .unwrap_or(*cidr),
                    };
                    let index = link::ensure_vxlan(h, &spec).await.map_err(Error::Overlay)?;
                    tracing::info!(device = %spec.name, local = %local, mtu = spec.mtu, "VXLAN device ready");
                    mtu = Some(mtu.map_or(spec.mtu, |m| m.min(spec.mtu)));
                    macs.insert(v4, spec.mac);
                    families.insert(v4, Some(index));
                }
            }
        }
        let public = public_ips(&self.settings, self.detected);
        self.published = annotations::publish(self.backend, &public, &macs);
        self.families = families;
        self.mtu = mtu;
        Ok(())
    }

    /// Takes the node's new address (when it is not given by flags): re-creates the devices
    /// and what to publish.
    async fn follow_address(&mut self, now: IpAddr) -> Result<(), Error> {
        if !self.settings.node_ips.is_empty() || now == self.detected {
            return Ok(());
        }
        self.detected = now;
        self.configure().await
    }

    /// Publishes this node's annotations, then follows the cluster's Nodes and the node's
    /// `address` ([`crate::address::follow`]) until `shutdown`.
    pub async fn run(
        mut self,
        client: distro_client::Client,
        mut address: watch::Receiver<IpAddr>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let api: Api<Node> = Api::all(client.clone());
        let (store, writer) = reflector::store();
        let mut events = reflector(
            writer,
            watcher(api.clone(), watcher::Config::default()).default_backoff(),
        )
        .boxed();
        let mut dirty = true;
        let mut failures = 0u32;
        let mut next = tokio::time::Instant::now() + RESYNC;
        let mut address_open = true;
        loop {
            let wake = if dirty {
                tokio::time::Instant::now() + DEBOUNCE
            } else {
                next
            };
            // Cancel safety: every branch only sets flags; the work runs outside select.
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                ev = events.next() => match ev {
                    Some(_) => { dirty = true; continue; }
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => {}
                changed = address.changed(), if address_open => {
                    if changed.is_err() {
                        address_open = false;
                        continue;
                    }
                    let now = *address.borrow_and_update();
                    if let Err(e) = self.follow_address(now).await {
                        tracing::warn!(error = %e, "moving the overlay to the node's new address failed");
                    }
                    dirty = true;
                    continue;
                }
            }
            let nodes = store.state();
            // Bounded, and abandoned on shutdown: a request on a connection whose local
            // address just went away (DHCP) hangs until dropped; the retry reconnects.
            let pass = tokio::time::timeout(CONVERGE_TIMEOUT, self.converge(&api, &nodes));
            let outcome = tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                r = pass => r.unwrap_or(Err(Error::OverlayTimeout(CONVERGE_TIMEOUT))),
            };
            match outcome {
                Ok(()) => {
                    failures = 0;
                    dirty = false;
                    next = tokio::time::Instant::now() + RESYNC;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = RETRY_BASE
                        .saturating_mul(1u32 << failures.min(6))
                        .min(RETRY_CAP)
                        .mul_f64(0.8 + rand::random::<f64>() * 0.4);
                    tracing::warn!(error = %e, retry_in = ?delay, "overlay convergence failed");
                    dirty = false;
                    next = tokio::time::Instant::now() + delay;
                }
            }
        }
    }

    async fn converge(&self, api: &Api<Node>, nodes: &[std::sync::Arc<Node>]) -> Result<(), Error> {
        // Our annotations first: peers need them, and a re-registered Node loses them.
        let me = nodes.iter().find(|n| n.name_any() == self.node);
        let current = me.map(|n| n.annotations().clone()).unwrap_or_default();
        let stale = self
            .published
            .iter()
            .any(|(k, v)| current.get(k) != Some(v));
        if me.is_some() && stale {
            let patch = json!({"metadata": {"annotations": self.published}});
            api.patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api(format!(
                    "publishing the overlay annotations of Node {}",
                    self.node
                )))?;
        }
        let peers: Vec<overlay::Peer> = nodes
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .map(|n| {
                annotations::peer(&n.name_any(), crate::network::pod_cidrs(n), n.annotations())
            })
            .collect();
        for (v4, device) in &self.families {
            let wanted = overlay::plan(&self.node, &peers, self.backend, *v4);
            link::converge(self.netlink.handle(), *device, *v4, &wanted)
                .await
                .map_err(Error::Overlay)?;
            tracing::debug!(ipv4 = v4, routes = wanted.routes.len(), "overlay converged");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ips_prefer_external_then_node_ip() {
        let detected: IpAddr = "10.0.0.5".parse().unwrap();
        let mut s = Settings::default();
        assert_eq!(public_ips(&s, detected), vec![detected]);
        s.node_ips = vec!["10.0.0.6".parse().unwrap()];
        assert_eq!(public_ips(&s, detected), s.node_ips);
        s.node_external_ips = vec!["192.0.2.1".parse().unwrap()];
        assert_eq!(public_ips(&s, detected), s.node_external_ips);
    }
}

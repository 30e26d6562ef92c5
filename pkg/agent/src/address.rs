//! The node's own address, followed while the agent runs.
//!
//! # Why
//! A homelab node usually gets its address from DHCP, and a lease can change it. Without
//! `--node-ip` the agent takes the source address of its route to the server, so it
//! re-detects that every [`CHECK`]. On a change the node must, without a restart: close the
//! API connections made from the old address (they hang; see [`distro_client::Connections`]),
//! re-point its VXLAN device and republish it to peers ([`crate::overlay`]), report the new
//! InternalIP ([`crate::status`]), serve its kubelet API on the new address with a
//! certificate naming it ([`serve_kubelet`]), and report it as its pods' `hostIP`
//! ([`publish_host_ips`]).

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How often the address is re-detected (a route lookup; no packet is sent).
const CHECK: Duration = Duration::from_secs(2);

/// Follows the node's address from `initial`: the receiver sees every change. With
/// `fixed` (`--node-ip` given) the address never changes and the task only waits for
/// `shutdown`.
pub fn follow(
    server: String,
    initial: IpAddr,
    fixed: bool,
    connections: distro_client::Connections,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<IpAddr>, impl Future<Output = ()>) {
    let (tx, rx) = watch::channel(initial);
    let task = async move {
        if fixed {
            let _ = shutdown.wait_for(|s| *s).await;
            return;
        }
        let mut tick = tokio::time::interval(CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let now = match crate::kubelet::node_ip(&server).await {
                Ok(ip) => ip,
                Err(e) => {
                    tracing::debug!(error = %e, "re-detecting the node's address failed");
                    continue;
                }
            };
            let old = *tx.borrow();
            if now == old {
                continue;
            }
            let closed = connections.close_all();
            tracing::info!(%old, new = %now, closed, "the node's address changed");
            tx.send_replace(now);
        }
    };
    (rx, task)
}

/// Publishes every change of the node's `address` to `host_ips` (the pod workers' hostIPs,
/// see `distro_kubelet::worker::Settings::host_ips`) until the follower ends.
pub async fn publish_host_ips(
    mut address: watch::Receiver<IpAddr>,
    host_ips: watch::Sender<Vec<String>>,
) {
    while address.changed().await.is_ok() {
        let ip = address.borrow_and_update().to_string();
        host_ips.send_replace(vec![ip]);
    }
}

/// Serves the kubelet API from `listener` and, on every change of `address`, again from a
/// new listener on the same port at the new address, with a serving certificate for it.
/// Ends with `shutdown`.
pub async fn serve_kubelet(
    mut listener: crate::kubelet::Listener,
    mut address: watch::Receiver<IpAddr>,
    client: distro_client::Client,
    dir: std::path::PathBuf,
    ca_pem: String,
    api: Arc<distro_kubelet::server::KubeletApi>,
    mut shutdown: watch::Receiver<bool>,
) {
    let port = listener.addr.port();
    loop {
        // This generation's server stops when the address changes or the agent stops.
        let (stop_tx, stop_rx) = watch::channel(false);
        let serving =
            distro_kubelet::server::serve(listener.listener, listener.tls, api.clone(), stop_rx);
        tokio::pin!(serving);
        let moved = tokio::select! {
            () = &mut serving => return,
            _ = shutdown.wait_for(|s| *s) => None,
            changed = address.changed() => changed.ok().map(|()| *address.borrow_and_update()),
        };
        let Some(ip) = moved else {
            // Stopping (a closed follower means the agent is stopping too).
            let _ = shutdown.wait_for(|s| *s).await;
            let _ = stop_tx.send(true);
            serving.await;
            return;
        };
        let _ = stop_tx.send(true);
        serving.await;
        listener = loop {
            let node = listener.node.clone();
            match crate::kubelet::Listener::bind(&client, &dir, &node, ip, port, &ca_pem).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(error = %e, %ip, "serving the kubelet API on the new address failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(CHECK) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        };
        tracing::info!(addr = %listener.addr, "kubelet API moved to the node's new address");
    }
}

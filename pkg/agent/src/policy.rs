//! NetworkPolicy enforcement for the containerd node's pods ([`distro_network::policy`]),
//! started beside the service proxy.

use tokio::sync::watch;

use crate::Config;

/// The node's policy settings. Its nftables table is `distro-policy`, or
/// `distro-policy-<bridge>` with a non-default `--cni-bridge`, so several nodes sharing one
/// kernel (tests) each own their table and filter only their own bridge, as the service
/// proxy's tables do.
pub fn config(config: &Config) -> distro_network::policy::Config {
    let table = match config.cni_bridge.as_str() {
        "cni0" => "distro-policy".to_string(),
        bridge => format!("distro-policy-{bridge}"),
    };
    distro_network::policy::Config {
        node_name: config.node_name.clone(),
        settings: distro_network::policy::Settings {
            table,
            bridge: config.cni_bridge.clone(),
        },
    }
}

/// Enforces policies until shutdown. A failure is logged and leaves the rest of the node
/// running (pods keep their network; only isolation is not updated), as with the proxy.
pub async fn run(config: &Config, client: distro_client::Client, shutdown: watch::Receiver<bool>) {
    if let Err(e) = distro_network::policy::run(client, self::config(config), shutdown).await {
        tracing::warn!(error = %e, "network policy enforcement stopped");
    }
}

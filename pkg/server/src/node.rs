//! The server's own node: as in k3s, `distro server` is also an agent unless
//! `--disable-agent`. Once the API server serves, the agent (the real kubelet over
//! containerd, [`distro_agent`]) joins it through the ordinary join path — this server's
//! URL on loopback and its own join token, so the CA is pinned exactly as for any agent — and
//! the server marks the node with k3s's role labels.
//!
//! The role labels are set by the server with its admin identity, as k3s does: the
//! NodeRestriction admission forbids a kubelet to set `node-role.kubernetes.io/*` itself.
//!
//! # Limits
//! - The node's InternalIP is the address towards the server's loopback URL (127.0.0.1), so
//!   other machines reach this node only once `--node-ip` exists.

use std::collections::BTreeMap;
use std::time::Duration;

use distro_pki::JoinToken;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The labels k3s puts on a server's node (no etcd here, so not `etcd=true`).
pub(crate) const ROLE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Longest wait between looks for our Node while it registers.
const LABEL_RETRY_MAX: Duration = Duration::from_secs(2);

/// Starts the agent against this server (`url`, `token`); on failure it turns `stop` true so
/// the whole server stops with the node's error, as a k3s server does. The task ends once
/// the agent stopped (after `shutdown`), with its result.
pub(crate) fn start(
    mut agent: distro_agent::Config,
    url: &str,
    token: &JoinToken,
    admin: distro_client::Client,
    shutdown: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
) -> JoinHandle<Result<(), distro_agent::Error>> {
    agent.server = url.to_string();
    agent.token = token.clone();
    let name = agent.node_name.clone();
    let labels = tokio::spawn(label_node(admin, name, shutdown.clone()));
    tokio::spawn(async move {
        // The real node only: a server's node runs containers (the fake runtime is a tool
        // for `distro agent`).
        let runtime = match agent.containerd.clone() {
            Some(runtime) => Ok(runtime),
            None => distro_cri::runtime::RuntimeConfig::new(agent.data_dir.clone()),
        };
        let result = match runtime {
            Ok(runtime) => distro_agent::containerd::run(agent, runtime, shutdown).await,
            Err(e) => Err(distro_agent::Error::Runtime(e)),
        };
        labels.abort();
        if let Err(e) = &result {
            tracing::error!(error = %e, "this server's node failed; stopping");
            let _ = stop.send(true);
        }
        result
    })
}

/// Puts [`ROLE_LABELS`] on node `name` once it is registered (retrying with capped backoff
/// until it is), with the server's admin client.
async fn label_node(
    admin: distro_client::Client,
    name: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(admin);
    let labels: BTreeMap<&str, &str> = ROLE_LABELS.iter().map(|l| (*l, "true")).collect();
    let patch = json!({"metadata": {"labels": labels}});
    let mut wait = Duration::from_millis(100);
    loop {
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, "node labelled as control plane");
                return;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::debug!(node = %name, error = %e, "labelling the node; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        wait = (wait * 2).min(LABEL_RETRY_MAX);
    }
}

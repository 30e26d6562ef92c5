//! The enforcement loop: informers → [`crate::resync`] → compute → render → one `nft -f`
//! transaction.

use distro_client::Informers;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tokio::sync::watch;

use super::model::{self, State};
use super::render::{self, Settings};
use crate::error::Error;
use crate::resync::{Schedule, Wake};

/// What one node's policy enforcement needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name: pods with this `nodeName` are the ones it enforces for.
    pub node_name: String,
    /// The nftables table (family `inet`) and the node's pod bridge.
    pub settings: Settings,
}

/// Runs policy enforcement until `shutdown` turns true. Rules stay in place when it stops
/// (as Calico's and kube-router's), so isolation holds across an agent restart; the next
/// start replaces the table.
///
/// Failures to apply are logged and retried with backoff; they do not stop the node.
///
/// # Errors
/// [`Error::PolicyWatch`] if a watch stops before shutdown.
pub async fn run(
    client: distro_client::Client,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    if let Err(e) = tokio::task::spawn_blocking(crate::cni::sysctl::enable_bridge_netfilter)
        .await
        .unwrap_or(Ok(()))
    {
        // Without it, same-node pod-to-pod traffic bypasses the forward hook.
        tracing::warn!(error = %e, "bridged pod traffic is not filtered by network policies");
    }
    let informers = Informers::new(client);
    let pods = informers.get::<Pod>();
    let namespaces = informers.get::<Namespace>();
    let policies = informers.get::<NetworkPolicy>();
    let changes = futures::stream::select_all([
        pods.subscribe().map(|_| ()).boxed(),
        namespaces.subscribe().map(|_| ()).boxed(),
        policies.subscribe().map(|_| ()).boxed(),
    ]);
    let result = async {
        tokio::select! {
            r = informers.wait_synced() => r.map_err(|_| Error::PolicyWatch)?,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        tracing::info!(table = %config.settings.table, "network policy enforcement started");
        let mut applied: Option<String> = None;
        let mut schedule = Schedule::new(changes);
        loop {
            let wake = schedule.wait(&mut shutdown).await;
            match wake {
                Wake::Stop => return Ok(()),
                Wake::Closed => return Err(Error::PolicyWatch),
                Wake::Changed | Wake::Due => {}
            }
            let (pods, namespaces, policies) = (
                pods.store().state(),
                namespaces.store().state(),
                policies.store().state(),
            );
            let state = State {
                pods: &pods,
                namespaces: &namespaces,
                policies: &policies,
            };
            let access = model::compute(&state, &config.node_name);
            let script = render::render(&config.settings, &access);
            // A change that leaves the rules as they are costs nothing; the periodic resync
            // writes them anyway, restoring a table someone changed or deleted.
            if wake == Wake::Changed && applied.as_ref() == Some(&script) {
                continue;
            }
            let to_apply = script.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                crate::cni::nft::apply("applying network policy rules", &to_apply)
            })
            .await;
            match outcome {
                Ok(Ok(())) => {
                    tracing::debug!(pods = access.len(), "network policy rules applied");
                    applied = Some(script);
                    schedule.applied();
                }
                Ok(Err(e)) => {
                    let retry_in = schedule.failed();
                    tracing::warn!(error = %e, ?retry_in, "applying network policy rules failed");
                    applied = None;
                }
                Err(e) => {
                    let retry_in = schedule.failed();
                    tracing::warn!(error = %e, ?retry_in, "network policy rule task failed");
                    applied = None;
                }
            }
        }
    }
    .await;
    informers.shutdown().await;
    result
}

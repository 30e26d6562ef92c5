//! The enforcement loop: informers → debounce → compute → render → one `nft -f` transaction.

use std::time::Duration;

use distro_client::Informers;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tokio::sync::watch;
use tokio::time::Instant;

use super::model::{self, State};
use super::render::{self, Settings};
use crate::error::Error;

/// A burst of changes (a Deployment scaling) is applied once: the sync waits until no change
/// came for this long...
const QUIET: Duration = Duration::from_millis(30);
/// ...but never longer than this after the first change, so a change is enforced well
/// within a second even under a constant stream of others.
const MAX_DELAY: Duration = Duration::from_millis(200);
/// Re-applied this often even without a change: a safety net against a table changed or
/// deleted by hand (a whole-table replacement of a few hundred lines is cheap).
const RESYNC: Duration = Duration::from_secs(60);
/// Retry delays after a failed apply (doubling, capped).
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

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
    let mut changes = futures::stream::select_all([
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
        let mut retry = RETRY_MIN;
        let mut next_sync = Instant::now();
        loop {
            let first = tokio::select! {
                // Cancel safety: `changes.next()` loses nothing when dropped (the informers
                // keep buffering), and a lost wake-up only means the stores are re-read.
                c = changes.next() => match c {
                    Some(()) => Some(Instant::now()),
                    None => return Err(Error::PolicyWatch),
                },
                _ = tokio::time::sleep_until(next_sync) => None,
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            };
            if let Some(first) = first {
                let cap = first + MAX_DELAY;
                loop {
                    let until = (Instant::now() + QUIET).min(cap);
                    tokio::select! {
                        c = changes.next() => if c.is_none() { return Err(Error::PolicyWatch) },
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
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
            if first.is_some() && applied.as_ref() == Some(&script) {
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
                    retry = RETRY_MIN;
                    next_sync = Instant::now() + RESYNC;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "applying network policy rules failed");
                    applied = None;
                    next_sync = Instant::now() + retry;
                    retry = (retry * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "network policy rule task failed");
                    applied = None;
                    next_sync = Instant::now() + retry;
                }
            }
        }
    }
    .await;
    informers.shutdown().await;
    result
}

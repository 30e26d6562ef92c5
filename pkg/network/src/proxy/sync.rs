//! The proxy's loop: informers → debounce → render → one `nft -f` transaction.

use std::sync::Arc;
use std::time::Duration;

use distro_client::Informers;
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::watch;
use tokio::time::Instant;

use super::model::{self, Family};
use super::render::{self, Settings, Table};
use crate::error::Error;

/// A burst of changes (a Deployment scaling, a namespace deleted) is applied once: the
/// sync waits until no change came for this long...
const QUIET: Duration = Duration::from_millis(30);
/// ...but never longer than this after the first change, so a change takes effect well
/// within a second even under a constant stream of others.
const MAX_DELAY: Duration = Duration::from_millis(200);
/// Re-rendered this often even without a change (a safety net, as upstream's periodic sync);
/// only a difference from the last applied rules reaches the kernel.
const RESYNC: Duration = Duration::from_secs(60);
/// Retry delays after a failed apply (doubling, capped).
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The families programmed, in this order: both always, as upstream's dual-stack proxier
/// (an empty table costs nothing).
const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// What one node's proxy needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    /// The nftables table name, one per family (`ip` and `ip6`). Several nodes sharing one
    /// kernel (tests) must use different names.
    pub table: String,
    /// The cluster's pod ranges (masquerade decisions, see [`Settings::cluster_cidrs`]).
    pub cluster_cidrs: Vec<IpNet>,
}

/// Renders both families' tables from the informers' current state.
fn render_all(
    config: &Config,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Vec<Table> {
    let ports = model::service_ports(services, slices, &config.node_name);
    let settings = Settings {
        table: config.table.clone(),
        cluster_cidrs: config.cluster_cidrs.clone(),
    };
    FAMILIES
        .into_iter()
        .map(|f| render::render(&settings, f, &ports))
        .collect()
}

/// Applies `next` over `previous` (`None`: unknown, so a clean rebuild) in one `nft -f`
/// transaction for `next`'s family.
///
/// # Errors
/// [`Error::Nft`] if nft is missing or refuses the change; nothing is then changed.
pub fn apply(table: &str, previous: Option<&Table>, next: &Table) -> Result<(), Error> {
    crate::cni::nft::apply(
        "applying service proxy rules",
        &render::transaction(table, previous, next),
    )
}

/// Applies each family on its own, so a kernel without IPv6 still gets its IPv4 rules;
/// returns what is now in the kernel per family (`None` where it failed, so the next sync
/// rebuilds that table) and the first error.
fn apply_all(
    table: &str,
    previous: Vec<Option<Table>>,
    next: Vec<Table>,
) -> (Vec<Option<Table>>, Option<Error>) {
    let mut first_error = None;
    let applied = previous
        .into_iter()
        .zip(next)
        .map(|(prev, next)| match apply(table, prev.as_ref(), &next) {
            Ok(()) => Some(next),
            Err(e) => {
                first_error.get_or_insert(e);
                None
            }
        })
        .collect();
    (applied, first_error)
}

/// Runs the proxy until `shutdown` turns true. Rules stay in place when it stops (as
/// upstream's), so services keep working across an agent restart; the next start rebuilds
/// the tables from scratch.
///
/// Failures to apply are logged and retried with backoff; they do not stop the node.
///
/// # Errors
/// [`Error::Watch`] if the Service or EndpointSlice watch stops before shutdown.
pub async fn run(
    client: distro_client::Client,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let informers = Informers::new(client);
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    let mut changes = futures::stream::select(
        services.subscribe().map(|_| ()).boxed(),
        slices.subscribe().map(|_| ()).boxed(),
    );
    let result = async {
        tokio::select! {
            r = informers.wait_synced() => r.map_err(|_| Error::Watch)?,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        tracing::info!(table = %config.table, "service proxy started");
        // What the kernel holds, per family of [`FAMILIES`] (`None`: unknown).
        let mut applied: Vec<Option<Table>> = vec![None; FAMILIES.len()];
        let mut retry = RETRY_MIN;
        let mut next_sync = Instant::now();
        loop {
            // Wait for the first change, a due retry/resync, or shutdown.
            let first = tokio::select! {
                // Cancel safety: `changes.next()` loses nothing when dropped (the informer
                // keeps buffering), and a lost wake-up only means the store is re-read.
                c = changes.next() => match c {
                    Some(()) => Some(Instant::now()),
                    None => return Err(Error::Watch),
                },
                _ = tokio::time::sleep_until(next_sync) => None,
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            };
            if let Some(first) = first {
                // Coalesce a burst: until quiet for QUIET, at most MAX_DELAY after the first.
                let cap = first + MAX_DELAY;
                loop {
                    let until = (Instant::now() + QUIET).min(cap);
                    tokio::select! {
                        c = changes.next() => if c.is_none() { return Err(Error::Watch) },
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
            }
            let started = Instant::now();
            let next = render_all(&config, &services.store().state(), &slices.store().state());
            let unchanged = applied
                .iter()
                .zip(&next)
                .all(|(a, n)| a.as_ref() == Some(n));
            if first.is_some() && unchanged {
                continue; // e.g. a status-only Service update
            }
            let table = config.table.clone();
            let previous = std::mem::replace(&mut applied, vec![None; FAMILIES.len()]);
            let outcome =
                tokio::task::spawn_blocking(move || apply_all(&table, previous, next)).await;
            match outcome {
                Ok((now, None)) => {
                    tracing::debug!(
                        chains = now.iter().flatten().map(|t| t.chains.len()).sum::<usize>(),
                        took_ms = started.elapsed().as_millis() as u64,
                        "service rules applied"
                    );
                    applied = now;
                    retry = RETRY_MIN;
                    next_sync = Instant::now() + RESYNC;
                }
                Ok((now, Some(e))) => {
                    // A failed family stays None: the next attempt rebuilds its table.
                    tracing::warn!(error = %e, retry_in = ?retry, "applying service rules failed");
                    applied = now;
                    next_sync = Instant::now() + retry;
                    retry = (retry * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "service rule task failed");
                    next_sync = Instant::now() + retry;
                }
            }
        }
    }
    .await;
    informers.shutdown().await;
    result
}

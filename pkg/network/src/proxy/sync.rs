//! The proxy's loop: informers → [`crate::resync`] → render → one `nft -f` transaction.

use std::sync::Arc;

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
use crate::resync::{Schedule, Wake};

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
    let changes = futures::stream::select(
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
        let mut schedule = Schedule::new(changes);
        loop {
            let wake = schedule.wait(&mut shutdown).await;
            match wake {
                Wake::Stop => return Ok(()),
                Wake::Closed => return Err(Error::Watch),
                Wake::Changed | Wake::Due => {}
            }
            let started = Instant::now();
            let next = render_all(&config, &services.store().state(), &slices.store().state());
            let unchanged = applied
                .iter()
                .zip(&next)
                .all(|(a, n)| a.as_ref() == Some(n));
            if wake == Wake::Changed && unchanged {
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
                    schedule.applied();
                }
                Ok((now, Some(e))) => {
                    // A failed family stays None: the next attempt rebuilds its table.
                    let retry_in = schedule.failed();
                    tracing::warn!(error = %e, ?retry_in, "applying service rules failed");
                    applied = now;
                }
                Err(e) => {
                    let retry_in = schedule.failed();
                    tracing::warn!(error = %e, ?retry_in, "service rule task failed");
                }
            }
        }
    }
    .await;
    informers.shutdown().await;
    result
}

//! The cluster DNS server: every node answers `cluster.local` itself, from Services and
//! EndpointSlices it watches, and forwards everything else to the node's upstream resolvers
//! with a cache, as CoreDNS does with k3s's Corefile (`kubernetes cluster.local in-addr.arpa
//! ip6.arpa { pods insecure; fallthrough in-addr.arpa ip6.arpa }`, `forward .
//! /etc/resolv.conf`, `cache 30`).
//!
//! # Design
//! - [`records`]: the watched objects in memory as one immutable [`records::Snapshot`],
//!   rebuilt on every change (one watch per kind through `distro_client`'s informers) and
//!   swapped in through a `watch` channel, so a query never waits for an update.
//! - [`answer`]: the pure answer logic (names, NXDOMAIN vs NODATA, SRV, PTR, SOA).
//! - [`forward`]: upstream resolvers from resolv.conf, with hickory-resolver's cache capped
//!   at 30 s.
//! - [`server`]: the hickory-server request handler, on UDP and TCP.
//! - [`iface`]: the cluster DNS address on a dummy link (`distro-dns`) of every node, as
//!   NodeLocal DNSCache does, so pods reach their own node's server without the service
//!   proxy. The `kube-dns` Service in `kube-system` (created by the server) carries the
//!   same address and `service.kubernetes.io/service-proxy-name`, so proxies leave it alone.
//!
//! # Limits
//! - Namespaces are watched to tell NODATA from NXDOMAIN as CoreDNS does; the node's
//!   identity needs `list`/`watch` on them (bundled RBAC grants it to `system:nodes`).
//! - See [`answer`] for the record types answered differently from CoreDNS, and
//!   [`forward`] for what forwarding does not keep.
//! - No metrics, health or readiness endpoints (CoreDNS's `prometheus`, `health`, `ready`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use hickory_proto::rr::Name;
use hickory_server::ServerFuture;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::watch;

pub mod answer;
pub mod forward;
pub mod iface;
pub mod records;
pub mod server;

#[cfg(test)]
mod tests;

/// The default name of the dummy link holding the cluster DNS address.
pub const DEFAULT_INTERFACE: &str = "distro-dns";
/// The resolv.conf read when none is named.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long an idle TCP client may hold a connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster domain is not a domain name.
    #[error("--cluster-domain {domain:?} is not a domain name: {source}")]
    Domain {
        /// The value given.
        domain: String,
        /// Cause.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// A netlink request was refused.
    #[error("{step}: {source}")]
    Netlink {
        /// What we were doing.
        step: String,
        /// Cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// The dummy link is not usable.
    #[error("cluster DNS link: {0}")]
    Interface(String),
    /// A socket or file operation failed.
    #[error("{step}: {source}")]
    Io {
        /// What we were doing.
        step: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The watches stopped before they listed everything.
    #[error("watching services for DNS: {0}")]
    Watch(#[source] distro_client::Stopped),
}

/// Settings of the node's DNS server.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster DNS addresses served (`--cluster-dns`, default 10.43.0.10).
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (`--cluster-domain`, default `cluster.local`).
    pub cluster_domain: String,
    /// Upstream resolvers' file (`--resolv-conf`); `None`: `/etc/resolv.conf` without its
    /// loopback entries.
    pub resolv_conf: Option<PathBuf>,
    /// The dummy link that holds the addresses (`distro-dns`).
    pub interface: String,
    /// The port served (53).
    pub port: u16,
    /// Whether this node serves DNS at all; off, pods still get the cluster DNS address
    /// (k3s's `--disable coredns` leaves the kubelet's `--cluster-dns` as it is).
    pub enabled: bool,
}

impl Default for Config {
    /// k3s's defaults.
    fn default() -> Self {
        Config {
            cluster_dns: vec![IpAddr::from([10, 43, 0, 10])],
            cluster_domain: "cluster.local".into(),
            resolv_conf: None,
            interface: DEFAULT_INTERFACE.into(),
            port: 53,
            enabled: true,
        }
    }
}

/// The cluster domain as a lowercase FQDN.
///
/// # Errors
/// [`Error::Domain`] for a value that is not a domain name.
pub fn zone(domain: &str) -> Result<Name, Error> {
    let mut name =
        Name::from_ascii(domain.trim_end_matches('.')).map_err(|source| Error::Domain {
            domain: domain.into(),
            source,
        })?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Serves DNS on the cluster DNS addresses until `shutdown` turns true, then removes the
/// dummy link.
///
/// # Errors
/// A bad domain, a resolv.conf that cannot be read, the link or the sockets that cannot be
/// set up (CAP_NET_ADMIN, port 53 taken).
pub async fn run(
    config: Config,
    client: kube::Client,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let zone = zone(&config.cluster_domain)?;
    let (resolv_conf, explicit) = match &config.resolv_conf {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_RESOLV_CONF), false),
    };
    let (forwarder, upstreams) =
        forward::Forwarder::from_resolv_conf(&resolv_conf, explicit, &config.cluster_dns)
            .await
            .map_err(|source| Error::Io {
                step: format!("reading {}", resolv_conf.display()),
                source,
            })?;
    if upstreams.is_empty() {
        tracing::warn!(path = %resolv_conf.display(), "no usable upstream nameservers; names outside the cluster will not resolve");
    }

    let informers = distro_client::Informers::new(client);
    let (tx, rx) = watch::channel(Arc::new(records::Snapshot::empty(
        zone.clone(),
        config.cluster_dns.clone(),
    )));
    let updater = tokio::spawn(keep_snapshot(
        informers.clone(),
        zone,
        config.cluster_dns.clone(),
        tx,
    ));

    let served = serve(&config, rx, forwarder, &mut shutdown).await;
    updater.abort();
    informers.shutdown().await;
    let removed = iface::remove(&config.interface).await;
    tracing::info!("cluster DNS stopped");
    served?;
    removed
}

async fn serve(
    config: &Config,
    rx: watch::Receiver<Arc<records::Snapshot>>,
    forwarder: forward::Forwarder,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    iface::ensure(&config.interface, &config.cluster_dns).await?;
    let mut server = ServerFuture::new(server::Handler::new(rx, forwarder));
    for ip in &config.cluster_dns {
        let addr = SocketAddr::new(*ip, config.port);
        let io = |step: &str| {
            let step = format!("{step} {addr}");
            move |source| Error::Io { step, source }
        };
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(io("binding UDP"))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(io("binding TCP"))?;
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT);
    }
    tracing::info!(addresses = ?config.cluster_dns, interface = %config.interface, "cluster DNS serving");
    let _ = shutdown.wait_for(|s| *s).await;
    if let Err(e) = server.shutdown_gracefully().await {
        tracing::debug!(error = %e, "DNS server shutdown");
    }
    Ok(())
}

/// Rebuilds the snapshot from the caches on every change: first once all three watches
/// listed everything (until then name errors are SERVFAIL), then per batch of changes.
async fn keep_snapshot(
    informers: distro_client::Informers,
    zone: Name,
    dns_ips: Vec<IpAddr>,
    tx: watch::Sender<Arc<records::Snapshot>>,
) -> Result<(), Error> {
    let namespaces = informers.get::<Namespace>();
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    let changes = futures::stream::select(
        futures::stream::select(
            namespaces.subscribe().map(|_| ()),
            services.subscribe().map(|_| ()),
        ),
        slices.subscribe().map(|_| ()),
    );
    let mut changes = std::pin::pin!(changes);
    informers.wait_synced().await.map_err(Error::Watch)?;
    let build = || {
        let (n, s, e) = (
            namespaces.store().state(),
            services.store().state(),
            slices.store().state(),
        );
        let mut snap = records::Snapshot::build(
            zone.clone(),
            dns_ips.clone(),
            n.iter().map(Arc::as_ref),
            s.iter().map(Arc::as_ref),
            e.iter().map(Arc::as_ref),
        );
        snap.serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        Arc::new(snap)
    };
    tx.send_replace(build());
    tracing::info!("cluster DNS records synced");
    while changes.next().await.is_some() {
        // Coalesce what is already queued into one rebuild.
        while let Some(Some(())) = changes.next().now_or_never() {}
        tx.send_replace(build());
    }
    Ok(())
}

//! `distro agent`: joins this machine (or, with the fake runtime, simulated machines) to a
//! cluster and runs its node(s).
//!
//! # What it owns
//! - [`join`]: trusting the server through the token's CA hash, and the node's client
//!   certificate through the CSR API (stored under `<data-dir>/agent/`, reused on restart).
//! - [`node`]: the Node object (labels, taints, capacity, conditions) and its Lease in
//!   `kube-node-lease`, renewed every 10 s.
//! - [`fake`]: the simulated runtime: pods bound to our nodes are reported Running and Ready
//!   without starting anything, completed after a while when their restart policy allows,
//!   and removed when deleted. It is a test tool and says so on every Node it serves.
//! - [`kubelet`] and [`usage`]: each node's kubelet API (its own port, a serving certificate
//!   from the cluster CA) reporting the usage its pods' annotations declare, for metrics.
//! - [`status`] and [`eviction`] (the real node): the Node's status kept current (conditions,
//!   nodeInfo, capacity/allocatable, images) and upstream's node-pressure eviction.
//!
//! # Design
//! Each node authenticates as itself (`system:node:<name>` in `system:nodes`), so N simulated
//! nodes in one process hold N certificates and N clients; they share one pod watch, so 100
//! nodes cost one watch, not 100.
//!
//! # Limits
//! - `--runtime containerd` ([`containerd`]) serves one node; its pods reach other nodes'
//!   pods through the overlay ([`overlay`]: VXLAN or host-gw, [`network`] settings).
//! - Simulated and real nodes alike wait for their pod range from the server's node IPAM
//!   controller (`spec.podCIDRs`); simulated nodes only report addresses from it. As
//!   upstream, the default /16 with /24 node masks holds 256 nodes: more simulated nodes
//!   need `--node-cidr-mask-size-ipv4` on the server (the others get `CIDRNotAvailable`).
//! - Credentials are not rotated while running; a restart renews them when a third of their
//!   lifetime is left.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use distro_pki::JoinToken;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio::sync::watch;

pub mod address;
pub mod clusterconfig;
pub mod containerd;
pub mod eviction;
pub mod fake;
pub mod join;
pub mod kubelet;
pub mod network;
pub mod node;
pub mod overlay;
pub mod policy;
pub mod status;
pub mod usage;

/// How many nodes join or register at once: enough to start 100 simulated nodes in a few
/// seconds without queueing hundreds of requests at the server.
const STARTUP_CONCURRENCY: usize = 16;

/// Errors of `distro agent`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server's CA could not be fetched.
    #[error("fetching the cluster CA from {url}/cacerts: {source}")]
    FetchCa {
        /// The `--join` URL.
        url: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The server serves another CA than the token pins: the wrong server, or a forged one.
    #[error("the server's CA does not match the token's hash; check --token / --join (the token pins {expected}, {url} serves a CA hashing to {actual})")]
    CaMismatch {
        /// The `--join` URL.
        url: String,
        /// The token's hash.
        expected: String,
        /// The served CA's hash.
        actual: String,
    },
    /// An API request failed.
    #[error("{step}: {source}")]
    Api {
        /// What we were doing.
        step: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A client could not be built.
    #[error("building an API client: {0}")]
    Client(#[source] distro_client::Error),
    /// Key or CSR generation failed.
    #[error("preparing the node's certificate request: {0}")]
    Pki(#[source] distro_pki::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The server refused to issue the node's certificate.
    #[error("the certificate request {name} was {how}: {message}")]
    CsrRefused {
        /// The CertificateSigningRequest.
        name: String,
        /// "denied" or "not signed".
        how: &'static str,
        /// The condition's message.
        message: String,
    },
    /// Nobody signed the node's certificate in time.
    #[error("the certificate request {name} was not signed in time; is the server's certificate controller running? (kubectl get csr {name})")]
    CsrTimeout {
        /// The CertificateSigningRequest.
        name: String,
    },
    /// containerd could not be set up, started or reached.
    #[error("container runtime: {0}")]
    Runtime(#[source] distro_cri::Error),
    /// A blocking task panicked or was cancelled.
    #[error("agent task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The kubelet API could not be set up (address, port, certificate).
    #[error("serving the kubelet API: {0}")]
    KubeletApi(String),
    /// The server did not accept the join token (HTTP 401).
    #[error("the server refused the join token (wrong, deleted or expired): {step}: {source}; use the server's token (<data-dir>/server/token) or make one with `distro token create` on the server")]
    TokenRefused {
        /// What we were doing.
        step: String,
        /// The 401 answer.
        #[source]
        source: kube::Error,
    },
    /// The pod workers failed.
    #[error("kubelet: {0}")]
    Kubelet(#[source] distro_kubelet::worker::Error),
    // --- overlay ---
    /// Waiting for the node's pod CIDR failed.
    #[error("waiting for the pod CIDR of Node {node}: {source}")]
    PodCidr {
        /// The node.
        node: String,
        /// Cause.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// The overlay to other nodes could not be set up.
    #[error("pod network overlay: {0}")]
    Overlay(#[source] distro_network::Error),
    /// One overlay convergence took too long (it is retried).
    #[error("pod network overlay: convergence took longer than {0:?}")]
    OverlayTimeout(std::time::Duration),
}

impl Error {
    fn api(step: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let step = step.into();
        move |source| match source {
            kube::Error::Api(ref s) if s.code == 401 => Error::TokenRefused { step, source },
            source => Error::Api { step, source },
        }
    }
}

/// Everything `distro agent` can be told, parsed and validated by the CLI.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server's URL (`--join`).
    pub server: String,
    /// The join token (`--token`).
    pub token: JoinToken,
    /// Root of the agent's state (`<data-dir>/agent/...`).
    pub data_dir: PathBuf,
    /// The node's name; with [`Config::fake_nodes`], the prefix of the nodes' names.
    pub node_name: String,
    /// Extra node labels (`--node-label`).
    pub labels: BTreeMap<String, String>,
    /// Node taints (`--node-taint`), set at registration.
    pub taints: Vec<Taint>,
    /// What a simulated node reports as capacity (`--fake-capacity`).
    pub fake_capacity: BTreeMap<String, Quantity>,
    /// Serve this many simulated nodes, named `<node-name>-0` … (`--fake-nodes`); `None`:
    /// one node named `<node-name>`.
    pub fake_nodes: Option<u32>,
    /// `--runtime containerd`: the supervised containerd's settings; `None` for the fake
    /// runtime.
    pub containerd: Option<distro_cri::runtime::RuntimeConfig>,
    /// Port of the kubelet API (`--kubelet-port`); with [`Config::fake_nodes`] every node
    /// listens on a free port instead, so N nodes on one address do not collide.
    pub kubelet_port: u16,
    /// The pods' bridge (`--cni-bridge`; `cni0` unless several nodes share one kernel).
    pub cni_bridge: String,
    /// Image garbage collection on a containerd node (`--image-gc-*`).
    pub image_gc: distro_kubelet::images::gc::Policy,
    /// Hard eviction thresholds of the real node (`--eviction-hard`).
    pub eviction_hard: eviction::Thresholds,
    /// How long a pressure condition stays after its thresholds are no longer met
    /// (`--eviction-pressure-transition-period`).
    pub eviction_pressure_transition_period: std::time::Duration,
    /// Container log rotation (`--container-log-max-size`, `--container-log-max-files`).
    pub container_logs: distro_kubelet::log_rotation::Policy,
    /// Soft eviction thresholds with their grace periods (`--eviction-soft`,
    /// `--eviction-soft-grace-period`; minimum reclaim on both sets).
    pub eviction_soft: eviction::Thresholds,
    /// The most a soft eviction gives a pod to stop (`--eviction-max-pod-grace-period`).
    pub eviction_max_pod_grace_period: i64,
    /// Cluster ranges, overlay backend and node addresses (`--cluster-cidr`,
    /// `--flannel-backend`, `--node-ip`, `--node-external-ip`).
    pub network: network::Settings,
    /// The node's cluster DNS server, and what its pods' resolv.conf names
    /// (`--cluster-dns`, `--cluster-domain`, `--resolv-conf`).
    pub dns: distro_dns::Config,
    /// Which of `--cluster-cidr`, `--cluster-dns`, `--cluster-domain` were given: the
    /// others are taken from the server after joining ([`clusterconfig`]).
    pub cluster_flags: clusterconfig::Given,
}

impl Config {
    /// The names of the nodes this agent serves.
    pub fn node_names(&self) -> Vec<String> {
        match self.fake_nodes {
            None => vec![self.node_name.clone()],
            Some(n) => (0..n).map(|i| format!("{}-{i}", self.node_name)).collect(),
        }
    }
}

/// Joins and runs the node(s) until `shutdown` turns true.
///
/// # Errors
/// Joining failures (CA mismatch, refused certificate, unreachable server) and registration
/// failures; once running, failures are retried and logged.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
    if let Some(runtime) = config.containerd.clone() {
        return containerd::run(config, runtime, shutdown).await;
    }
    let dir = config.data_dir.join("agent");
    let ca_pem = join::trusted_ca(&config.server, &config.token).await?;
    {
        let (dir, ca) = (dir.clone(), ca_pem.clone());
        tokio::task::spawn_blocking(move || {
            join::write_private(&dir, &dir.join("server-ca.crt"), ca.as_bytes())
        })
        .await??;
    }
    let bootstrap = join::bootstrap_client(&config.server, &ca_pem, &config.token)?;
    let names = config.node_names();
    let password = join::node_password(&dir).await?;
    let nodes: Vec<(String, (distro_client::Client, distro_client::Connections))> =
        futures::stream::iter(names)
            .map(|name| {
                let (bootstrap, dir, ca_pem, url) = (&bootstrap, &dir, &ca_pem, &config.server);
                let password = &password;
                async move {
                    let pair =
                        join::node_credentials(bootstrap, dir, ca_pem, &name, password).await?;
                    let client = join::node_client(url, ca_pem, &name, &pair)?;
                    // Also with stored credentials: the name may have been taken meanwhile.
                    join::claim_node_name(&client.0, &name, password).await?;
                    Ok::<_, Error>((name, client))
                }
            })
            .buffered(STARTUP_CONCURRENCY)
            .try_collect()
            .await?;
    tracing::info!(nodes = nodes.len(), "joined; registering");
    let node_ip = kubelet::node_ip(&config.server).await?;
    let port = if config.fake_nodes.is_some() {
        0
    } else {
        config.kubelet_port
    };
    let listeners: Vec<kubelet::Listener> = futures::stream::iter(&nodes)
        .map(|(name, (client, _))| {
            kubelet::Listener::bind(client, &dir, name, node_ip, port, &ca_pem)
        })
        .buffered(STARTUP_CONCURRENCY)
        .try_collect()
        .await?;
    let registered: Vec<node::Registered> =
        futures::stream::iter(nodes.into_iter().zip(&listeners))
            .map(|((name, client), listener)| {
                let config = &config;
                async move {
                    let events = node::recorder(&client.0, &name);
                    node::register(client, config, &name, listener.addr, None, events).await
                }
            })
            .buffered(STARTUP_CONCURRENCY)
            .try_collect()
            .await?;
    tracing::info!(nodes = registered.len(), "nodes registered and Ready");
    let registered: Vec<Arc<node::Registered>> = registered.into_iter().map(Arc::new).collect();
    let leases = node::renew_leases(registered.clone(), shutdown.clone());
    let runtime = fake::run(registered, listeners, shutdown.clone());
    // Both end on the shutdown signal.
    tokio::join!(leases, runtime);
    tracing::info!("agent stopped");
    Ok(())
}

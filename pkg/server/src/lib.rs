//! `distro server`: assembles the control plane on this machine.
//!
//! Start-up order, in one place: PKI (CA, serving and admin certificates, service-account key,
//! secrets encryption key) → datastore → apiserver → bootstrap objects → controllers and
//! scheduler (as API clients, see `controllers.rs`) → resource metrics scraper (`metrics.rs`,
//! its metrics.k8s.io kinds registered with the others) → kubeconfig and join token → this
//! machine's node (`node.rs`: the agent joining its own server, unless `--disable-agent`).
//!
//! Limits: one CA signs serving and client certificates (k3s keeps separate server/client CAs).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use distro_apiserver::handler::Handler;
use distro_apiserver::resources::Registry;
use distro_apiserver::rest::Storage;
use distro_pki::{Ca, CertSpec, Credential, JoinToken, Usage};
use distro_store::Datastore;
use tokio::sync::watch;

/// The horizontal pod autoscaler's settings, re-exported so `cmd/distro` can fill them from
/// its flags without depending on the controllers crate.
pub use distro_controllers::hpa::Settings as HpaSettings;
pub use distro_controllers::nodeipam::Settings as NodeIpamSettings;

mod auth;
mod bootstrap;
pub mod bootstraptoken;
mod clusterconfig;
mod controllers;
mod join;
mod metrics;
mod node;
mod nodepassword;
pub mod tokencmd;

/// Everything `distro server` can be told, resolved and validated by the CLI.
#[derive(Clone, Debug)]
pub struct Config {
    /// Root of all state (`<data-dir>/server/...`).
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// HTTPS port of the apiserver.
    pub https_port: u16,
    /// Address other machines and clients use to reach this server.
    pub advertise_address: Option<IpAddr>,
    /// Extra SANs for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Pod network(s).
    pub cluster_cidr: String,
    /// Service network(s).
    pub service_cidr: String,
    /// Cluster DNS service IP.
    pub cluster_dns: IpAddr,
    /// Cluster domain.
    pub cluster_domain: String,
    /// Where to write the admin kubeconfig.
    pub write_kubeconfig: PathBuf,
    /// Its file mode.
    pub write_kubeconfig_mode: u32,
    /// Bundled components not to run.
    pub disable: Vec<String>,
    /// Run only the control plane.
    pub disable_agent: bool,
    /// This machine's node, started once the API server serves (`None` with
    /// `--disable-agent`). Its `server` and `token` are replaced by this server's own URL
    /// and join token.
    pub agent: Option<distro_agent::Config>,
    /// A fixed join token secret (k3s `--token`); generated at first start otherwise.
    pub token: Option<String>,
    /// How long a node's Lease may go unrenewed before its conditions turn Unknown.
    pub node_monitor_grace_period: std::time::Duration,
    /// Terminated pods kept before the pod garbage collector deletes the oldest (0: all).
    pub terminated_pod_gc_threshold: u32,
    /// The horizontal pod autoscaler's sync period, downscale stabilisation and tolerance.
    pub hpa: HpaSettings,
    /// How often kubelets are scraped for metrics.k8s.io (`--metrics-resolution`).
    pub metrics_resolution: std::time::Duration,
    /// Node pod ranges: `--cluster-cidr` with `--node-cidr-mask-size-ipv4/-ipv6`.
    pub node_ipam: NodeIpamSettings,
}

/// Errors of server start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PKI setup failed.
    #[error("setting up certificates in {dir}: {source}")]
    Pki {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: distro_pki::Error,
    },
    /// The datastore failed to open.
    #[error("opening the datastore at {path}: {source}")]
    Store {
        /// Path.
        path: PathBuf,
        /// Cause (boxed: store errors carry whole key-values).
        #[source]
        source: Box<distro_store::Error>,
    },
    /// Binding the port failed.
    #[error("listening on {addr}: {source} (is another server using this port? pick one with --https-listen-port)")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating bootstrap objects failed.
    #[error("creating bootstrap objects")]
    Bootstrap(#[source] distro_apiserver::Error),
    /// Loading the CustomResourceDefinitions in storage failed.
    #[error("serving CustomResourceDefinitions")]
    Crds(#[source] distro_apiserver::Error),
    /// A controller client could not be built.
    #[error("building the controllers' API client")]
    Client(#[source] distro_client::Error),
    /// A blocking task panicked or was cancelled.
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A `distro token` command failed (bad option, API error), with what to do.
    #[error("{0}")]
    Token(String),
    /// This server's own node failed (containerd, join, registration).
    #[error("this server's node: {0}")]
    Agent(#[source] distro_agent::Error),
}

/// The files and keys the control plane works with.
struct Pki {
    ca: Ca,
    serving: distro_pki::CertKeyPair,
    admin: distro_pki::CertKeyPair,
    /// The API server's client certificate to kubelets (metrics scraping, `pods/log`,
    /// `pods/exec`, `nodes/proxy`), user `kube-apiserver-kubelet-client` as kubeadm names it.
    kubelet_client: distro_pki::CertKeyPair,
    signer: distro_pki::TokenSigner,
    encryption: distro_pki::EncryptionKey,
    join: JoinToken,
}

fn setup_pki(config: &Config) -> Result<Pki, Error> {
    let tls = config.data_dir.join("server").join("tls");
    let err = |source| Error::Pki {
        dir: tls.clone(),
        source,
    };
    let ca = Ca::load_or_create(&tls, "server-ca", "distro-server-ca").map_err(err)?;
    let mut spec = CertSpec::new("distro-apiserver", Usage::Server);
    spec.dns_names = vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", config.cluster_domain),
    ];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_string();
        if !h.is_empty() {
            spec.dns_names.push(h);
        }
    }
    spec.ip_addresses = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if let Some(ip) = first_service_ip(&config.service_cidr) {
        spec.ip_addresses.push(ip);
    }
    if let Some(a) = config.advertise_address {
        spec.ip_addresses.push(a);
    }
    if !config.bind_address.is_unspecified() {
        spec.ip_addresses.push(config.bind_address);
    }
    for san in &config.tls_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => spec.ip_addresses.push(ip),
            Err(_) => spec.dns_names.push(san.clone()),
        }
    }
    spec.ip_addresses.dedup();
    let serving =
        distro_pki::load_or_issue(&ca, &tls, "serving-kube-apiserver", &spec).map_err(err)?;
    let mut admin_spec = CertSpec::new("system:admin", Usage::Client);
    admin_spec.organizations = vec!["system:masters".into()];
    let admin = distro_pki::load_or_issue(&ca, &tls, "client-admin", &admin_spec).map_err(err)?;
    let kubelet_client = distro_pki::load_or_issue(
        &ca,
        &tls,
        "client-kube-apiserver-kubelet-client",
        &CertSpec::new(metrics::KUBELET_CLIENT_USER, Usage::Client),
    )
    .map_err(err)?;
    let signer =
        distro_pki::TokenSigner::load_or_create(&tls.join("service-account.key")).map_err(err)?;
    let encryption = distro_pki::EncryptionKey::load_or_create(
        &config
            .data_dir
            .join("server")
            .join("cred")
            .join("encryption.key"),
    )
    .map_err(err)?;
    let join = join_token(&ca, config)?;
    Ok(Pki {
        ca,
        serving,
        admin,
        kubelet_client,
        signer,
        encryption,
        join,
    })
}

/// The first address of the (first) service range: the `kubernetes` Service's ClusterIP.
/// The address this machine reaches other networks from: the default route's source address
/// (found by routing a UDP socket; no packet is sent). Upstream's apiserver advertises this
/// when bound to every address, and so must we: the `kubernetes` Service's endpoint must be an
/// address pods can reach through the service proxy, which loopback is not.
async fn default_route_ip() -> Option<IpAddr> {
    let socket = tokio::net::UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), 0))
        .await
        .ok()?;
    // TEST-NET-2: never local, so the lookup takes the default route.
    socket
        .connect((IpAddr::from([198, 51, 100, 1]), 53))
        .await
        .ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

fn first_service_ip(cidr: &str) -> Option<IpAddr> {
    let first = cidr.split(',').next()?.trim();
    let (addr, _) = first.split_once('/')?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(v4).wrapping_add(1),
        ))),
        IpAddr::V6(v6) => Some(IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6).wrapping_add(1),
        ))),
    }
}

/// Runs the control plane until `shutdown` turns true.
///
/// # Errors
/// Start-up failures (certificates, datastore, port); once serving, only a listener failure.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
    let started = Instant::now();
    // Everything stops on the caller's signal, or when this server's node fails.
    let (stop, shutdown) = {
        let (tx, rx) = watch::channel(*shutdown.borrow());
        let (tx2, mut outer) = (tx.clone(), shutdown);
        tokio::spawn(async move {
            let _ = outer.wait_for(|s| *s).await;
            let _ = tx2.send(true);
        });
        (tx, rx)
    };
    let cfg = config.clone();
    let pki = tokio::task::spawn_blocking(move || setup_pki(&cfg)).await??;
    let db = config.data_dir.join("server").join("db").join("state.db");
    let store: Arc<dyn Datastore> = Arc::new(distro_store::SqliteStore::open(&db).map_err(
        |source| Error::Store {
            path: db.clone(),
            source: Box::new(source),
        },
    )?);
    let compactor =
        distro_store::spawn_compactor(store.clone(), std::time::Duration::from_secs(300), 10_000);
    let transformer = Arc::new(auth::SecretsEncryption::new(pki.encryption));
    let allocator =
        distro_apiserver::allocator::ServiceAllocator::new(&config.service_cidr, 30000..=32767)
            .map_err(|e| Error::Bootstrap(distro_apiserver::Error::BadRequest(e)))?;
    let storage = Storage::new(store.clone(), Some(transformer))
        .with_admission(Arc::new(allocator))
        .with_admission(Arc::new(distro_apiserver::priority::PriorityAdmission))
        .with_admission(Arc::new(
            distro_apiserver::serviceaccount::ServiceAccountPullSecrets,
        ))
        .with_admission(Arc::new(
            distro_apiserver::tolerationseconds::DefaultTolerationSeconds::default(),
        ))
        // LimitRanger before ResourceQuota, as upstream: quota sees defaulted requests.
        .with_admission(Arc::new(distro_apiserver::limitrange::LimitRanger))
        .with_admission(Arc::new(distro_apiserver::quota::ResourceQuotaAdmission));
    let registry = Arc::new(Registry::new(distro_apiserver::kinds::builtin()));
    let resource_metrics = metrics::register(&config, &registry);
    bootstrap::ensure(&storage, &registry)
        .await
        .map_err(Error::Bootstrap)?;
    resource_metrics
        .ensure_apiservice(&storage, &registry)
        .await
        .map_err(Error::Bootstrap)?;

    let addr = SocketAddr::new(config.bind_address, config.https_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    // Port 0 (tests) picks a free port: everything after this uses the real one.
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr, source })?;
    let advertise_ip = match config.advertise_address {
        Some(a) => a,
        None if config.bind_address.is_unspecified() => default_route_ip()
            .await
            .unwrap_or(IpAddr::from([127, 0, 0, 1])),
        None => config.bind_address,
    };
    let advertise_addr = SocketAddr::new(advertise_ip, addr.port());
    let advertise = advertise_addr.to_string();
    if let Some(ip) = first_service_ip(&config.service_cidr) {
        bootstrap::kubernetes_service(&storage, &registry, ip, advertise_addr)
            .await
            .map_err(Error::Bootstrap)?;
    }
    // --- dns --- k3s's kube-dns Service, answered by every node's DNS server (distro-dns).
    if !config.disable.iter().any(|d| d == "coredns") {
        if let Err(e) = bootstrap::kube_dns_service(&storage, &registry, config.cluster_dns).await {
            tracing::warn!(error = %e, ip = %config.cluster_dns, "creating kube-system/kube-dns");
        }
    }
    // --- overlay2 --- the ranges, DNS and domain agents take after joining.
    clusterconfig::publish(&storage, &registry, &config)
        .await
        .map_err(Error::Bootstrap)?;
    let signer = Arc::new(pki.signer);
    // The documents themselves are built on first request, not here: built eagerly they held
    // about 15 MB of an idle control plane's heap (v2 JSON, v2 protobuf, every v3 document),
    // and only kubectl apply/explain ask for them.
    let openapi = Arc::new(distro_apiserver::openapi::OpenApiService::new(
        distro_apiserver::openapi::OpenApi::build(&registry.all()),
    ));
    // Service-account tokens name the API server as issuer and audience, as k3s configures
    // kube-apiserver (`--service-account-issuer`, `--api-audiences`).
    let issuer = format!("https://kubernetes.default.svc.{}", config.cluster_domain);
    let audiences = vec![issuer.clone()];
    let sa_tokens: Arc<dyn distro_apiserver::handler::TokenAuthenticator> =
        Arc::new(auth::ServiceAccountTokens::new(
            signer.clone(),
            storage.clone(),
            registry.clone(),
            audiences.clone(),
        ));
    let rbac = distro_apiserver::authz::Rbac::start(storage.clone(), &registry)
        .await
        .map_err(Error::Bootstrap)?;
    // Authorization mode Node,RBAC as upstream: nodes are limited to their own objects first.
    let authorizer: Arc<dyn distro_apiserver::handler::Authorizer> =
        distro_apiserver::nodeauthz::NodeAuthorizer::start(
            storage.clone(),
            &registry,
            rbac.clone(),
        )
        .await
        .map_err(Error::Bootstrap)?;
    let metrics = Arc::new(distro_apiserver::metrics::Metrics::default());
    let kubelet_tls = distro_client::kubelet::tls(&pki.kubelet_client, pki.ca.cert_pem())
        .map_err(Error::Client)?;
    let kubelet_proxy = Arc::new(distro_apiserver::proxy::KubeletProxy {
        registry: registry.clone(),
        storage: storage.clone(),
        tls: kubelet_tls.clone(),
    });
    let subresources = Arc::new(distro_apiserver::subresources::Subresources {
        registry: registry.clone(),
        storage: storage.clone(),
        patch_schema: openapi.clone(),
        authorizer: authorizer.clone(),
        tokens: Some(Arc::new(distro_apiserver::subresources::TokenIssuer::new(
            signer.clone(),
            issuer,
            audiences,
        ))),
    });
    let reviews = Arc::new(distro_apiserver::review::Reviews {
        tokens: vec![sa_tokens.clone()],
        authorizer: authorizer.clone(),
        rules: Some(rbac),
    });
    let metrics_route = Arc::new(distro_apiserver::metrics::MetricsRoute {
        metrics: metrics.clone(),
        registry: registry.clone(),
        storage: storage.clone(),
    });
    let (crds, crd_task) =
        distro_apiserver::crd::Crds::start(storage.clone(), registry.clone(), openapi.clone())
            .await
            .map_err(Error::Crds)?;
    let cacerts = Arc::new(join::CaCerts {
        ca_pem: bytes::Bytes::from(pki.ca.cert_pem().to_string()),
    });
    let join_secret = Arc::new(join::JoinSecret {
        token: pki.join.clone(),
    });
    let bootstrap_tokens = Arc::new(bootstraptoken::BootstrapTokens {
        storage: storage.clone(),
        registry: registry.clone(),
        ca_hash: pki.ca.hash(),
    });
    let handler = Arc::new(Handler {
        registry: registry.clone(),
        storage: storage.clone(),
        advertise: advertise.clone(),
        tokens: vec![sa_tokens, join_secret, bootstrap_tokens],
        authorizer,
        patch_schema: openapi.clone(),
        extra: vec![
            // NodeRestriction admission first: it only ever refuses or passes a node's write.
            Arc::new(distro_apiserver::noderestriction::NodeRestriction {
                storage: storage.clone(),
                registry: registry.clone(),
            }) as Arc<dyn distro_apiserver::handler::Route>,
            cacerts,
            Arc::new(nodepassword::NodePasswords {
                storage: storage.clone(),
                registry: registry.clone(),
            }),
            openapi.clone(),
            crds,
            subresources,
            kubelet_proxy,
            reviews,
            metrics_route,
        ]
        .into_iter()
        .chain(resource_metrics.route())
        .collect(),
        metrics,
    });
    let tls =
        distro_pki::server_tls_config(&pki.ca, &pki.serving, Some(&pki.ca)).map_err(|source| {
            Error::Pki {
                dir: config.data_dir.clone(),
                source,
            }
        })?;

    // Kubeconfig and join token only once we are about to serve, so their presence means "ready".
    let url = format!(
        "https://{}",
        if config.bind_address.is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), addr.port()).to_string()
        } else {
            addr.to_string()
        }
    );
    // The port is bound, so the controllers' first requests wait in its backlog until we serve.
    let controllers = controllers::start(&config, &url, shutdown.clone()).await?;
    let scraper = resource_metrics.start(
        &config,
        &url,
        (&pki.kubelet_client, pki.ca.cert_pem()),
        kubelet_tls,
        shutdown.clone(),
    )?;
    let kc = config.write_kubeconfig.clone();
    let mode = config.write_kubeconfig_mode;
    let ca_pem = pki.ca.cert_pem().to_string();
    let admin = pki.admin.clone();
    let token_path = config.data_dir.join("server").join("token");
    let join_token = pki.join.clone();
    let data_dir = config.data_dir.clone();
    let kubeconfig_url = url.clone();
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let url = kubeconfig_url;
        // The token first: the kubeconfig is the "ready" signal scripts and tests wait for.
        write_join_token(&join_token, &token_path)?;
        let credential = Credential::ClientCert {
            cert_pem: admin.cert_pem,
            key_pem: admin.key_pem,
        };
        // Also under the data dir (as k3s' server/cred/admin.kubeconfig), for `distro token
        // --data-dir`.
        let cred = tokencmd::admin_kubeconfig(&data_dir);
        distro_pki::write_kubeconfig(
            &cred,
            0o600,
            "default",
            &url,
            &ca_pem,
            "default",
            &credential,
        )
        .map_err(|source| Error::Pki {
            dir: cred.clone(),
            source,
        })?;
        distro_pki::write_kubeconfig(&kc, mode, "default", &url, &ca_pem, "default", &credential)
            .map_err(|source| Error::Pki {
                dir: kc.clone(),
                source,
            })
    })
    .await??;

    tracing::info!(%addr, elapsed_ms = started.elapsed().as_millis() as u64, kubeconfig = %config.write_kubeconfig.display(), "API server ready");
    let agent = match config.agent.clone() {
        Some(agent) => {
            let admin = distro_client::connect(
                &distro_client::Endpoint::with_cert(&url, pki.ca.cert_pem(), &pki.admin),
                &distro_client::user_agent("server", &agent.node_name),
            )
            .map_err(Error::Client)?;
            Some(node::start(
                agent,
                &url,
                &pki.join,
                admin,
                shutdown.clone(),
                stop.clone(),
            ))
        }
        None => None,
    };
    // The apiserver stops serving only after the controllers stopped, so that they release
    // their Leases on the way out and a restarted server leads again at once.
    let (serving_tx, serving_rx) = watch::channel(false);
    let mut signal = shutdown.clone();
    let stopping = tokio::spawn(async move {
        let _ = signal.wait_for(|stop| *stop).await;
        // The node stops its pod workers and containerd (containers keep running).
        let (_, node) = tokio::join!(controllers.stopped(), async {
            match agent {
                Some(task) => Some(task.await),
                None => None,
            }
        });
        let _ = serving_tx.send(true);
        node
    });
    let served = distro_apiserver::server::serve(listener, tls, handler, serving_rx).await;
    let node = if *shutdown.borrow() {
        stopping.await.ok().flatten()
    } else {
        stopping.abort();
        None
    };
    compactor.abort();
    crd_task.abort();
    if let Some(s) = scraper {
        s.abort();
    }
    served.map_err(|source| Error::Listen { addr, source })?;
    match node {
        Some(Ok(Err(e))) => Err(Error::Agent(e)),
        Some(Err(e)) => Err(Error::Join(e)),
        Some(Ok(Ok(()))) | None => Ok(()),
    }
}

/// The join token: the one in `<data-dir>/server/token` if written before (so agents that
/// joined keep working across restarts), else `--token`'s secret or a new random one, pinning
/// the CA.
fn join_token(ca: &Ca, config: &Config) -> Result<JoinToken, Error> {
    let path = config.data_dir.join("server").join("token");
    let pki_err = |source| Error::Pki {
        dir: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return text.parse::<JoinToken>().map_err(pki_err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Read {
                path: path.clone(),
                source,
            })
        }
    }
    match &config.token {
        Some(secret) => Ok(JoinToken {
            ca_hash: Some(ca.hash()),
            username: distro_pki::DEFAULT_USERNAME.into(),
            secret: secret.clone(),
        }),
        None => JoinToken::generate(ca, distro_pki::DEFAULT_USERNAME).map_err(pki_err),
    }
}

/// Writes `<data-dir>/server/token` (k3s format, pinning the CA) unless it exists.
fn write_join_token(token: &JoinToken, path: &std::path::Path) -> Result<(), Error> {
    if path.exists() {
        return Ok(());
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()
    };
    write().map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

//! Starts the controllers and the scheduler in this process, as clients of our own apiserver.
//!
//! Identities, as upstream's controller manager with `--use-service-account-credentials`:
//! the shared caches watch as `system:kube-controller-manager` (list/watch on everything), and
//! each controller writes as its kube-system service account (`system:serviceaccount:
//! kube-system:<controller>`), so RBAC limits each to its upstream role. Instead of tokens, the
//! cluster CA issues each identity a client certificate (`<data>/server/tls/client-*.crt`),
//! which needs no ServiceAccount objects and no token refresh. The scheduler is its own
//! client as upstream's kube-scheduler: `system:kube-scheduler`, with its own caches.
//!
//! Each runs only while holding its Lease in kube-system (`kube-controller-manager`,
//! `kube-scheduler`; [`distro_client::leader`]), taken with its own identity, so several
//! servers can later share a cluster. Each leadership term gets fresh caches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_client::leader::{self, Election};
use distro_client::{Endpoint, Informers};
use distro_pki::{Ca, CertKeyPair, CertSpec, Usage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// How long stopping may take: in-flight reconciles are short API calls.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The running controllers.
pub(crate) struct Running {
    task: JoinHandle<()>,
}

impl Running {
    /// Waits (bounded) for the controllers to stop after the shutdown signal.
    pub(crate) async fn stopped(self) {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            tracing::info!("shutdown: controllers did not stop in time; aborting");
            abort.abort();
        }
    }
}

struct Credentials {
    ca: Ca,
    ca_pem: String,
    manager: CertKeyPair,
    writers: Vec<(&'static str, CertKeyPair)>,
    scheduler: CertKeyPair,
}

fn issue(tls: &Path) -> Result<Credentials, distro_pki::Error> {
    // Same files the server set up moments ago; loading is cheaper than threading the CA here.
    let ca = Ca::load_or_create(tls, "server-ca", "distro-server-ca")?;
    let manager_spec = CertSpec::new("system:kube-controller-manager", Usage::Client);
    let manager =
        distro_pki::load_or_issue(&ca, tls, "client-kube-controller-manager", &manager_spec)?;
    let writers = distro_controllers::IDENTITIES
        .iter()
        .map(|sa| {
            let mut spec = CertSpec::new(
                format!("system:serviceaccount:kube-system:{sa}"),
                Usage::Client,
            );
            spec.organizations = vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:kube-system".into(),
            ];
            let pair = distro_pki::load_or_issue(&ca, tls, &format!("client-{sa}"), &spec)?;
            Ok((*sa, pair))
        })
        .collect::<Result<Vec<_>, distro_pki::Error>>()?;
    let scheduler_spec = CertSpec::new("system:kube-scheduler", Usage::Client);
    let scheduler = distro_pki::load_or_issue(&ca, tls, "client-kube-scheduler", &scheduler_spec)?;
    Ok(Credentials {
        ca_pem: ca.cert_pem().to_string(),
        ca,
        manager,
        writers,
        scheduler,
    })
}

/// Issues (or loads) the controllers' certificates and starts them against `url`; they stop
/// when `shutdown` turns true.
///
/// # Errors
/// [`Error::Pki`] if certificates cannot be issued, [`Error::Client`] if a client cannot be
/// built from them.
pub(crate) async fn start(
    config: &crate::Config,
    url: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, Error> {
    let tls: PathBuf = config.data_dir.join("server").join("tls");
    let dir = tls.clone();
    let creds = tokio::task::spawn_blocking(move || issue(&dir))
        .await?
        .map_err(|source| Error::Pki { dir: tls, source })?;
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let connect = |pair: &CertKeyPair, component: &str| {
        distro_client::connect(
            &Endpoint::with_cert(url, creds.ca_pem.clone(), pair),
            &distro_client::user_agent(component, &node),
        )
        .map_err(Error::Client)
    };
    let mut writers = std::collections::HashMap::new();
    for (sa, pair) in &creds.writers {
        writers.insert(*sa, connect(pair, sa)?);
    }
    let manager = connect(&creds.manager, "controller-manager")?;
    let settings = distro_controllers::Settings {
        ca_pem: creds.ca_pem.clone(),
        ca: std::sync::Arc::new(creds.ca),
        node_monitor_grace_period: config.node_monitor_grace_period,
        terminated_pod_gc_threshold: config.terminated_pod_gc_threshold,
        hpa: config.hpa,
        node_ipam: config.node_ipam.clone(),
    };
    let controllers = leader::run(
        manager.clone(),
        Election::new("kube-controller-manager", &node),
        shutdown.clone(),
        move |stop| {
            let clients = distro_controllers::Clients {
                informers: Informers::new(manager.clone()),
                writers: writers.clone(),
            };
            distro_controllers::run(clients, settings.clone(), stop)
        },
    );
    let scheduler = connect(&creds.scheduler, "scheduler")?;
    let instance = format!("{}-{node}", distro_scheduler::SCHEDULER_NAME);
    let scheduler = leader::run(
        scheduler.clone(),
        Election::new("kube-scheduler", &node),
        shutdown,
        move |stop| {
            distro_scheduler::run(
                Informers::new(scheduler.clone()),
                scheduler.clone(),
                instance.clone(),
                stop,
            )
        },
    );
    let task = tokio::spawn(async move {
        tokio::join!(controllers, scheduler);
    });
    Ok(Running { task })
}

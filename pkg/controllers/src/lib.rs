//! The control plane's controllers, each a kube-runtime `Controller` on shared caches
//! ([`distro_client::Informers`]) that talks to the apiserver like any other client.
//!
//! # What it owns
//! - [`namespace`]: empties a deleted namespace, reports progress in its conditions, then
//!   removes the `kubernetes` finalizer so the apiserver can delete it.
//! - [`serviceaccount`]: a `default` ServiceAccount in every active namespace.
//! - [`rootca`]: the `kube-root-ca.crt` ConfigMap (the cluster CA) in every active namespace.
//! - [`replicaset`]: `spec.replicas` pods per ReplicaSet, with upstream's adoption, deletion
//!   order, slow start and expectations.
//! - [`garbagecollector`]: deletes objects whose owners are gone; background, foreground and
//!   orphan propagation.
//! - [`deployment`]: rolls Deployments out through ReplicaSets (RollingUpdate, Recreate,
//!   scaling, pause, revisions and rollback, history cleanup, status and conditions).
//! - [`statefulset`]: ordered pods with stable names and claims, partitioned rolling updates;
//!   [`history`] keeps the ControllerRevisions `kubectl rollout history/undo` read.
//! - [`daemonset`]: one pod per eligible node (selectors, affinity, taints with the daemon
//!   tolerations), rolling updates with maxUnavailable/maxSurge, OnDelete, revisions.
//! - [`endpoints`], [`endpointslice`]: each selector Service's Endpoints and EndpointSlices
//!   (readiness, named ports, headless hostnames), with helpers in [`podendpoints`].
//! - [`job`]: runs Jobs' pods to completion (parallelism, indexes, backoff, deadlines, pod
//!   failure policy), counting each finished pod once through a finalizer.
//! - [`cronjob`]: creates Jobs on cron schedules in the CronJob's time zone, with concurrency
//!   policy, starting deadline and history limits.
//! - [`ttlafterfinished`]: deletes finished Jobs `ttlSecondsAfterFinished` after they finished.
//! - [`disruption`]: PodDisruptionBudget status, which the eviction subresource spends.
//! - [`certificates`]: approves (after a SubjectAccessReview) and signs node client
//!   certificate requests, so nodes can join with a token.
//! - [`nodelifecycle`]: marks nodes whose heartbeats stop Unknown, keeps condition taints
//!   (`not-ready`, `unreachable`, ...) in step, marks their pods not Ready.
//! - [`tainteviction`]: deletes pods from `NoExecute`-tainted nodes after their tolerations.
//! - [`resourcequota`]: keeps ResourceQuotas' `status.hard` and `status.used` current.
//! - [`hpa`]: scales HorizontalPodAutoscalers' targets from resource metrics
//!   (`metrics.k8s.io`), with upstream's stabilisation and scaling policies.
//! - [`nodeipam`]: gives every Node its pod ranges (`spec.podCIDRs`) from the cluster CIDR.
//! - [`podgc`]: force-deletes terminated pods over the threshold, orphans of deleted nodes and
//!   terminating pods no kubelet will finish.
//!
//! # Design
//! Reconcilers are level-triggered and idempotent: each gets a namespace, reads the current
//! state from the shared caches (which may be stale, so conflicts and "already exists" are
//! expected and harmless) and returns an `Action`. Failures are retried per object with
//! capped, jittered exponential backoff, reset on success ([`Backoff`]). Writes use the
//! client of the controller's own identity, reads the shared informer client.
//!
//! # Limits
//! - Leader election is the caller's: the server runs [`run`] only while holding the
//!   `kube-controller-manager` Lease (`distro_client::leader`).
//! - The namespace, service account, root CA and garbage collector controllers record no
//!   Events (upstream's record few); they report in conditions and logs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use distro_client::{Client, Informers};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::{self, Action};
use tokio::sync::watch;

pub mod certificates;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod expectations;
pub mod garbagecollector;
pub mod history;
pub mod hpa;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod objects;
pub mod passes;
pub mod podendpoints;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod rootca;
pub mod serviceaccount;
pub mod statefulset;
pub mod tainteviction;
pub mod tokencleaner;
pub mod ttlafterfinished;

/// Errors of a reconcile; each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("{step}: {source}")]
    Api {
        /// What we were doing, e.g. "creating ServiceAccount default".
        step: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// API discovery failed, so the namespace's content is unknown.
    #[error("discovering resources: {0}")]
    Discovery(#[source] kube::Error),
    /// Deleting some of a namespace's content failed.
    #[error("deleting namespace content: {0}")]
    Content(String),
    /// An autoscaler could not get its target's scale, compute from its metrics or rescale
    /// (upstream's message, also in its Events).
    #[error("{0}")]
    Autoscaling(String),
}

impl Error {
    fn api(step: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let step = step.into();
        move |source| Error::Api { step, source }
    }
}

/// Every controller's identity: the kube-system service account it writes as (upstream's
/// `--use-service-account-credentials` names). The server issues one client certificate per
/// entry, and RBAC's `system:controller:<name>` role limits what each may do.
pub const IDENTITIES: &[&str] = &[
    "namespace-controller",
    "service-account-controller",
    "root-ca-cert-publisher",
    "replicaset-controller",
    "generic-garbage-collector",
    "deployment-controller",
    "statefulset-controller",
    "daemon-set-controller",
    "endpoint-controller",
    "endpointslice-controller",
    // --- batch ---
    "job-controller",
    "ttl-after-finished-controller",
    "cronjob-controller",
    "disruption-controller",
    "certificate-controller",
    nodelifecycle::COMPONENT,
    tainteviction::COMPONENT,
    resourcequota::COMPONENT,
    podgc::COMPONENT,
    hpa::COMPONENT,
    tokencleaner::COMPONENT,
];

/// The clients the controllers run with: the shared caches (read identity) and one write
/// client per controller, so each controller's writes are authorized by its own role.
#[derive(Clone)]
pub struct Clients {
    /// Shared caches, watching with the controller manager's identity.
    pub informers: Informers,
    /// Write clients by identity (an entry of [`IDENTITIES`]).
    pub writers: HashMap<&'static str, Client>,
}

impl Clients {
    /// The write client of controller `identity`.
    ///
    /// # Panics
    /// If `identity` is not in [`IDENTITIES`] (a programming error caught by every test).
    pub fn writer(&self, identity: &str) -> Client {
        match self.writers.get(identity) {
            Some(c) => c.clone(),
            None => panic!("no client for controller identity {identity}; add it to IDENTITIES"),
        }
    }
}

/// What the controllers need to know about the cluster.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cluster CA (PEM) the root CA publisher distributes.
    pub ca_pem: String,
    /// The cluster CA with its key, which the certificate controller signs node client
    /// certificates with.
    pub ca: std::sync::Arc<distro_pki::Ca>,
    /// How long a node's Lease may go unrenewed before the node lifecycle controller marks
    /// its conditions Unknown (upstream's `--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// Terminated pods the pod garbage collector keeps (upstream's
    /// `--terminated-pod-gc-threshold`; 0 keeps all).
    pub terminated_pod_gc_threshold: u32,
    /// The horizontal pod autoscaler's sync period, stabilisation and tolerance.
    pub hpa: hpa::Settings,
    /// Node pod ranges (`--cluster-cidr`, node mask sizes); no cluster CIDR: no allocation.
    pub node_ipam: nodeipam::Settings,
}

/// Runs every controller until `shutdown` turns true, then lets in-flight reconciles
/// finish and stops the shared watches.
///
/// # Cancel safety
/// Dropping the future stops the controllers abruptly (reconciles are idempotent, so nothing
/// is lost but work in flight); prefer signalling `shutdown`.
pub async fn run(clients: Clients, settings: Settings, shutdown: watch::Receiver<bool>) {
    // Start reconciling only on filled caches: kube-runtime's own readiness wait wakes only
    // one of several waiters, and the controllers share these caches. Every type a controller
    // reads from the shared caches is started here, then all are waited for at once.
    use k8s_openapi::api::{apps, batch, coordination, core, discovery, policy};
    let informers = &clients.informers;
    informers.get::<Namespace>();
    informers.get::<core::v1::ServiceAccount>();
    informers.get::<core::v1::ConfigMap>();
    informers.get::<core::v1::Pod>();
    informers.get::<core::v1::Node>();
    informers.get::<core::v1::Service>();
    informers.get::<core::v1::Endpoints>();
    informers.get::<core::v1::PersistentVolumeClaim>();
    informers.get::<apps::v1::ReplicaSet>();
    informers.get::<apps::v1::Deployment>();
    informers.get::<apps::v1::StatefulSet>();
    informers.get::<apps::v1::DaemonSet>();
    informers.get::<apps::v1::ControllerRevision>();
    informers.get::<discovery::v1::EndpointSlice>();
    informers.get::<batch::v1::Job>();
    informers.get::<batch::v1::CronJob>();
    informers.get::<policy::v1::PodDisruptionBudget>();
    informers.get::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>();
    informers.get::<coordination::v1::Lease>();
    informers.get::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>();
    let synced = informers.wait_synced();
    tokio::select! {
        _ = synced => {}
        _ = shutdown_signal(shutdown.clone()) => {
            clients.informers.shutdown().await;
            return;
        }
    }
    let running = vec![
        namespace::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        serviceaccount::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        rootca::run(
            clients.clone(),
            settings.ca_pem,
            shutdown_signal(shutdown.clone()),
        )
        .boxed(),
        replicaset::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        garbagecollector::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        deployment::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        statefulset::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        daemonset::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        endpoints::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        endpointslice::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        // --- batch ---
        job::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        ttlafterfinished::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        cronjob::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        disruption::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        certificates::run(
            clients.clone(),
            settings.ca.clone(),
            shutdown_signal(shutdown.clone()),
        )
        .boxed(),
        nodelifecycle::run(
            clients.clone(),
            settings.node_monitor_grace_period,
            shutdown_signal(shutdown.clone()),
        )
        .boxed(),
        tainteviction::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        resourcequota::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        tokencleaner::run(clients.clone(), shutdown_signal(shutdown.clone())).boxed(),
        podgc::run(
            clients.clone(),
            settings.terminated_pod_gc_threshold,
            shutdown_signal(shutdown.clone()),
        )
        .boxed(),
        hpa::run(
            clients.clone(),
            settings.hpa,
            shutdown_signal(shutdown.clone()),
        )
        .boxed(),
        nodeipam::run(
            clients.clone(),
            settings.node_ipam,
            shutdown_signal(shutdown.clone()),
        )
        .boxed(),
    ];
    tracing::info!(count = running.len(), "controllers started");
    futures::future::join_all(running).await;
    clients.informers.shutdown().await;
    tracing::info!("controllers stopped");
}

/// Resolves once `rx` turns true (or its sender is gone). Its future is `Send + Sync`, as
/// `Controller::graceful_shutdown_on` needs.
async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Drains a controller's result stream, logging failures: `debug` for the expected (an object
/// gone from the cache before its turn), `warn` for reconcile errors.
async fn drive<S, T>(name: &'static str, results: S)
where
    S: futures::Stream<Item = Result<T, controller::Error<Error, kube::runtime::watcher::Error>>>,
{
    results
        .for_each(|r| async move {
            match r {
                Ok(_) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(controller = name, object = %obj, "object gone before reconcile");
                }
                Err(controller::Error::ReconcilerFailed(e, obj)) => {
                    tracing::warn!(controller = name, object = %obj, error = %e, "reconcile failed; retrying with backoff");
                }
                Err(e) => tracing::warn!(controller = name, error = %e, "controller error"),
            }
        })
        .await;
}

/// Per-object retry delays: exponential from 100 ms, capped at 30 s, with ±20 % jitter,
/// reset when the object reconciles successfully.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: &str) -> Duration {
        let n = {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = f.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let exp = BACKOFF_BASE.saturating_mul(1u32 << (n - 1).min(16));
        let base = exp.min(BACKOFF_CAP);
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        base.mul_f64(jitter)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(key);
    }
}

/// The error policy every controller here uses: per-object backoff.
fn requeue_with_backoff(backoff: &Backoff, ns: &Namespace) -> Action {
    let key = ns.metadata.name.as_deref().unwrap_or_default();
    Action::requeue(backoff.failed(key))
}

/// True when a namespace is being deleted: nothing new may be created in it.
pub fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Whether an API error is "already exists" (409 AlreadyExists).
fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Whether an API error means the namespace is gone or closing (404, or 403 from the
/// namespace lifecycle check): creating content there is pointless, not a failure.
fn namespace_closed(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404
        || (s.code == 403 && s.message.contains("because it is being terminated")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets() {
        let b = Backoff::default();
        let first = b.failed("a");
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        let second = b.failed("a");
        assert!(second >= Duration::from_millis(160) && second <= Duration::from_millis(240));
        for _ in 0..40 {
            assert!(b.failed("a") <= BACKOFF_CAP.mul_f64(1.2));
        }
        assert!(
            b.failed("b") <= Duration::from_millis(120),
            "keys are independent"
        );
        b.succeeded("a");
        assert!(
            b.failed("a") <= Duration::from_millis(120),
            "success resets"
        );
    }

    #[test]
    fn terminating_reads_timestamp_or_phase() {
        let mut ns = Namespace::default();
        assert!(!terminating(&ns));
        ns.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        assert!(terminating(&ns));
        let mut ns = Namespace::default();
        ns.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(terminating(&ns));
    }
}

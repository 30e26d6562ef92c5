//! The pod workers: what makes the pods bound to this node real in containerd.
//!
//! # Design
//! As upstream's kubelet: one watch of the pods bound to this node (field selector
//! `spec.nodeName`), one worker task per pod that syncs it serially ([`sync`]), and at most
//! [`Settings::max_concurrent_syncs`] syncs running at once across pods. A worker syncs when
//! its pod changes, when the PLEG ([`relist`], every [`RELIST_PERIOD`]) sees one of its
//! sandboxes or containers change state, when a ConfigMap or Secret its volumes read
//! changes, and periodically. Everything is level-triggered: each sync reads containerd's
//! state afresh and decides with `pod::actions`, so a missed wake-up costs only latency.
//!
//! Probes: each sync hands what it saw to the prober (`crate::prober::Manager`), whose
//! workers wake the pod's worker when a verdict changes; the sync reads the verdicts back
//! (kills for failed liveness/startup probes, `ready`/`started` in the status).
//!
//! Adoption: containerd keeps running containers across a distro restart, and sandboxes and
//! containers carry the pod's UID and the spec hash as labels, so the first sync after a
//! restart finds them and keeps them. Sandboxes whose pod no longer exists (deleted while
//! distro was down) are stopped and removed once the first pod list is complete, and
//! [`housekeeping`] removes the pod and log directories such pods leave behind.
//!
//! Admission: a pod new to the node passes [`crate::admission`] before it gets a worker
//! (pressure, resources, node affinity); a refused one is marked Failed instead.
//!
//! Container garbage collection: each sync removes the exited containers of its pod beyond
//! the newest one per container name, with their logs (upstream's `MaxPerPodContainer` 1).
//!
//! # Limits
//! - Containers of a terminated pod are kept (the newest attempt of each, for logs) until
//!   the pod is deleted; there is no node-wide cap on dead containers (upstream's
//!   `MaxContainers`, off by default) and no minimum age.

pub mod caches;
pub mod events;
pub mod housekeeping;
pub mod objects;
pub mod relist;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use distro_client::Informers;
use distro_cri::Cri;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::pod::container::ContainerSettings;
use crate::pod::sandbox::SandboxSettings;
use crate::volume::{self, SystemClock, TokenManager, VolumeManager};
use caches::{ApiTokens, Caches};
use relist::Snapshot;
use sync::{Next, PodState, RETRY};

/// How often the PLEG lists containerd's sandboxes and containers (upstream: 1 s).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// Errors of the pod workers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A containerd (CRI) call failed.
    #[error(transparent)]
    Cri(Box<distro_cri::Error>),
    /// An API request failed.
    #[error("API request: {0}")]
    Api(#[source] Box<kube::Error>),
    /// Setting up or tearing down volumes failed.
    #[error(transparent)]
    Volume(#[from] volume::Error),
    /// A file of the pod could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("kubelet task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// A status could not be serialised.
    #[error("serialising pod status: {0}")]
    Json(#[source] serde_json::Error),
}

/// The node-level settings of the pod workers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name (pods bound to it are ours).
    pub node_name: String,
    /// The node's IPs, primary first (pods' `hostIP`s, hostNetwork pods' `podIP`s), as
    /// they are now: a node whose address changes (DHCP) reports the new one in every pod's
    /// next status, as upstream's kubelet reads the node's addresses at each status sync.
    pub host_ips: watch::Receiver<Vec<String>>,
    /// The kubelet's root: `<root>/pods/<uid>/` holds each pod's volumes and files.
    pub root_dir: PathBuf,
    /// Sandbox translation settings (DNS, log root).
    pub sandbox: SandboxSettings,
    /// Container translation settings.
    pub container: ContainerSettings,
    /// Syncs running at once across pods.
    pub max_concurrent_syncs: usize,
    /// The node's allocatable resources.
    pub allocatable: BTreeMap<String, Quantity>,
    /// The eviction manager's pressure conditions, for admission ([`crate::admission`]).
    pub pressure: watch::Receiver<crate::admission::Pressure>,
    /// The grace periods the eviction manager gives the pods it evicts.
    pub eviction_grace: EvictionGrace,
    /// The node's one Event recorder (source `kubelet`, host = the node), shared with the
    /// node's registration, eviction and image GC so its spam filter and aggregation count
    /// every event of the node, as upstream's kubelet has one recorder.
    pub events: distro_client::events::Recorder,
}

/// The grace period of each pod the node-pressure eviction manager evicted, by pod UID:
/// upstream's eviction manager kills the pod itself with this override; here it marks the
/// pod Failed through the API and its pod worker stops the containers, so the override is
/// handed over in memory (the API has no field for it).
#[derive(Clone, Debug, Default)]
pub struct EvictionGrace(Arc<std::sync::Mutex<HashMap<String, i64>>>);

impl EvictionGrace {
    /// Records that pod `uid` was evicted with `seconds` to stop.
    pub fn set(&self, uid: &str, seconds: i64) {
        self.lock().insert(uid.to_string(), seconds);
    }

    /// The grace period pod `uid` was evicted with, if it was.
    pub fn get(&self, uid: &str) -> Option<i64> {
        self.lock().get(uid).copied()
    }

    fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Static pod changes in flight: a directory's worth, and the source waits when full.
const STATIC_CHANGES: usize = 64;

/// What every pod worker shares.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) cri: Cri,
    pub(crate) host_ips: watch::Receiver<Vec<String>>,
    pub(crate) sandbox: SandboxSettings,
    pub(crate) container: ContainerSettings,
    pub(crate) volumes: VolumeManager,
    pub(crate) caches: Caches,
    /// Probe workers and their verdicts.
    pub(crate) prober: crate::prober::Manager,
    /// The kubelet's event recorder, shared by every pod and probe worker.
    events: events::Recorder,
    root_dir: PathBuf,
    node_name: String,
    /// This node's Node (from its own watch), for admission; `None` until first seen.
    node: std::sync::Mutex<Option<Arc<Node>>>,
    pressure: watch::Receiver<crate::admission::Pressure>,
    pub(crate) eviction_grace: EvictionGrace,
}

impl Context {
    /// `<root>/pods/<uid>`: the pod's volumes, hosts file and termination-message files.
    pub(crate) fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }
}

/// What a worker is to do with its pod.
#[derive(Clone)]
enum Desired {
    /// Make the pod's spec real (or, with a deletionTimestamp, stop it).
    Run(Arc<Pod>),
    /// The pod is gone from the API: remove everything it has on the node.
    Gone(Arc<Pod>),
}

struct Handle {
    desired: watch::Sender<Desired>,
    wake: Arc<Notify>,
}

/// Runs the pod workers of this node until `shutdown` turns true. Containers keep running
/// when it returns (a restart adopts them).
///
/// # Errors
/// None once running: failures are logged and retried. The signature leaves room for
/// start-up checks.
pub async fn run(
    client: Client,
    cri: Cri,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    run_with_static_pods(client, cri, settings, None, shutdown).await
}

/// [`run`], also running the static pods of `manifests` (`<data-dir>/agent/pod-manifests`;
/// see [`crate::static_pods`]).
///
/// # Errors
/// As [`run`].
pub async fn run_with_static_pods(
    client: Client,
    cri: Cri,
    settings: Settings,
    manifests: Option<PathBuf>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let informers = Informers::new(client.clone());
    let (cm_tx, mut config_maps) = tokio::sync::mpsc::unbounded_channel();
    let (secret_tx, mut secrets) = tokio::sync::mpsc::unbounded_channel();
    let caches = Caches::new(
        client.clone(),
        &informers,
        settings.allocatable.clone(),
        cm_tx,
        secret_tx,
    );
    let tokens = Arc::new(TokenManager::new(
        Arc::new(ApiTokens::new(client.clone())),
        Arc::new(SystemClock),
    ));
    let recorder = events::Recorder::shared(settings.events.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        cri: cri.clone(),
        host_ips: settings.host_ips.clone(),
        sandbox: settings.sandbox.clone(),
        container: settings.container.clone(),
        volumes: VolumeManager::new(settings.root_dir.clone(), tokens),
        caches,
        prober: crate::prober::Manager::new(recorder.clone(), cri.clone()),
        events: recorder,
        root_dir: settings.root_dir.clone(),
        node_name: settings.node_name.clone(),
        node: std::sync::Mutex::new(None),
        pressure: settings.pressure.clone(),
        eviction_grace: settings.eviction_grace.clone(),
    });
    let permits = Arc::new(Semaphore::new(settings.max_concurrent_syncs.max(1)));

    let api: Api<Pod> = Api::all(client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", settings.node_name));
    let mut pods = std::pin::pin!(watcher(api, config).default_backoff());
    let mut node_events = std::pin::pin!(own_node(&ctx).await);
    let mut relist = tokio::time::interval(RELIST_PERIOD);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    // Static pods: known before the first sweep of unknown sandboxes, then as files change.
    let (static_tx, mut static_rx) = tokio::sync::mpsc::channel(STATIC_CHANGES);
    let static_source = match manifests {
        Some(dir) => {
            let source = crate::static_pods::Source {
                dir,
                node: settings.node_name.clone(),
                client: client.clone(),
            };
            let first = source.read().await;
            for pod in first.values() {
                run_pod(
                    &ctx,
                    &permits,
                    &mut workers,
                    &mut tasks,
                    Desired::Run(Arc::new(pod.clone())),
                );
            }
            Some(tokio::spawn(source.run(first, static_tx, shutdown.clone())))
        }
        None => None,
    };
    let mut listed: HashSet<String> = HashSet::new();
    let mut synced = false;
    let mut last = Snapshot::default();
    // Housekeeping needs containerd's view too: a pod with a sandbox is not an orphan yet.
    let mut relisted = false;
    let mut housekeeping = housekeeping::Housekeeping::default();
    // Every pod's status names the node's address: on a change, sync them all now.
    let mut host_ips = settings.host_ips.clone();
    let mut housekeeping_tick = tokio::time::interval(housekeeping::PERIOD);
    housekeeping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = pods.next() => match event {
                Some(Ok(watcher::Event::Apply(pod))) => {
                    admit_pod(&ctx, &permits, &mut workers, &mut tasks, &last, pod);
                }
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    listed.insert(pod.metadata.uid.clone().unwrap_or_default());
                    admit_pod(&ctx, &permits, &mut workers, &mut tasks, &last, pod);
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    run_pod(&ctx, &permits, &mut workers, &mut tasks, Desired::Gone(Arc::new(pod)));
                }
                Some(Ok(watcher::Event::Init)) => listed.clear(),
                Some(Ok(watcher::Event::InitDone)) => {
                    // Pods that vanished while the watch was down (static pods are not in
                    // the API).
                    let gone: Vec<Arc<Pod>> = workers
                        .iter()
                        .filter(|(uid, _)| !listed.contains(*uid))
                        .filter_map(|(_, h)| match &*h.desired.borrow() {
                            Desired::Run(p) if crate::static_pods::is_static(p) => None,
                            Desired::Run(p) => Some(p.clone()),
                            Desired::Gone(_) => None,
                        })
                        .collect();
                    for pod in gone {
                        run_pod(&ctx, &permits, &mut workers, &mut tasks, Desired::Gone(pod));
                    }
                    synced = true;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => break,
            },
            _ = relist.tick() => match Snapshot::take(&ctx.cri).await {
                Ok(snap) => {
                    for uid in snap.changed_since(&last) {
                        if let Some(h) = workers.get(&uid) {
                            h.wake.notify_one();
                        }
                    }
                    if synced {
                        let orphans: Vec<Arc<Pod>> = snap
                            .pods
                            .values()
                            .filter(|p| !workers.contains_key(&p.uid))
                            .map(|p| Arc::new(identity_pod(p)))
                            .collect();
                        for pod in orphans {
                            tracing::info!(pod = %crate::pod::format_pod(&pod), "removing the sandbox of a pod that no longer exists");
                            run_pod(&ctx, &permits, &mut workers, &mut tasks, Desired::Gone(pod));
                        }
                    }
                    last = snap;
                    relisted = true;
                }
                Err(e) => tracing::warn!(error = %e, "relisting containerd's pods failed"),
            },
            Some(node) = node_events.next() => {
                if let Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) = node {
                    *ctx.node.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(n));
                }
            }
            Ok(()) = host_ips.changed() => {
                tracing::info!(host_ips = ?*host_ips.borrow_and_update(), "the node's addresses changed; updating pod statuses");
                for h in workers.values() {
                    h.wake.notify_one();
                }
            }
            _ = housekeeping_tick.tick(), if synced && relisted => {
                // Inline, so no worker starts (and writes files) while it runs.
                housekeeping
                    .clean(&ctx, |uid| workers.contains_key(uid) || last.pods.contains_key(uid))
                    .await;
            }
            Some(key) = config_maps.recv() => wake_readers(&workers, &key, |(cms, _)| cms),
            Some(key) = secrets.recv() => wake_readers(&workers, &key, |(_, secrets)| secrets),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                    release_objects(&ctx, &workers);
                }
            }
            Some(change) = static_rx.recv() => {
                let desired = match change {
                    crate::static_pods::Change::Run(p) => Desired::Run(Arc::new(p)),
                    crate::static_pods::Change::Gone(p) => Desired::Gone(Arc::new(p)),
                };
                run_pod(&ctx, &permits, &mut workers, &mut tasks, desired);
            }
            // Not the guard `wait_for` returns: it is not Send, and this future must be.
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        }
    }
    if let Some(source) = static_source {
        source.abort();
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    informers.shutdown().await;
    tracing::info!(node = %ctx.node_name, "pod workers stopped; containers keep running");
    Ok(())
}

/// A stand-in for a pod known only from its sandbox's labels.
fn identity_pod(p: &relist::RuntimeIdentity) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(p.name.clone()),
            namespace: Some(p.namespace.clone()),
            uid: Some(p.uid.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// This node's Node, read once (so pods listed at start are admitted against it) and then
/// watched by name, as upstream's kubelet watches only its own Node.
async fn own_node(
    ctx: &Context,
) -> impl futures::Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Send {
    let api: Api<Node> = Api::all(ctx.client.clone());
    // The Node was registered just before: a failure here is transient, and without the
    // Node new pods would be refused (InvalidNodeInfo), so retry a few times first.
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match api.get(&ctx.node_name).await {
            Ok(n) => {
                *ctx.node.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(n));
                break;
            }
            Err(e) if attempt == 5 => {
                tracing::warn!(node = %ctx.node_name, error = %e, "reading the node for admission failed; waiting for its watch")
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={}", ctx.node_name));
    watcher(api, config).default_backoff()
}

/// Runs a pod from the API through admission ([`crate::admission`]) if it is new to the
/// node, then hands it to its worker; a refused pod gets a short-lived worker that writes
/// the refusal (status and Event) instead, as upstream's `rejectPod`.
fn admit_pod(
    ctx: &Arc<Context>,
    permits: &Arc<Semaphore>,
    workers: &mut HashMap<String, Handle>,
    tasks: &mut JoinSet<String>,
    last: &Snapshot,
    pod: Pod,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let fresh = !uid.is_empty()
        && !workers.contains_key(&uid)
        && !last.pods.contains_key(&uid)
        && crate::admission::needs_admission(&pod);
    if fresh {
        // The pods already admitted, not terminal (upstream's active pods).
        let others: Vec<Arc<Pod>> = workers
            .values()
            .filter_map(|h| match &*h.desired.borrow() {
                Desired::Run(p) if !terminal(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let node = ctx.node.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pressure = *ctx.pressure.borrow();
        let verdict =
            crate::admission::admit(&pod, node.as_deref(), others.iter().map(|p| &**p), pressure);
        if let Err(rejection) = verdict {
            tracing::info!(pod = %crate::pod::format_pod(&pod), reason = %rejection.reason, message = %rejection.message, "pod refused at admission");
            let pod = Arc::new(pod);
            // Held as gone: later updates go nowhere, and it counts as no active pod.
            let (tx, _) = watch::channel(Desired::Gone(pod.clone()));
            workers.insert(
                uid.clone(),
                Handle {
                    desired: tx,
                    wake: Arc::new(Notify::new()),
                },
            );
            tasks.spawn(reject(ctx.clone(), pod, rejection, uid));
            return;
        }
    }
    run_pod(ctx, permits, workers, tasks, Desired::Run(Arc::new(pod)));
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Writes a refused pod's status (`Failed`, the reason, "Pod was rejected: ...") and its
/// Warning Event; a failed write is retried with backoff until it lands or the pod is gone.
async fn reject(
    ctx: Arc<Context>,
    pod: Arc<Pod>,
    rejection: crate::admission::Rejection,
    uid: String,
) -> String {
    ctx.events
        .record(
            &pod,
            events::Part::Pod,
            events::WARNING,
            &rejection.reason,
            rejection.message.clone(),
        )
        .await;
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let qos = crate::qos::pod_qos(&pod.spec.clone().unwrap_or_default());
    let body = serde_json::json!({
        "metadata": {"uid": uid},
        "status": {
            "phase": "Failed",
            "reason": rejection.reason,
            "message": rejection.status_message(),
            "qosClass": qos.as_str(),
        },
    });
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut delay = RETRY;
    loop {
        match api
            .patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(&body),
            )
            .await
        {
            Ok(_) => return uid,
            // Gone, or replaced by a pod of the same name: nothing left to refuse.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return uid,
            Err(e) => {
                tracing::warn!(pod = %crate::pod::format_pod(&pod), error = %e, "writing the refused pod's status failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Hands `desired` to the pod's worker, starting one if there is none.
fn run_pod(
    ctx: &Arc<Context>,
    permits: &Arc<Semaphore>,
    workers: &mut HashMap<String, Handle>,
    tasks: &mut JoinSet<String>,
    desired: Desired,
) {
    let pod = match &desired {
        Desired::Run(p) | Desired::Gone(p) => p.clone(),
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    // Mirror pods stand for static pods, which run from their files.
    if uid.is_empty() || crate::static_pods::is_mirror(&pod) {
        return;
    }
    if let Some(h) = workers.get(&uid) {
        h.desired.send_replace(desired);
        return;
    }
    let (tx, rx) = watch::channel(desired);
    let wake = Arc::new(Notify::new());
    workers.insert(
        uid.clone(),
        Handle {
            desired: tx,
            wake: wake.clone(),
        },
    );
    tasks.spawn(worker(ctx.clone(), permits.clone(), rx, wake, uid));
}

type PodObjects = (BTreeSet<objects::Key>, BTreeSet<objects::Key>);

/// Wakes the workers of pods that read the changed object.
fn wake_readers(
    workers: &HashMap<String, Handle>,
    changed: &objects::Key,
    keys: impl Fn(&PodObjects) -> &BTreeSet<objects::Key>,
) {
    for h in workers.values() {
        let hit = match &*h.desired.borrow() {
            Desired::Run(p) => keys(&objects::pod_objects(p)).contains(changed),
            Desired::Gone(_) => false,
        };
        if hit {
            h.wake.notify_one();
        }
    }
}

/// Stops the object watches no remaining pod needs.
fn release_objects(ctx: &Context, workers: &HashMap<String, Handle>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for h in workers.values() {
        if let Desired::Run(p) = &*h.desired.borrow() {
            let (c, s) = objects::pod_objects(p);
            cms.extend(c);
            secrets.extend(s);
        }
    }
    ctx.caches.config_maps.retain(&cms);
    ctx.caches.secrets.retain(&secrets);
}

/// One pod's worker: syncs serially until the pod is gone from the API and the node.
async fn worker(
    ctx: Arc<Context>,
    permits: Arc<Semaphore>,
    mut desired: watch::Receiver<Desired>,
    wake: Arc<Notify>,
    uid: String,
) -> String {
    let mut state = PodState {
        backoff: Default::default(),
        reasons: HashMap::new(),
        pull_errors: HashMap::new(),
        backoff_wait: None,
        events: ctx.events.clone(),
        last_status: None,
        deleted: false,
        wake: wake.clone(),
        desired: desired.clone(),
    };
    loop {
        let current = desired.borrow_and_update().clone();
        let result = {
            let queued = std::time::Instant::now();
            let Ok(_permit) = permits.acquire().await else {
                return uid;
            };
            tracing::debug!(%uid, waited_ms = queued.elapsed().as_millis(), "sync permit");
            match &current {
                Desired::Run(pod) => {
                    let (cms, secrets) = objects::pod_objects(pod);
                    ctx.caches.config_maps.ensure(cms).await;
                    ctx.caches.secrets.ensure(secrets).await;
                    state.sync(&ctx, pod).await
                }
                Desired::Gone(pod) => state.cleanup(&ctx, pod).await,
            }
        };
        let delay = match result {
            Ok(Next::Finished) => {
                housekeeping::remove_pod(&ctx, &uid).await;
                ctx.eviction_grace.forget(&uid);
                return uid;
            }
            Ok(Next::Resync(d)) => d,
            Err(e) => {
                tracing::warn!(%uid, error = %e, "pod sync failed; retrying");
                RETRY * 2
            }
        };
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return uid },
            _ = wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

//! The one Event recorder of every distro component, as upstream's (client-go
//! `tools/record` for core/v1, `tools/events` for events.k8s.io/v1): components say what
//! happened to an object, and the recorder deduplicates, aggregates, rate-limits and writes
//! it in the background.
//!
//! # Design
//! [`Recorder::record`] builds the Event (name `<object>.<nanoseconds hex>`, the object's
//! namespace or `default`, source `component`/`host`) and puts it on a bounded queue
//! ([`QUEUE_CAPACITY`], upstream's `maxQueuedEvents`); it never waits. When the queue is full
//! the event is dropped with a log line, so a slow or unreachable API server never stalls a
//! controller or the kubelet. One task per recorder (and its clones) takes events off the
//! queue, runs them through the [`correlator`] (aggregation, deduplication, spam filter, or
//! the events.k8s.io/v1 series) and writes them one at a time: a repeat becomes a merge
//! PATCH of the first event (created anew if it has gone), a failure to reach the API server
//! is retried as upstream (twelve tries, ten seconds apart), and an API error drops the
//! event. The task ends when the last clone of the recorder is dropped and its queue is
//! empty.
//!
//! Clones share the queue and the correlator; [`Recorder::with_host`] gives a clone with
//! another source host, for processes that speak for several nodes (simulated agents).
//!
//! # Limits
//! - Failed writes are not re-queued behind later events; a write that fails twelve times
//!   is dropped (upstream does the same).
//! - Series (events.k8s.io/v1) repeats are written at once rather than on upstream's
//!   thirty-minute heartbeat, so `series.count` is always current.
//! - A real node has one recorder, cloned into its registration, eviction, pod and probe
//!   workers and image GC, as upstream's kubelet; simulated nodes have one each.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::api::events::v1::Event as SeriesEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

mod correlator;

use correlator::{Correlator, Write};

/// Events waiting to be written per recorder (upstream `maxQueuedEvents`); beyond it new
/// events are dropped. At a few milliseconds per write that is several seconds of backlog,
/// which only a stalled API server reaches.
pub const QUEUE_CAPACITY: usize = 1000;
/// Tries per write while the API server cannot be reached (upstream `maxTriesPerEvent`).
const MAX_TRIES: u32 = 12;
/// Wait between those tries (upstream `defaultSleepDuration`).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The event types upstream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Routine progress.
    Normal,
    /// Something failed and may need a human.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Which API version a recorder writes, as upstream components differ: controllers and the
/// kubelet write core/v1 Events with `count`, the scheduler events.k8s.io/v1 with `series`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// core/v1 with upstream's correlator (`tools/record`).
    Core,
    /// events.k8s.io/v1 with series (`tools/events`).
    Series,
}

/// Who writes: `source.component`/`reportingComponent` and `source.host`/`reportingInstance`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    component: String,
    host: Option<String>,
}

/// An event queued for the sending task, stamped when it was recorded.
enum Pending {
    Core(Box<Event>, Timestamp),
    Series(Box<SeriesEvent>, Timestamp),
}

/// Records Events for one component; cheap to clone (clones share queue and correlator).
///
/// # Panics
/// Constructors spawn the sending task, so they must run inside a tokio runtime.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
    source: Arc<Source>,
    flavour: Flavour,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("source", &self.source)
            .field("flavour", &self.flavour)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A core/v1 recorder writing with `client` as `component` (on `host`, for node
    /// components), as upstream's controllers and kubelet do.
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Self {
        Self::start(
            ApiSink(client),
            Flavour::Core,
            component,
            host,
            QUEUE_CAPACITY,
        )
    }

    /// An events.k8s.io/v1 recorder (`reportingController` = `controller`,
    /// `reportingInstance` = `instance`), as upstream's scheduler.
    pub fn series(client: Client, controller: &str, instance: &str) -> Self {
        Self::start(
            ApiSink(client),
            Flavour::Series,
            controller,
            Some(instance),
            QUEUE_CAPACITY,
        )
    }

    fn start<S: Sink>(
        sink: S,
        flavour: Flavour,
        component: &str,
        host: Option<&str>,
        capacity: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(send_all(sink, rx));
        Recorder {
            tx,
            source: Arc::new(Source {
                component: component.to_string(),
                host: host.map(str::to_string),
            }),
            flavour,
            dropped: Arc::default(),
        }
    }

    /// This recorder speaking for another host (same component, queue and correlator).
    pub fn with_host(&self, host: &str) -> Self {
        Recorder {
            source: Arc::new(Source {
                component: self.source.component.clone(),
                host: Some(host.to_string()),
            }),
            ..self.clone()
        }
    }

    /// Records an event about `regarding` with `reason` (what `kubectl describe` lists) and
    /// `message`. Never waits; see the module docs for what happens next.
    pub fn record(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        self.record_action(regarding, None, type_, reason, "", message)
    }

    /// [`Recorder::record`] with upstream's `action` (what was done; required by
    /// events.k8s.io/v1, optional in core/v1) and a `related` object (a preemptor, say).
    pub fn record_action(
        &self,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        message: String,
    ) {
        let now = now();
        let occurrence = Occurrence {
            regarding,
            related,
            type_,
            reason: reason.to_string(),
            action: (!action.is_empty()).then(|| action.to_string()),
            message,
            now,
        };
        let pending = match self.flavour {
            Flavour::Core => Pending::Core(Box::new(occurrence.core(&self.source)), now),
            Flavour::Series => Pending::Series(Box::new(occurrence.series(&self.source)), now),
        };
        if let Err(e) = self.tx.try_send(pending) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let full = matches!(e, mpsc::error::TrySendError::Full(_));
            if n == 1 || n.is_multiple_of(100) {
                tracing::warn!(component = %self.source.component, %reason, dropped = n, full, "event queue full; dropping events");
            } else {
                tracing::debug!(component = %self.source.component, %reason, dropped = n, "dropping an event");
            }
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The wall clock (k8s-openapi's jiff is built without `std`, so `Timestamp::now` may be
/// absent).
fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_nanosecond(since_epoch.as_nanos() as i128).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One thing that happened, before it is shaped as either API version's Event.
struct Occurrence {
    regarding: ObjectReference,
    related: Option<ObjectReference>,
    type_: EventType,
    reason: String,
    action: Option<String>,
    message: String,
    now: Timestamp,
}

impl Occurrence {
    /// Upstream's name (`<object>.<nanoseconds hex>`) in the object's namespace, or in
    /// `default` for cluster-scoped objects.
    fn meta(&self, source: &Source) -> ObjectMeta {
        let r = &self.regarding;
        ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                r.name.as_deref().unwrap_or(&source.component),
                self.now.as_nanosecond()
            )),
            namespace: Some(r.namespace.clone().unwrap_or_else(|| "default".into())),
            ..Default::default()
        }
    }

    /// As upstream's `tools/record` writes it.
    fn core(self, source: &Source) -> Event {
        Event {
            metadata: self.meta(source),
            involved_object: self.regarding,
            related: self.related,
            reason: Some(self.reason),
            message: Some(self.message),
            type_: Some(self.type_.as_str().into()),
            action: self.action,
            source: Some(EventSource {
                component: Some(source.component.clone()),
                host: source.host.clone(),
            }),
            count: Some(1),
            first_timestamp: Some(Time(self.now)),
            last_timestamp: Some(Time(self.now)),
            reporting_component: Some(source.component.clone()),
            reporting_instance: source.host.clone(),
            ..Default::default()
        }
    }

    /// As upstream's `tools/events` writes it.
    fn series(self, source: &Source) -> SeriesEvent {
        SeriesEvent {
            metadata: self.meta(source),
            event_time: Some(MicroTime(self.now)),
            type_: Some(self.type_.as_str().into()),
            reason: Some(self.reason),
            action: self.action,
            note: Some(self.message),
            reporting_controller: Some(source.component.clone()),
            reporting_instance: Some(
                source
                    .host
                    .clone()
                    .unwrap_or_else(|| source.component.clone()),
            ),
            regarding: Some(self.regarding),
            related: self.related,
            ..Default::default()
        }
    }
}

/// Why a write failed, which decides whether it is retried.
#[derive(Debug)]
enum SinkError {
    /// The API server answered no (invalid, forbidden, namespace terminating): drop it.
    Rejected(String),
    /// The API server could not be reached: try again later.
    Unreachable(String),
}

/// Where events go: the API server, or a test's fake.
trait Sink: Send + Sync + 'static {
    fn write(&self, w: &Write) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Writes through a kube client.
struct ApiSink(Client);

impl Sink for ApiSink {
    async fn write(&self, w: &Write) -> Result<(), SinkError> {
        match w {
            Write::Core { event, patch } => write_api(&self.0, event, patch.as_ref()).await,
            Write::Series { event, patch } => write_api(&self.0, event, patch.as_ref()).await,
        }
    }
}

/// Patches (when `patch`) or creates `event`; a patch that finds nothing creates.
async fn write_api<K>(client: &Client, event: &K, patch: Option<&Value>) -> Result<(), SinkError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let meta = event.meta();
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    if let Some(patch) = patch {
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(classify(e)),
        }
    }
    api.create(&PostParams::default(), event)
        .await
        .map(drop)
        .map_err(classify)
}

fn classify(e: kube::Error) -> SinkError {
    match e {
        kube::Error::Api(s) => SinkError::Rejected(s.message),
        other => SinkError::Unreachable(other.to_string()),
    }
}

/// The sending task: correlates and writes queued events in order until every sender is
/// gone.
async fn send_all<S: Sink>(sink: S, mut rx: mpsc::Receiver<Pending>) {
    let mut correlator = Correlator::default();
    while let Some(pending) = rx.recv().await {
        let write = match pending {
            Pending::Core(event, at) => match correlator.core(*event, at) {
                Some(w) => w,
                None => {
                    tracing::debug!("event over its object's rate; not written");
                    continue;
                }
            },
            Pending::Series(event, at) => correlator.series(*event, at),
        };
        write_with_retries(&sink, &write).await;
    }
}

async fn write_with_retries<S: Sink>(sink: &S, write: &Write) {
    for attempt in 1..=MAX_TRIES {
        match sink.write(write).await {
            Ok(()) => return,
            Err(SinkError::Rejected(message)) => {
                tracing::debug!(%message, "the API server refused an event; dropping it");
                return;
            }
            Err(SinkError::Unreachable(message)) if attempt < MAX_TRIES => {
                tracing::debug!(%message, attempt, "writing an event failed; retrying");
                // Upstream jitters the first wait so many recorders do not retry at once.
                let wait = if attempt == 1 {
                    RETRY_AFTER.mul_f64(rand::random::<f64>())
                } else {
                    RETRY_AFTER
                };
                tokio::time::sleep(wait).await;
            }
            Err(SinkError::Unreachable(message)) => {
                tracing::warn!(%message, "writing an event failed {MAX_TRIES} times; dropping it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::Semaphore;

    /// A sink that writes into a list, each write waiting for a permit (so tests decide
    /// when the "API server" answers), failing with `fail` first if set.
    #[derive(Clone, Default)]
    struct Fake {
        written: Arc<Mutex<Vec<Write>>>,
        gate: Option<Arc<Semaphore>>,
        entered: Arc<tokio::sync::Notify>,
        fail: Arc<Mutex<Vec<SinkError>>>,
    }

    impl Sink for Fake {
        async fn write(&self, w: &Write) -> Result<(), SinkError> {
            self.entered.notify_one();
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("open").forget();
            }
            if let Some(e) = self.fail.lock().unwrap().pop() {
                return Err(e);
            }
            self.written.lock().unwrap().push(w.clone());
            Ok(())
        }
    }

    impl Fake {
        fn written(&self) -> Vec<Write> {
            self.written.lock().unwrap().clone()
        }
    }

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    async fn wait_for(fake: &Fake, n: usize) -> Vec<Write> {
        // Up to a minute: retries wait ten seconds (instant under paused time).
        for _ in 0..12_000 {
            let w = fake.written();
            if w.len() >= n {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("only {:?} written", fake.written());
    }

    #[tokio::test]
    async fn writes_core_events_with_source_and_counts_repeats() {
        let fake = Fake::default();
        let rec = Recorder::start(fake.clone(), Flavour::Core, "kubelet", Some("n1"), 10);
        rec.record(
            pod("web"),
            EventType::Warning,
            "BackOff",
            "Back-off restarting".into(),
        );
        rec.record(
            pod("web"),
            EventType::Warning,
            "BackOff",
            "Back-off restarting".into(),
        );
        let w = wait_for(&fake, 2).await;
        let Write::Core { event, patch: None } = &w[0] else {
            panic!("first is a create: {w:?}")
        };
        assert_eq!(event.metadata.namespace.as_deref(), Some("ns"));
        assert!(event.metadata.name.as_deref().unwrap().starts_with("web."));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reason.as_deref(), Some("BackOff"));
        assert_eq!(event.message.as_deref(), Some("Back-off restarting"));
        let src = event.source.clone().unwrap();
        assert_eq!(src.component.as_deref(), Some("kubelet"));
        assert_eq!(src.host.as_deref(), Some("n1"));
        assert_eq!(event.reporting_component.as_deref(), Some("kubelet"));
        assert_eq!(event.involved_object, pod("web"));
        let Write::Core {
            event: again,
            patch: Some(p),
        } = &w[1]
        else {
            panic!("repeat is a patch: {w:?}")
        };
        assert_eq!(again.metadata.name, event.metadata.name);
        assert_eq!(p["count"], 2);
    }

    #[tokio::test]
    async fn cluster_scoped_objects_get_events_in_default() {
        let fake = Fake::default();
        let rec = Recorder::start(fake.clone(), Flavour::Core, "node-controller", None, 10);
        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("n1".into()),
            ..Default::default()
        };
        rec.with_host("n1")
            .record(node, EventType::Normal, "RegisteredNode", "m".into());
        let w = wait_for(&fake, 1).await;
        let Write::Core { event, .. } = &w[0] else {
            panic!()
        };
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(event.source.as_ref().unwrap().host.as_deref(), Some("n1"));
    }

    #[tokio::test]
    async fn series_recorder_writes_events_k8s_io() {
        let fake = Fake::default();
        let rec = Recorder::start(
            fake.clone(),
            Flavour::Series,
            "default-scheduler",
            Some("sched-1"),
            10,
        );
        let boss = pod("boss");
        rec.record_action(
            pod("victim"),
            Some(boss.clone()),
            EventType::Normal,
            "Preempted",
            "Preempting",
            "Preempted by pod".into(),
        );
        let w = wait_for(&fake, 1).await;
        let Write::Series { event, patch: None } = &w[0] else {
            panic!("{w:?}")
        };
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some("default-scheduler")
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("sched-1"));
        assert_eq!(event.action.as_deref(), Some("Preempting"));
        assert_eq!(event.note.as_deref(), Some("Preempted by pod"));
        assert_eq!(event.related, Some(boss));
        assert!(event.event_time.is_some());
    }

    #[tokio::test]
    async fn a_full_queue_drops_without_waiting() {
        let gate = Arc::new(Semaphore::new(0));
        let fake = Fake {
            gate: Some(gate.clone()),
            ..Default::default()
        };
        let rec = Recorder::start(fake.clone(), Flavour::Core, "c", None, 2);
        rec.record(pod("a"), EventType::Normal, "R", "0".into());
        // The task holds the first event in a stalled write...
        fake.entered.notified().await;
        // ...so two more fill the queue and the rest are dropped, without blocking.
        for i in 1..6 {
            rec.record(pod("a"), EventType::Normal, "R", i.to_string());
        }
        assert_eq!(rec.dropped(), 3);
        gate.add_permits(10);
        let w = wait_for(&fake, 3).await;
        let messages: Vec<_> = w
            .iter()
            .map(|w| match w {
                Write::Core { event, .. } => event.message.clone().unwrap(),
                Write::Series { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(messages, ["0", "1", "2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_is_retried_and_rejected_is_dropped() {
        let fake = Fake::default();
        fake.fail.lock().unwrap().extend([
            SinkError::Unreachable("refused".into()),
            SinkError::Unreachable("refused".into()),
        ]);
        let rec = Recorder::start(fake.clone(), Flavour::Core, "c", None, 10);
        rec.record(pod("a"), EventType::Normal, "R", "retried".into());
        let w = wait_for(&fake, 1).await;
        assert_eq!(w.len(), 1);
        fake.fail
            .lock()
            .unwrap()
            .push(SinkError::Rejected("forbidden".into()));
        rec.record(pod("a"), EventType::Normal, "R", "refused".into());
        rec.record(pod("a"), EventType::Normal, "R", "next".into());
        let w = wait_for(&fake, 2).await;
        let Write::Core { event, .. } = &w[1] else {
            panic!()
        };
        assert_eq!(
            event.message.as_deref(),
            Some("next"),
            "refused one dropped"
        );
    }
}

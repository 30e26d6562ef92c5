//! Pod Events as the kubelet records them: source `kubelet`, host = node, and `fieldPath`
//! naming the container. Deduplication (a pod in CrashLoopBackOff shows `BackOff (x12 over
//! 3m)` rather than flooding the API), aggregation, rate limiting and the write itself are
//! the shared recorder's ([`distro_client::events`]); this only says which pod part an
//! event is about.

use distro_client::events::EventType;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};

/// Event type `Normal`.
pub const NORMAL: &str = "Normal";
/// Event type `Warning`.
pub const WARNING: &str = "Warning";

/// Which container of the pod an event is about.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// The pod itself.
    Pod,
    /// `spec.containers{name}`.
    Container(&'a str),
    /// `spec.initContainers{name}`.
    InitContainer(&'a str),
}

/// The kubelet's recorder: one per node, cloned into its pod and probe workers (and shared
/// with the node's other parts, see [`Recorder::shared`]) so they share one correlator, as
/// upstream's kubelet has one recorder.
#[derive(Clone, Debug)]
pub struct Recorder(distro_client::events::Recorder);

impl Recorder {
    /// A recorder writing as the kubelet of `node`.
    pub fn new(client: distro_client::Client, node: &str) -> Self {
        Recorder(distro_client::events::Recorder::new(
            client,
            "kubelet",
            Some(node),
        ))
    }

    /// Pod events through the node's one `recorder` (source `kubelet`, host = the node),
    /// which the node's registration, eviction and image GC write through too.
    pub fn shared(recorder: distro_client::events::Recorder) -> Self {
        Recorder(recorder)
    }

    /// Records an event on `part` of `pod`. It never waits (the shared recorder queues it);
    /// it is `async` so the workers' call sites read as before.
    ///
    /// # Guarantees
    /// Best effort: a failed write is logged and never fails the sync.
    pub async fn record(
        &self,
        pod: &Pod,
        part: Part<'_>,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        let type_ = if type_ == WARNING {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.0.record(pod_ref(pod, part), type_, reason, message);
    }
}

/// How the kubelet's events name a pod and, through `fieldPath`, its container.
fn pod_ref(pod: &Pod, part: Part<'_>) -> ObjectReference {
    let field_path = match part {
        Part::Pod => None,
        Part::Container(c) => Some(format!("spec.containers{{{c}}}")),
        Part::InitContainer(c) => Some(format!("spec.initContainers{{{c}}}")),
    };
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

//! Pod Events as the kubelet records them (source `kubelet`, host = node, `fieldPath`
//! naming the container), with upstream's aggregation: a repeat of the same reason and
//! message on the same object bumps `count` and `lastTimestamp` instead of adding an Event,
//! so a pod in CrashLoopBackOff shows `BackOff (x12 over 3m)` rather than flooding the API.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

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

/// Records events for the pods of one worker, remembering what it recorded for aggregation.
///
/// # Guarantees
/// Best effort: a failed write is logged at debug and never fails the sync.
pub struct Recorder {
    client: Client,
    node: String,
    /// `(fieldPath, reason, message)` → (event name, count so far).
    seen: HashMap<(String, String, String), (String, i32)>,
}

impl Recorder {
    /// A recorder writing as the kubelet of `node`.
    pub fn new(client: Client, node: &str) -> Self {
        Recorder {
            client,
            node: node.to_string(),
            seen: HashMap::new(),
        }
    }

    /// Records (or aggregates into) an event on `pod`.
    pub async fn record(
        &mut self,
        pod: &Pod,
        part: Part<'_>,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        let field_path = match part {
            Part::Pod => None,
            Part::Container(c) => Some(format!("spec.containers{{{c}}}")),
            Part::InitContainer(c) => Some(format!("spec.initContainers{{{c}}}")),
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = crate::backoff::wall_clock_now();
        let key = (
            field_path.clone().unwrap_or_default(),
            reason.to_string(),
            message.clone(),
        );
        if let Some((name, count)) = self.seen.get_mut(&key) {
            *count += 1;
            let patch = json!({"count": *count, "lastTimestamp": Time(now)});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(event = %name, error = %e, "aggregating an event failed; recording a new one");
                    self.seen.remove(&key);
                }
            }
        }
        let name = format!(
            "{}.{:x}",
            pod.metadata.name.as_deref().unwrap_or("pod"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                field_path,
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.node.clone()),
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                self.seen.insert(key, (name, 1));
            }
            Err(e) => tracing::debug!(%reason, error = %e, "recording an event failed"),
        }
    }
}

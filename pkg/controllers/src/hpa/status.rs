//! HPA conditions and Events as upstream reports them: `AbleToScale`, `ScalingActive` and
//! `ScalingLimited` (upstream's `setCondition`), and Events that repeat by bumping the count
//! of the first (as upstream's event correlator does), so a metric failing every sync period
//! does not flood the namespace.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
};
use k8s_openapi::api::core::v1::{Event, EventSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::objects::{object_ref, EventType};

/// Sets condition `type_` (appending it if new), moving its transition time only when the
/// status changes.
pub fn set_condition(
    conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    let i = match conditions.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conditions.push(HorizontalPodAutoscalerCondition {
                type_: type_.into(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let c = &mut conditions[i];
    if c.status != status {
        c.last_transition_time = Some(Time(now));
    }
    c.status = status.into();
    c.reason = Some(reason.into());
    c.message = Some(message);
}

/// How upstream's correlator identifies "the same event" for one HPA.
type EventKey = (String, &'static str, String);

/// The Event recorded for a key: its name, count and first time.
type Recorded = (String, i32, Timestamp);

/// Events about HPAs, aggregated per HPA, reason and message.
#[derive(Default)]
pub struct Recorder {
    seen: Mutex<HashMap<EventKey, Recorded>>,
}

/// Upstream's correlator folds repeats within this window into one Event.
const AGGREGATE_FOR: i64 = 600;

impl Recorder {
    /// Records an Event about `hpa`; a repeat within ten minutes bumps the count of the
    /// earlier one. Failures are logged only: events are best effort.
    pub async fn event(
        &self,
        client: &Client,
        component: &str,
        hpa: &HorizontalPodAutoscaler,
        kind: EventType,
        reason: &'static str,
        message: String,
    ) {
        let ns = hpa.namespace().unwrap_or_default();
        let key = (format!("{ns}/{}", hpa.name_any()), reason, message.clone());
        let now = Timestamp::now();
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let earlier = self.lock().get(&key).cloned();
        if let Some((name, count, first)) = earlier {
            if now.as_second() - first.as_second() < AGGREGATE_FOR {
                let patch = serde_json::json!({"count": count + 1, "lastTimestamp": Time(now)});
                if api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    self.lock().insert(key, (name, count + 1, first));
                    return;
                }
            }
        }
        let name = format!("{}.{:x}", hpa.name_any(), now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: object_ref(hpa),
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(
                match kind {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some(component.into()),
                host: None,
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            reporting_component: Some(component.into()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                self.lock().insert(key, (name, 1, now));
            }
            Err(e) => tracing::debug!(%reason, error = %e, "recording an event failed"),
        }
    }

    /// Forgets the events of HPAs not in `live` (deleted ones).
    pub fn retain(&self, live: &dyn Fn(&str) -> bool) {
        self.lock().retain(|k, _| live(&k.0));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventKey, Recorded>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1 = t0 + SignedDuration::from_secs(10);
        let mut cs = Vec::new();
        set_condition(
            &mut cs,
            "AbleToScale",
            true,
            "SucceededGetScale",
            "a".into(),
            t0,
        );
        set_condition(
            &mut cs,
            "ScalingActive",
            false,
            "FailedGetResourceMetric",
            "b".into(),
            t0,
        );
        set_condition(
            &mut cs,
            "AbleToScale",
            true,
            "SucceededRescale",
            "c".into(),
            t1,
        );
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].reason.as_deref(), Some("SucceededRescale"));
        assert_eq!(cs[0].last_transition_time, Some(Time(t0)));
        set_condition(
            &mut cs,
            "ScalingActive",
            true,
            "ValidMetricFound",
            "d".into(),
            t1,
        );
        assert_eq!(cs[1].last_transition_time, Some(Time(t1)));
        assert_eq!(cs[1].status, "True");
    }
}

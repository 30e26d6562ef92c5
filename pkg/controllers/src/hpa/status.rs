//! HPA conditions as upstream reports them: `AbleToScale`, `ScalingActive` and
//! `ScalingLimited` (upstream's `setCondition`). Events go through the shared recorder
//! (`distro_client::events`), whose correlator folds a metric failing every sync period
//! into one Event with a count.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

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

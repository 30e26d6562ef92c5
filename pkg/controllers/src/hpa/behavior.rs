//! Turning a metric proposal into the replica count to set, as upstream's
//! `normalizeDesiredReplicas` (no `spec.behavior`) and `normalizeDesiredReplicasWithBehaviors`:
//! stabilisation windows over the recommendation history, scaling policies over the history
//! of scale events, and the min/max bounds, each with the condition reason upstream reports.
//!
//! [`History`] is the per-HPA memory upstream keeps in the controller (lost on restart or
//! leader change, as upstream's); the functions here take "now" so they test without clocks.

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// A past recommendation (what the metrics asked for before stabilisation).
#[derive(Clone, Copy, Debug)]
struct Recommendation {
    replicas: i32,
    at: Timestamp,
}

/// A past rescale: how many replicas it added (scale-up) or removed (scale-down).
#[derive(Clone, Copy, Debug)]
struct ScaleEvent {
    change: i32,
    at: Timestamp,
    outdated: bool,
}

/// One HPA's recommendation and scale-event history.
#[derive(Clone, Debug, Default)]
pub struct History {
    recommendations: Vec<Recommendation>,
    ups: Vec<ScaleEvent>,
    downs: Vec<ScaleEvent>,
}

/// The outcome of normalisation, with the two conditions it sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    /// Replicas to set.
    pub replicas: i32,
    /// `AbleToScale` (True) reason and message.
    pub able: (&'static str, &'static str),
    /// `ScalingLimited` status, reason and message.
    pub limited: (bool, &'static str, &'static str),
}

const WITHIN_RANGE: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);
const READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const DOWN_STABILIZED: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);

fn before(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN)
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

impl History {
    /// Remembers the replica count at the first sight of an HPA, so a scale-down right after
    /// a controller start is stabilised too (upstream's `recordInitialRecommendation`).
    pub fn record_initial(&mut self, current: i32, now: Timestamp) {
        if self.recommendations.is_empty() {
            self.recommendations.push(Recommendation {
                replicas: current,
                at: now,
            });
        }
    }

    /// Stores `rec`, reusing a slot older than `cutoff` so the history stays bounded.
    fn remember(&mut self, old: Option<usize>, rec: Recommendation) {
        match old {
            Some(i) => self.recommendations[i] = rec,
            None => self.recommendations.push(rec),
        }
    }

    /// Without `spec.behavior`: the highest recommendation of the downscale stabilisation
    /// window, then at most `max(2 × current, 4)` and within min/max.
    pub fn normalize(
        &mut self,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        window: Duration,
        now: Timestamp,
    ) -> Normalized {
        let cutoff = before(now, window);
        let mut stabilized = desired;
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at < cutoff {
                old = Some(i);
            } else if r.replicas > stabilized {
                stabilized = r.replicas;
            }
        }
        self.remember(
            old,
            Recommendation {
                replicas: desired,
                at: now,
            },
        );
        let able = if stabilized != desired {
            DOWN_STABILIZED
        } else {
            READY
        };
        let scale_up_limit = (2 * current).max(4);
        let (max_allowed, over) = if max > scale_up_limit {
            (scale_up_limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        let (replicas, why) = if stabilized < min {
            (min, TOO_FEW)
        } else if stabilized > max_allowed {
            (max_allowed, over)
        } else {
            (stabilized, WITHIN_RANGE)
        };
        Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, why.0, why.1),
        }
    }

    /// With `spec.behavior` (defaulted by the apiserver; a missing scale-down window is
    /// `default_down_window`): both stabilisation windows, then the scaling policies.
    #[allow(clippy::too_many_arguments)]
    pub fn normalize_with_behavior(
        &mut self,
        behavior: &HorizontalPodAutoscalerBehavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        default_down_window: Duration,
        now: Timestamp,
    ) -> Normalized {
        let up = rules(behavior.scale_up.as_ref(), true);
        let mut down = rules(behavior.scale_down.as_ref(), false);
        if behavior
            .scale_down
            .as_ref()
            .and_then(|r| r.stabilization_window_seconds)
            .is_none()
        {
            down.stabilization_window_seconds =
                Some(i32::try_from(default_down_window.as_secs()).unwrap_or(i32::MAX));
        }
        let up_cutoff = before(now, secs(up.stabilization_window_seconds.unwrap_or(0)));
        let down_cutoff = before(now, secs(down.stabilization_window_seconds.unwrap_or(0)));
        let (mut up_rec, mut down_rec) = (desired, desired);
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at > up_cutoff {
                up_rec = up_rec.min(r.replicas);
            }
            if r.at > down_cutoff {
                down_rec = down_rec.max(r.replicas);
            }
            if r.at < up_cutoff && r.at < down_cutoff {
                old = Some(i);
            }
        }
        let stabilized = current.max(up_rec).min(down_rec);
        self.remember(
            old,
            Recommendation {
                replicas: desired,
                at: now,
            },
        );
        let able = if stabilized == desired {
            READY
        } else if desired >= current {
            UP_STABILIZED
        } else {
            DOWN_STABILIZED
        };
        let (replicas, why) = if stabilized > current {
            let limit = self.scale_up_limit(current, &up, now).max(current);
            let (max_allowed, over) = if max > limit {
                (limit, UP_LIMIT)
            } else {
                (max, TOO_MANY)
            };
            if stabilized > max_allowed {
                (max_allowed, over)
            } else {
                (stabilized, WITHIN_RANGE)
            }
        } else if stabilized < current {
            let limit = self.scale_down_limit(current, &down, now).min(current);
            let (min_allowed, under) = if min < limit {
                (limit, DOWN_LIMIT)
            } else {
                (min, TOO_FEW)
            };
            if stabilized < min_allowed {
                (min_allowed, under)
            } else {
                (stabilized, WITHIN_RANGE)
            }
        } else {
            (stabilized, WITHIN_RANGE)
        };
        Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, why.0, why.1),
        }
    }

    /// Replicas added (`ups`) or removed within the last `period`.
    fn change_in(events: &[ScaleEvent], period: Duration, now: Timestamp) -> i32 {
        let cutoff = before(now, period);
        events
            .iter()
            .filter(|e| e.at > cutoff)
            .map(|e| e.change)
            .sum()
    }

    fn period_start(&self, current: i32, p: &HPAScalingPolicy, now: Timestamp) -> i32 {
        let period = secs(p.period_seconds);
        current - Self::change_in(&self.ups, period, now)
            + Self::change_in(&self.downs, period, now)
    }

    /// Upstream's `calculateScaleUpLimitWithScalingRules`.
    fn scale_up_limit(&self, current: i32, r: &HPAScalingRules, now: Timestamp) -> i32 {
        let select = r.select_policy.as_deref().unwrap_or("Max");
        if select == "Disabled" {
            return current;
        }
        let proposals = r.policies.iter().flatten().map(|p| {
            let start = self.period_start(current, p, now);
            if p.type_ == "Pods" {
                start.saturating_add(p.value)
            } else {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
        });
        if select == "Min" {
            proposals.min().unwrap_or(i32::MAX)
        } else {
            proposals.max().unwrap_or(i32::MIN)
        }
    }

    /// Upstream's `calculateScaleDownLimitWithBehaviors`.
    fn scale_down_limit(&self, current: i32, r: &HPAScalingRules, now: Timestamp) -> i32 {
        let select = r.select_policy.as_deref().unwrap_or("Max");
        if select == "Disabled" {
            return current;
        }
        let proposals = r.policies.iter().flatten().map(|p| {
            let start = self.period_start(current, p, now);
            if p.type_ == "Pods" {
                start.saturating_sub(p.value)
            } else {
                (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
            }
        });
        if select == "Min" {
            proposals.max().unwrap_or(i32::MIN)
        } else {
            proposals.min().unwrap_or(i32::MAX)
        }
    }

    /// Records a rescale from `from` to `to` for the policies' periods (upstream's
    /// `storeScaleEvent`); only HPAs with `behavior` keep these. Events older than the
    /// longest policy period are reused.
    pub fn record_scale(
        &mut self,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
        from: i32,
        to: i32,
        now: Timestamp,
    ) {
        let Some(b) = behavior else { return };
        let (events, r, change) = if to > from {
            (&mut self.ups, rules(b.scale_up.as_ref(), true), to - from)
        } else {
            (
                &mut self.downs,
                rules(b.scale_down.as_ref(), false),
                from - to,
            )
        };
        let longest = r
            .policies
            .iter()
            .flatten()
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0);
        let cutoff = before(now, secs(longest));
        for e in events.iter_mut() {
            if e.at < cutoff {
                e.outdated = true;
            }
        }
        let event = ScaleEvent {
            change,
            at: now,
            outdated: false,
        };
        match events.iter().position(|e| e.outdated) {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}

/// The rules in effect: given ones, with upstream's defaults for what is unset (the
/// apiserver defaults them too; this covers objects stored before that).
fn rules(given: Option<&HPAScalingRules>, up: bool) -> HPAScalingRules {
    let policy = |type_: &str, value| HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: 15,
    };
    let mut r = given.cloned().unwrap_or_default();
    if r.select_policy.is_none() {
        r.select_policy = Some("Max".into());
    }
    if r.policies.as_ref().is_none_or(|p| p.is_empty()) {
        r.policies = Some(if up {
            vec![policy("Pods", 4), policy("Percent", 100)]
        } else {
            vec![policy("Percent", 100)]
        });
    }
    if up && r.stabilization_window_seconds.is_none() {
        r.stabilization_window_seconds = Some(0);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn without_behavior_scale_down_is_stabilised_for_the_window() {
        let mut h = History::default();
        h.record_initial(4, t(0));
        let n = h.normalize(4, 1, 1, 10, FIVE_MIN, t(15));
        assert_eq!(n.replicas, 4);
        assert_eq!(n.able.0, "ScaleDownStabilized");
        // Once the 4 is older than the window, the 1 recorded at 15 s still holds... until it
        // is the highest: at 316 s every recommendation in the window is 1.
        let n = h.normalize(4, 1, 1, 10, FIVE_MIN, t(316));
        assert_eq!(n.replicas, 1);
        assert_eq!(n.able.0, "ReadyForNewScale");
        assert_eq!(
            n.limited,
            (
                false,
                "DesiredWithinRange",
                "the desired count is within the acceptable range"
            )
        );
    }

    #[test]
    fn without_behavior_scale_up_is_limited_to_double_or_four() {
        let mut h = History::default();
        let n = h.normalize(1, 10, 1, 20, FIVE_MIN, t(0));
        assert_eq!(n.replicas, 4);
        assert!(n.limited.0);
        assert_eq!(n.limited.1, "ScaleUpLimit");
        let n = h.normalize(4, 10, 1, 6, FIVE_MIN, t(1));
        assert_eq!((n.replicas, n.limited.1), (6, "TooManyReplicas"));
        let n = h.normalize(4, 0, 2, 6, Duration::ZERO, t(400));
        assert_eq!((n.replicas, n.limited.1), (2, "TooFewReplicas"));
    }

    fn behavior(
        down_window: i32,
        down: Option<Vec<HPAScalingPolicy>>,
        select: &str,
    ) -> HorizontalPodAutoscalerBehavior {
        HorizontalPodAutoscalerBehavior {
            scale_up: None,
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(down_window),
                policies: down,
                select_policy: Some(select.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn default_scale_up_policies_allow_max_of_four_pods_or_double() {
        let b = behavior(0, None, "Max");
        let mut h = History::default();
        let n = h.normalize_with_behavior(&b, 1, 10, 1, 20, FIVE_MIN, t(0));
        assert_eq!(
            (n.replicas, n.limited.1),
            (5, "ScaleUpLimit"),
            "1 + 4 pods beats 1 × 2"
        );
        h.record_scale(Some(&b), 1, 5, t(0));
        // Within the same 15 s period nothing more may be added...
        let n = h.normalize_with_behavior(&b, 5, 10, 1, 20, FIVE_MIN, t(5));
        assert_eq!(n.replicas, 5, "period start is 1: max(1 + 4, 1 × 2) = 5");
        // ...after it, 10 is 100% of 5.
        let n = h.normalize_with_behavior(&b, 5, 10, 1, 20, FIVE_MIN, t(20));
        assert_eq!((n.replicas, n.limited.1), (10, "DesiredWithinRange"));
    }

    #[test]
    fn zero_window_scale_down_goes_straight_to_min() {
        let b = behavior(0, None, "Max");
        let mut h = History::default();
        h.record_initial(4, t(0));
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 4, FIVE_MIN, t(1));
        assert_eq!(
            n.replicas, 1,
            "100% per 15 s allows dropping to the minimum"
        );
        assert_eq!(n.able.0, "ReadyForNewScale");
    }

    #[test]
    fn scale_down_window_keeps_the_highest_recommendation() {
        let b = behavior(60, None, "Max");
        let mut h = History::default();
        h.record_initial(4, t(0));
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 4, FIVE_MIN, t(30));
        assert_eq!((n.replicas, n.able.0), (4, "ScaleDownStabilized"));
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 4, FIVE_MIN, t(61));
        assert_eq!(n.replicas, 1);
    }

    #[test]
    fn pods_policy_limits_scale_down_rate() {
        let pods = |v| HPAScalingPolicy {
            type_: "Pods".into(),
            value: v,
            period_seconds: 60,
        };
        let b = behavior(0, Some(vec![pods(1)]), "Max");
        let mut h = History::default();
        let n = h.normalize_with_behavior(&b, 5, 1, 1, 10, FIVE_MIN, t(0));
        assert_eq!(
            (n.replicas, n.limited.0, n.limited.1),
            (4, true, "ScaleDownLimit")
        );
        h.record_scale(Some(&b), 5, 4, t(0));
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 10, FIVE_MIN, t(30));
        assert_eq!(n.replicas, 4, "the period's one pod is spent");
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 10, FIVE_MIN, t(61));
        assert_eq!(n.replicas, 3);
    }

    #[test]
    fn disabled_select_policy_stops_that_direction() {
        let b = behavior(0, None, "Disabled");
        let mut h = History::default();
        let n = h.normalize_with_behavior(&b, 5, 1, 1, 10, FIVE_MIN, t(0));
        assert_eq!(n.replicas, 5);
        assert_eq!(n.limited.1, "ScaleDownLimit");
    }

    #[test]
    fn missing_scale_down_window_takes_the_flag() {
        let b = HorizontalPodAutoscalerBehavior::default();
        let mut h = History::default();
        h.record_initial(4, t(0));
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 4, Duration::from_secs(10), t(5));
        assert_eq!(n.replicas, 4);
        let n = h.normalize_with_behavior(&b, 4, 1, 1, 4, Duration::from_secs(10), t(11));
        assert_eq!(n.replicas, 1);
    }
}

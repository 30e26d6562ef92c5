//! The Job controller's pure rules, as upstream's `pkg/controller/job`: conditions, the pod
//! failure policy, the pod-failure backoff, completion indexes and how many pods to run. No
//! IO here, so every rule is tested without a cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, PodFailurePolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The finalizer the controller puts on its pods, so a pod cannot vanish before it is counted
/// in the Job's status (upstream's `batch.kubernetes.io/job-tracking`).
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// Annotation and label carrying an indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The environment variable an indexed Job's containers read their index from.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Upstream's first delay before a failed pod is replaced (`DefaultJobPodFailureBackOff`).
pub const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);

/// Upstream's cap of that delay (`MaxJobPodFailureBackOff`).
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);

/// Upstream's condition reasons and messages (`batch/v1` constants and job controller strings).
pub mod reason {
    /// Too many failed pods.
    pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
    /// `activeDeadlineSeconds` passed.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// A `FailJob` rule of the pod failure policy matched.
    pub const POD_FAILURE_POLICY: &str = "PodFailurePolicy";
    /// Enough pods succeeded.
    pub const COMPLETIONS_REACHED: &str = "CompletionsReached";
    /// Message of [`BACKOFF_LIMIT_EXCEEDED`].
    pub const BACKOFF_LIMIT_MESSAGE: &str = "Job has reached the specified backoff limit";
    /// Message of [`DEADLINE_EXCEEDED`].
    pub const DEADLINE_MESSAGE: &str = "Job was active longer than specified deadline";
    /// Message of [`COMPLETIONS_REACHED`].
    pub const COMPLETIONS_MESSAGE: &str = "Reached expected number of succeeded pods";
}

/// Whether the Job has condition `type_` with status True.
pub fn has_condition(job: &Job, type_: &str) -> bool {
    condition(job, type_).is_some()
}

/// The Job's condition `type_` if its status is True.
pub fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job is finished: `Complete` or `Failed` is True (upstream's `IsJobFinished`).
pub fn is_finished(job: &Job) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

/// When the Job finished: the transition time of its terminal condition.
pub fn finish_time(job: &Job) -> Option<Timestamp> {
    ["Complete", "Failed"]
        .iter()
        .find_map(|t| condition(job, t))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Sets condition `type_` (upstream's `ensureJobConditionStatus`): a status change moves the
/// transition time; a new reason or message alone does not. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.status = status.into();
            c.last_transition_time = Some(Time(now));
        } else if c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message) {
            return false;
        }
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return true;
    }
    conditions.push(JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

/// What the pod failure policy says about a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureAction {
    /// Fail the whole Job, with this condition message.
    FailJob(String),
    /// Do not count the failure towards `backoffLimit`.
    Ignore,
    /// Count it (also the answer when no rule matches).
    Count,
}

/// Evaluates the pod failure policy for a failed pod, rules in order, first match wins
/// (upstream's `matchPodFailurePolicy`). Exit code rules look at terminated containers with a
/// non-zero exit code (init containers included); condition rules at the pod's conditions
/// (e.g. `DisruptionTarget`). `FailIndex` (per-index backoff) is not supported and counts.
pub fn evaluate_failure_policy(policy: &PodFailurePolicy, pod: &Pod) -> FailureAction {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    let containers = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|c| {
            let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
            (code != 0).then_some((c.name.as_str(), code))
        });
    let containers: Vec<(&str, i32)> = containers.collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(req) = &rule.on_exit_codes {
            containers
                .iter()
                .filter(|(c, _)| req.container_name.as_deref().is_none_or(|n| n == *c))
                .find(|(_, code)| match req.operator.as_str() {
                    "In" => req.values.contains(code),
                    "NotIn" => !req.values.contains(code),
                    _ => false,
                })
                .map(|(c, code)| {
                    format!(
                        "Container {c} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        rule.action
                    )
                })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let conds = status.and_then(|s| s.conditions.as_ref());
            patterns
                .iter()
                .find(|p| {
                    conds
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == p.type_ && c.status == p.status)
                })
                .map(|p| {
                    format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                        p.type_, rule.action
                    )
                })
        } else {
            None
        };
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => FailureAction::FailJob(message),
                "Ignore" => FailureAction::Ignore,
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

/// How long to wait before replacing pods after `failures` consecutive failures (counted since
/// the last success): 10 s doubled per further failure, capped at 10 min (upstream's
/// `getRemainingTime` of the backoff record).
pub fn failure_backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    POD_FAILURE_BACKOFF
        .saturating_mul(1u32 << (failures - 1).min(16))
        .min(MAX_POD_FAILURE_BACKOFF)
}

/// Parses `status.completedIndexes` ("1,3-5,7"); malformed parts are skipped, as upstream.
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// Formats indexes as upstream's compressed intervals ("1,3-5,7").
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// An indexed Job pod's completion index (annotation first, then label), if valid.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    let meta = &pod.metadata;
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))
        .and_then(|v| v.parse().ok())
        .filter(|i: &i32| *i >= 0)
}

/// How many pods a NonIndexed Job wants running (upstream's `wantActive` in `manageJob`):
/// never more than `parallelism`; with `completions`, no more than the successes still
/// missing; without, none new once one pod succeeded (the others keep running).
pub fn want_active(completions: Option<i32>, parallelism: i32, succeeded: i32, active: i32) -> i32 {
    match completions {
        None if succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - succeeded).clamp(0, parallelism.max(0)),
    }
}

/// The indexes an Indexed Job should start next: not completed, not running, lowest first,
/// at most `room` of them.
pub fn indexes_to_start(
    completions: i32,
    completed: &BTreeSet<i32>,
    running: &BTreeSet<i32>,
    room: usize,
) -> Vec<i32> {
    (0..completions.max(0))
        .filter(|i| !completed.contains(i) && !running.contains(i))
        .take(room)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
        PodFailurePolicyRule,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };
    use kube::api::ObjectMeta;

    fn failed_pod(exit: &[(&str, i32)], conditions: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(
                    exit.iter()
                        .map(|(n, code)| ContainerStatus {
                            name: n.to_string(),
                            state: Some(ContainerState {
                                terminated: Some(ContainerStateTerminated {
                                    exit_code: *code,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                ),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|t| PodCondition {
                            type_: t.to_string(),
                            status: "True".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn exit_rule(action: &str, op: &str, values: &[i32]) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: op.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    #[test]
    fn failure_policy_first_matching_rule_wins() {
        let policy = PodFailurePolicy {
            rules: vec![
                exit_rule("FailJob", "In", &[42]),
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: None,
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                },
                exit_rule("Count", "NotIn", &[0]),
            ],
        };
        assert_eq!(
            evaluate_failure_policy(&policy, &failed_pod(&[("main", 42)], &[])),
            FailureAction::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"
                    .into()
            )
        );
        assert_eq!(
            evaluate_failure_policy(
                &policy,
                &failed_pod(&[("main", 137)], &["DisruptionTarget"])
            ),
            FailureAction::Ignore
        );
        assert_eq!(
            evaluate_failure_policy(&policy, &failed_pod(&[("main", 1)], &[])),
            FailureAction::Count
        );
        // Exit code 0 never matches, even NotIn.
        let only_not_in = PodFailurePolicy {
            rules: vec![exit_rule("FailJob", "NotIn", &[1])],
        };
        assert_eq!(
            evaluate_failure_policy(&only_not_in, &failed_pod(&[("main", 0)], &[])),
            FailureAction::Count
        );
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_ten_minutes() {
        assert_eq!(failure_backoff(0), Duration::ZERO);
        assert_eq!(failure_backoff(1), Duration::from_secs(10));
        assert_eq!(failure_backoff(3), Duration::from_secs(40));
        assert_eq!(failure_backoff(30), MAX_POD_FAILURE_BACKOFF);
    }

    #[test]
    fn indexes_round_trip_as_intervals() {
        let set = parse_indexes("0,2-4,7, x,9-8");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        let running = BTreeSet::from([1]);
        assert_eq!(indexes_to_start(6, &set, &running, 2), vec![5]);
        assert_eq!(
            indexes_to_start(3, &BTreeSet::new(), &BTreeSet::new(), 2),
            vec![0, 1]
        );
    }

    #[test]
    fn active_pods_wanted_as_upstream() {
        assert_eq!(want_active(Some(5), 2, 0, 0), 2);
        assert_eq!(want_active(Some(5), 2, 4, 0), 1);
        assert_eq!(want_active(Some(5), 2, 6, 0), 0);
        assert_eq!(want_active(None, 3, 0, 0), 3);
        assert_eq!(want_active(None, 3, 1, 2), 2);
    }

    #[test]
    fn conditions_move_transition_time_only_on_status_change() {
        let t1 = Timestamp::from_second(100).unwrap();
        let t2 = Timestamp::from_second(200).unwrap();
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            t1
        ));
        assert!(!set_condition(
            &mut c,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            t2
        ));
        assert!(set_condition(
            &mut c,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            t2
        ));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Some(Time(t2)));
    }
}

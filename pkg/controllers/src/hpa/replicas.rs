//! The replica calculator, as upstream's `podautoscaler/replica_calculator.go`: from per-pod
//! resource metrics and the target's pods, how many replicas would bring the average to the
//! target. Pure: it takes the pods, the metrics and "now", so every upstream edge case
//! (missing metrics, unready pods, tolerance) is a unit test.
//!
//! Errors are the messages upstream puts in its Events and conditions (they are shown to
//! users as they are), so they are plain strings here; the controller wraps them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use distro_apimachinery::quantity::Quantity;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// One pod's usage of a resource, as the metrics API reported it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodMetric {
    /// When the usage was measured (end of the window).
    pub timestamp: Timestamp,
    /// Over how long it was averaged.
    pub window: Duration,
    /// Usage in milli-units (millicores, milli-bytes), as upstream's `MilliValue()`.
    pub value: i64,
}

/// Usage by pod name.
pub type PodMetrics = BTreeMap<String, PodMetric>;

/// The calculator's knobs (upstream's `--horizontal-pod-autoscaler-*` flags).
#[derive(Clone, Copy, Debug)]
pub struct Calculator {
    /// Usage ratios within `1 ± tolerance` of the target leave the scale alone.
    pub tolerance: f64,
    /// After a pod starts, its CPU samples count only once it has been Ready for a full
    /// metric window (upstream's `--horizontal-pod-autoscaler-cpu-initialization-period`).
    pub cpu_initialization_period: Duration,
    /// A pod that turned unready within this long of starting is taken as never having been
    /// ready (upstream's `--horizontal-pod-autoscaler-initial-readiness-delay`).
    pub initial_readiness_delay: Duration,
}

impl Default for Calculator {
    /// Upstream's defaults: tolerance 0.1, 5 min CPU initialisation, 30 s readiness delay.
    fn default() -> Self {
        Calculator {
            tolerance: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

/// What a `Utilization` target proposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtilizationProposal {
    /// Replicas that would bring utilisation to the target.
    pub replicas: i32,
    /// Current utilisation in percent of requests (of the pods with metrics).
    pub utilization: i32,
    /// Current average usage in milli-units.
    pub raw_average: i64,
}

/// What an `AverageValue` target proposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueProposal {
    /// Replicas that would bring the average usage to the target.
    pub replicas: i32,
    /// Current average usage in milli-units.
    pub average: i64,
}

/// Pods sorted as upstream's `groupPods` does.
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn is_cpu(resource: &str) -> bool {
    resource == "cpu"
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t)
}

impl Calculator {
    /// Whether usage `ratio` is close enough to 1 to leave the scale alone.
    fn within_tolerance(&self, ratio: f64) -> bool {
        (1.0 - ratio).abs() <= self.tolerance
    }

    fn group_pods(
        &self,
        pods: &[&Pod],
        metrics: &PodMetrics,
        resource: &str,
        now: Timestamp,
    ) -> Groups {
        let mut g = Groups {
            ready: 0,
            unready: BTreeSet::new(),
            missing: BTreeSet::new(),
            ignored: BTreeSet::new(),
        };
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let status = pod.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref());
            // Deleted, failed and pending pods say nothing about load.
            if pod.metadata.deletion_timestamp.is_some()
                || phase == Some("Failed")
                || phase == Some("Pending")
            {
                g.ignored.insert(name);
                continue;
            }
            let Some(metric) = metrics.get(&name) else {
                g.missing.insert(name);
                continue;
            };
            if is_cpu(resource) && self.cpu_unready(pod, metric, now) {
                g.unready.insert(name);
                continue;
            }
            g.ready += 1;
        }
        g
    }

    /// Upstream's CPU readiness rule: a starting pod's CPU burst must not trigger a scale-up.
    fn cpu_unready(&self, pod: &Pod, metric: &PodMetric, now: Timestamp) -> bool {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        let start = status.and_then(|s| s.start_time.as_ref());
        let (Some(ready), Some(start)) = (ready, start) else {
            return true;
        };
        let transition = ready.last_transition_time.as_ref().map_or(start.0, |t| t.0);
        let is_false = ready.status == "False";
        if after(start.0, self.cpu_initialization_period) > now {
            // Still initialising: count only samples taken a full window after it got ready.
            is_false || metric.timestamp < after(transition, metric.window)
        } else {
            // Ignore it only if it is unready and has never been ready.
            is_false && after(start.0, self.initial_readiness_delay) > transition
        }
    }

    /// Replicas for a `Utilization` target of `target` percent of requests (upstream's
    /// `GetResourceReplicas`). `container` restricts to one container (ContainerResource).
    ///
    /// # Errors
    /// Upstream's messages: no pods, no usable metrics, a container without a request.
    #[allow(clippy::too_many_arguments)]
    pub fn utilization_replicas(
        &self,
        current: i32,
        target: i32,
        resource: &str,
        container: Option<&str>,
        mut metrics: PodMetrics,
        pods: &[&Pod],
        now: Timestamp,
    ) -> Result<UtilizationProposal, String> {
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let g = self.group_pods(pods, &metrics, resource, now);
        for name in g.ignored.iter().chain(g.unready.iter()) {
            metrics.remove(name);
        }
        if metrics.is_empty() {
            return Err("did not receive metrics for targeted pods (pods might be unready)".into());
        }
        let requests = pod_requests(pods, container, resource)?;
        let (ratio, utilization, raw_average) = utilization_ratio(&metrics, &requests, target)?;
        let proposal = |replicas| UtilizationProposal {
            replicas,
            utilization,
            raw_average,
        };
        let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
        if !scale_up_with_unready && g.missing.is_empty() {
            if self.within_tolerance(ratio) {
                return Ok(proposal(current));
            }
            return Ok(proposal(ceil_replicas(ratio * g.ready as f64)));
        }
        // Assume the worst for the pods we know nothing about: full use (of the request)
        // when scaling down, none when scaling up.
        for name in &g.missing {
            let value = if ratio < 1.0 {
                requests.get(name).copied().unwrap_or(0)
            } else {
                0
            };
            metrics.insert(name.clone(), filler(value, now));
        }
        if scale_up_with_unready {
            for name in &g.unready {
                metrics.insert(name.clone(), filler(0, now));
            }
        }
        let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target)?;
        Ok(proposal(self.rebalanced(
            current,
            ratio,
            new_ratio,
            metrics.len(),
        )))
    }

    /// Replicas for an `AverageValue` target of `target` milli-units per pod (upstream's
    /// `GetRawResourceReplicas` / `calcPlainMetricReplicas`).
    ///
    /// # Errors
    /// Upstream's messages: no pods, no usable metrics.
    pub fn value_replicas(
        &self,
        current: i32,
        target: i64,
        resource: &str,
        mut metrics: PodMetrics,
        pods: &[&Pod],
        now: Timestamp,
    ) -> Result<ValueProposal, String> {
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let g = self.group_pods(pods, &metrics, resource, now);
        for name in g.ignored.iter().chain(g.unready.iter()) {
            metrics.remove(name);
        }
        if metrics.is_empty() {
            return Err("did not receive metrics for targeted pods (pods might be unready)".into());
        }
        let (ratio, average) = usage_ratio(&metrics, target);
        let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
        if !scale_up_with_unready && g.missing.is_empty() {
            let replicas = if self.within_tolerance(ratio) {
                current
            } else {
                ceil_replicas(ratio * g.ready as f64)
            };
            return Ok(ValueProposal { replicas, average });
        }
        for name in &g.missing {
            let value = if ratio < 1.0 { target } else { 0 };
            metrics.insert(name.clone(), filler(value, now));
        }
        if scale_up_with_unready {
            for name in &g.unready {
                metrics.insert(name.clone(), filler(0, now));
            }
        }
        let (new_ratio, _) = usage_ratio(&metrics, target);
        Ok(ValueProposal {
            replicas: self.rebalanced(current, ratio, new_ratio, metrics.len()),
            average,
        })
    }

    /// The proposal after filling in missing and unready pods: unchanged if the filled-in
    /// data reverses the direction or lands within tolerance (upstream's second pass).
    fn rebalanced(&self, current: i32, ratio: f64, new_ratio: f64, pods: usize) -> i32 {
        if self.within_tolerance(new_ratio)
            || (ratio < 1.0 && new_ratio > 1.0)
            || (ratio > 1.0 && new_ratio < 1.0)
        {
            return current;
        }
        let replicas = ceil_replicas(new_ratio * pods as f64);
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return current;
        }
        replicas
    }
}

fn filler(value: i64, now: Timestamp) -> PodMetric {
    PodMetric {
        timestamp: now,
        window: Duration::ZERO,
        value,
    }
}

fn ceil_replicas(x: f64) -> i32 {
    let c = x.ceil();
    if c >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        c as i32
    }
}

/// Each pod's request of `resource` in milli-units, summed over its containers (or the one
/// `container`), as upstream's `calculatePodRequests`.
///
/// # Errors
/// "missing request for cpu in container c of Pod p" when a counted container has none.
pub fn pod_requests(
    pods: &[&Pod],
    container: Option<&str>,
    resource: &str,
) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut sum = 0i64;
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            if container.is_some_and(|want| want != c.name) {
                continue;
            }
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| Quantity::parse(&q.0).ok());
            match request {
                Some(q) => sum = sum.saturating_add(q.milli_value()),
                None => {
                    return Err(format!(
                        "missing request for {resource} in container {} of Pod {name}",
                        c.name
                    ))
                }
            }
        }
        out.insert(name, sum);
    }
    Ok(out)
}

/// Usage over requests of the pods with both (upstream's `GetResourceUtilizationRatio`):
/// (ratio to the target, utilisation in percent, average usage in milli-units).
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut usage, mut requested, mut count) = (0i64, 0i64, 0i64);
    for (name, m) in metrics {
        let Some(r) = requests.get(name) else {
            continue;
        };
        usage = usage.saturating_add(m.value);
        requested = requested.saturating_add(*r);
        count += 1;
    }
    // Pods without metrics and requests of zero cannot say anything about utilisation.
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = i32::try_from(usage.saturating_mul(100) / requested).unwrap_or(i32::MAX);
    Ok((
        f64::from(utilization) / f64::from(target.max(1)),
        utilization,
        usage / count,
    ))
}

/// Average usage against a per-pod target (upstream's `GetMetricUsageRatio`).
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let average = total / (metrics.len().max(1) as i64);
    (average as f64 / target.max(1) as f64, average)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, PodCondition, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> Time {
        Time(now() - SignedDuration::from_secs(secs))
    }

    /// A running pod started `age` seconds ago, Ready since then, requesting `cpu`.
    fn pod(name: &str, cpu: Option<&str>, ready: &str, age: i64) -> Pod {
        let requests = cpu.map(|c| BTreeMap::from([("cpu".to_string(), ApiQuantity(c.into()))]));
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                start_time: Some(ago(age)),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    last_transition_time: Some(ago(age)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn usage(pairs: &[(&str, i64)]) -> PodMetrics {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    PodMetric {
                        timestamp: now(),
                        window: Duration::from_secs(30),
                        value: *v,
                    },
                )
            })
            .collect()
    }

    fn calc() -> Calculator {
        Calculator::default()
    }

    #[test]
    fn scales_up_to_bring_utilization_to_target() {
        let p = pod("a", Some("100m"), "True", 600);
        let got = calc()
            .utilization_replicas(1, 50, "cpu", None, usage(&[("a", 90)]), &[&p], now())
            .unwrap();
        assert_eq!(
            got,
            UtilizationProposal {
                replicas: 2,
                utilization: 90,
                raw_average: 90
            }
        );
    }

    #[test]
    fn within_tolerance_keeps_current() {
        let pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("p{i}"), Some("100m"), "True", 600))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let m = usage(&[("p0", 54), ("p1", 54), ("p2", 54)]);
        let got = calc()
            .utilization_replicas(3, 50, "cpu", None, m, &refs, now())
            .unwrap();
        assert_eq!(got.replicas, 3, "108% of target is within 10%");
        assert_eq!(got.utilization, 54);
    }

    #[test]
    fn scales_down() {
        let pods: Vec<Pod> = (0..4)
            .map(|i| pod(&format!("p{i}"), Some("100m"), "True", 600))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let m = usage(&[("p0", 10), ("p1", 10), ("p2", 10), ("p3", 10)]);
        let got = calc()
            .utilization_replicas(4, 50, "cpu", None, m, &refs, now())
            .unwrap();
        assert_eq!(got.replicas, 1);
        assert_eq!(got.utilization, 10);
    }

    #[test]
    fn missing_request_is_an_error_naming_the_container() {
        let p = pod("a", None, "True", 600);
        let err = calc()
            .utilization_replicas(1, 50, "cpu", None, usage(&[("a", 90)]), &[&p], now())
            .unwrap_err();
        assert_eq!(err, "missing request for cpu in container app of Pod a");
    }

    #[test]
    fn no_pods_and_no_metrics_are_errors() {
        let err = calc()
            .utilization_replicas(1, 50, "cpu", None, PodMetrics::new(), &[], now())
            .unwrap_err();
        assert!(err.starts_with("no pods returned by selector"), "{err}");
        let p = pod("a", Some("100m"), "True", 600);
        let err = calc()
            .utilization_replicas(1, 50, "cpu", None, PodMetrics::new(), &[&p], now())
            .unwrap_err();
        assert!(err.starts_with("did not receive metrics"), "{err}");
    }

    #[test]
    fn missing_metrics_count_as_full_use_when_scaling_down() {
        // Two pods at 10%, one without metrics: taken as 100% of its request, so
        // (10+10+100)/3 = 40% of a 50% target → ceil(0.8*3) = 3: no scale-down.
        let pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("p{i}"), Some("100m"), "True", 600))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = calc()
            .utilization_replicas(
                3,
                50,
                "cpu",
                None,
                usage(&[("p0", 10), ("p1", 10)]),
                &refs,
                now(),
            )
            .unwrap();
        assert_eq!(got.replicas, 3);
        assert_eq!(
            got.utilization, 10,
            "reported utilisation is of the pods with metrics"
        );
    }

    #[test]
    fn missing_metrics_count_as_zero_when_scaling_up() {
        // One pod at 100% (ratio 2), one without metrics taken as 0: 50%/50% → no change.
        let pods: Vec<Pod> = (0..2)
            .map(|i| pod(&format!("p{i}"), Some("100m"), "True", 600))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = calc()
            .utilization_replicas(2, 50, "cpu", None, usage(&[("p0", 100)]), &refs, now())
            .unwrap();
        assert_eq!(got.replicas, 2);
        // At 200% (ratio 4) the filled-in average is still 200% of target: 4 replicas.
        let got = calc()
            .utilization_replicas(2, 50, "cpu", None, usage(&[("p0", 200)]), &refs, now())
            .unwrap();
        assert_eq!(got.replicas, 4);
    }

    #[test]
    fn unready_cpu_pods_are_ignored_when_scaling_up() {
        // p1 started 10 s ago and is not Ready yet: its burst must not count; it is taken
        // as 0 when scaling up.
        let a = pod("p0", Some("100m"), "True", 600);
        let b = pod("p1", Some("100m"), "False", 10);
        let got = calc()
            .utilization_replicas(
                2,
                50,
                "cpu",
                None,
                usage(&[("p0", 100), ("p1", 500)]),
                &[&a, &b],
                now(),
            )
            .unwrap();
        assert_eq!(got.utilization, 100, "only the ready pod is measured");
        assert_eq!(got.replicas, 2, "(100+0)/200 = 50%: at target");
    }

    #[test]
    fn samples_from_before_a_full_window_of_readiness_are_unready() {
        // Ready 10 s ago, window 30 s: the sample still covers the start-up.
        let mut p = pod("p0", Some("100m"), "True", 60);
        if let Some(c) = p.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].last_transition_time = Some(ago(10));
        }
        let err = calc()
            .utilization_replicas(1, 50, "cpu", None, usage(&[("p0", 100)]), &[&p], now())
            .unwrap_err();
        assert!(err.starts_with("did not receive metrics"), "{err}");
        // Memory has no such rule.
        let mut m = p.clone();
        if let Some(r) = m.spec.as_mut().map(|s| &mut s.containers[0]) {
            r.resources = Some(ResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "memory".into(),
                    ApiQuantity("100Mi".into()),
                )])),
                ..Default::default()
            });
        }
        let got = calc()
            .utilization_replicas(
                1,
                50,
                "memory",
                None,
                usage(&[("p0", 100 * 1024 * 1024 * 1000)]),
                &[&m],
                now(),
            )
            .unwrap();
        assert_eq!(got.replicas, 2);
    }

    #[test]
    fn pending_failed_and_deleted_pods_are_ignored() {
        let a = pod("p0", Some("100m"), "True", 600);
        let mut b = pod("p1", Some("100m"), "True", 600);
        b.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut c = pod("p2", Some("100m"), "True", 600);
        c.status.as_mut().unwrap().phase = Some("Pending".into());
        let got = calc()
            .utilization_replicas(
                3,
                50,
                "cpu",
                None,
                usage(&[("p0", 25)]),
                &[&a, &b, &c],
                now(),
            )
            .unwrap();
        assert_eq!(got.replicas, 1, "only p0 counts: ceil(0.5 * 1)");
    }

    #[test]
    fn container_resource_counts_one_container() {
        let mut p = pod("a", Some("100m"), "True", 600);
        p.spec.as_mut().unwrap().containers.push(Container {
            name: "sidecar".into(),
            ..Default::default()
        });
        assert!(
            pod_requests(&[&p], None, "cpu").is_err(),
            "sidecar has no request"
        );
        assert_eq!(pod_requests(&[&p], Some("app"), "cpu").unwrap()["a"], 100);
    }

    #[test]
    fn average_value_targets() {
        let pods: Vec<Pod> = (0..2)
            .map(|i| pod(&format!("p{i}"), None, "True", 600))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = calc()
            .value_replicas(
                2,
                100,
                "cpu",
                usage(&[("p0", 300), ("p1", 300)]),
                &refs,
                now(),
            )
            .unwrap();
        assert_eq!(
            got,
            ValueProposal {
                replicas: 6,
                average: 300
            }
        );
        let got = calc()
            .value_replicas(
                2,
                100,
                "cpu",
                usage(&[("p0", 105), ("p1", 105)]),
                &refs,
                now(),
            )
            .unwrap();
        assert_eq!(got.replicas, 2, "within tolerance");
    }
}

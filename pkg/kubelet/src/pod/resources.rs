//! cgroup resources for containers and sandboxes, as upstream's `calculateLinuxResources`
//! and `GetContainerOOMScoreAdjust` compute them (cgroup v1 shares and CFS quota).

use distro_apimachinery::quantity::Quantity;
use distro_cri::api::LinuxContainerResources;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::qos::{self, QosClass};

/// Kernel bounds and upstream constants for cpu shares and CFS quota.
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
/// Upstream's default `--cpu-cfs-quota-period`, 100 ms in µs.
pub const QUOTA_PERIOD: i64 = 100_000;
const MIN_QUOTA: i64 = 1000;
/// Priority at and above which a pod is node-critical (`system-cluster-critical` is 2e9).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// `milli * 1024 / 1000`, at least 2 (also for no request at all), at most 262144.
pub fn milli_cpu_to_shares(milli: i64) -> i64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli.saturating_mul(SHARES_PER_CPU) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota for a cpu limit: 0 (unlimited) without a limit, else at least 1 ms.
pub fn milli_cpu_to_quota(milli: i64, period: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    (milli.saturating_mul(period) / 1000).max(MIN_QUOTA)
}

/// Shares, quota/period and memory limit from a cpu request, cpu limit and memory limit.
///
/// A missing cpu request with a cpu limit takes the limit (upstream repeats the API
/// defaulting for old objects).
pub fn linux_resources(
    cpu_request: Option<&Quantity>,
    cpu_limit: Option<&Quantity>,
    memory_limit: Option<&Quantity>,
) -> LinuxContainerResources {
    let shares = match (cpu_request, cpu_limit) {
        (None, Some(l)) => milli_cpu_to_shares(l.milli_value()),
        (r, _) => milli_cpu_to_shares(r.map_or(0, Quantity::milli_value)),
    };
    LinuxContainerResources {
        cpu_shares: shares,
        cpu_period: QUOTA_PERIOD,
        cpu_quota: milli_cpu_to_quota(cpu_limit.map_or(0, Quantity::milli_value), QUOTA_PERIOD),
        memory_limit_in_bytes: memory_limit.map_or(0, Quantity::value),
        ..Default::default()
    }
}

/// Upstream's OOM score adjustment for a container: node-critical and Guaranteed -997,
/// BestEffort 1000, Burstable `1000 - 1000*request/capacity` kept within 3..=999; a sidecar
/// scores no higher than the regular container with the smallest memory request, so it is
/// not killed before the containers it serves.
///
/// When `restrict_negative` (the node refuses negative scores, e.g. root without
/// CAP_SYS_RESOURCE) the result is never below 0, matching containerd's
/// `restrict_oom_score_adj`.
pub fn oom_score_adj(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
    restrict_negative: bool,
) -> i64 {
    let spec = pod.spec.clone().unwrap_or_default();
    let score = if is_node_critical(pod, &spec) {
        -997
    } else {
        match qos::pod_qos(&spec) {
            QosClass::Guaranteed => -997,
            QosClass::BestEffort => 1000,
            QosClass::Burstable => {
                let capacity = i128::from(memory_capacity.max(1));
                let adj = |request: i64| 1000 - ((1000 * i128::from(request)) / capacity) as i64;
                let mut score = adj(qos::request(container, "memory").map_or(0, |q| q.value()));
                let is_sidecar = container.restart_policy.as_deref() == Some("Always")
                    && spec
                        .init_containers
                        .iter()
                        .flatten()
                        .any(|c| c.name == container.name);
                if is_sidecar {
                    let min_regular = spec
                        .containers
                        .iter()
                        .map(|c| qos::request(c, "memory").map_or(0, |q| q.value()))
                        .min()
                        .unwrap_or(0);
                    score = score.min(adj(min_regular));
                }
                if score < 3 {
                    3
                } else if score == 1000 {
                    999
                } else {
                    score
                }
            }
        }
    };
    if restrict_negative {
        score.max(0)
    } else {
        score
    }
}

/// Upstream `IsNodeCriticalPod`: a critical pod (static, mirror, or priority of at least
/// system-cluster-critical) whose priority class is `system-node-critical`.
fn is_node_critical(pod: &Pod, spec: &PodSpec) -> bool {
    let annotated = pod.metadata.annotations.as_ref().is_some_and(|a| {
        a.contains_key("kubernetes.io/config.mirror")
            || a.get("kubernetes.io/config.source")
                .is_some_and(|s| s != "api")
    });
    let critical = annotated || spec.priority.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    critical && spec.priority_class_name.as_deref() == Some("system-node-critical")
}

/// The container's resources and OOM score.
pub fn container_resources(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
    restrict_negative: bool,
) -> LinuxContainerResources {
    // Only a request that is present counts as a request (zero included).
    let cpu_request = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .map(|q| Quantity::parse(&q.0).unwrap_or_else(|_| Quantity::from_millis(0)));
    let mut r = linux_resources(
        cpu_request.as_ref(),
        qos::limit(container, "cpu").as_ref(),
        qos::limit(container, "memory").as_ref(),
    );
    r.oom_score_adj = oom_score_adj(pod, container, memory_capacity, restrict_negative);
    r
}

/// Sum over regular containers, at least the largest init container (upstream's
/// `PodRequests`/`PodLimits` without overhead).
fn pod_total(spec: &PodSpec, resource: &str, limits: bool) -> Option<Quantity> {
    let get = |c: &Container| {
        if limits {
            qos::limit(c, resource)
        } else {
            qos::request(c, resource)
        }
    };
    let sum = spec
        .containers
        .iter()
        .filter_map(get)
        .reduce(|a, b| a.add(&b));
    let init_max = spec.init_containers.iter().flatten().filter_map(get).max();
    match (sum, init_max) {
        (Some(s), Some(i)) => Some(if i > s { i } else { s }),
        (s, i) => s.or(i),
    }
}

/// The sandbox's pod-level resources: totals of its containers (upstream's
/// `calculateSandboxResources`).
pub fn sandbox_resources(spec: &PodSpec) -> LinuxContainerResources {
    linux_resources(
        pod_total(spec, "cpu", false).as_ref(),
        pod_total(spec, "cpu", true).as_ref(),
        pod_total(spec, "memory", true).as_ref(),
    )
}

/// `spec.overhead` as resources, treated as guaranteed (request == limit), or `None`.
pub fn overhead_resources(spec: &PodSpec) -> Option<LinuxContainerResources> {
    let overhead = spec.overhead.as_ref()?;
    let get = |k: &str| overhead.get(k).and_then(|q| Quantity::parse(&q.0).ok());
    let (cpu, mem) = (get("cpu"), get("memory"));
    Some(linux_resources(cpu.as_ref(), cpu.as_ref(), mem.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    use crate::testutil::container_with as c;

    fn pod(cs: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: cs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const GI: i64 = 1 << 30;

    #[test]
    fn shares_and_quota() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(0, QUOTA_PERIOD), 0);
        assert_eq!(milli_cpu_to_quota(5, QUOTA_PERIOD), 1000, "at least 1 ms");
        assert_eq!(milli_cpu_to_quota(250, QUOTA_PERIOD), 25_000);
        assert_eq!(milli_cpu_to_quota(2000, QUOTA_PERIOD), 200_000);
    }

    #[test]
    fn container_resources_from_requests_and_limits() {
        let burst = c(
            &[("cpu", "250m"), ("memory", "256Mi")],
            &[("cpu", "500m"), ("memory", "512Mi")],
        );
        let p = pod(vec![burst.clone()]);
        let r = container_resources(&p, &burst, 4 * GI, false);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period),
            (256, 50_000, 100_000)
        );
        assert_eq!(r.memory_limit_in_bytes, 512 << 20);
        assert_eq!(r.oom_score_adj, 1000 - 1000 * (256 << 20) / (4 * GI));

        // A limit without a request: shares follow the limit.
        let lim_only = c(&[], &[("cpu", "1")]);
        let r = container_resources(&pod(vec![lim_only.clone()]), &lim_only, GI, false);
        assert_eq!(r.cpu_shares, 1024);
        // Nothing at all: minimum shares, no quota, no memory limit, BestEffort score.
        let none = c(&[], &[]);
        let r = container_resources(&pod(vec![none.clone()]), &none, GI, false);
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.memory_limit_in_bytes,
                r.oom_score_adj
            ),
            (2, 0, 0, 1000)
        );
    }

    #[test]
    fn oom_scores_by_qos() {
        let g = c(
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        assert_eq!(
            oom_score_adj(&pod(vec![g.clone()]), &g, 4 * GI, false),
            -997
        );
        assert_eq!(
            oom_score_adj(&pod(vec![g.clone()]), &g, 4 * GI, true),
            0,
            "never negative when refused"
        );
        // Burstable asking for all memory: clamped to 3.
        let big = c(&[("memory", "4Gi")], &[]);
        assert_eq!(
            oom_score_adj(&pod(vec![big.clone()]), &big, 4 * GI, false),
            3
        );
        // Burstable asking for ~nothing: 999, below BestEffort.
        let tiny = c(&[("cpu", "1m")], &[]);
        assert_eq!(
            oom_score_adj(&pod(vec![tiny.clone()]), &tiny, 4 * GI, false),
            999
        );
        // Node-critical wins over BestEffort; cluster-critical alone does not.
        let mut p = pod(vec![c(&[], &[])]);
        p.spec.as_mut().unwrap().priority = Some(2_000_001_000);
        assert_eq!(oom_score_adj(&p, &c(&[], &[]), GI, false), 1000);
        p.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
        assert_eq!(oom_score_adj(&p, &c(&[], &[]), GI, false), -997);
        // A sidecar asking for little scores like the smallest regular container.
        let mut side = c(&[("memory", "1Mi")], &[]);
        side.name = "side".into();
        side.restart_policy = Some("Always".into());
        let mut p = pod(vec![c(&[("memory", "1Gi")], &[])]);
        p.spec.as_mut().unwrap().init_containers = Some(vec![side.clone()]);
        assert_eq!(oom_score_adj(&p, &side, 4 * GI, false), 750);
    }

    #[test]
    fn sandbox_totals_and_overhead() {
        let mut spec = PodSpec {
            containers: vec![
                c(&[("cpu", "100m")], &[("memory", "100Mi")]),
                c(&[("cpu", "200m")], &[("memory", "50Mi")]),
            ],
            init_containers: Some(vec![c(&[("cpu", "1")], &[])]),
            ..Default::default()
        };
        let r = sandbox_resources(&spec);
        assert_eq!(
            r.cpu_shares, 1024,
            "the init container's 1 cpu exceeds the 300m sum"
        );
        assert_eq!(r.memory_limit_in_bytes, 150 << 20);
        assert!(overhead_resources(&spec).is_none());
        spec.overhead = Some(
            [
                ("cpu".to_string(), Q("250m".into())),
                ("memory".to_string(), Q("120Mi".into())),
            ]
            .into(),
        );
        let o = overhead_resources(&spec).unwrap();
        assert_eq!(
            (o.cpu_shares, o.cpu_quota, o.memory_limit_in_bytes),
            (256, 25_000, 120 << 20)
        );
    }
}

//! A pod's QoS class, as upstream's `GetPodQOS` computes it from requests and limits.
//!
//! The kubelet derives the class itself from the spec (rather than trusting `status.qosClass`)
//! because it picks the pod's cgroup parent and every container's `oom_score_adj`.

use distro_apimachinery::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, PodSpec};

/// The three QoS classes. `as_str` is the API's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Every container has equal cpu and memory requests and limits.
    Guaranteed,
    /// Some request or limit is set, but the pod is not Guaranteed.
    Burstable,
    /// No container asks for cpu or memory at all.
    BestEffort,
}

impl QosClass {
    /// The API value of `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// Only cpu and memory decide the class (upstream's `supportedQoSComputeResources`).
const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// A container's request or limit for `resource`, when set, parseable and non-zero.
///
/// Unparseable quantities count as unset: the apiserver validates them, so this only matters
/// for objects that bypassed validation, where ignoring is the safe reading.
pub fn request(container: &Container, resource: &str) -> Option<Quantity> {
    quantity(container, resource, false)
}

/// A container's limit for `resource` (see [`request`]).
pub fn limit(container: &Container, resource: &str) -> Option<Quantity> {
    quantity(container, resource, true)
}

fn quantity(container: &Container, resource: &str, limits: bool) -> Option<Quantity> {
    let res = container.resources.as_ref()?;
    let map = if limits {
        res.limits.as_ref()
    } else {
        res.requests.as_ref()
    }?;
    let q = Quantity::parse(&map.get(resource)?.0).ok()?;
    (!q.is_zero()).then_some(q)
}

/// Upstream `GetPodQOS` over init and regular containers.
pub fn pod_qos(spec: &PodSpec) -> QosClass {
    let mut requests: [Option<Quantity>; 2] = [None, None];
    let mut limits: [Option<Quantity>; 2] = [None, None];
    let mut guaranteed = true;
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in all {
        for (i, r) in QOS_RESOURCES.iter().enumerate() {
            if let Some(q) = request(c, r) {
                requests[i] = Some(match requests[i].take() {
                    Some(sum) => sum.add(&q),
                    None => q,
                });
            }
            match limit(c, r) {
                Some(q) => {
                    limits[i] = Some(match limits[i].take() {
                        Some(sum) => sum.add(&q),
                        None => q,
                    })
                }
                // Every container must limit both cpu and memory to be Guaranteed.
                None => guaranteed = false,
            }
        }
    }
    if requests.iter().all(Option::is_none) && limits.iter().all(Option::is_none) {
        return QosClass::BestEffort;
    }
    if guaranteed && requests == limits {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::container_with as c;

    fn spec(containers: Vec<Container>, init: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            init_containers: (!init.is_empty()).then_some(init),
            ..Default::default()
        }
    }

    #[test]
    fn classes() {
        use QosClass::*;
        let g = || {
            c(
                &[("cpu", "100m"), ("memory", "64Mi")],
                &[("cpu", "0.1"), ("memory", "64Mi")],
            )
        };
        let cases: Vec<(PodSpec, QosClass)> = vec![
            (spec(vec![c(&[], &[])], vec![]), BestEffort),
            // Zero quantities and other resources do not count.
            (
                spec(
                    vec![c(&[("cpu", "0")], &[("ephemeral-storage", "1Gi")])],
                    vec![],
                ),
                BestEffort,
            ),
            (spec(vec![g()], vec![]), Guaranteed),
            (spec(vec![g(), g()], vec![g()]), Guaranteed),
            // A cpu limit alone is not Guaranteed (memory limit missing).
            (
                spec(vec![c(&[("cpu", "1")], &[("cpu", "1")])], vec![]),
                Burstable,
            ),
            (spec(vec![g(), c(&[], &[])], vec![]), Burstable),
            (
                spec(vec![g()], vec![c(&[("memory", "1Mi")], &[])]),
                Burstable,
            ),
            (
                spec(
                    vec![c(
                        &[("cpu", "100m"), ("memory", "64Mi")],
                        &[("cpu", "200m"), ("memory", "64Mi")],
                    )],
                    vec![],
                ),
                Burstable,
            ),
            // Requests missing but limits set (not defaulted): requests != limits.
            (
                spec(vec![c(&[], &[("cpu", "1"), ("memory", "1Gi")])], vec![]),
                Burstable,
            ),
        ];
        for (i, (s, want)) in cases.into_iter().enumerate() {
            assert_eq!(pod_qos(&s), want, "case {i}");
        }
        assert_eq!(Guaranteed.as_str(), "Guaranteed");
    }
}

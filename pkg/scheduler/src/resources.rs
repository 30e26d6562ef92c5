//! Resource amounts as the scheduler counts them: CPU in millicores, everything else in whole
//! units (bytes for memory and ephemeral storage, a count for extended resources).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU, the one resource counted in thousandths.
pub const CPU: &str = "cpu";
/// Memory in bytes.
pub const MEMORY: &str = "memory";
/// Local ephemeral storage in bytes.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// The node's pod slots (`status.allocatable.pods`).
pub const PODS: &str = "pods";

/// What a pod without a CPU request counts as when scoring (upstream's `DefaultMilliCPURequest`),
/// so best-effort pods still spread instead of piling onto one node.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// What a pod without a memory request counts as when scoring (upstream's 200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts per resource name.
pub type Resources = BTreeMap<String, i64>;

/// Parses a quantity (`500m`, `1.5`, `128Mi`, `1e3`, `2G`) into the unit of `resource`,
/// rounding up as upstream's `MilliValue`/`Value` do. `None` for malformed quantities.
pub fn amount(resource: &str, q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let scale = if resource == CPU { 1000.0 } else { 1.0 };
    let v = number * multiplier * scale;
    // Float noise (0.1 * 1000 = 100.00000000000001) must not round a whole amount up.
    let rounded = v.round();
    Some(if (v - rounded).abs() < 1e-6 {
        rounded as i64
    } else {
        v.ceil() as i64
    })
}

/// Parses a resource list, skipping malformed quantities (the apiserver validates them).
pub fn list(map: Option<&BTreeMap<String, Quantity>>) -> Resources {
    map.into_iter()
        .flatten()
        .filter_map(|(k, q)| amount(k, q).map(|v| (k.clone(), v)))
        .collect()
}

fn container_requests(c: &Container) -> Resources {
    list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

fn add(into: &mut Resources, r: &Resources) {
    for (k, v) in r {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn max_into(into: &mut Resources, r: &Resources) {
    for (k, v) in r {
        let e = into.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
}

/// A pod's effective requests, as upstream's `PodRequests`: the app containers plus restartable
/// init containers (sidecars) run together; each ordinary init container runs alone beside the
/// sidecars started before it, so the pod needs the larger of the two; plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::new();
    };
    let mut total = Resources::new();
    for c in &spec.containers {
        add(&mut total, &container_requests(c));
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &r);
            // A sidecar keeps running, so it also adds to the app containers.
            add(&mut total, &r);
            max_into(&mut init_peak, &sidecars);
        } else {
            let mut alone = sidecars.clone();
            add(&mut alone, &r);
            max_into(&mut init_peak, &alone);
        }
    }
    max_into(&mut total, &init_peak);
    add(&mut total, &list(spec.overhead.as_ref()));
    total
}

/// The requests used for scoring: CPU and memory default to 100m and 200Mi when unset.
pub fn non_zero(requests: &Resources) -> (i64, i64) {
    let cpu = requests
        .get(CPU)
        .copied()
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_MILLI_CPU);
    let mem = requests
        .get(MEMORY)
        .copied()
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_MEMORY);
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities_parse_in_their_units() {
        for (res, s, want) in [
            (CPU, "500m", Some(500)),
            (CPU, "1", Some(1000)),
            (CPU, "0.1", Some(100)),
            (CPU, "1.5", Some(1500)),
            (CPU, "1u", Some(1)),
            (MEMORY, "128Mi", Some(134_217_728)),
            (MEMORY, "1G", Some(1_000_000_000)),
            (MEMORY, "1e3", Some(1000)),
            (MEMORY, "1.5Ki", Some(1536)),
            (PODS, "110", Some(110)),
            (MEMORY, "12 apples", None),
            (MEMORY, "", None),
        ] {
            assert_eq!(amount(res, &q(s)), want, "{res} {s}");
        }
    }

    fn container(cpu: &str, restart: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            restart_policy: restart.map(Into::into),
            resources: Some(ResourceRequirements {
                requests: Some([(CPU.to_string(), q(cpu))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_take_init_peaks_sidecars_and_overhead() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("100m", None), container("200m", None)],
                init_containers: Some(vec![container("50m", Some("Always")), container("1", None)]),
                overhead: Some([(CPU.to_string(), q("10m"))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Apps + sidecar = 350m; init alone beside the sidecar = 1050m; plus 10m overhead.
        assert_eq!(pod_requests(&pod).get(CPU), Some(&1060));
        assert_eq!(
            non_zero(&pod_requests(&pod)),
            (1060, DEFAULT_MEMORY),
            "memory defaults for scoring"
        );
    }
}

//! Simulated resource usage: what the pods of simulated nodes "use", from their annotations
//! [`CPU_USAGE`] and [`MEMORY_USAGE`], reported through the kubelet API
//! (`/stats/summary`, `/metrics/resource`) so metrics, `kubectl top` and the autoscaler can be
//! tested without running anything.
//!
//! CPU is honest: each container has a cumulative counter (core-nanoseconds) integrated over
//! time from its rate, so a rate computed from two samples, as metrics-server does, equals the
//! annotation. A pod's usage is split evenly over its containers (the remainder to the first,
//! so the pod total is exact). A node's usage is the sum of its pods'; its counter keeps what
//! pods that are gone used, so it never goes backwards.

use std::collections::HashMap;
use std::sync::Mutex;

use distro_apimachinery::quantity::Quantity;
use distro_kubelet::server::stats::{
    ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, Summary, Time,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// Annotation: the pod's CPU usage (a Quantity, e.g. `250m`); missing means none.
pub const CPU_USAGE: &str = "fake.distro.io/cpu-usage";

/// Annotation: the pod's memory working set (a Quantity, e.g. `64Mi`); missing means none.
pub const MEMORY_USAGE: &str = "fake.distro.io/memory-usage";

const NANO: u128 = 1_000_000_000;

/// One container's counters.
#[derive(Clone, Debug, Default)]
struct Container {
    /// Current rate, nanocores.
    nanocores: u64,
    /// Cumulative usage in core-nanoseconds × 10⁹ (exact: rate × elapsed nanoseconds).
    scaled: u128,
    /// Working set, bytes.
    memory: u64,
}

impl Container {
    fn core_nanos(&self) -> u64 {
        u64::try_from(self.scaled / NANO).unwrap_or(u64::MAX)
    }
}

#[derive(Clone, Debug)]
struct PodUsage {
    node: String,
    started: Timestamp,
    /// Counters integrated up to here (millisecond precision, as samples' timestamps).
    since: Timestamp,
    containers: Vec<(String, Container)>,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, PodUsage>,
    /// Per node: core-nanoseconds × 10⁹ used by pods no longer running there.
    retired: HashMap<String, u128>,
}

/// The usage of every pod on this agent's simulated nodes.
#[derive(Default)]
pub struct Usage {
    state: Mutex<State>,
}

/// `q` in nano-units, clamped at zero; `None` for a missing or bad annotation.
fn annotation_nanos(pod: &Pod, key: &str) -> Option<u128> {
    let v = pod.annotations().get(key)?;
    match Quantity::parse(v.trim()) {
        Ok(q) => Some(u128::try_from(q.nanos()).unwrap_or(0)),
        Err(_) => {
            tracing::debug!(pod = %pod.name_any(), %key, value = %v, "ignoring an unparsable usage annotation");
            None
        }
    }
}

/// `total` split over `n` parts, the remainder to the first.
fn split(total: u64, n: usize, i: usize) -> u64 {
    let n = n.max(1) as u64;
    total / n + if i == 0 { total % n } else { 0 }
}

/// Now, truncated to the millisecond: the precision of Prometheus sample timestamps, so a
/// counter and its timestamp agree exactly.
fn now_ms() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Usage {
    /// Integrates `pod`'s counters up to `now` at its old rates, then takes its annotated
    /// rates from here on. Called on every change the pod watch shows and before sampling.
    pub fn observe(&self, pod: &Pod, node: &str, now: Timestamp) {
        let Some(uid) = pod.uid() else { return };
        let cpu = annotation_nanos(pod, CPU_USAGE).unwrap_or(0);
        // Quantity nanos of a CPU amount are nano-units of cores: nanocores.
        let nanocores = u64::try_from(cpu).unwrap_or(u64::MAX);
        let memory = u64::try_from(annotation_nanos(pod, MEMORY_USAGE).unwrap_or(0) / NANO)
            .unwrap_or(u64::MAX);
        let names: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect();
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let entry = state.pods.entry(uid).or_insert_with(|| PodUsage {
            node: node.to_string(),
            started,
            since: now,
            containers: names
                .iter()
                .map(|n| (n.clone(), Container::default()))
                .collect(),
        });
        entry.integrate(now);
        let n = entry.containers.len();
        for (i, (_, c)) in entry.containers.iter_mut().enumerate() {
            c.nanocores = split(nanocores, n, i);
            c.memory = split(memory, n, i);
        }
    }

    /// The summary of `node` with `pods` (the pods bound to it that run), sampled now. Pods
    /// no longer listed are retired into the node's counter.
    pub fn summary(&self, node: &str, pods: &[&Pod]) -> Summary {
        let now = now_ms();
        for p in pods {
            self.observe(p, node, now);
        }
        let time = Time(now);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let running: std::collections::HashSet<String> =
            pods.iter().filter_map(|p| p.uid()).collect();
        let gone: Vec<String> = state
            .pods
            .iter()
            .filter(|(uid, u)| u.node == node && !running.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            if let Some(mut u) = state.pods.remove(&uid) {
                u.integrate(now);
                let used: u128 = u.containers.iter().map(|(_, c)| c.scaled).sum();
                *state.retired.entry(node.to_string()).or_default() += used;
            }
        }
        let cpu = |nanocores: u64, core_nanos: u64| CpuStats {
            time: time.clone(),
            usage_nano_cores: Some(nanocores),
            usage_core_nano_seconds: Some(core_nanos),
        };
        let mem = |bytes: u64| MemoryStats {
            time: time.clone(),
            available_bytes: None,
            usage_bytes: Some(bytes),
            working_set_bytes: Some(bytes),
            rss_bytes: Some(bytes),
            page_faults: Some(0),
            major_page_faults: Some(0),
        };
        let mut out = Vec::new();
        let (mut node_rate, mut node_scaled, mut node_mem) =
            (0u64, state.retired.get(node).copied().unwrap_or(0), 0u64);
        for p in pods {
            let Some(u) = p.uid().and_then(|uid| state.pods.get(&uid)) else {
                continue;
            };
            let started = Time(u.started);
            let containers: Vec<ContainerStats> = u
                .containers
                .iter()
                .map(|(name, c)| ContainerStats {
                    name: name.clone(),
                    start_time: Some(started.clone()),
                    cpu: Some(cpu(c.nanocores, c.core_nanos())),
                    memory: Some(mem(c.memory)),
                    rootfs: None,
                })
                .collect();
            let rate: u64 = u.containers.iter().map(|(_, c)| c.nanocores).sum();
            let scaled: u128 = u.containers.iter().map(|(_, c)| c.scaled).sum();
            let memory: u64 = u.containers.iter().map(|(_, c)| c.memory).sum();
            node_rate += rate;
            node_scaled += scaled;
            node_mem += memory;
            out.push(PodStats {
                pod_ref: PodReference {
                    name: p.name_any(),
                    namespace: p.namespace().unwrap_or_default(),
                    uid: p.uid().unwrap_or_default(),
                },
                start_time: Some(started),
                containers,
                cpu: Some(cpu(rate, u64::try_from(scaled / NANO).unwrap_or(u64::MAX))),
                memory: Some(mem(memory)),
            });
        }
        Summary {
            node: NodeStats {
                node_name: node.to_string(),
                start_time: None,
                cpu: Some(cpu(
                    node_rate,
                    u64::try_from(node_scaled / NANO).unwrap_or(u64::MAX),
                )),
                memory: Some(mem(node_mem)),
                fs: None,
            },
            pods: out,
        }
    }
}

impl PodUsage {
    fn integrate(&mut self, now: Timestamp) {
        let elapsed = now.duration_since(self.since).as_nanos();
        if elapsed <= 0 {
            return;
        }
        let elapsed = elapsed as u128;
        for (_, c) in &mut self.containers {
            c.scaled += u128::from(c.nanocores) * elapsed;
        }
        self.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, cpu: &str, mem: &str, containers: usize) -> Pod {
        let cs: Vec<_> = (0..containers)
            .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid,
                         "annotations": {CPU_USAGE: cpu, MEMORY_USAGE: mem}},
            "spec": {"containers": cs, "nodeName": "n"},
        }))
        .unwrap()
    }

    #[test]
    fn cpu_counters_integrate_the_annotated_rate_exactly() {
        let u = Usage::default();
        let t0 = Timestamp::from_millisecond(1_000_000).unwrap();
        let p = pod("a", "250m", "64Mi", 2);
        u.observe(&p, "n", t0);
        let t1 = Timestamp::from_millisecond(1_001_500).unwrap();
        u.observe(&p, "n", t1);
        let state = u.state.lock().unwrap();
        let pu = &state.pods["a"];
        let total: u128 = pu.containers.iter().map(|(_, c)| c.scaled).sum();
        // 0.25 cores for 1.5 s = 375 ms of CPU.
        assert_eq!(total / NANO, 375_000_000);
        assert_eq!(
            pu.containers[0].1.memory + pu.containers[1].1.memory,
            64 << 20
        );
        drop(state);
        // A new rate applies from the moment it is observed.
        let p2 = pod("a", "1", "64Mi", 2);
        u.observe(&p2, "n", t1);
        let t2 = Timestamp::from_millisecond(1_002_500).unwrap();
        u.observe(&p2, "n", t2);
        let state = u.state.lock().unwrap();
        let total: u128 = state.pods["a"]
            .containers
            .iter()
            .map(|(_, c)| c.scaled)
            .sum();
        assert_eq!(total / NANO, 1_375_000_000);
    }

    #[test]
    fn summary_reports_pods_and_keeps_node_counter_monotonic() {
        let u = Usage::default();
        let a = pod("a", "100m", "10Mi", 1);
        let b = pod("b", "", "", 1);
        let s = u.summary("n", &[&a, &b]);
        assert_eq!(s.pods.len(), 2);
        assert_eq!(
            s.node.cpu.as_ref().unwrap().usage_nano_cores,
            Some(100_000_000)
        );
        assert_eq!(
            s.node.memory.as_ref().unwrap().working_set_bytes,
            Some(10 << 20)
        );
        let before = s.node.cpu.unwrap().usage_core_nano_seconds.unwrap();
        let s = u.summary("n", &[&b]);
        assert_eq!(s.pods.len(), 1);
        assert!(s.node.cpu.unwrap().usage_core_nano_seconds.unwrap() >= before);
        assert_eq!(split(10, 3, 0) + split(10, 3, 1) + split(10, 3, 2), 10);
    }
}

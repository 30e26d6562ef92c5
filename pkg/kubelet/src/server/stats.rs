//! The resource statistics a kubelet reports: upstream's `stats/v1alpha1` Summary (served at
//! `/stats/summary`) and its Prometheus rendering at `/metrics/resource`, the endpoint
//! metrics-server 0.6+ scrapes.
//!
//! Field names and metric names are upstream's, so existing consumers (metrics-server,
//! Prometheus rules, `kubectl get --raw`) read ours unchanged.

use std::fmt::Write as _;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// Upstream's `Summary`: the node and every running pod on it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The node's own usage.
    pub node: NodeStats,
    /// One entry per pod with running containers.
    pub pods: Vec<PodStats>,
}

/// Upstream's `NodeStats` (the parts we report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// When the node (kubelet) started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// CPU usage of the whole node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory usage of the whole node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The filesystem holding the kubelet's root dir (nodefs): what `nodefs.available`
    /// eviction and disk dashboards read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
}

/// Upstream's `FsStats`: a filesystem's size and use, or (for a container's rootfs) the part
/// one writer uses of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When the sample was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Bytes available to unprivileged users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Size of the filesystem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Bytes in use (the filesystem's, or this writer's share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Free inodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// Total inodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// Inodes in use (the filesystem's, or this writer's share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

impl FsStats {
    /// The filesystem holding `path`, by `statvfs` (blocking: call off the runtime);
    /// `None` when it cannot be read. Used is capacity less free blocks, as cAdvisor.
    pub fn of_filesystem(path: &std::path::Path, time: Time) -> Option<FsStats> {
        let s = nix::sys::statvfs::statvfs(path).ok()?;
        let block = s.fragment_size() as u64;
        let (blocks, free, avail) = (
            s.blocks() as u64,
            s.blocks_free() as u64,
            s.blocks_available() as u64,
        );
        let (files, files_free) = (s.files() as u64, s.files_free() as u64);
        Some(FsStats {
            time: Some(time),
            available_bytes: Some(avail * block),
            capacity_bytes: Some(blocks * block),
            used_bytes: Some(blocks.saturating_sub(free) * block),
            inodes_free: Some(files_free),
            inodes: Some(files),
            inodes_used: Some(files.saturating_sub(files_free)),
        })
    }
}

/// Upstream's `PodReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodReference {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
}

/// Upstream's `PodStats` (the parts we report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// When the pod started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Its containers.
    pub containers: Vec<ContainerStats>,
    /// The pod's total CPU usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// The pod's total memory usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// Upstream's `ContainerStats` (the parts we report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// Container name.
    pub name: String,
    /// When the container started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// CPU usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The container's writable layer: bytes and inodes it uses.
    ///
    /// # Limits
    /// Only the used figures (from the runtime); upstream adds the image filesystem's
    /// capacity and free space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
}

/// Upstream's `CPUStats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When the sample was taken.
    pub time: Time,
    /// Average usage over the last sampling interval, in nanocores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative CPU time since start, in core-nanoseconds: the counter rates come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Upstream's `MemoryStats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When the sample was taken.
    pub time: Time,
    /// Memory still available (node: capacity minus working set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Total memory in use, cache included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Memory in use that cannot be reclaimed: what eviction and metrics-server look at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous and swap-cache memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Page faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// Major page faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// Core-nanoseconds as Prometheus core-seconds, exact to the nanosecond (no float rounding,
/// so a rate computed from two samples is exact).
pub(crate) fn seconds(nanos: u64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

pub(crate) fn millis(t: &Time) -> i64 {
    t.0.as_millisecond()
}

/// Escapes a Prometheus label value.
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders `summary` as upstream kubelet's `/metrics/resource` (Prometheus text format 0.0.4,
/// every sample with its own timestamp in milliseconds, as upstream sets them from the stats'
/// sample times).
pub fn resource_metrics(summary: &Summary) -> String {
    let mut out = String::new();
    let pods = || summary.pods.iter();
    let containers = || {
        pods().flat_map(|p| {
            p.containers.iter().map(move |c| {
                (
                    format!(
                        "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
                        label(&c.name),
                        label(&p.pod_ref.namespace),
                        label(&p.pod_ref.name)
                    ),
                    c,
                )
            })
        })
    };
    let pod_labels = |p: &PodStats| {
        format!(
            "namespace=\"{}\",pod=\"{}\"",
            label(&p.pod_ref.namespace),
            label(&p.pod_ref.name)
        )
    };
    let head = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };

    head(
        &mut out,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for (l, c) in containers() {
        if let Some(cpu) = &c.cpu {
            if let Some(n) = cpu.usage_core_nano_seconds {
                let _ = writeln!(
                    out,
                    "container_cpu_usage_seconds_total{{{l}}} {} {}",
                    seconds(n),
                    millis(&cpu.time)
                );
            }
        }
    }
    head(
        &mut out,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    for (l, c) in containers() {
        if let Some(m) = &c.memory {
            if let Some(ws) = m.working_set_bytes {
                let _ = writeln!(
                    out,
                    "container_memory_working_set_bytes{{{l}}} {ws} {}",
                    millis(&m.time)
                );
            }
        }
    }
    head(
        &mut out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    for (l, c) in containers() {
        if let Some(t) = &c.start_time {
            let _ = writeln!(
                out,
                "container_start_time_seconds{{{l}}} {} {}",
                t.0.as_second(),
                millis(t)
            );
        }
    }
    if let Some(cpu) = &summary.node.cpu {
        head(
            &mut out,
            "node_cpu_usage_seconds_total",
            "Cumulative cpu time consumed by the node in core-seconds",
            "counter",
        );
        if let Some(n) = cpu.usage_core_nano_seconds {
            let _ = writeln!(
                out,
                "node_cpu_usage_seconds_total {} {}",
                seconds(n),
                millis(&cpu.time)
            );
        }
    }
    if let Some(m) = &summary.node.memory {
        head(
            &mut out,
            "node_memory_working_set_bytes",
            "Current working set of the node in bytes",
            "gauge",
        );
        if let Some(ws) = m.working_set_bytes {
            let _ = writeln!(
                out,
                "node_memory_working_set_bytes {ws} {}",
                millis(&m.time)
            );
        }
    }
    head(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for p in pods() {
        if let Some(n) = p.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds) {
            let t = p.cpu.as_ref().map(|c| millis(&c.time)).unwrap_or_default();
            let _ = writeln!(
                out,
                "pod_cpu_usage_seconds_total{{{}}} {} {t}",
                pod_labels(p),
                seconds(n)
            );
        }
    }
    head(
        &mut out,
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    for p in pods() {
        if let Some(m) = &p.memory {
            if let Some(ws) = m.working_set_bytes {
                let _ = writeln!(
                    out,
                    "pod_memory_working_set_bytes{{{}}} {ws} {}",
                    pod_labels(p),
                    millis(&m.time)
                );
            }
        }
    }
    head(
        &mut out,
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    out.push_str("resource_scrape_error 0\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_upstream_metric_names_with_exact_counters() {
        let t = Time(k8s_openapi::jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap());
        let cpu = |n| CpuStats {
            time: t.clone(),
            usage_nano_cores: None,
            usage_core_nano_seconds: Some(n),
        };
        let mem = |b| MemoryStats {
            time: t.clone(),
            available_bytes: None,
            usage_bytes: None,
            working_set_bytes: Some(b),
            rss_bytes: None,
            page_faults: None,
            major_page_faults: None,
        };
        let s = Summary {
            node: NodeStats {
                node_name: "n".into(),
                start_time: None,
                cpu: Some(cpu(12_000_000_001)),
                memory: Some(mem(4096)),
                fs: None,
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                start_time: Some(t.clone()),
                containers: vec![ContainerStats {
                    name: "c".into(),
                    start_time: Some(t.clone()),
                    cpu: Some(cpu(250_000_000)),
                    memory: Some(mem(1024)),
                    rootfs: None,
                }],
                cpu: Some(cpu(250_000_000)),
                memory: Some(mem(1024)),
            }],
        };
        let text = resource_metrics(&s);
        assert!(text.contains("node_cpu_usage_seconds_total 12.000000001 1700000000123\n"));
        assert!(text.contains("node_memory_working_set_bytes 4096 1700000000123\n"));
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"ns\",pod=\"p\"} 0.250000000 1700000000123\n"
        ));
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"c\",namespace=\"ns\",pod=\"p\"} 1024 1700000000123\n"
        ));
        assert!(
            text.contains("pod_cpu_usage_seconds_total{namespace=\"ns\",pod=\"p\"} 0.250000000")
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["node"]["cpu"]["usageCoreNanoSeconds"],
            12_000_000_001u64
        );
        assert_eq!(json["pods"][0]["podRef"]["namespace"], "ns");
        assert_eq!(
            json["pods"][0]["containers"][0]["memory"]["workingSetBytes"],
            1024
        );
    }
}

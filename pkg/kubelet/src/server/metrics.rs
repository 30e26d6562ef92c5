//! The kubelet's Prometheus endpoints besides `/metrics/resource`: `/metrics` (the kubelet's
//! own metrics) and `/metrics/cadvisor` (per-container usage as cAdvisor names it).
//!
//! Metric and label names are upstream's, so dashboards and recording rules written for
//! upstream nodes (`container_cpu_usage_seconds_total{namespace,pod,container}`,
//! `kubelet_running_pods`) read ours unchanged.
//!
//! # Limits
//! - `/metrics` is a small set: node name, running pods and containers, and the process's
//!   CPU, memory and start time; no request latency histograms, no PLEG or runtime
//!   operation metrics.
//! - `/metrics/cadvisor` has CPU, memory and start time series only (no network, filesystem,
//!   blkio or throttling series).

use std::fmt::Write as _;

use super::host::field;
use super::stats::{label, millis, seconds, Summary, Time};

/// One cgroup's usage as `/metrics/cadvisor` reports it: the node root (`id="/"`), a pod
/// (`container=""`) or a container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CadvisorEntry {
    /// The cgroup path (`/` for the node).
    pub id: String,
    /// The runtime's name for it (the container ID), empty for the node and pods.
    pub name: String,
    /// The container's image, empty for the node and pods.
    pub image: String,
    /// The container's name, empty for the node and pods.
    pub container: String,
    /// The pod's namespace, empty for the node.
    pub namespace: String,
    /// The pod's name, empty for the node.
    pub pod: String,
    /// Cumulative CPU time, core-nanoseconds.
    pub cpu_core_nanos: Option<u64>,
    /// Memory in use minus inactive file pages.
    pub memory_working_set: Option<u64>,
    /// Memory in use.
    pub memory_usage: Option<u64>,
    /// Anonymous memory.
    pub memory_rss: Option<u64>,
    /// When it started.
    pub start_time: Option<Time>,
    /// When the sample was taken.
    pub time: Option<Time>,
}

/// The machine's size (`machine_cpu_cores`, `machine_memory_bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// Logical CPUs.
    pub cpu_cores: usize,
    /// Physical memory.
    pub memory_bytes: Option<u64>,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: field(&meminfo, "MemTotal"),
        }
    }
}

/// Entries derived from a summary alone, for runtimes without cgroups (the simulated one):
/// the node as `/`, then each pod and container under a `/kubepods/pod<uid>` path.
pub fn from_summary(summary: &Summary) -> Vec<CadvisorEntry> {
    let mut out = vec![CadvisorEntry {
        id: "/".into(),
        cpu_core_nanos: summary
            .node
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds),
        memory_working_set: summary
            .node
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes),
        memory_usage: summary.node.memory.as_ref().and_then(|m| m.usage_bytes),
        memory_rss: summary.node.memory.as_ref().and_then(|m| m.rss_bytes),
        start_time: summary.node.start_time.clone(),
        time: summary.node.cpu.as_ref().map(|c| c.time.clone()),
        ..Default::default()
    }];
    for p in &summary.pods {
        let pod_id = format!("/kubepods/pod{}", p.pod_ref.uid);
        out.push(CadvisorEntry {
            id: pod_id.clone(),
            namespace: p.pod_ref.namespace.clone(),
            pod: p.pod_ref.name.clone(),
            cpu_core_nanos: p.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds),
            memory_working_set: p.memory.as_ref().and_then(|m| m.working_set_bytes),
            memory_usage: p.memory.as_ref().and_then(|m| m.usage_bytes),
            memory_rss: p.memory.as_ref().and_then(|m| m.rss_bytes),
            start_time: p.start_time.clone(),
            time: p.cpu.as_ref().map(|c| c.time.clone()),
            ..Default::default()
        });
        for c in &p.containers {
            out.push(CadvisorEntry {
                id: format!("{pod_id}/{}", c.name),
                container: c.name.clone(),
                namespace: p.pod_ref.namespace.clone(),
                pod: p.pod_ref.name.clone(),
                cpu_core_nanos: c.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds),
                memory_working_set: c.memory.as_ref().and_then(|m| m.working_set_bytes),
                memory_usage: c.memory.as_ref().and_then(|m| m.usage_bytes),
                memory_rss: c.memory.as_ref().and_then(|m| m.rss_bytes),
                start_time: c.start_time.clone(),
                time: c.cpu.as_ref().map(|c| c.time.clone()),
                ..Default::default()
            });
        }
    }
    out
}

fn head(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `cpu` is cAdvisor's extra label of the CPU counter (`total` without per-CPU series).
fn cadvisor_labels(e: &CadvisorEntry, cpu: bool) -> String {
    format!(
        "container=\"{}\",{}id=\"{}\",image=\"{}\",name=\"{}\",namespace=\"{}\",pod=\"{}\"",
        label(&e.container),
        if cpu { "cpu=\"total\"," } else { "" },
        label(&e.id),
        label(&e.image),
        label(&e.name),
        label(&e.namespace),
        label(&e.pod)
    )
}

fn stamp(t: Option<&Time>) -> String {
    t.map(|t| format!(" {}", millis(t))).unwrap_or_default()
}

/// Renders `/metrics/cadvisor` (Prometheus text 0.0.4, samples stamped with their time).
pub fn cadvisor_metrics(entries: &[CadvisorEntry], machine: Machine) -> String {
    let mut out = String::new();
    type Pick = fn(&CadvisorEntry) -> Option<u64>;
    let gauges: [(&str, &str, Pick); 3] = [
        (
            "container_memory_rss",
            "Size of RSS in bytes.",
            |e| e.memory_rss,
        ),
        (
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed",
            |e| e.memory_usage,
        ),
        (
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            |e| e.memory_working_set,
        ),
    ];
    head(
        &mut out,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        "counter",
    );
    for e in entries {
        if let Some(n) = e.cpu_core_nanos {
            let _ = writeln!(
                out,
                "container_cpu_usage_seconds_total{{{}}} {}{}",
                cadvisor_labels(e, true),
                seconds(n),
                stamp(e.time.as_ref())
            );
        }
    }
    for (name, help, pick) in gauges {
        head(&mut out, name, help, "gauge");
        for e in entries {
            if let Some(v) = pick(e) {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {v}{}",
                    cadvisor_labels(e, false),
                    stamp(e.time.as_ref())
                );
            }
        }
    }
    head(
        &mut out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        "gauge",
    );
    for e in entries {
        if let Some(t) = &e.start_time {
            let _ = writeln!(
                out,
                "container_start_time_seconds{{{}}} {}{}",
                cadvisor_labels(e, false),
                t.0.as_second(),
                stamp(e.time.as_ref())
            );
        }
    }
    head(
        &mut out,
        "machine_cpu_cores",
        "Number of logical CPU cores.",
        "gauge",
    );
    let _ = writeln!(out, "machine_cpu_cores {}", machine.cpu_cores);
    if let Some(m) = machine.memory_bytes {
        head(
            &mut out,
            "machine_memory_bytes",
            "Amount of memory installed on the machine.",
            "gauge",
        );
        let _ = writeln!(out, "machine_memory_bytes {m}");
    }
    out
}

/// The kubelet process's own counters (`process_*`, as every Go program exports them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// User plus system CPU time, nanoseconds.
    pub cpu_nanos: u64,
    /// Resident memory.
    pub resident_bytes: u64,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: u64,
}

impl ProcessStats {
    /// This process, from `/proc/self/stat`, `/proc/self/status` and the boot time.
    ///
    /// # Blocking
    /// Reads small files: call it from `spawn_blocking`.
    pub fn this() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        process_stats(&stat, &status, &boot)
    }
}

/// Parses `/proc/self/stat` (utime, stime, starttime in ticks), `VmRSS` and `btime`.
pub fn process_stats(stat: &str, status: &str, proc_stat: &str) -> ProcessStats {
    const TICK_NANOS: u64 = 10_000_000;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15,
    // starttime 22 (1-based), so index 11, 12 and 19 here.
    let rest: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let at = |i: usize| rest.get(i).copied().unwrap_or(0);
    let btime = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    ProcessStats {
        cpu_nanos: (at(11) + at(12)) * TICK_NANOS,
        resident_bytes: field(status, "VmRSS").unwrap_or(0),
        start_time_seconds: btime + at(19) / 100,
    }
}

/// Renders `/metrics`: the kubelet's own metrics for `node`.
pub fn kubelet_metrics(node: &str, summary: &Summary, process: ProcessStats) -> String {
    let mut out = String::new();
    head(
        &mut out,
        "kubelet_node_name",
        "[ALPHA] The node's name. The count is always 1.",
        "gauge",
    );
    let _ = writeln!(out, "kubelet_node_name{{node=\"{}\"}} 1", label(node));
    head(
        &mut out,
        "kubelet_running_pods",
        "[ALPHA] Number of pods that have a running pod sandbox",
        "gauge",
    );
    let _ = writeln!(out, "kubelet_running_pods {}", summary.pods.len());
    head(
        &mut out,
        "kubelet_running_containers",
        "[ALPHA] Number of containers currently running",
        "gauge",
    );
    let containers: usize = summary.pods.iter().map(|p| p.containers.len()).sum();
    let _ = writeln!(
        out,
        "kubelet_running_containers{{container_state=\"running\"}} {containers}"
    );
    head(
        &mut out,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
    );
    let _ = writeln!(
        out,
        "process_cpu_seconds_total {}",
        seconds(process.cpu_nanos)
    );
    head(
        &mut out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "process_resident_memory_bytes {}",
        process.resident_bytes
    );
    head(
        &mut out,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "process_start_time_seconds {}",
        process.start_time_seconds
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::stats::{ContainerStats, CpuStats, PodReference, PodStats};

    fn t() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap())
    }

    #[test]
    fn cadvisor_uses_upstream_names_and_labels() {
        let e = CadvisorEntry {
            id: "/kubepods/besteffort/podu/abc".into(),
            name: "abc".into(),
            image: "busybox:latest".into(),
            container: "c".into(),
            namespace: "ns".into(),
            pod: "p".into(),
            cpu_core_nanos: Some(1_500_000_000),
            memory_working_set: Some(4096),
            time: Some(t()),
            ..Default::default()
        };
        let text = cadvisor_metrics(
            &[e],
            Machine {
                cpu_cores: 2,
                memory_bytes: Some(8),
            },
        );
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\",cpu=\"total\",id=\"/kubepods/besteffort/podu/abc\",image=\"busybox:latest\",name=\"abc\",namespace=\"ns\",pod=\"p\"} 1.500000000 1700000000123\n"
        ), "{text}");
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"c\",id=\"/kubepods/besteffort/podu/abc\",image=\"busybox:latest\",name=\"abc\",namespace=\"ns\",pod=\"p\"} 4096 1700000000123\n"
        ));
        assert!(!text.contains("container_memory_rss{"));
        assert!(text.contains("machine_cpu_cores 2\n"));
        assert!(text.contains("machine_memory_bytes 8\n"));
    }

    #[test]
    fn summary_entries_cover_node_pods_and_containers() {
        let cpu = |n| {
            Some(CpuStats {
                time: t(),
                usage_nano_cores: None,
                usage_core_nano_seconds: Some(n),
            })
        };
        let s = Summary {
            node: super::super::stats::NodeStats {
                node_name: "n".into(),
                cpu: cpu(9),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                cpu: cpu(5),
                containers: vec![ContainerStats {
                    name: "c".into(),
                    cpu: cpu(5),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let entries = from_summary(&s);
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["/", "/kubepods/podu", "/kubepods/podu/c"]);
        assert_eq!(entries[2].container, "c");
        let text = kubelet_metrics("n", &s, ProcessStats::default());
        assert!(text.contains("kubelet_running_pods 1\n"));
        assert!(text.contains("kubelet_running_containers{container_state=\"running\"} 1\n"));
        assert!(text.contains("kubelet_node_name{node=\"n\"} 1\n"));
    }

    #[test]
    fn process_stats_from_proc() {
        let stat =
            "42 (distro agent) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1234 1000 200";
        let p = process_stats(stat, "VmRSS:\t  2048 kB\n", "cpu 1\nbtime 1700000000\n");
        assert_eq!(p.cpu_nanos, 300 * 10_000_000);
        assert_eq!(p.resident_bytes, 2048 * 1024);
        assert_eq!(p.start_time_seconds, 1_700_000_012);
    }
}

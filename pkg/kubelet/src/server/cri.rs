//! The kubelet API of a real node: pods from the API server (those bound to this node),
//! usage from containerd's CRI (`ListContainerStats`, which reads each container's cgroup)
//! and the node's root cgroup and `/proc` ([`super::host`]).
//!
//! # Design
//! Every request samples afresh; nothing is cached between scrapes, so a dead containerd
//! shows as missing pods rather than as stale numbers. Pod totals are the sums of their
//! running containers (containerd 1.6's `ListPodSandboxStats` is not implemented for every
//! shim, and the sandbox's pause process uses next to nothing).
//!
//! # Limits
//! - `usageNanoCores` (containerd 1.6 leaves it unset) is the rate since the previous
//!   `/stats/summary` request ([`fill_nano_cores`]), not over cAdvisor's housekeeping
//!   interval: absent on the first request, and noisier when several clients poll.
//! - No filesystem, network or volume statistics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use distro_cri::api::{self, ContainerState, PodSandboxState};
use distro_cri::Cri;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::host::{self, HostPaths, HostUsage};
use super::logs::{self, Liveness, LogError, LogOptions};
use super::metrics::CadvisorEntry;
use super::stats::{
    ContainerStats, CpuStats, FsStats, MemoryStats, NodeStats, PodReference, PodStats, Summary,
    Time,
};
use super::Provider;
use crate::pod::runtime::cri_time;
use crate::pod::sandbox::cgroup_parent;

/// A real node's view for the kubelet API.
pub struct CriNode {
    /// The node's name.
    pub node: String,
    /// The node's own client (reads the pods bound to it).
    pub client: Client,
    /// containerd.
    pub cri: Cri,
    /// When this kubelet started (the node's `startTime`).
    pub started: Timestamp,
    /// Where containers' log files live (`<root>/<ns>_<pod>_<uid>/<container>/<n>.log`).
    pub pod_log_root: PathBuf,
    /// Where the node's own counters are read.
    pub host: HostPaths,
    /// The previous summary's CPU counters, for `usageNanoCores`.
    pub last_cpu: Mutex<HashMap<String, (Timestamp, u64)>>,
}

fn time(nanos: i64) -> Time {
    Time(cri_time(nanos).unwrap_or_else(Timestamp::now))
}

/// `path` or its nearest existing ancestor (the log root is made with the first pod).
fn existing_ancestor(path: &std::path::Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(std::path::Path::new("/"))
        .to_path_buf()
}

fn value(v: Option<&api::UInt64Value>) -> Option<u64> {
    v.map(|v| v.value)
}

/// What one CRI sampling saw, before it is shaped for an endpoint.
#[derive(Default)]
pub struct Sample {
    /// Sandboxes by ID.
    pub sandboxes: HashMap<String, api::PodSandbox>,
    /// Containers by ID.
    pub containers: HashMap<String, api::Container>,
    /// Stats of containers with a task.
    pub stats: Vec<api::ContainerStats>,
    /// The node's counters.
    pub host: HostUsage,
    /// The kubelet root dir's filesystem (nodefs).
    pub host_fs: Option<FsStats>,
    /// When the node was sampled.
    pub now: Timestamp,
}

/// What the pod's spec adds to cAdvisor's labels.
#[derive(Clone, Debug, Default)]
pub struct PodLabels {
    /// The pod's cgroup (cAdvisor's `id` is `<cgroup>/<container id>`).
    pub cgroup: String,
    /// Each container's image as the spec names it (CRI lists image IDs).
    pub images: HashMap<String, String>,
}

impl PodLabels {
    /// The labels of `pod`.
    pub fn of(pod: &Pod) -> PodLabels {
        let spec = pod.spec.as_ref();
        let images = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
            .collect();
        PodLabels {
            cgroup: cgroup_parent(pod),
            images,
        }
    }
}

/// Turns a sample into upstream's Summary and cAdvisor entries; `pods` maps a pod UID to
/// what its spec says, where known.
pub fn shape(
    node: &str,
    started: Timestamp,
    sample: &Sample,
    pods_by_uid: &HashMap<String, PodLabels>,
) -> (Summary, Vec<CadvisorEntry>) {
    let now = Time(sample.now);
    let node_cpu = sample.host.cpu_core_nanos.map(|n| CpuStats {
        time: now.clone(),
        usage_nano_cores: None,
        usage_core_nano_seconds: Some(n),
    });
    let node_memory = sample.host.memory_working_set.map(|ws| MemoryStats {
        time: now.clone(),
        available_bytes: sample.host.memory_total.map(|t| t.saturating_sub(ws)),
        usage_bytes: sample.host.memory_usage,
        working_set_bytes: Some(ws),
        rss_bytes: None,
        page_faults: None,
        major_page_faults: None,
    });
    let mut entries = vec![CadvisorEntry {
        id: "/".into(),
        cpu_core_nanos: sample.host.cpu_core_nanos,
        memory_working_set: sample.host.memory_working_set,
        memory_usage: sample.host.memory_usage,
        time: Some(now.clone()),
        ..Default::default()
    }];
    // Running containers' stats grouped by sandbox, in a stable order.
    let mut by_pod: std::collections::BTreeMap<
        String,
        Vec<(&api::Container, &api::ContainerStats)>,
    > = Default::default();
    for s in &sample.stats {
        let Some(id) = s.attributes.as_ref().map(|a| a.id.as_str()) else {
            continue;
        };
        let Some(c) = sample.containers.get(id) else {
            continue;
        };
        if c.state != ContainerState::ContainerRunning as i32 {
            continue;
        }
        by_pod
            .entry(c.pod_sandbox_id.clone())
            .or_default()
            .push((c, s));
    }
    let mut pods = Vec::new();
    for (sandbox_id, mut members) in by_pod {
        let Some(sb) = sample.sandboxes.get(&sandbox_id) else {
            continue;
        };
        if sb.state != PodSandboxState::SandboxReady as i32 {
            continue;
        }
        let Some(meta) = sb.metadata.as_ref() else {
            continue;
        };
        members.sort_by(|a, b| name_of(a.0).cmp(name_of(b.0)));
        let labels = pods_by_uid.get(&meta.uid);
        let pod_cgroup = labels.map(|l| l.cgroup.clone());
        let mut containers = Vec::new();
        let (mut cpu_total, mut ws_total, mut usage_total, mut rss_total) =
            (0u64, 0u64, 0u64, 0u64);
        let mut latest = 0i64;
        for (c, s) in members {
            let cpu = s.cpu.as_ref().map(|u| CpuStats {
                time: time(u.timestamp),
                usage_nano_cores: None,
                usage_core_nano_seconds: value(u.usage_core_nano_seconds.as_ref()),
            });
            let memory = s.memory.as_ref().map(|m| MemoryStats {
                time: time(m.timestamp),
                available_bytes: value(m.available_bytes.as_ref()),
                usage_bytes: value(m.usage_bytes.as_ref()),
                working_set_bytes: value(m.working_set_bytes.as_ref()),
                rss_bytes: value(m.rss_bytes.as_ref()),
                page_faults: value(m.page_faults.as_ref()),
                major_page_faults: value(m.major_page_faults.as_ref()),
            });
            let cpu_n = cpu.as_ref().and_then(|c| c.usage_core_nano_seconds);
            let ws = memory.as_ref().and_then(|m| m.working_set_bytes);
            let usage = memory.as_ref().and_then(|m| m.usage_bytes);
            let rss = memory.as_ref().and_then(|m| m.rss_bytes);
            cpu_total += cpu_n.unwrap_or(0);
            ws_total += ws.unwrap_or(0);
            usage_total += usage.unwrap_or(0);
            rss_total += rss.unwrap_or(0);
            latest = latest.max(s.cpu.as_ref().map_or(0, |u| u.timestamp));
            let sample_time = cpu.as_ref().map(|c| c.time.clone());
            entries.push(CadvisorEntry {
                id: match &pod_cgroup {
                    Some(p) => format!("{p}/{}", c.id),
                    None => String::new(),
                },
                name: c.id.clone(),
                image: labels
                    .and_then(|l| l.images.get(name_of(c)).cloned())
                    .unwrap_or_else(|| c.image_ref.clone()),
                container: name_of(c).to_string(),
                namespace: meta.namespace.clone(),
                pod: meta.name.clone(),
                cpu_core_nanos: cpu_n,
                memory_working_set: ws,
                memory_usage: usage,
                memory_rss: rss,
                start_time: Some(time(c.created_at)),
                time: sample_time,
            });
            let rootfs = s.writable_layer.as_ref().map(|w| FsStats {
                time: Some(time(w.timestamp)),
                used_bytes: value(w.used_bytes.as_ref()),
                inodes_used: value(w.inodes_used.as_ref()),
                ..Default::default()
            });
            containers.push(ContainerStats {
                name: name_of(c).to_string(),
                start_time: Some(time(c.created_at)),
                cpu,
                memory,
                rootfs,
            });
        }
        let t = if latest > 0 {
            time(latest)
        } else {
            now.clone()
        };
        entries.push(CadvisorEntry {
            id: pod_cgroup.clone().unwrap_or_default(),
            namespace: meta.namespace.clone(),
            pod: meta.name.clone(),
            cpu_core_nanos: Some(cpu_total),
            memory_working_set: Some(ws_total),
            memory_usage: Some(usage_total),
            memory_rss: Some(rss_total),
            start_time: Some(time(sb.created_at)),
            time: Some(t.clone()),
            ..Default::default()
        });
        pods.push(PodStats {
            pod_ref: PodReference {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
            },
            start_time: Some(time(sb.created_at)),
            containers,
            cpu: Some(CpuStats {
                time: t.clone(),
                usage_nano_cores: None,
                usage_core_nano_seconds: Some(cpu_total),
            }),
            memory: Some(MemoryStats {
                time: t,
                available_bytes: None,
                usage_bytes: Some(usage_total),
                working_set_bytes: Some(ws_total),
                rss_bytes: Some(rss_total),
                page_faults: None,
                major_page_faults: None,
            }),
        });
    }
    let summary = Summary {
        node: NodeStats {
            node_name: node.to_string(),
            start_time: Some(Time(started)),
            cpu: node_cpu,
            memory: node_memory,
            fs: sample.host_fs.clone(),
        },
        pods,
    };
    (summary, entries)
}

fn on_node(pod: &Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// A followed container is live while containerd reports it running.
struct Running {
    cri: Cri,
    id: String,
}

#[async_trait::async_trait]
impl Liveness for Running {
    async fn running(&self) -> bool {
        self.cri
            .container_status(&self.id)
            .await
            .is_ok_and(|s| s.state == ContainerState::ContainerRunning as i32)
    }
}

/// Sets `usageNanoCores` of the node, pods and containers from the change of their CPU
/// counters since `last` (then replaced by this summary's counters). Counters that went
/// backwards (a restarted container) or samples at the same instant give no rate.
pub fn fill_nano_cores(summary: &mut Summary, last: &mut HashMap<String, (Timestamp, u64)>) {
    let mut now = HashMap::new();
    let mut rate = |key: String, cpu: &mut Option<CpuStats>| {
        let Some(cpu) = cpu.as_mut() else { return };
        let Some(total) = cpu.usage_core_nano_seconds else {
            return;
        };
        let at = cpu.time.0;
        if let Some((then, before)) = last.get(&key) {
            let span = at.as_nanosecond() - then.as_nanosecond();
            if span > 0 && total >= *before {
                let cores = u128::from(total - before) * 1_000_000_000 / span.unsigned_abs();
                cpu.usage_nano_cores = u64::try_from(cores).ok();
            }
        }
        now.insert(key, (at, total));
    };
    rate(String::new(), &mut summary.node.cpu);
    for p in &mut summary.pods {
        let pod = format!("{}/{}", p.pod_ref.namespace, p.pod_ref.name);
        for c in &mut p.containers {
            rate(format!("{pod}/{}/{}", p.pod_ref.uid, c.name), &mut c.cpu);
        }
        rate(format!("{pod}/{}", p.pod_ref.uid), &mut p.cpu);
    }
    *last = now;
}

fn name_of(c: &api::Container) -> &str {
    c.metadata.as_ref().map_or("", |m| m.name.as_str())
}

impl CriNode {
    /// Makes the provider for `node`.
    pub fn new(node: &str, client: Client, cri: Cri, pod_log_root: PathBuf) -> Arc<CriNode> {
        Arc::new(CriNode {
            node: node.to_string(),
            client,
            cri,
            started: Timestamp::now(),
            pod_log_root,
            host: HostPaths::default(),
            last_cpu: Mutex::default(),
        })
    }

    /// The pods bound to this node, read from the API server.
    pub async fn bound_pods(&self) -> Result<Vec<Pod>, kube::Error> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        Ok(api.list(&lp).await?.items)
    }

    /// Samples containerd and the node now (failures leave parts empty, logged).
    async fn sample(&self) -> Sample {
        let (sandboxes, containers, stats) = tokio::join!(
            self.cri.list_pod_sandboxes(),
            self.cri.list_containers(),
            self.cri.list_container_stats()
        );
        let warn = |what: &str, e: &distro_cri::Error| {
            tracing::warn!(error = %e, "kubelet API: listing {what} from containerd failed");
        };
        let sandboxes = sandboxes
            .inspect_err(|e| warn("pod sandboxes", e))
            .unwrap_or_default();
        let containers = containers
            .inspect_err(|e| warn("containers", e))
            .unwrap_or_default();
        let stats = stats
            .inspect_err(|e| warn("container stats", e))
            .unwrap_or_default();
        let paths = self.host.clone();
        let root = self.pod_log_root.clone();
        let now = Timestamp::now();
        let (host, host_fs) = tokio::task::spawn_blocking(move || {
            // The pod logs live in the kubelet's root dir: its filesystem is nodefs.
            let fs = FsStats::of_filesystem(&existing_ancestor(&root), Time(now));
            (host::read(&paths), fs)
        })
        .await
        .unwrap_or_default();
        Sample {
            sandboxes: sandboxes.into_iter().map(|s| (s.id.clone(), s)).collect(),
            containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
            stats,
            host,
            host_fs,
            now: Timestamp::now(),
        }
    }
}

#[async_trait::async_trait]
impl Provider for CriNode {
    async fn pods(&self) -> Vec<Pod> {
        self.bound_pods().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "kubelet API: listing the node's pods failed");
            Vec::new()
        })
    }

    async fn summary(&self) -> Summary {
        let sample = self.sample().await;
        let mut summary = shape(&self.node, self.started, &sample, &HashMap::new()).0;
        if let Ok(mut last) = self.last_cpu.lock() {
            fill_nano_cores(&mut summary, &mut last);
        }
        summary
    }

    async fn container_logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        opts: LogOptions,
    ) -> Result<mpsc::Receiver<Bytes>, LogError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let p = match api.get_opt(pod).await {
            Ok(Some(p)) if on_node(&p, &self.node) => p,
            Ok(_) => return Err(LogError::NotFound(format!("pod {pod:?} does not exist"))),
            Err(e) => return Err(LogError::Internal(format!("getting pod {pod:?}: {e}"))),
        };
        if !logs::has_container(&p, container) {
            return Err(LogError::NotFound(format!(
                "container {container:?} not found in pod {pod:?}"
            )));
        }
        let id = logs::container_to_read(&p, container, opts.previous)?;
        let status = self.cri.container_status(&id).await.map_err(|e| {
            LogError::BadRequest(format!("failed to get container status {id:?}: {e}"))
        })?;
        if status.log_path.is_empty() {
            return Err(LogError::BadRequest(format!(
                "container {container:?} in pod {pod:?} has no log file"
            )));
        }
        let live = Box::new(Running {
            cri: self.cri.clone(),
            id,
        });
        Ok(logs::spawn_reader(
            PathBuf::from(status.log_path),
            opts,
            live,
        ))
    }

    async fn stream_url(
        &self,
        req: &super::streams::StreamRequest,
    ) -> Result<String, super::streams::StreamError> {
        super::streams::cri_stream_url(&self.cri, req).await
    }

    async fn cadvisor(&self) -> Vec<CadvisorEntry> {
        let (sample, pods) = tokio::join!(self.sample(), self.pods());
        let labels = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, PodLabels::of(p))))
            .collect();
        shape(&self.node, self.started, &sample, &labels).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, name: &str, uid: &str) -> api::PodSandbox {
        api::PodSandbox {
            id: id.into(),
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            state: PodSandboxState::SandboxReady as i32,
            created_at: 1_700_000_000_000_000_000,
            ..Default::default()
        }
    }

    fn container(id: &str, sb: &str, name: &str, state: ContainerState) -> api::Container {
        api::Container {
            id: id.into(),
            pod_sandbox_id: sb.into(),
            metadata: Some(api::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: "busybox:latest".into(),
                ..Default::default()
            }),
            state: state as i32,
            created_at: 1_700_000_001_000_000_000,
            ..Default::default()
        }
    }

    fn stats(id: &str, cpu: u64, ws: u64) -> api::ContainerStats {
        api::ContainerStats {
            attributes: Some(api::ContainerAttributes {
                id: id.into(),
                ..Default::default()
            }),
            cpu: Some(api::CpuUsage {
                timestamp: 1_700_000_002_000_000_000,
                usage_core_nano_seconds: Some(api::UInt64Value { value: cpu }),
                usage_nano_cores: None,
            }),
            memory: Some(api::MemoryUsage {
                timestamp: 1_700_000_002_000_000_000,
                working_set_bytes: Some(api::UInt64Value { value: ws }),
                ..Default::default()
            }),
            writable_layer: Some(api::FilesystemUsage {
                timestamp: 1_700_000_002_000_000_000,
                used_bytes: Some(api::UInt64Value { value: ws * 2 }),
                inodes_used: Some(api::UInt64Value { value: 3 }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn running_containers_summed_per_pod_and_exited_ones_skipped() {
        let sample = Sample {
            sandboxes: [("s1".to_string(), sandbox("s1", "web", "u1"))].into(),
            containers: [
                (
                    "a".to_string(),
                    container("a", "s1", "app", ContainerState::ContainerRunning),
                ),
                (
                    "b".to_string(),
                    container("b", "s1", "side", ContainerState::ContainerRunning),
                ),
                (
                    "c".to_string(),
                    container("c", "s1", "old", ContainerState::ContainerExited),
                ),
            ]
            .into(),
            stats: vec![stats("a", 100, 10), stats("b", 50, 5), stats("c", 999, 999)],
            host: HostUsage {
                cpu_core_nanos: Some(7),
                memory_usage: Some(30),
                memory_working_set: Some(20),
                memory_total: Some(100),
            },
            host_fs: FsStats::of_filesystem(std::path::Path::new("/"), Time(Timestamp::UNIX_EPOCH)),
            now: Timestamp::from_second(1_700_000_003).unwrap(),
        };
        let labels = PodLabels {
            cgroup: "/kubepods/besteffort/podu1".into(),
            images: [("app".to_string(), "busybox:latest".to_string())].into(),
        };
        let (s, entries) = shape(
            "n",
            Timestamp::UNIX_EPOCH,
            &sample,
            &[("u1".to_string(), labels)].into(),
        );
        assert_eq!(
            s.node.cpu.as_ref().unwrap().usage_core_nano_seconds,
            Some(7)
        );
        assert_eq!(s.node.memory.as_ref().unwrap().available_bytes, Some(80));
        assert_eq!(s.pods.len(), 1);
        let p = &s.pods[0];
        assert_eq!(p.pod_ref.name, "web");
        let names: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "side"]);
        assert_eq!(p.cpu.as_ref().unwrap().usage_core_nano_seconds, Some(150));
        assert_eq!(p.memory.as_ref().unwrap().working_set_bytes, Some(15));
        // Upstream's rootfs (the writable layer) and node fs, as `kubectl get --raw` shows.
        let rootfs = p.containers[0].rootfs.as_ref().unwrap();
        assert_eq!((rootfs.used_bytes, rootfs.inodes_used), (Some(20), Some(3)));
        let fs = s.node.fs.as_ref().expect("node fs");
        assert!(fs.capacity_bytes.unwrap() >= fs.available_bytes.unwrap());
        assert!(fs.inodes.unwrap() >= fs.inodes_used.unwrap());
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["node"]["fs"]["capacityBytes"].is_u64(), "{json}");
        assert!(json["pods"][0]["containers"][0]["rootfs"]["usedBytes"].is_u64());
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "/",
                "/kubepods/besteffort/podu1/a",
                "/kubepods/besteffort/podu1/b",
                "/kubepods/besteffort/podu1"
            ]
        );
        assert_eq!(entries[1].image, "busybox:latest");
        assert_eq!(entries[1].container, "app");
    }

    #[test]
    fn nano_cores_are_the_counter_rate_since_the_last_summary() {
        let at = |s: i64, n: u64| {
            Some(CpuStats {
                time: Time(Timestamp::from_second(s).unwrap()),
                usage_nano_cores: None,
                usage_core_nano_seconds: Some(n),
            })
        };
        let summary = |s: i64, node: u64, c: u64| Summary {
            node: NodeStats {
                cpu: at(s, node),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                cpu: at(s, c),
                containers: vec![ContainerStats {
                    name: "c".into(),
                    cpu: at(s, c),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut last = HashMap::new();
        let mut first = summary(10, 1_000_000_000, 0);
        fill_nano_cores(&mut first, &mut last);
        assert_eq!(first.node.cpu.unwrap().usage_nano_cores, None);
        // Two seconds later: 1.5 node-seconds and 0.5 container-seconds more.
        let mut second = summary(12, 2_500_000_000, 500_000_000);
        fill_nano_cores(&mut second, &mut last);
        assert_eq!(second.node.cpu.unwrap().usage_nano_cores, Some(750_000_000));
        let p = &second.pods[0];
        assert_eq!(p.cpu.as_ref().unwrap().usage_nano_cores, Some(250_000_000));
        assert_eq!(
            p.containers[0].cpu.as_ref().unwrap().usage_nano_cores,
            Some(250_000_000)
        );
        // A restarted container's counter starts again: no rate.
        let mut third = summary(13, 3_000_000_000, 10);
        fill_nano_cores(&mut third, &mut last);
        assert_eq!(third.pods[0].cpu.as_ref().unwrap().usage_nano_cores, None);
    }
}

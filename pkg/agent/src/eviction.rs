//! Node-pressure eviction, as upstream's kubelet eviction manager with hard thresholds
//! (`--eviction-hard`, default `memory.available<100Mi,nodefs.available<10%,
//! imagefs.available<15%,nodefs.inodesFree<5%`).
//!
//! Every [`MONITOR_INTERVAL`] the signals are observed — `memory.available` as the machine's
//! memory less the root memory cgroup's working set (usage less inactive file pages; from
//! `/proc/meminfo` where the cgroup is unreadable), `nodefs.*` by statvfs of the kubelet's
//! root dir, `imagefs.*` of containerd's root, `pid.available` from `pid_max` and the
//! process count — and compared with the thresholds. A met threshold sets the node's
//! pressure condition ([`crate::status::Pressure`], posted at once by the status reporter;
//! the node lifecycle controller then adds the `node.kubernetes.io/*-pressure` NoSchedule
//! taint) and evicts one pod per interval, ranked as upstream: pods whose usage exceeds
//! their requests first, then lower priority, then larger usage above requests. The evicted
//! pod's status becomes phase Failed, reason Evicted with upstream's message, and its pod
//! worker stops its containers (a terminal phase). A condition clears only once no
//! threshold of its kind was met for the pressure transition period
//! (`--eviction-pressure-transition-period`, upstream's 5 m default).
//!
//! # Limits
//! - Hard thresholds only (no soft thresholds and grace periods, no minimum reclaim), and
//!   no node-level reclaim (image or container garbage collection) before evicting.
//! - A pod's disk usage counts its volumes and logs under the kubelet's dirs, not its
//!   containers' writable layers; its memory usage is its pod cgroup's working set
//!   (cgroup v1 or v2 file names).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_apimachinery::quantity::Quantity as Q;
use distro_client::events::{EventType, Recorder};
use distro_client::Client;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;

use crate::status::Pressure;

/// How often signals are observed and at most one pod is evicted (upstream's eviction
/// monitoring period, the housekeeping interval).
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(10);

/// Upstream's default hard thresholds on Linux.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%";

/// An eviction signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    /// `memory.available`.
    MemoryAvailable,
    /// `nodefs.available`.
    NodeFsAvailable,
    /// `nodefs.inodesFree`.
    NodeFsInodesFree,
    /// `imagefs.available`.
    ImageFsAvailable,
    /// `imagefs.inodesFree`.
    ImageFsInodesFree,
    /// `pid.available`.
    PidAvailable,
}

impl Signal {
    const ALL: [(Signal, &'static str); 6] = [
        (Signal::MemoryAvailable, "memory.available"),
        (Signal::NodeFsAvailable, "nodefs.available"),
        (Signal::NodeFsInodesFree, "nodefs.inodesFree"),
        (Signal::ImageFsAvailable, "imagefs.available"),
        (Signal::ImageFsInodesFree, "imagefs.inodesFree"),
        (Signal::PidAvailable, "pid.available"),
    ];

    /// The resource a signal reclaims, as upstream names it in messages.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }
}

/// A threshold's value: an absolute quantity or a share of capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// Bytes (or inodes, pids).
    Quantity(i64),
    /// Percent of capacity.
    Percent(f64),
}

/// One hard threshold: `signal < amount`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    /// What is measured.
    pub signal: Signal,
    /// Below this is pressure.
    pub amount: Amount,
}

impl Threshold {
    /// The threshold in absolute units, for a resource of `capacity`.
    pub fn quantity(&self, capacity: i64) -> i64 {
        match self.amount {
            Amount::Quantity(q) => q,
            Amount::Percent(p) => (capacity as f64 * p / 100.0).round() as i64,
        }
    }
}

/// The hard thresholds (`--eviction-hard`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Thresholds(pub Vec<Threshold>);

impl std::str::FromStr for Thresholds {
    type Err = String;

    /// Parses `signal<quantity` or `signal<percent%`, comma-separated, as the kubelet's
    /// `--eviction-hard`; an empty string sets none.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('<')
                .ok_or_else(|| format!("--eviction-hard {part:?} is not signal<value"))?;
            let signal = Signal::ALL
                .iter()
                .find(|(_, n)| *n == name.trim())
                .map(|(s, _)| *s)
                .ok_or_else(|| {
                    format!(
                        "--eviction-hard {part:?}: unknown signal {name:?} (one of {})",
                        Signal::ALL.map(|(_, n)| n).join(", ")
                    )
                })?;
            let value = value.trim();
            let amount = match value.strip_suffix('%') {
                Some(p) => {
                    let p: f64 = p
                        .parse()
                        .map_err(|_| format!("--eviction-hard {part:?}: bad percentage"))?;
                    if !(0.0..=100.0).contains(&p) {
                        return Err(format!("--eviction-hard {part:?}: percentage out of range"));
                    }
                    Amount::Percent(p)
                }
                None => {
                    let q =
                        Q::parse(value).map_err(|e| format!("--eviction-hard {part:?}: {e}"))?;
                    if q.value() < 0 {
                        return Err(format!("--eviction-hard {part:?}: negative quantity"));
                    }
                    Amount::Quantity(q.value())
                }
            };
            out.push(Threshold { signal, amount });
        }
        Ok(Thresholds(out))
    }
}

impl Thresholds {
    /// Upstream's defaults ([`DEFAULT_EVICTION_HARD`]).
    pub fn default_hard() -> Thresholds {
        DEFAULT_EVICTION_HARD.parse().unwrap_or_default()
    }

    /// Allocatable as upstream computes it without reservations: capacity less the hard
    /// thresholds of memory and nodefs.
    pub fn allocatable(&self, capacity: &BTreeMap<String, Quantity>) -> BTreeMap<String, Quantity> {
        let mut out = capacity.clone();
        for (resource, signal) in [
            ("memory", Signal::MemoryAvailable),
            ("ephemeral-storage", Signal::NodeFsAvailable),
        ] {
            let Some(cap) = capacity.get(resource).and_then(|q| Q::parse(&q.0).ok()) else {
                continue;
            };
            let cap = cap.value();
            let reserved: i64 = self
                .0
                .iter()
                .filter(|t| t.signal == signal)
                .map(|t| t.quantity(cap))
                .max()
                .unwrap_or(0);
            out.insert(
                resource.into(),
                Quantity((cap - reserved).max(0).to_string()),
            );
        }
        out
    }
}

/// One signal's observation: what is available of how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Available now.
    pub available: i64,
    /// Total.
    pub capacity: i64,
}

/// Observations of every signal that could be measured.
pub type Observations = BTreeMap<Signal, Observation>;

/// Bytes of memory not in use: `MemTotal` less the root cgroup's working set, or
/// `MemAvailable` when the cgroup files cannot be read.
fn memory(
    meminfo: &str,
    cgroup_usage: Option<i64>,
    inactive_file: Option<i64>,
) -> Option<Observation> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<i64>().ok())
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = match (cgroup_usage, inactive_file) {
        (Some(usage), inactive) => total - (usage - inactive.unwrap_or(0)).max(0),
        (None, _) => field("MemAvailable:")?,
    };
    Some(Observation {
        available,
        capacity: total,
    })
}

/// `total_inactive_file` (v1) or `inactive_file` (v2) of a memory.stat.
fn inactive_file(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| {
            l.strip_prefix("total_inactive_file ")
                .or_else(|| l.strip_prefix("inactive_file "))
        })
        .and_then(|v| v.trim().parse().ok())
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The working set of a memory cgroup dir (v1 or v2 names).
fn working_set(dir: &Path) -> Option<i64> {
    let usage: i64 = read(dir.join("memory.usage_in_bytes"))
        .or_else(|| read(dir.join("memory.current")))?
        .trim()
        .parse()
        .ok()?;
    let inactive = read(dir.join("memory.stat"))
        .as_deref()
        .and_then(inactive_file)
        .unwrap_or(0);
    Some((usage - inactive).max(0))
}

/// Where memory cgroups are: v1's memory controller, else the v2 unified root.
fn memory_cgroup_root() -> PathBuf {
    let v1 = PathBuf::from("/sys/fs/cgroup/memory");
    if v1.join("memory.usage_in_bytes").exists() {
        v1
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

fn fs_observations(path: &Path) -> Option<(Observation, Observation)> {
    let s = nix::sys::statvfs::statvfs(crate::status::existing(path)).ok()?;
    let block = s.fragment_size() as i64;
    Some((
        Observation {
            available: s.blocks_available() as i64 * block,
            capacity: s.blocks() as i64 * block,
        },
        Observation {
            available: s.files_available() as i64,
            capacity: s.files() as i64,
        },
    ))
}

/// Observes every signal (blocking: /proc, /sys and statvfs).
pub fn observe(nodefs: &Path, imagefs: &Path) -> Observations {
    let mut out = Observations::new();
    // The root cgroup's working set (already without inactive file pages); cgroup v2 has
    // no root memory files, so MemAvailable stands in.
    let usage = working_set(&memory_cgroup_root());
    if let Some(o) = memory(&read("/proc/meminfo").unwrap_or_default(), usage, None) {
        out.insert(Signal::MemoryAvailable, o);
    }
    if let Some((bytes, inodes)) = fs_observations(nodefs) {
        out.insert(Signal::NodeFsAvailable, bytes);
        out.insert(Signal::NodeFsInodesFree, inodes);
    }
    if let Some((bytes, inodes)) = fs_observations(imagefs) {
        out.insert(Signal::ImageFsAvailable, bytes);
        out.insert(Signal::ImageFsInodesFree, inodes);
    }
    let pid_max: Option<i64> = read("/proc/sys/kernel/pid_max").and_then(|s| s.trim().parse().ok());
    if let Some(max) = pid_max {
        let procs = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as i64
            })
            .unwrap_or(0);
        out.insert(
            Signal::PidAvailable,
            Observation {
                available: max - procs,
                capacity: max,
            },
        );
    }
    out
}

/// The thresholds met by `observed`, with their observation.
pub fn met(thresholds: &Thresholds, observed: &Observations) -> Vec<(Threshold, Observation)> {
    thresholds
        .0
        .iter()
        .filter_map(|t| {
            let o = observed.get(&t.signal)?;
            (o.available < t.quantity(o.capacity)).then_some((*t, *o))
        })
        .collect()
}

/// The pressure conditions `met` thresholds imply.
pub fn pressure(met: &[(Threshold, Observation)]) -> Pressure {
    let mut p = Pressure::default();
    for (t, _) in met {
        match t.signal {
            Signal::MemoryAvailable => p.memory = true,
            Signal::PidAvailable => p.pid = true,
            _ => p.disk = true,
        }
    }
    p
}

/// A quantity as upstream prints one in eviction messages: binary suffixes when exact.
pub fn format_quantity(v: i64) -> String {
    for (suffix, unit) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if v != 0 && v % unit == 0 {
            return format!("{}{suffix}", v / unit);
        }
    }
    v.to_string()
}

/// Upstream's eviction message for `threshold` met with `observed`.
pub fn message(threshold: &Threshold, observed: &Observation) -> String {
    format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
        threshold.signal.resource(),
        format_quantity(threshold.quantity(observed.capacity)),
        format_quantity(observed.available),
    )
}

/// A pod's usage and request of the resource under pressure, for ranking.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The pod.
    pub pod: Pod,
    /// Usage (bytes).
    pub usage: i64,
    /// Sum of its containers' requests (bytes).
    pub request: i64,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Sorts candidates as upstream ranks them for memory and disk: usage above requests
/// first, then lower priority, then more usage above requests.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        let exceeds = |c: &Candidate| c.usage > c.request;
        exceeds(b)
            .cmp(&exceeds(a))
            .then(priority(&a.pod).cmp(&priority(&b.pod)))
            .then((b.usage - b.request).cmp(&(a.usage - a.request)))
    });
}

/// The sum of a pod's containers' requests of `resource`, in its base unit.
fn requests(pod: &Pod, resource: &str) -> i64 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(resource))
        .filter_map(|q| Q::parse(&q.0).ok())
        .map(|q| q.value())
        .sum()
}

/// Bytes used by the files under `dir` (blocking).
fn du(dir: &Path) -> i64 {
    let mut total = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                use std::os::unix::fs::MetadataExt;
                total += meta.blocks() as i64 * 512;
            }
        }
    }
    total
}

/// Keeps the node's pressure current and evicts pods while a threshold is met.
pub struct Manager {
    /// The node's own client.
    pub client: Client,
    /// Events as the node's kubelet.
    pub events: Recorder,
    /// The node.
    pub node: String,
    /// The hard thresholds.
    pub thresholds: Thresholds,
    /// How long a condition stays after its thresholds are no longer met.
    pub transition_period: Duration,
    /// The kubelet's root dir (nodefs; pods' volumes under `pods/<uid>`).
    pub root_dir: PathBuf,
    /// containerd's root (imagefs).
    pub image_dir: PathBuf,
    /// Pods' log root (`<ns>_<name>_<uid>` dirs).
    pub log_dir: PathBuf,
    /// Where the pressure is published for the status reporter.
    pub pressure: watch::Sender<Pressure>,
}

impl Manager {
    /// Runs until `shutdown`: observes, publishes pressure, evicts.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(MONITOR_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When each kind of pressure was last observed.
        let mut last_seen: [Option<tokio::time::Instant>; 3] = [None; 3];
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let (nodefs, imagefs) = (self.root_dir.clone(), self.image_dir.clone());
            let observed =
                match tokio::task::spawn_blocking(move || observe(&nodefs, &imagefs)).await {
                    Ok(o) => o,
                    Err(_) => continue,
                };
            let met = met(&self.thresholds, &observed);
            let now_pressure = pressure(&met);
            let now = tokio::time::Instant::now();
            for (i, on) in [now_pressure.memory, now_pressure.disk, now_pressure.pid]
                .into_iter()
                .enumerate()
            {
                if on {
                    last_seen[i] = Some(now);
                }
            }
            let held = |i: usize| {
                last_seen[i].is_some_and(|t| now.duration_since(t) < self.transition_period)
            };
            let shown = Pressure {
                memory: now_pressure.memory || held(0),
                disk: now_pressure.disk || held(1),
                pid: now_pressure.pid || held(2),
            };
            self.pressure.send_if_modified(|p| {
                let changed = *p != shown;
                if changed {
                    tracing::info!(node = %self.node, memory = shown.memory, disk = shown.disk, pid = shown.pid, "node pressure changed");
                }
                *p = shown;
                changed
            });
            // Memory first, as upstream orders the signals to reclaim.
            let Some((threshold, observation)) = met.iter().min_by_key(|(t, _)| t.signal) else {
                continue;
            };
            if let Err(e) = self.evict_one(threshold, observation).await {
                tracing::warn!(node = %self.node, error = %e, "eviction failed; retrying");
            }
        }
    }

    async fn candidates(&self, resource: &'static str) -> Result<Vec<Candidate>, kube::Error> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let pods = api
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await?;
        let active: Vec<Pod> = pods
            .items
            .into_iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(phase, Some("Succeeded" | "Failed"))
                    // Upstream never evicts critical static or mirror pods; mirror pods here.
                    && !p
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
            })
            .collect();
        let (root, logs) = (self.root_dir.clone(), self.log_dir.clone());
        let cgroups = memory_cgroup_root();
        let measured = tokio::task::spawn_blocking(move || {
            active
                .into_iter()
                .map(|pod| {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    let usage = if resource == "memory" {
                        let parent = distro_kubelet::pod::sandbox::cgroup_parent(&pod);
                        working_set(&cgroups.join(parent.trim_start_matches('/'))).unwrap_or(0)
                    } else {
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        du(&root.join("pods").join(&uid))
                            + du(&logs.join(format!("{ns}_{name}_{uid}")))
                    };
                    let request = requests(&pod, resource);
                    Candidate {
                        pod,
                        usage,
                        request,
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        Ok(measured)
    }

    async fn evict_one(
        &self,
        threshold: &Threshold,
        observed: &Observation,
    ) -> Result<(), kube::Error> {
        let resource = match threshold.signal.resource() {
            "memory" => "memory",
            _ => "ephemeral-storage",
        };
        let mut candidates = self.candidates(resource).await?;
        rank(&mut candidates);
        let Some(victim) = candidates.first() else {
            tracing::info!(node = %self.node, signal = ?threshold.signal, "threshold met but no pod to evict");
            return Ok(());
        };
        let pod = &victim.pod;
        let (ns, name) = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let message = message(threshold, observed);
        tracing::info!(node = %self.node, pod = %format!("{ns}/{name}"), %message, "evicting");
        self.events.record(
            k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            EventType::Warning,
            "Evicted",
            message.clone(),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let now = crate::node::now_rfc3339();
        let body = json!({
            "metadata": {"uid": pod.metadata.uid},
            "status": {
                "phase": "Failed",
                "reason": "Evicted",
                "message": message,
                "conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": message,
                    "lastTransitionTime": now,
                }],
            },
        });
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&body))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubelet_flag() {
        let t = Thresholds::default_hard();
        assert_eq!(t.0.len(), 4);
        assert_eq!(
            t.0[0],
            Threshold {
                signal: Signal::MemoryAvailable,
                amount: Amount::Quantity(100 << 20)
            }
        );
        assert_eq!(t.0[1].amount, Amount::Percent(10.0));
        assert!("".parse::<Thresholds>().unwrap().0.is_empty());
        assert!("memory.available>1".parse::<Thresholds>().is_err());
        assert!("disk.available<1".parse::<Thresholds>().is_err());
        assert!("nodefs.available<120%".parse::<Thresholds>().is_err());
        assert!("memory.available<lots".parse::<Thresholds>().is_err());
    }

    #[test]
    fn allocatable_subtracts_hard_thresholds() {
        let cap = BTreeMap::from([
            ("memory".to_string(), Quantity("1Gi".into())),
            ("ephemeral-storage".to_string(), Quantity("1000".into())),
            ("cpu".to_string(), Quantity("2".into())),
        ]);
        let a = Thresholds::default_hard().allocatable(&cap);
        assert_eq!(a["memory"].0, ((1i64 << 30) - (100 << 20)).to_string());
        assert_eq!(a["ephemeral-storage"].0, "900");
        assert_eq!(a["cpu"].0, "2");
    }

    #[test]
    fn thresholds_met_give_pressure_and_upstream_message() {
        let t: Thresholds = "memory.available<100Mi,nodefs.available<10%"
            .parse()
            .unwrap();
        let observed = Observations::from([
            (
                Signal::MemoryAvailable,
                Observation {
                    available: 200 << 20,
                    capacity: 1 << 30,
                },
            ),
            (
                Signal::NodeFsAvailable,
                Observation {
                    available: 50 << 20,
                    capacity: 1 << 30,
                },
            ),
        ]);
        let m = met(&t, &observed);
        assert_eq!(m.len(), 1);
        assert_eq!(
            pressure(&m),
            Pressure {
                disk: true,
                ..Default::default()
            }
        );
        assert_eq!(
            message(&m[0].0, &m[0].1),
            "The node was low on resource: ephemeral-storage. Threshold quantity: 107374182, available: 50Mi. "
        );
    }

    #[test]
    fn memory_from_cgroup_or_meminfo() {
        let meminfo = "MemTotal: 1024 kB\nMemAvailable: 512 kB\n";
        assert_eq!(
            memory(meminfo, None, None),
            Some(Observation {
                available: 512 * 1024,
                capacity: 1024 * 1024
            })
        );
        assert_eq!(
            memory(meminfo, Some(600 * 1024), Some(200 * 1024))
                .unwrap()
                .available,
            (1024 - 400) * 1024
        );
        assert_eq!(inactive_file("cache 1\ntotal_inactive_file 42\n"), Some(42));
        assert_eq!(inactive_file("inactive_file 7\n"), Some(7));
    }

    #[test]
    fn ranks_as_upstream() {
        let pod = |name: &str, prio: i32| {
            let mut p = Pod::default();
            p.metadata.name = Some(name.into());
            p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
                priority: Some(prio),
                ..Default::default()
            });
            p
        };
        let c = |name: &str, prio: i32, usage: i64, request: i64| Candidate {
            pod: pod(name, prio),
            usage,
            request,
        };
        let mut list = vec![
            c("within-requests", 0, 50, 100),
            c("high-prio-over", 1000, 500, 0),
            c("low-prio-small-over", 0, 20, 0),
            c("low-prio-big-over", 0, 300, 0),
        ];
        rank(&mut list);
        let order: Vec<&str> = list
            .iter()
            .map(|c| c.pod.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "low-prio-big-over",
                "low-prio-small-over",
                "high-prio-over",
                "within-requests"
            ]
        );
    }
}

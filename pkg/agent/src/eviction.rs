//! Node-pressure eviction, as upstream's kubelet eviction manager with hard thresholds
//! (`--eviction-hard`, default `memory.available<100Mi,nodefs.available<10%,
//! imagefs.available<15%,nodefs.inodesFree<5%`) and soft ones (`--eviction-soft` with
//! `--eviction-soft-grace-period`, `--eviction-max-pod-grace-period`), both with
//! `--eviction-minimum-reclaim`.
//!
//! Every [`MONITOR_INTERVAL`] the signals are observed — `memory.available` as the machine's
//! memory less the root memory cgroup's working set (usage less inactive file pages; from
//! `/proc/meminfo` where the cgroup is unreadable), `nodefs.*` by statvfs of the kubelet's
//! root dir, `imagefs.*` of containerd's root, `pid.available` from `pid_max` and the
//! process count — and compared with the thresholds. A met threshold sets the node's
//! pressure condition ([`crate::status::Pressure`], posted at once by the status reporter;
//! the node lifecycle controller then adds the `node.kubernetes.io/*-pressure` NoSchedule
//! taint) at once, soft thresholds included; once a threshold has held for its grace period
//! (zero for hard ones) the manager evicts one pod per interval, ranked as upstream: pods whose usage exceeds
//! their requests first, then lower priority, then larger usage above requests. The evicted
//! pod's status becomes phase Failed, reason Evicted with upstream's message, and its pod
//! worker stops its containers (a terminal phase) with the eviction's grace period: 0 (the
//! runtime's 2 s minimum) for a hard threshold, the smaller of the pod's own and
//! `--eviction-max-pod-grace-period` for a soft one ([`distro_kubelet::worker::EvictionGrace`]).
//! A threshold once acted on stays met until `available` is back above its quantity plus
//! its minimum reclaim. A condition clears only once no threshold of its kind was met for
//! the pressure transition period (`--eviction-pressure-transition-period`, upstream's 5 m
//! default). The decisions are the pure [`Tracker`].
//!
//! # Limits
//! - No node-level reclaim (image or container garbage collection) before evicting.
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

impl Amount {
    /// The amount in absolute units, for a resource of `capacity`.
    pub fn of(self, capacity: i64) -> i64 {
        match self {
            Amount::Quantity(q) => q,
            Amount::Percent(p) => (capacity as f64 * p / 100.0).round() as i64,
        }
    }
}

/// One threshold: `signal < amount`, acted on once it held for `grace_period`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    /// What is measured.
    pub signal: Signal,
    /// Below this is pressure.
    pub amount: Amount,
    /// How long it must hold before pods are evicted: zero for a hard threshold.
    pub grace_period: Duration,
    /// Once acted on, how far above `amount` available must climb before the threshold is
    /// no longer met (`--eviction-minimum-reclaim`).
    pub min_reclaim: Option<Amount>,
}

impl Threshold {
    /// A hard threshold (no grace period, no minimum reclaim).
    pub fn hard(signal: Signal, amount: Amount) -> Self {
        Threshold {
            signal,
            amount,
            grace_period: Duration::ZERO,
            min_reclaim: None,
        }
    }

    /// The threshold in absolute units, for a resource of `capacity`.
    pub fn quantity(&self, capacity: i64) -> i64 {
        self.amount.of(capacity)
    }

    /// Whether this is a hard threshold: acted on at once, pods killed without their grace.
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }
}

/// A set of thresholds (`--eviction-hard`, `--eviction-soft`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Thresholds(pub Vec<Threshold>);

fn signal_named(flag: &str, part: &str, name: &str) -> Result<Signal, String> {
    Signal::ALL
        .iter()
        .find(|(_, n)| *n == name.trim())
        .map(|(s, _)| *s)
        .ok_or_else(|| {
            format!(
                "{flag} {part:?}: unknown signal {name:?} (one of {})",
                Signal::ALL.map(|(_, n)| n).join(", ")
            )
        })
}

/// `quantity` or `percent%`, never negative.
fn amount(flag: &str, part: &str, value: &str) -> Result<Amount, String> {
    let value = value.trim();
    match value.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p
                .parse()
                .map_err(|_| format!("{flag} {part:?}: bad percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{flag} {part:?}: percentage out of range"));
            }
            Ok(Amount::Percent(p))
        }
        None => {
            let q = Q::parse(value).map_err(|e| format!("{flag} {part:?}: {e}"))?;
            if q.value() < 0 {
                return Err(format!("{flag} {part:?}: negative quantity"));
            }
            Ok(Amount::Quantity(q.value()))
        }
    }
}

/// `signal<value` items of a threshold flag.
fn parse_thresholds(flag: &str, s: &str) -> Result<Vec<Threshold>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('<')
            .ok_or_else(|| format!("{flag} {part:?} is not signal<value"))?;
        let signal = signal_named(flag, part, name)?;
        out.push(Threshold::hard(signal, amount(flag, part, value)?));
    }
    Ok(out)
}

/// `signal=value` items of a per-signal flag, each value parsed by `value`.
fn per_signal<T>(
    flag: &str,
    s: &str,
    value: impl Fn(&str, &str) -> Result<T, String>,
) -> Result<BTreeMap<Signal, T>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{flag} {part:?} is not signal=value"))?;
        out.insert(signal_named(flag, part, name)?, value(part, v.trim())?);
    }
    Ok(out)
}

impl std::str::FromStr for Thresholds {
    type Err = String;

    /// Parses `signal<quantity` or `signal<percent%`, comma-separated, as the kubelet's
    /// `--eviction-hard`; an empty string sets none.
    fn from_str(s: &str) -> Result<Self, String> {
        parse_thresholds("--eviction-hard", s).map(Thresholds)
    }
}

impl Thresholds {
    /// Soft thresholds as the kubelet's `--eviction-soft` (same syntax as hard ones) with
    /// `--eviction-soft-grace-period` (`signal=duration`, comma-separated), which must name
    /// a grace period for every soft threshold, as upstream requires.
    ///
    /// # Errors
    /// Either flag malformed, or a soft threshold without its grace period.
    pub fn soft(
        thresholds: &str,
        grace_periods: &str,
        parse_duration: impl Fn(&str) -> Result<Duration, String>,
    ) -> Result<Thresholds, String> {
        let flag = "--eviction-soft-grace-period";
        let graces = per_signal(flag, grace_periods, |part, v| {
            parse_duration(v).map_err(|e| format!("{flag} {part:?}: {e}"))
        })?;
        let mut out = parse_thresholds("--eviction-soft", thresholds)?;
        for t in &mut out {
            let grace = graces.get(&t.signal).ok_or_else(|| {
                format!(
                    "grace period must be specified for the soft eviction threshold {} (--eviction-soft-grace-period)",
                    Signal::ALL.iter().find(|(s, _)| *s == t.signal).map_or("", |(_, n)| n)
                )
            })?;
            // Zero would make it hard; upstream's smallest grace is a tick anyway.
            t.grace_period = (*grace).max(Duration::from_nanos(1));
        }
        Ok(Thresholds(out))
    }

    /// Sets `--eviction-minimum-reclaim` (`signal=quantity` or `signal=percent%`,
    /// comma-separated) on the thresholds of the signals it names.
    ///
    /// # Errors
    /// The flag malformed.
    pub fn with_min_reclaim(mut self, spec: &str) -> Result<Thresholds, String> {
        let flag = "--eviction-minimum-reclaim";
        let reclaim = per_signal(flag, spec, |part, v| amount(flag, part, v))?;
        for t in &mut self.0 {
            t.min_reclaim = reclaim.get(&t.signal).copied();
        }
        Ok(self)
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
            let Some(cap_q) = capacity.get(resource).and_then(|q| Q::parse(&q.0).ok()) else {
                continue;
            };
            let cap = cap_q.value();
            let reserved: i64 = self
                .0
                .iter()
                .filter(|t| t.signal == signal)
                .map(|t| t.quantity(cap))
                .max()
                .unwrap_or(0);
            // In the capacity's format, as upstream's `Quantity.Sub`: memory stays `…Ki`
            // when the difference allows it.
            out.insert(
                resource.into(),
                Quantity(Q::from_units((cap - reserved).max(0), cap_q.format()).to_string()),
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

/// The eviction manager's memory between observations, upstream's `thresholdsMet`,
/// `thresholdsFirstObservedAt` and `nodeConditionsLastObservedAt`: pure, so its timing is
/// tested without a node.
#[derive(Debug)]
pub struct Tracker {
    thresholds: Vec<Threshold>,
    transition_period: Duration,
    /// Per threshold: when it was first seen met, while it stays met.
    first_observed: Vec<Option<tokio::time::Instant>>,
    /// Per threshold: acted on last round (held for its grace period), so it stays met until
    /// its minimum reclaim is satisfied.
    acted: Vec<bool>,
    /// When each kind of pressure (memory, disk, pid) was last observed.
    last_seen: [Option<tokio::time::Instant>; 3],
}

/// What one observation implies.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    /// The node's pressure conditions (met thresholds regardless of grace, held for the
    /// transition period).
    pub pressure: Pressure,
    /// The thresholds to act on now (held for their grace period), most urgent first
    /// (memory, then disk, then pids), with their observations.
    pub reclaim: Vec<(Threshold, Observation)>,
}

impl Tracker {
    /// A tracker of `thresholds` (hard and soft).
    pub fn new(thresholds: Vec<Threshold>, transition_period: Duration) -> Self {
        let n = thresholds.len();
        Tracker {
            thresholds,
            transition_period,
            first_observed: vec![None; n],
            acted: vec![false; n],
            last_seen: [None; 3],
        }
    }

    /// Takes in one round of observations made at `now`.
    pub fn observe(&mut self, observed: &Observations, now: tokio::time::Instant) -> Verdict {
        let mut met_now = Vec::new();
        let mut reclaim = Vec::new();
        for (i, t) in self.thresholds.iter().enumerate() {
            let Some(o) = observed.get(&t.signal) else {
                self.first_observed[i] = None;
                self.acted[i] = false;
                continue;
            };
            let quantity = t.quantity(o.capacity);
            let reclaimed = quantity + t.min_reclaim.map_or(0, |m| m.of(o.capacity));
            let met = o.available < quantity || (self.acted[i] && o.available < reclaimed);
            if !met {
                self.first_observed[i] = None;
                self.acted[i] = false;
                continue;
            }
            let first = *self.first_observed[i].get_or_insert(now);
            met_now.push((*t, *o));
            self.acted[i] = now.duration_since(first) >= t.grace_period;
            if self.acted[i] {
                reclaim.push((*t, *o));
            }
        }
        let now_pressure = pressure(&met_now);
        for (i, on) in [now_pressure.memory, now_pressure.disk, now_pressure.pid]
            .into_iter()
            .enumerate()
        {
            if on {
                self.last_seen[i] = Some(now);
            }
        }
        let held = |i: usize| {
            self.last_seen[i].is_some_and(|t| now.duration_since(t) < self.transition_period)
        };
        reclaim.sort_by_key(|(t, _)| t.signal);
        Verdict {
            pressure: Pressure {
                memory: now_pressure.memory || held(0),
                disk: now_pressure.disk || held(1),
                pid: now_pressure.pid || held(2),
            },
            reclaim,
        }
    }
}

/// The grace period an evicted pod's containers get: none for a hard threshold (the
/// runtime's minimum), the smaller of the pod's own and `max_pod_grace_period` for a soft one
/// (upstream's `gracePeriodOverride`).
pub fn eviction_grace(threshold: &Threshold, pod: &Pod, max_pod_grace_period: i64) -> i64 {
    if threshold.is_hard() {
        return 0;
    }
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    own.min(max_pod_grace_period)
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
    /// The soft thresholds, with their grace periods.
    pub soft: Thresholds,
    /// The most a soft eviction gives a pod to stop (`--eviction-max-pod-grace-period`).
    pub max_pod_grace_period: i64,
    /// Where an evicted pod's grace period is handed to its pod worker.
    pub grace: distro_kubelet::worker::EvictionGrace,
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
        let all: Vec<Threshold> = self
            .thresholds
            .0
            .iter()
            .chain(&self.soft.0)
            .copied()
            .collect();
        let mut tracker = Tracker::new(all, self.transition_period);
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
            let verdict = tracker.observe(&observed, tokio::time::Instant::now());
            let shown = verdict.pressure;
            self.pressure.send_if_modified(|p| {
                let changed = *p != shown;
                if changed {
                    tracing::info!(node = %self.node, memory = shown.memory, disk = shown.disk, pid = shown.pid, "node pressure changed");
                }
                *p = shown;
                changed
            });
            // Memory first, as upstream orders the signals to reclaim.
            let Some((threshold, observation)) = verdict.reclaim.first() else {
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
        let grace = eviction_grace(threshold, pod, self.max_pod_grace_period);
        tracing::info!(node = %self.node, pod = %format!("{ns}/{name}"), %message, grace, "evicting");
        if let Some(uid) = &pod.metadata.uid {
            self.grace.set(uid, grace);
        }
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
            Threshold::hard(Signal::MemoryAvailable, Amount::Quantity(100 << 20))
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
        assert_eq!(a["memory"].0, "924Mi");
        assert_eq!(a["ephemeral-storage"].0, "900");
        assert_eq!(a["cpu"].0, "2");
        // Nothing reserved: allocatable reads as capacity does.
        let cap = BTreeMap::from([("memory".to_string(), Quantity("24683772Ki".into()))]);
        let a = Thresholds::default().allocatable(&cap);
        assert_eq!(a["memory"].0, "24683772Ki");
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

    fn secs(s: &str) -> Result<Duration, String> {
        s.strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| format!("bad duration {s}"))
    }

    #[test]
    fn parses_soft_thresholds_and_minimum_reclaim() {
        let soft = Thresholds::soft(
            "memory.available<1Gi,nodefs.available<20%",
            "memory.available=30s,nodefs.available=90s",
            secs,
        )
        .unwrap()
        .with_min_reclaim("nodefs.available=5%")
        .unwrap();
        assert_eq!(soft.0.len(), 2);
        assert_eq!(soft.0[0].grace_period, Duration::from_secs(30));
        assert!(!soft.0[0].is_hard());
        assert_eq!(soft.0[0].min_reclaim, None);
        assert_eq!(soft.0[1].grace_period, Duration::from_secs(90));
        assert_eq!(soft.0[1].min_reclaim, Some(Amount::Percent(5.0)));
        let err =
            Thresholds::soft("memory.available<1Gi", "nodefs.available=30s", secs).unwrap_err();
        assert!(
            err.contains(
                "grace period must be specified for the soft eviction threshold memory.available"
            ),
            "{err}"
        );
        assert!(Thresholds::soft("", "", secs).unwrap().0.is_empty());
        assert!(Thresholds::soft("memory.available<1Gi", "memory.available=later", secs).is_err());
        assert!(Thresholds::default()
            .with_min_reclaim("memory.available")
            .is_err());
        assert!(Thresholds::default()
            .with_min_reclaim("memory.available=-1Mi")
            .is_err());
    }

    fn disk(available: i64) -> Observations {
        Observations::from([(
            Signal::NodeFsAvailable,
            Observation {
                available,
                capacity: 1000,
            },
        )])
    }

    #[test]
    fn soft_threshold_acts_only_after_its_grace_period() {
        let soft = Thresholds::soft("nodefs.available<50%", "nodefs.available=30s", secs).unwrap();
        let mut t = Tracker::new(soft.0, Duration::ZERO);
        let t0 = tokio::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Met: the condition shows at once, nothing is evicted yet.
        let v = t.observe(&disk(400), at(0));
        assert!(v.pressure.disk);
        assert!(v.reclaim.is_empty());
        assert!(t.observe(&disk(400), at(20)).reclaim.is_empty());
        let v = t.observe(&disk(400), at(30));
        assert_eq!(v.reclaim.len(), 1, "held for its grace period");
        // A dip above the threshold restarts the grace period.
        let v = t.observe(&disk(600), at(40));
        assert!(!v.pressure.disk && v.reclaim.is_empty());
        assert!(t.observe(&disk(400), at(50)).reclaim.is_empty());
        assert_eq!(t.observe(&disk(400), at(80)).reclaim.len(), 1);
    }

    #[test]
    fn hard_threshold_acts_at_once_and_holds_until_minimum_reclaim() {
        let hard = "nodefs.available<50%"
            .parse::<Thresholds>()
            .unwrap()
            .with_min_reclaim("nodefs.available=10%")
            .unwrap();
        let mut t = Tracker::new(hard.0, Duration::from_secs(60));
        let t0 = tokio::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.observe(&disk(400), at(0)).reclaim.len(), 1);
        // Above the threshold but not by the minimum reclaim: still met.
        assert_eq!(t.observe(&disk(550), at(10)).reclaim.len(), 1);
        let v = t.observe(&disk(650), at(20));
        assert!(v.reclaim.is_empty(), "reclaimed");
        assert!(
            v.pressure.disk,
            "the condition waits out the transition period"
        );
        assert!(!t.observe(&disk(650), at(90)).pressure.disk);
        // Never acted on, the minimum reclaim does not apply.
        let mut fresh = Tracker::new(
            "nodefs.available<50%"
                .parse::<Thresholds>()
                .unwrap()
                .with_min_reclaim("nodefs.available=10%")
                .unwrap()
                .0,
            Duration::ZERO,
        );
        assert!(fresh.observe(&disk(550), at(0)).reclaim.is_empty());
    }

    #[test]
    fn evicted_pods_get_the_smaller_grace_period_on_soft_thresholds() {
        let pod = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                termination_grace_period_seconds: Some(60),
                ..Default::default()
            }),
            ..Default::default()
        };
        let hard = Threshold::hard(Signal::MemoryAvailable, Amount::Quantity(1));
        let soft = Threshold {
            grace_period: Duration::from_secs(10),
            ..hard
        };
        assert_eq!(eviction_grace(&hard, &pod, 5), 0);
        assert_eq!(eviction_grace(&soft, &pod, 5), 5);
        assert_eq!(eviction_grace(&soft, &pod, 600), 60);
        assert_eq!(eviction_grace(&soft, &Pod::default(), 600), 30);
    }
}

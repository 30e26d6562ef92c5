//! The node's own CPU and memory usage, read as upstream's cAdvisor reads them for the root
//! container: the root cgroup's `cpuacct.usage` and memory usage minus inactive file pages
//! (the working set), with `/proc/stat` and `/proc/meminfo` where the root cgroup does not
//! expose them (cgroup v2 hosts, or v1 without the controller mounted).
//!
//! Parsing is pure (tested on sample files); [`read`] does the IO and blocks.

use std::path::{Path, PathBuf};

/// Where the node's counters are read from (tests point these at temp files).
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// The cgroup mount root, `/sys/fs/cgroup`.
    pub cgroup: PathBuf,
    /// The proc mount, `/proc`.
    pub proc: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            cgroup: PathBuf::from("/sys/fs/cgroup"),
            proc: PathBuf::from("/proc"),
        }
    }
}

/// One sample of the node's usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostUsage {
    /// CPU time used by everything on the node since boot, in core-nanoseconds.
    pub cpu_core_nanos: Option<u64>,
    /// Memory in use, page cache included.
    pub memory_usage: Option<u64>,
    /// Memory in use minus inactive file pages.
    pub memory_working_set: Option<u64>,
    /// Physical memory (`MemTotal`).
    pub memory_total: Option<u64>,
}

/// USER_HZ: the unit of `/proc/stat` (100 on every Linux architecture distro runs on).
const USER_HZ: u64 = 100;

/// Busy CPU time of the `cpu` line of `/proc/stat` (all but idle and iowait), in
/// core-nanoseconds.
pub fn proc_stat_cpu_nanos(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy * (1_000_000_000 / USER_HZ))
}

/// A `key value` line of a cgroup `memory.stat` or `/proc/meminfo` (`kB` values are
/// returned in bytes).
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        let k = parts.next()?.trim_end_matches(':');
        if k != key {
            return None;
        }
        let v: u64 = parts.next()?.parse().ok()?;
        Some(if parts.next() == Some("kB") {
            v * 1024
        } else {
            v
        })
    })
}

/// The working set as cAdvisor computes it: usage minus inactive file pages, never negative.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Samples the node's usage now.
///
/// # Blocking
/// Reads a few small files: call it from `spawn_blocking`.
pub fn read(paths: &HostPaths) -> HostUsage {
    let meminfo = std::fs::read_to_string(paths.proc.join("meminfo")).unwrap_or_default();
    let memory_total = field(&meminfo, "MemTotal");
    let cpu_core_nanos = read_u64(&paths.cgroup.join("cpuacct/cpuacct.usage"))
        .or_else(|| read_u64(&paths.cgroup.join("cpu,cpuacct/cpuacct.usage")))
        .or_else(|| proc_stat_cpu_nanos(&std::fs::read_to_string(paths.proc.join("stat")).ok()?));
    let v1 = paths.cgroup.join("memory");
    let (memory_usage, memory_working_set) = match read_u64(&v1.join("memory.usage_in_bytes")) {
        Some(usage) => {
            let stat = std::fs::read_to_string(v1.join("memory.stat")).unwrap_or_default();
            let inactive = field(&stat, "total_inactive_file").unwrap_or(0);
            (Some(usage), Some(working_set(usage, inactive)))
        }
        // No v1 memory controller: what the kernel counts as in use.
        None => {
            let used = memory_total
                .zip(field(&meminfo, "MemFree"))
                .map(|(t, f)| t.saturating_sub(f));
            let ws = memory_total
                .zip(field(&meminfo, "MemAvailable"))
                .map(|(t, a)| t.saturating_sub(a));
            (used, ws)
        }
    };
    HostUsage {
        cpu_core_nanos,
        memory_usage,
        memory_working_set,
        memory_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_time_excludes_idle_and_iowait() {
        let stat = "cpu  100 2 30 5000 40 5 6 7 0 0\ncpu0 50 1 15 2500 20 2 3 3 0 0\n";
        // (100+2+30+5+6+7) ticks of 10 ms.
        assert_eq!(proc_stat_cpu_nanos(stat), Some(150 * 10_000_000));
        assert_eq!(proc_stat_cpu_nanos("intr 1\n"), None);
    }

    #[test]
    fn fields_of_memory_stat_and_meminfo() {
        let stat = "cache 10\ntotal_inactive_file 4096\ntotal_active_file 1\n";
        assert_eq!(field(stat, "total_inactive_file"), Some(4096));
        let meminfo = "MemTotal:        4026532 kB\nMemAvailable:    1000 kB\n";
        assert_eq!(field(meminfo, "MemTotal"), Some(4026532 * 1024));
        assert_eq!(field(meminfo, "MemFree"), None);
        assert_eq!(working_set(100, 300), 0);
        assert_eq!(working_set(300, 100), 200);
    }

    #[test]
    fn reads_cgroup_v1_root_then_falls_back_to_proc() {
        let dir = tempfile::tempdir().unwrap();
        let paths = HostPaths {
            cgroup: dir.path().join("cgroup"),
            proc: dir.path().join("proc"),
        };
        std::fs::create_dir_all(&paths.proc).unwrap();
        std::fs::write(
            paths.proc.join("meminfo"),
            "MemTotal: 1000 kB\nMemFree: 400 kB\nMemAvailable: 600 kB\n",
        )
        .unwrap();
        std::fs::write(paths.proc.join("stat"), "cpu  1 0 1 10 0 0 0 0\n").unwrap();
        let u = read(&paths);
        assert_eq!(u.cpu_core_nanos, Some(20_000_000));
        assert_eq!(u.memory_usage, Some(600 * 1024));
        assert_eq!(u.memory_working_set, Some(400 * 1024));
        std::fs::create_dir_all(paths.cgroup.join("cpuacct")).unwrap();
        std::fs::create_dir_all(paths.cgroup.join("memory")).unwrap();
        std::fs::write(paths.cgroup.join("cpuacct/cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(paths.cgroup.join("memory/memory.usage_in_bytes"), "5000\n").unwrap();
        std::fs::write(
            paths.cgroup.join("memory/memory.stat"),
            "total_inactive_file 1000\n",
        )
        .unwrap();
        let u = read(&paths);
        assert_eq!(u.cpu_core_nanos, Some(123_456_789));
        assert_eq!(u.memory_usage, Some(5000));
        assert_eq!(u.memory_working_set, Some(4000));
        assert_eq!(u.memory_total, Some(1000 * 1024));
    }
}

//! `/spec`: the machine the node runs on, in the shape of cAdvisor's `MachineInfo` (v1) as
//! upstream's kubelet serves it (`num_cores`, `memory_capacity`, `machine_id`,
//! `system_uuid`, `boot_id`, `filesystems`, `disk_map`, `network_devices`, ...), read from
//! /proc and /sys. Monitoring agents (Datadog, older Prometheus setups) read it through
//! `nodes/<name>/proxy/spec`, authorized as the `nodes/spec` subresource.
//!
//! # Limits
//! - No NUMA `topology` (an empty list), no `memory_by_type`, no NVM or cloud metadata
//!   (`cloud_provider: Unknown`, as cAdvisor reports on bare metal).
//! - Simulated nodes serve the machine of the agent that simulates them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// A filesystem on a block device (`filesystems[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FsInfo {
    /// `/dev/...`.
    pub device: String,
    /// Bytes.
    pub capacity: u64,
    /// cAdvisor's storage driver type: `vfs` for plain filesystems.
    #[serde(rename = "type")]
    pub type_: String,
    /// Inode count.
    pub inodes: u64,
    /// Whether the filesystem has inodes to count.
    pub has_inodes: bool,
}

/// A block device (`disk_map["major:minor"]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiskInfo {
    /// Kernel name (`sda`).
    pub name: String,
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// Bytes.
    pub size: u64,
    /// The I/O scheduler in use (`none` when unknown).
    pub scheduler: String,
}

/// A network interface (`network_devices[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetInfo {
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac_address: String,
    /// Link speed in Mbit/s (0 when unknown).
    pub speed: i64,
    /// MTU.
    pub mtu: i64,
}

/// A huge page size and how many are reserved (`hugepages[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HugePages {
    /// KiB.
    pub page_size: u64,
    /// Reserved pages.
    pub num_pages: u64,
}

/// cAdvisor's `MachineInfo`, the body of `/spec`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineInfo {
    /// When this was read (RFC 3339).
    pub timestamp: String,
    /// `vendor_id` of /proc/cpuinfo.
    #[serde(rename = "CPUVendorID")]
    pub cpu_vendor_id: String,
    /// Logical CPUs.
    pub num_cores: usize,
    /// Physical cores (distinct core ids per socket).
    pub num_physical_cores: usize,
    /// Sockets (distinct physical ids).
    pub num_sockets: usize,
    /// Maximum (else current) CPU frequency in kHz.
    pub cpu_frequency_khz: u64,
    /// Bytes of memory (`MemTotal`).
    pub memory_capacity: u64,
    /// Bytes of swap (`SwapTotal`).
    pub swap_capacity: u64,
    /// Memory by type (DIMMs): not read.
    pub memory_by_type: BTreeMap<String, serde_json::Value>,
    /// Huge page sizes.
    pub hugepages: Vec<HugePages>,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// The DMI product UUID.
    pub system_uuid: String,
    /// This boot's id.
    pub boot_id: String,
    /// Filesystems on block devices.
    pub filesystems: Vec<FsInfo>,
    /// Block devices by `major:minor`.
    pub disk_map: BTreeMap<String, DiskInfo>,
    /// Physical-looking network interfaces.
    pub network_devices: Vec<NetInfo>,
    /// NUMA topology: not read.
    pub topology: Vec<serde_json::Value>,
    /// Cloud provider: `Unknown`.
    pub cloud_provider: String,
    /// Instance type: `Unknown`.
    pub instance_type: String,
    /// Instance id: `None`.
    pub instance_id: String,
}

/// `(vendor, logical, physical cores, sockets, MHz)` of a /proc/cpuinfo.
fn cpuinfo(text: &str) -> (String, usize, usize, usize, f64) {
    let mut vendor = String::new();
    let mut logical = 0;
    let mut cores = std::collections::BTreeSet::new();
    let mut sockets = std::collections::BTreeSet::new();
    let mut mhz = 0f64;
    let mut physical = String::from("0");
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => logical += 1,
            "vendor_id" if vendor.is_empty() => vendor = v.to_string(),
            "physical id" => {
                physical = v.to_string();
                sockets.insert(v.to_string());
            }
            "core id" => {
                cores.insert((physical.clone(), v.to_string()));
            }
            "cpu MHz" => mhz = mhz.max(v.parse().unwrap_or(0.0)),
            _ => {}
        }
    }
    let sockets_n = sockets.len().max(1);
    let cores_n = if cores.is_empty() {
        logical
    } else {
        cores.len()
    };
    (vendor, logical, cores_n, sockets_n, mhz)
}

/// A `/proc/meminfo` field in bytes.
fn meminfo(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// `(device, mount point, fs type)` of the block-device mounts in a /proc/self/mountinfo,
/// each device once (its first mount).
fn block_mounts(mountinfo: &str) -> Vec<(String, String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4).unwrap_or_default();
        let mut r = right.split_whitespace();
        let (fstype, source) = (r.next().unwrap_or_default(), r.next().unwrap_or_default());
        if source.starts_with("/dev/") && seen.insert(source.to_string()) {
            out.push((
                source.to_string(),
                mount_point.to_string(),
                fstype.to_string(),
            ));
        }
    }
    out
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn filesystems(mountinfo: &str) -> Vec<FsInfo> {
    block_mounts(mountinfo)
        .into_iter()
        .filter_map(|(device, mount, _)| {
            let s = nix::sys::statvfs::statvfs(mount.as_str()).ok()?;
            Some(FsInfo {
                device,
                capacity: s.blocks() as u64 * s.fragment_size() as u64,
                type_: "vfs".into(),
                inodes: s.files() as u64,
                has_inodes: s.files() > 0,
            })
        })
        .collect()
}

fn disks() -> BTreeMap<String, DiskInfo> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // cAdvisor skips virtual devices.
        if ["loop", "ram", "dm-", "zram", "nbd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let base = e.path();
        let Some((major, minor)) = read(base.join("dev"))
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        else {
            continue;
        };
        let sectors: u64 = read(base.join("size")).parse().unwrap_or(0);
        // "mq-deadline [none]": the bracketed one is in use.
        let scheduler = read(base.join("queue/scheduler"));
        let scheduler = scheduler
            .split_whitespace()
            .find_map(|s| s.strip_prefix('[')?.strip_suffix(']'))
            .unwrap_or("none")
            .to_string();
        out.insert(
            format!("{major}:{minor}"),
            DiskInfo {
                name,
                major,
                minor,
                size: sectors * 512,
                scheduler,
            },
        );
    }
    out
}

fn network_devices() -> Vec<NetInfo> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // As cAdvisor: only interfaces backed by a device (no lo, bridges, veths, vxlan).
        if !e.path().join("device").exists() {
            continue;
        }
        out.push(NetInfo {
            mac_address: read(e.path().join("address")),
            speed: read(e.path().join("speed")).parse().unwrap_or(0).max(0),
            mtu: read(e.path().join("mtu")).parse().unwrap_or(0),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn hugepages() -> Vec<HugePages> {
    let mut out: Vec<HugePages> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kib = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(HugePages {
                page_size: kib,
                num_pages: read(e.path().join("nr_hugepages")).parse().unwrap_or(0),
            })
        })
        .collect();
    out.sort_by_key(|h| h.page_size);
    out
}

impl MachineInfo {
    /// Reads this machine (blocking: files under /proc and /sys, a statvfs per filesystem).
    pub fn this() -> MachineInfo {
        let (vendor, logical, physical, sockets, mhz) = cpuinfo(&read("/proc/cpuinfo"));
        let max_khz: u64 = read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
            .parse()
            .unwrap_or((mhz * 1000.0) as u64);
        let mem = read("/proc/meminfo");
        let first = |paths: &[&str]| {
            paths
                .iter()
                .map(read)
                .find(|s| !s.is_empty())
                .unwrap_or_default()
        };
        MachineInfo {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            cpu_vendor_id: vendor,
            num_cores: logical.max(std::thread::available_parallelism().map_or(1, |n| n.get())),
            num_physical_cores: physical.max(1),
            num_sockets: sockets,
            cpu_frequency_khz: max_khz,
            memory_capacity: meminfo(&mem, "MemTotal"),
            swap_capacity: meminfo(&mem, "SwapTotal"),
            memory_by_type: BTreeMap::new(),
            hugepages: hugepages(),
            machine_id: first(&["/etc/machine-id", "/var/lib/dbus/machine-id"]),
            system_uuid: first(&["/sys/class/dmi/id/product_uuid"]),
            boot_id: first(&["/proc/sys/kernel/random/boot_id"]),
            filesystems: filesystems(&read("/proc/self/mountinfo")),
            disk_map: disks(),
            network_devices: network_devices(),
            topology: Vec::new(),
            cloud_provider: "Unknown".into(),
            instance_type: "Unknown".into(),
            instance_id: "None".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_counts_cores_and_sockets() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nphysical id\t: 0\ncore id\t: 0\ncpu MHz\t\t: 2200.000\n\n\
                    processor\t: 1\nvendor_id\t: GenuineIntel\nphysical id\t: 0\ncore id\t: 0\ncpu MHz\t\t: 2400.500\n\n\
                    processor\t: 2\nvendor_id\t: GenuineIntel\nphysical id\t: 1\ncore id\t: 0\ncpu MHz\t\t: 2200.000\n";
        let (vendor, logical, physical, sockets, mhz) = cpuinfo(text);
        assert_eq!(vendor, "GenuineIntel");
        assert_eq!((logical, physical, sockets), (3, 2, 2));
        assert_eq!(mhz, 2400.5);
        // No topology lines (some VMs, arm): one socket, a core per processor.
        assert_eq!(cpuinfo("processor : 0\nprocessor : 1\n").1, 2);
        assert_eq!(cpuinfo("processor : 0\nprocessor : 1\n").2, 2);
    }

    #[test]
    fn meminfo_and_mounts() {
        let mem = "MemTotal:        4026532 kB\nSwapTotal:       0 kB\n";
        assert_eq!(meminfo(mem, "MemTotal"), 4026532 * 1024);
        assert_eq!(meminfo(mem, "SwapTotal"), 0);
        let mi = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                  23 22 0:21 / /proc rw - proc proc rw\n\
                  24 22 8:1 /var /mnt/var rw - ext4 /dev/sda1 rw\n\
                  25 22 8:16 / /data rw - xfs /dev/sdb rw\n";
        assert_eq!(
            block_mounts(mi),
            vec![
                ("/dev/sda1".into(), "/".into(), "ext4".into()),
                ("/dev/sdb".into(), "/data".into(), "xfs".into()),
            ]
        );
    }

    #[test]
    fn this_machine_reads_as_cadvisor_names_it() {
        let m = MachineInfo::this();
        assert!(m.num_cores >= 1);
        assert!(m.memory_capacity > 0);
        let v = serde_json::to_value(&m).unwrap();
        for key in [
            "num_cores",
            "memory_capacity",
            "machine_id",
            "system_uuid",
            "boot_id",
            "filesystems",
            "disk_map",
            "network_devices",
            "CPUVendorID",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
    }
}

//! Facts about this machine that decide containerd's configuration and that
//! `distro check-config` reports: cgroup mode, overlayfs, negative `oom_score_adj`.
//!
//! Each probe does the real thing once (mount an overlay, write a score) rather than guess
//! from versions, because VMs and containers differ from what their kernel version suggests.

use std::path::Path;
use std::process::Stdio;

/// How cgroups are mounted: it decides which files the kubelet reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Unified hierarchy only (cgroup2 on /sys/fs/cgroup).
    V2,
    /// v1 controllers, with or without a cgroup2 mount beside them.
    V1,
    /// No cgroup filesystem: containers cannot run.
    None,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupMode::V2 => "v2 (unified)",
            CgroupMode::V1 => "v1",
            CgroupMode::None => "none",
        })
    }
}

/// Reads the cgroup mode from a `/proc/self/mounts`-formatted text.
pub fn cgroup_mode_from_mounts(mounts: &str) -> CgroupMode {
    let mut v1 = false;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (_, Some(dir), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if fstype == "cgroup2" && dir == "/sys/fs/cgroup" {
            return CgroupMode::V2;
        }
        if fstype == "cgroup" {
            v1 = true;
        }
    }
    if v1 {
        CgroupMode::V1
    } else {
        CgroupMode::None
    }
}

/// This machine's cgroup mode.
pub fn cgroup_mode() -> CgroupMode {
    cgroup_mode_from_mounts(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default())
}

/// Whether an overlay filesystem can be mounted with its upper dir under `dir` (containerd's
/// root), which fails e.g. when `dir` is itself on overlayfs or the module is missing.
/// Blocking: a few syscalls.
pub fn overlay_works(dir: &Path) -> bool {
    let Ok(tmp) = tempdir_in(dir) else {
        return false;
    };
    let [lower1, lower2, upper, work, merged] = ["l1", "l2", "u", "w", "m"].map(|n| tmp.join(n));
    let made = [&lower1, &lower2, &upper, &work, &merged]
        .iter()
        .all(|d| std::fs::create_dir(d).is_ok());
    // Two lower dirs, as containerd's own check does: images have several layers.
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        lower1.display(),
        lower2.display(),
        upper.display(),
        work.display()
    );
    let ok = made
        && nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .is_ok();
    if ok {
        let _ = nix::mount::umount(&merged);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    ok
}

fn tempdir_in(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(format!(".overlay-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir(&p)?;
    Ok(p)
}

/// Whether a process may lower its `oom_score_adj` below zero (needs CAP_SYS_RESOURCE).
/// Upstream kubelets ask -998 for sandboxes, and runc then fails every pod where this is
/// refused, so containerd gets `restrict_oom_score_adj = true` when this is false.
/// Probes with a child shell writing -998 to its own score; blocking (one fork).
pub fn negative_oom_score_allowed() -> bool {
    match std::process::Command::new("/bin/sh")
        .args(["-c", "echo -998 > /proc/self/oom_score_adj"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) => s.success(),
        // No shell: fall back to the capability bit.
        Err(_) => {
            has_cap_sys_resource(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
        }
    }
}

/// Whether CAP_SYS_RESOURCE (bit 24) is in the `CapEff` line of a `/proc/<pid>/status` text.
pub fn has_cap_sys_resource(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Finds a program on PATH (or takes an absolute path as is).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|c| c.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_modes() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(cgroup_mode_from_mounts(hybrid), CgroupMode::V1);
        assert_eq!(
            cgroup_mode_from_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"),
            CgroupMode::V2
        );
        assert_eq!(
            cgroup_mode_from_mounts("proc /proc proc rw 0 0\n"),
            CgroupMode::None
        );
    }

    #[test]
    fn cap_sys_resource_bit() {
        assert!(!has_cap_sys_resource(
            "Name: x\nCapEff:\t000001fffeffffff\n"
        ));
        assert!(has_cap_sys_resource("CapEff:\t000001ffffffffff\n"));
        assert!(!has_cap_sys_resource("nothing"));
    }

    #[test]
    fn probes_agree_with_capabilities_here() {
        let caps = has_cap_sys_resource(&std::fs::read_to_string("/proc/self/status").unwrap());
        assert_eq!(negative_oom_score_allowed(), caps);
    }
}

//! `distro check-config`: what this machine lacks to run a node, and how to fix it.
//!
//! Each check looks at the real thing (the program runs and says its version, a module is
//! loaded or built in, an overlay mounts), so the report matches what containerd and the
//! kubelet will meet. Blocking: runs programs and mounts; call from a blocking context.

use std::fmt;
use std::path::Path;

use crate::host::{self, CgroupMode};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Present and usable.
    Ok,
    /// Works, with a limitation distro handles (e.g. oom scores restricted).
    Warn,
    /// Absent.
    Missing,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Missing => "MISSING",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found (version, mode, path).
    pub detail: String,
    /// How to fix it, when not OK.
    pub fix: Option<String>,
    /// Whether a node cannot run without it.
    pub required: bool,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every check, in display order.
    pub items: Vec<Item>,
}

impl Report {
    /// True when nothing required is missing: `distro check-config` exits 0.
    pub fn ok(&self) -> bool {
        !self
            .items
            .iter()
            .any(|i| i.required && i.status == Status::Missing)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.items {
            let tag = if i.required || i.status != Status::Missing {
                ""
            } else {
                " (optional)"
            };
            writeln!(
                f,
                "{:<24} {:<8} {}{tag}",
                i.name,
                i.status.to_string(),
                i.detail
            )?;
            if let Some(fix) = &i.fix {
                writeln!(f, "{:<24} {:<8} fix: {fix}", "", "")?;
            }
        }
        let missing = self
            .items
            .iter()
            .filter(|i| i.required && i.status == Status::Missing)
            .count();
        if missing == 0 {
            writeln!(f, "\nThis machine can run a distro node.")
        } else {
            writeln!(
                f,
                "\n{missing} required item(s) missing: see the fixes above."
            )
        }
    }
}

/// The first line of `program <flag>` (`--version`, `-V`), if the program runs.
fn version(program: &Path, flag: &str) -> Option<String> {
    let out = std::process::Command::new(program)
        .arg(flag)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    out.status
        .success()
        .then(|| text.lines().next().unwrap_or("").trim().to_string())
}

fn program(name: &str, flag: &str, package: &str, required: bool) -> Item {
    match host::which(name) {
        Some(path) => match version(&path, flag) {
            Some(v) => Item {
                name: name.into(),
                status: Status::Ok,
                detail: format!("{v} ({})", path.display()),
                fix: None,
                required,
            },
            None => Item {
                name: name.into(),
                status: Status::Missing,
                detail: format!("{} does not run", path.display()),
                fix: Some(format!("apt-get install --reinstall {package}")),
                required,
            },
        },
        None => Item {
            name: name.into(),
            status: Status::Missing,
            detail: "not found on PATH".into(),
            fix: Some(format!("apt-get install {package}")),
            required,
        },
    }
}

/// Whether a kernel feature is there: loaded or built-in module (`/sys/module`), or `y`/`m`
/// in the kernel's config (`/proc/config.gz` or `/boot/config-<release>`), with `m` only
/// counting when a modules directory exists to load it from.
fn kernel_feature(
    module: &str,
    config_key: &str,
    kernel_config: &str,
    modules_dir: bool,
) -> (Status, String) {
    if Path::new("/sys/module").join(module).exists() {
        return (Status::Ok, "loaded".into());
    }
    let value = kernel_config
        .lines()
        .find_map(|l| l.strip_prefix(config_key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("");
    match value {
        "y" => (Status::Ok, "built in".into()),
        "m" if modules_dir => (Status::Ok, "module (loaded on demand)".into()),
        "m" => (
            Status::Missing,
            "a module, but no /lib/modules to load it from".into(),
        ),
        _ if kernel_config.is_empty() => (
            Status::Missing,
            "not loaded (kernel config unreadable)".into(),
        ),
        _ => (
            Status::Missing,
            format!("{config_key} not set in the kernel"),
        ),
    }
}

fn read_kernel_config() -> String {
    use std::io::Read;
    if let Ok(f) = std::fs::File::open("/proc/config.gz") {
        let mut s = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut s)
            .is_ok()
        {
            return s;
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    std::fs::read_to_string(format!("/boot/config-{}", release.trim())).unwrap_or_default()
}

/// Runs every check. `scratch` is a directory where a test overlay may be mounted (the data
/// dir, so the answer holds for containerd's root).
pub fn run(scratch: &Path) -> Report {
    let mut items = vec![
        program("containerd", "--version", "containerd", true),
        program("runc", "--version", "runc", true),
        program("nft", "--version", "nftables", true),
        // iproute2's ip has no --version.
        program("ip", "-V", "iproute2", true),
    ];
    let mode = host::cgroup_mode();
    items.push(Item {
        name: "cgroups".into(),
        status: if mode == CgroupMode::None {
            Status::Missing
        } else {
            Status::Ok
        },
        detail: mode.to_string(),
        fix: (mode == CgroupMode::None).then(|| {
            "mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup)".into()
        }),
        required: true,
    });
    let overlay = host::overlay_works(scratch);
    items.push(Item {
        name: "overlayfs".into(),
        status: if overlay { Status::Ok } else { Status::Warn },
        detail: if overlay {
            "mounts".into()
        } else {
            "does not mount here; containerd uses the slower native snapshotter".into()
        },
        fix: (!overlay).then(|| "modprobe overlay, and keep the data dir off overlayfs".into()),
        required: false,
    });
    let oom = host::negative_oom_score_allowed();
    items.push(Item {
        name: "oom_score_adj".into(),
        status: if oom { Status::Ok } else { Status::Warn },
        detail: if oom {
            "negative scores allowed".into()
        } else {
            "negative scores refused (no CAP_SYS_RESOURCE); containerd runs with restrict_oom_score_adj = true".into()
        },
        fix: None,
        required: false,
    });
    let config = read_kernel_config();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let modules_dir = Path::new("/lib/modules").join(release.trim()).exists();
    for (module, key, required) in [
        ("overlay", "CONFIG_OVERLAY_FS", false),
        ("bridge", "CONFIG_BRIDGE", true),
        ("br_netfilter", "CONFIG_BRIDGE_NETFILTER", false),
        ("vxlan", "CONFIG_VXLAN", true),
        ("veth", "CONFIG_VETH", true),
        ("nf_tables", "CONFIG_NF_TABLES", true),
    ] {
        let (status, detail) = kernel_feature(module, key, &config, modules_dir);
        items.push(Item {
            name: format!("kernel: {module}"),
            status,
            detail,
            fix: (status == Status::Missing)
                .then(|| format!("modprobe {module}, or use a kernel with {key}=y|m")),
            required,
        });
    }
    Report { items }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_config_values() {
        let cfg = "CONFIG_VXLAN=y\nCONFIG_VETH=m\n# CONFIG_FOO is not set\n";
        assert_eq!(
            kernel_feature("no-such-mod", "CONFIG_VXLAN", cfg, false).0,
            Status::Ok
        );
        assert_eq!(
            kernel_feature("no-such-mod", "CONFIG_VETH", cfg, true).0,
            Status::Ok
        );
        assert_eq!(
            kernel_feature("no-such-mod", "CONFIG_VETH", cfg, false).0,
            Status::Missing
        );
        assert_eq!(
            kernel_feature("no-such-mod", "CONFIG_FOO", cfg, true).0,
            Status::Missing
        );
    }

    #[test]
    fn report_fails_only_on_required_items() {
        let item = |status, required| Item {
            name: "x".into(),
            status,
            detail: String::new(),
            fix: None,
            required,
        };
        assert!(Report {
            items: vec![item(Status::Missing, false), item(Status::Warn, true)]
        }
        .ok());
        assert!(!Report {
            items: vec![item(Status::Missing, true)]
        }
        .ok());
    }

    #[test]
    fn this_machine_has_containerd_and_runc() {
        let dir = tempfile::tempdir().unwrap();
        let r = run(dir.path());
        let text = r.to_string();
        for name in ["containerd", "runc"] {
            let i = r.items.iter().find(|i| i.name == name).unwrap();
            assert_eq!(i.status, Status::Ok, "{text}");
        }
        assert!(text.contains("cgroups"), "{text}");
    }
}

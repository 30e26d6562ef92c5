//! tmpfs mounts for Memory emptyDirs, secrets and projected volumes, and finding them again
//! after a restart through `/proc/self/mountinfo` (the kubelet keeps no state of its own).

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{io_err, Error};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of `/proc/self/mountinfo`: where something is mounted and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount point.
    pub mount_point: PathBuf,
    /// The filesystem type (`tmpfs`, `ext4`, ...).
    pub fs_type: String,
}

/// Parses mountinfo text; lines that do not have the documented shape are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let fs_type = right.split(' ').next()?;
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: fs_type.to_string(),
            })
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The current mounts of this process's mount namespace.
///
/// # Errors
/// [`Error::Io`] when mountinfo cannot be read.
pub fn mounts() -> Result<Vec<MountInfo>, Error> {
    let text = fs::read_to_string(MOUNTINFO).map_err(io_err("read", Path::new(MOUNTINFO)))?;
    Ok(parse_mountinfo(&text))
}

/// The filesystem type mounted exactly at `path`, if any (the topmost mount wins).
///
/// # Errors
/// [`Error::Io`] when mountinfo cannot be read.
pub fn mounted_fs_type(path: &Path) -> Result<Option<String>, Error> {
    let path = resolved(path);
    Ok(mounts()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == *path)
        .map(|m| m.fs_type))
}

/// mountinfo lists paths with symlinks resolved (`/tmp` may be one); compare likewise.
fn resolved(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Mounts a tmpfs at `dir` with `size=` when a size is given, as upstream's emptyDir does
/// for `medium: Memory`.
///
/// # Errors
/// [`Error::Mount`] with the OS error.
pub fn mount_tmpfs(dir: &Path, size_bytes: Option<u64>) -> Result<(), Error> {
    let options = size_bytes
        .filter(|s| *s > 0)
        .map(|s| format!("size={s}"))
        .unwrap_or_default();
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| Error::Mount {
        path: dir.to_path_buf(),
        source: e.into(),
    })
}

/// Bind-mounts `source` onto `target`, as upstream's local volume plugin exposes a local PV
/// inside the pod's directory.
///
/// # Errors
/// [`Error::Mount`] with the OS error.
pub fn bind_mount(source: &Path, target: &Path) -> Result<(), Error> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::Mount {
        path: target.to_path_buf(),
        source: e.into(),
    })
}

/// Unmounts everything mounted at or below `dir`, deepest first, so the directory can be
/// removed without touching the contents of a mounted filesystem.
///
/// # Errors
/// [`Error::Unmount`] naming the first mount point that stayed busy.
pub fn unmount_all_under(dir: &Path) -> Result<(), Error> {
    let dir = resolved(dir);
    let mut points: Vec<PathBuf> = mounts()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(&dir))
        .collect();
    // Deepest first; a path mounted twice appears twice and is unmounted twice.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        umount2(&point, MntFlags::empty()).map_err(|e| Error::Unmount {
            path: point.clone(),
            source: e.into(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    100 25 0:50 / /var/lib/distro/pods/u/volumes/kubernetes.io~secret/s rw,relatime shared:5 - tmpfs tmpfs rw,size=1024k\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/mnt/parent dir"));
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[1].fs_type, "tmpfs");
    }
}

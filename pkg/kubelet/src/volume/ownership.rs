//! fsGroup ownership, as upstream's `SetVolumeOwnership`: the pod's supplemental group owns
//! every file of the volume and can read it (and write it when the volume is writable), and
//! directories get the setgid bit so new files inherit the group.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{io_err, Error};

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Gives `fs_group` group ownership of `dir` and everything below it, without following
/// symlinks (the projected `..data` links are chowned themselves, not their targets).
///
/// # Errors
/// [`Error::Io`] naming the path that could not be chowned or chmodded.
pub fn set_volume_ownership(dir: &Path, fs_group: u32, read_only: bool) -> Result<(), Error> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("stat for fsGroup", dir))?;
    chown_group(dir, fs_group)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if meta.is_dir() {
        mask |= SETGID | EXEC_MASK;
    }
    let mode = meta.permissions().mode() & 0o7777 | mask;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod for fsGroup", dir))?;
    if meta.is_dir() {
        for entry in fs::read_dir(dir).map_err(io_err("list for fsGroup", dir))? {
            let entry = entry.map_err(io_err("list for fsGroup", dir))?;
            set_volume_ownership(&entry.path(), fs_group, read_only)?;
        }
    }
    Ok(())
}

fn chown_group(path: &Path, gid: u32) -> Result<(), Error> {
    std::os::unix::fs::lchown(path, None, Some(gid)).map_err(|e| Error::Io {
        step: "chown for fsGroup",
        path: path.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn group_gets_read_and_setgid_dirs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown to another group needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/f"), "x").unwrap();
        fs::set_permissions(dir.join("sub/f"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("sub/f", dir.join("link")).unwrap();
        set_volume_ownership(&dir, 4321, true).unwrap();
        let f = fs::metadata(dir.join("sub/f")).unwrap();
        assert_eq!(f.gid(), 4321);
        assert_eq!(f.mode() & 0o7777, 0o640);
        let sub = fs::metadata(dir.join("sub")).unwrap();
        assert_eq!(sub.mode() & SETGID, SETGID);
        assert_eq!(fs::symlink_metadata(dir.join("link")).unwrap().gid(), 4321);
        set_volume_ownership(&dir, 4321, false).unwrap();
        assert_eq!(
            fs::metadata(dir.join("sub/f")).unwrap().mode() & 0o7777,
            0o660
        );
    }
}

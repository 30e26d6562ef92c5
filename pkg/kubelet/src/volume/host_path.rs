//! hostPath `type` checks as upstream's `pkg/volume/hostpath` does them before a pod starts:
//! the `...OrCreate` types create what is missing, the others only check, with upstream's
//! `hostPath type check failed: ...` messages.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{io_err, Error};

/// Checks (and for `DirectoryOrCreate`/`FileOrCreate`, creates) `path` for the hostPath
/// volume `type` (`None` or `""`: no check, as upstream).
///
/// Created directories get 0755 (with missing parents), created files 0644 (parents must
/// exist), whatever the umask.
///
/// # Errors
/// [`Error::HostPathType`] with upstream's message when the path is not what the type asks
/// for or the type is unknown; [`Error::Io`] when creating fails.
pub fn check_type(path: &Path, host_path_type: Option<&str>) -> Result<(), Error> {
    let failed = |what: &str| {
        Error::HostPathType(format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        ))
    };
    let meta = fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    match host_path_type.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => make_dir(path),
        "DirectoryOrCreate" | "Directory" => match ft {
            Some(t) if t.is_dir() => Ok(()),
            _ => Err(failed("a directory")),
        },
        "FileOrCreate" if meta.is_none() => make_file(path),
        "FileOrCreate" | "File" => match ft {
            Some(t) if t.is_file() => Ok(()),
            _ => Err(failed("a file")),
        },
        "Socket" => match ft {
            Some(t) if t.is_socket() => Ok(()),
            _ => Err(failed("a socket file")),
        },
        "CharDevice" => match ft {
            Some(t) if t.is_char_device() => Ok(()),
            _ => Err(failed("a character device")),
        },
        "BlockDevice" => match ft {
            Some(t) if t.is_block_device() => Ok(()),
            _ => Err(failed("a block device")),
        },
        other => Err(Error::HostPathType(format!(
            "{other} is an invalid volume type"
        ))),
    }
}

fn make_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(io_err("create the hostPath directory", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod the hostPath directory", path))
}

fn make_file(path: &Path) -> Result<(), Error> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(_) => fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .map_err(io_err("chmod the hostPath file", path)),
        // Someone else created it in between: fine, as upstream's O_CREATE without O_EXCL.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create the hostPath file", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_checks_match_upstream() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("f");
        fs::write(&file, "x").unwrap();
        let sock_path = dir.join("s.sock");
        let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
        let msg = |p: &Path, t: &str| check_type(p, Some(t)).unwrap_err().to_string();

        assert!(check_type(&dir.join("missing"), None).is_ok());
        assert!(check_type(dir, Some("Directory")).is_ok());
        assert_eq!(
            msg(&file, "Directory"),
            format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
        assert_eq!(
            msg(&dir.join("nope"), "Directory"),
            format!(
                "hostPath type check failed: {}/nope is not a directory",
                dir.display()
            )
        );
        assert!(check_type(&file, Some("File")).is_ok());
        assert_eq!(
            msg(dir, "File"),
            format!(
                "hostPath type check failed: {} is not a file",
                dir.display()
            )
        );
        assert!(check_type(&sock_path, Some("Socket")).is_ok());
        assert_eq!(
            msg(&file, "Socket"),
            format!(
                "hostPath type check failed: {} is not a socket file",
                file.display()
            )
        );
        assert!(check_type(Path::new("/dev/null"), Some("CharDevice")).is_ok());
        assert_eq!(
            msg(&file, "CharDevice"),
            format!(
                "hostPath type check failed: {} is not a character device",
                file.display()
            )
        );
        assert_eq!(
            msg(Path::new("/dev/null"), "BlockDevice"),
            "hostPath type check failed: /dev/null is not a block device"
        );
        assert_eq!(msg(dir, "Fifo"), "Fifo is an invalid volume type");

        let created = dir.join("a/b/c");
        check_type(&created, Some("DirectoryOrCreate")).unwrap();
        assert_eq!(
            fs::metadata(&created).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            msg(&file, "DirectoryOrCreate"),
            format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
        let new_file = dir.join("a/new");
        check_type(&new_file, Some("FileOrCreate")).unwrap();
        let meta = fs::metadata(&new_file).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert!(check_type(&dir.join("no/parent/file"), Some("FileOrCreate")).is_err());
        assert_eq!(
            msg(&created, "FileOrCreate"),
            format!(
                "hostPath type check failed: {} is not a file",
                created.display()
            )
        );
    }
}

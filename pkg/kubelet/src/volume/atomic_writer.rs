//! The atomic writer: projects a set of files into a volume directory so a container never sees
//! a half-written update, as upstream's `pkg/volume/util/atomic_writer.go` does.
//!
//! # Design
//! The files of one version live in a hidden timestamped directory `..YYYY_MM_DD_HH_MM_SS.N`;
//! `..data` is a symlink to the current one and is swapped by renaming a fresh `..data_tmp`
//! symlink over it (one `rename(2)`, atomic). What users see at the top level are symlinks
//! `name -> ..data/name`, so every read goes through `..data` and sees one version.
//! A write whose content, modes and file set equal the current version does nothing, so the
//! kubelet can call it on every change of a source without churning the directory.
//!
//! Leftovers of a crash (a stray `..data_tmp`, timestamped directories `..data` does not point
//! at) are removed by the next write, so re-running a setup over old state works.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::ownership::set_volume_ownership;
use super::{io_err, Error};

/// Name of the symlink that points at the current timestamped directory.
pub const DATA_DIR_NAME: &str = "..data";
/// Name of the symlink created next to `..data` and renamed over it.
pub const NEW_DATA_DIR_NAME: &str = "..data_tmp";

/// Upstream's limits for `items[].path`: the whole path and each of its segments.
const MAX_PATH_LENGTH: usize = 4096;
const MAX_SEGMENT_LENGTH: usize = 255;

/// One file to project: its bytes, its permission bits and, when the pod runs as one user,
/// that user as owner (upstream's `FileProjection`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// File content.
    pub data: Vec<u8>,
    /// Permission bits (`0o644`); only the low 12 bits are used.
    pub mode: u32,
    /// Owner to set on the file, for tokens of pods that all run as one non-root user.
    pub fs_user: Option<u32>,
}

impl FileProjection {
    /// A file owned by the kubelet's user with `mode`.
    pub fn new(data: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            data: data.into(),
            mode,
            fs_user: None,
        }
    }
}

/// Files to project, keyed by their path relative to the volume (`items[].path`).
pub type Payload = BTreeMap<String, FileProjection>;

/// Writes payloads into one volume directory; see the module docs for the layout.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target_dir: PathBuf,
}

/// Validates a payload path as upstream does and returns it cleaned (`a//b/./c` → `a/b/c`).
///
/// # Errors
/// [`Error::InvalidPath`] with upstream's message when the path is empty, too long, absolute,
/// has a segment over 255 bytes, contains a `..` segment or starts with `..`.
pub fn validate_path(path: &str) -> Result<String, Error> {
    let invalid = |message: String| Error::InvalidPath {
        path: path.to_string(),
        message,
    };
    if path.is_empty() {
        return Err(invalid(format!(
            "invalid path: must not be empty: {path:?}"
        )));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(invalid(format!(
            "invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters"
        )));
    }
    if Path::new(path).is_absolute() {
        return Err(invalid(format!(
            "invalid path: must be relative path: {path}"
        )));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.len() > MAX_SEGMENT_LENGTH) {
        return Err(invalid(format!(
            "invalid path: must not contain any segments longer than {MAX_SEGMENT_LENGTH}"
        )));
    }
    if segments.contains(&"..") {
        return Err(invalid(format!(
            "invalid path: must not contain '..': {path}"
        )));
    }
    if path.starts_with("..") {
        return Err(invalid(format!(
            "invalid path: must not start with '..': {path}"
        )));
    }
    let cleaned: Vec<&str> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    if cleaned.is_empty() {
        return Err(invalid(format!(
            "invalid path: must not be empty: {path:?}"
        )));
    }
    Ok(cleaned.join("/"))
}

impl AtomicWriter {
    /// A writer for `target_dir`, which must exist.
    pub fn new(target_dir: impl Into<PathBuf>) -> Self {
        Self {
            target_dir: target_dir.into(),
        }
    }

    /// The directory this writer projects into.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// Projects `payload`, replacing the previous version atomically.
    ///
    /// With `fs_group`, the new version is given to that group (upstream's fsGroup handling)
    /// before it becomes visible. Returns whether anything changed.
    ///
    /// # Guarantees
    /// Readers going through the top-level symlinks see either the old or the new version,
    /// never a mix. Files of the old version not in `payload` are gone afterwards.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for a bad payload path (nothing is written then), [`Error::Io`]
    /// for a failed filesystem step.
    pub fn write(&self, payload: &Payload, fs_group: Option<u32>) -> Result<bool, Error> {
        let mut clean = Payload::new();
        for (path, file) in payload {
            clean.insert(validate_path(path)?, file.clone());
        }
        let wanted = wanted_paths(&clean);
        let user_visible: BTreeSet<&str> = clean
            .keys()
            .map(|p| p.split('/').next().unwrap_or(p))
            .collect();

        let data_link = self.target_dir.join(DATA_DIR_NAME);
        let old_ts = match fs::read_link(&data_link) {
            Ok(target) => Some(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read the ..data symlink", &data_link)(e)),
        };
        let old_ts_path = old_ts
            .as_ref()
            .map(|t| self.target_dir.join(t))
            .filter(|p| p.is_dir());

        let mut to_remove = BTreeSet::new();
        let mut should_write = true;
        if let Some(old) = &old_ts_path {
            to_remove = existing_paths(old)?
                .into_iter()
                .filter(|p| !wanted.contains(p))
                .collect();
            should_write = !to_remove.is_empty() || payload_differs(&clean, old, fs_group)?;
        }

        let mut new_ts_name = None;
        if should_write {
            let (name, path) = self.new_timestamp_dir()?;
            write_payload(&clean, &path)?;
            if let Some(gid) = fs_group {
                set_volume_ownership(&path, gid, true)?;
            }
            new_ts_name = Some(name);
        }

        if let Some(name) = &new_ts_name {
            let tmp = self.target_dir.join(NEW_DATA_DIR_NAME);
            match fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove a stale ..data_tmp", &tmp)(e)),
            }
            symlink(name, &tmp).map_err(io_err("create the ..data_tmp symlink", &tmp))?;
            fs::rename(&tmp, &data_link).map_err(io_err("swap the ..data symlink", &data_link))?;
        }

        // After the swap, so a new top-level name never dangles.
        for name in &user_visible {
            let visible = self.target_dir.join(name);
            if fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new(DATA_DIR_NAME).join(name), &visible)
                    .map_err(io_err("create a user-visible symlink", &visible))?;
            }
        }

        for path in &to_remove {
            if path.contains('/') || user_visible.contains(path.as_str()) {
                continue;
            }
            let visible = self.target_dir.join(path);
            match fs::remove_file(&visible) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove a user-visible symlink", &visible)(e)),
            }
        }

        if new_ts_name.is_some() {
            self.remove_stale_timestamp_dirs(new_ts_name.as_deref())?;
        }
        Ok(should_write)
    }

    /// Creates `..YYYY_MM_DD_HH_MM_SS.N` (mode 0755) with a random `N` as upstream's
    /// `MkdirTemp` does; retries on the rare name clash.
    fn new_timestamp_dir(&self) -> Result<(String, PathBuf), Error> {
        let prefix = chrono::Utc::now()
            .format("..%Y_%m_%d_%H_%M_%S.")
            .to_string();
        loop {
            let name = format!("{prefix}{}", rand::random::<u32>());
            let path = self.target_dir.join(&name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .map_err(io_err("chmod the timestamped dir", &path))?;
                    return Ok((name, path));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create the timestamped dir", &path)(e)),
            }
        }
    }

    /// Removes every hidden timestamped directory but `keep` (the old version, and ones a
    /// crash left behind).
    fn remove_stale_timestamp_dirs(&self, keep: Option<&str>) -> Result<(), Error> {
        let entries =
            fs::read_dir(&self.target_dir).map_err(io_err("list the volume", &self.target_dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list the volume", &self.target_dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_timestamp_dir_name(name) || Some(name) == keep {
                continue;
            }
            let path = entry.path();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&path)
                    .map_err(io_err("remove an old timestamped dir", &path))?;
            }
        }
        Ok(())
    }
}

/// `..2026_12_07_13_38_14.12345`: the shape [`AtomicWriter`] names its version directories.
fn is_timestamp_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let bytes = rest.as_bytes();
    bytes.len() > 20
        && bytes[..19].iter().enumerate().all(|(i, b)| {
            if [4, 7, 10, 13, 16].contains(&i) {
                *b == b'_'
            } else {
                b.is_ascii_digit()
            }
        })
        && bytes[19] == b'.'
}

/// Every path the payload makes: files and their parent directories.
fn wanted_paths(payload: &Payload) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for path in payload.keys() {
        let mut prefix = String::new();
        for segment in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(segment);
            out.insert(prefix.clone());
        }
    }
    out
}

/// Every file and directory below `dir`, relative to it.
fn existing_paths(dir: &Path) -> Result<BTreeSet<String>, Error> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<(), Error> {
        for entry in fs::read_dir(dir).map_err(io_err("list the old version", dir))? {
            let entry = entry.map_err(io_err("list the old version", dir))?;
            let path = entry.path();
            if let Ok(rel) = path.strip_prefix(base) {
                out.insert(rel.to_string_lossy().into_owned());
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Whether any file's content, mode or owner differs from the version in `old` (modes and
/// group as [`set_volume_ownership`] leaves them when `fs_group` is set).
fn payload_differs(payload: &Payload, old: &Path, fs_group: Option<u32>) -> Result<bool, Error> {
    for (path, file) in payload {
        let full = old.join(path);
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io_err("stat a projected file", &full)(e)),
        };
        if !meta.is_file()
            || meta.permissions().mode() & 0o7777 != expected_mode(file.mode, fs_group)
            || fs_group.is_some_and(|gid| gid != meta.gid())
            || file.fs_user.is_some_and(|uid| uid != meta.uid())
        {
            return Ok(true);
        }
        let content = fs::read(&full).map_err(io_err("read a projected file", &full))?;
        if content != file.data {
            return Ok(true);
        }
    }
    Ok(false)
}

fn expected_mode(mode: u32, fs_group: Option<u32>) -> u32 {
    match fs_group {
        Some(_) => (mode & 0o7777) | 0o440,
        None => mode & 0o7777,
    }
}

fn write_payload(payload: &Payload, dir: &Path) -> Result<(), Error> {
    for (path, file) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            if !parent.is_dir() {
                fs::create_dir_all(parent).map_err(io_err("create a nested dir", parent))?;
                // create_dir_all honours the umask; set upstream's 0755 on each new level.
                let mut level = parent;
                while level != dir {
                    fs::set_permissions(level, fs::Permissions::from_mode(0o755))
                        .map_err(io_err("chmod a nested dir", level))?;
                    match level.parent() {
                        Some(p) => level = p,
                        None => break,
                    }
                }
            }
        }
        fs::write(&full, &file.data).map_err(io_err("write a projected file", &full))?;
        fs::set_permissions(&full, fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(io_err("chmod a projected file", &full))?;
        if let Some(uid) = file.fs_user {
            std::os::unix::fs::chown(&full, Some(uid), None)
                .map_err(io_err("chown a projected file", &full))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn payload(entries: &[(&str, &str, u32)]) -> Payload {
        entries
            .iter()
            .map(|(p, d, m)| (p.to_string(), FileProjection::new(d.as_bytes(), *m)))
            .collect()
    }

    fn data_target(dir: &Path) -> String {
        fs::read_link(dir.join(DATA_DIR_NAME))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn ts_dirs(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| is_timestamp_dir_name(n))
            .collect()
    }

    #[test]
    fn path_validation_matches_upstream() {
        assert_eq!(validate_path("a/./b//c/").unwrap(), "a/b/c");
        assert_eq!(
            validate_path("..a").unwrap_err().to_string(),
            "invalid path: must not start with '..': ..a"
        );
        assert_eq!(
            validate_path("a/../b").unwrap_err().to_string(),
            "invalid path: must not contain '..': a/../b"
        );
        assert_eq!(
            validate_path("/etc/passwd").unwrap_err().to_string(),
            "invalid path: must be relative path: /etc/passwd"
        );
        assert_eq!(
            validate_path("").unwrap_err().to_string(),
            "invalid path: must not be empty: \"\""
        );
        assert!(validate_path(&"x".repeat(256)).is_err());
        assert!(validate_path(&"x/".repeat(2100)).is_err());
    }

    #[test]
    fn update_sequence_swaps_data_and_removes_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let w = AtomicWriter::new(dir);

        assert!(w
            .write(
                &payload(&[("a", "1", 0o644), ("nested/deep/b", "2", 0o600)]),
                None
            )
            .unwrap());
        let first = data_target(dir);
        assert!(is_timestamp_dir_name(&first), "{first}");
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(
            fs::read_link(dir.join("nested")).unwrap(),
            Path::new("..data/nested")
        );
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(dir.join("nested/deep/b")).unwrap(), "2");
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("a"), 0o644);
        assert_eq!(mode("nested/deep/b"), 0o600);
        assert_eq!(mode("nested/deep"), 0o755);
        assert_eq!(mode(&first), 0o755);

        // Same payload: nothing happens, the version stays.
        assert!(!w
            .write(
                &payload(&[("a", "1", 0o644), ("nested/deep/b", "2", 0o600)]),
                None
            )
            .unwrap());
        assert_eq!(data_target(dir), first);

        // A mode change alone is a change.
        assert!(w
            .write(
                &payload(&[("a", "1", 0o400), ("nested/deep/b", "2", 0o600)]),
                None
            )
            .unwrap());
        let second = data_target(dir);
        assert_ne!(second, first);
        assert_eq!(mode("a"), 0o400);
        assert!(!dir.join(&first).exists(), "old version removed");

        // Drop the nested key, change a, add c.
        assert!(w
            .write(&payload(&[("a", "one", 0o644), ("c", "3", 0o644)]), None)
            .unwrap());
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "one");
        assert_eq!(fs::read_to_string(dir.join("c")).unwrap(), "3");
        assert!(
            fs::symlink_metadata(dir.join("nested")).is_err(),
            "stale symlink removed"
        );
        assert_eq!(ts_dirs(dir), vec![data_target(dir)]);

        // Dropping a nested file but keeping its directory keeps the top-level symlink.
        w.write(&payload(&[("d/x", "x", 0o644), ("d/y", "y", 0o644)]), None)
            .unwrap();
        w.write(&payload(&[("d/x", "x", 0o644)]), None).unwrap();
        assert!(dir.join("d/x").exists());
        assert!(!dir.join("d/y").exists());
        assert!(fs::symlink_metadata(dir.join("a")).is_err());

        // Empty payload empties the volume but keeps ..data.
        w.write(&Payload::new(), None).unwrap();
        let names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&DATA_DIR_NAME.to_string()));
    }

    #[test]
    fn bad_path_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path());
        let err = w
            .write(
                &payload(&[("ok", "1", 0o644), ("../escape", "2", 0o644)]),
                None,
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn crash_leftovers_are_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir(dir.join("..2020_01_01_00_00_00.42")).unwrap();
        symlink("..2020_01_01_00_00_00.42", dir.join(NEW_DATA_DIR_NAME)).unwrap();
        let w = AtomicWriter::new(dir);
        w.write(&payload(&[("k", "v", 0o644)]), Some(4321)).unwrap();
        assert_eq!(fs::read_to_string(dir.join("k")).unwrap(), "v");
        if nix::unistd::geteuid().is_root() {
            let meta = fs::metadata(dir.join("k")).unwrap();
            assert_eq!(meta.gid(), 4321, "fsGroup applied before the swap");
            assert_eq!(meta.permissions().mode() & 0o777, 0o644);
            let p = payload(&[("k", "v", 0o600)]);
            assert!(w.write(&p, Some(4321)).unwrap());
            assert_eq!(
                fs::metadata(dir.join("k")).unwrap().permissions().mode() & 0o777,
                0o640
            );
            assert!(
                !w.write(&p, Some(4321)).unwrap(),
                "fsGroup bits are no change"
            );
        }
        assert_eq!(ts_dirs(dir), vec![data_target(dir)]);
        assert!(fs::symlink_metadata(dir.join(NEW_DATA_DIR_NAME)).is_err());
    }

    #[test]
    fn fs_user_owns_the_file() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path());
        let mut file = FileProjection::new("jwt", 0o600);
        file.fs_user = Some(1234);
        let p = Payload::from([("token".to_string(), file)]);
        assert!(w.write(&p, None).unwrap());
        let meta = fs::metadata(tmp.path().join("token")).unwrap();
        assert_eq!(meta.uid(), 1234);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(!w.write(&p, None).unwrap());
    }
}

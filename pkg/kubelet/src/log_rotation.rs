//! Container log rotation, as upstream's kubelet does it (`pkg/kubelet/logs`): containerd
//! only appends to a container's CRI log file, so without this a chatty container fills the
//! node's disk.
//!
//! # Design
//! Every [`Policy::monitor_interval`] the running containers are listed through CRI; a
//! container whose log file (`ContainerStatus.log_path`) is at least [`Policy::max_size`]
//! bytes is rotated as upstream does it, in this order:
//! 1. leftovers of an interrupted rotation go (`*.tmp`, and a rotated file whose `.gz`
//!    already exists);
//! 2. the oldest rotated files go until at most `max_files - 2` remain (the current file and
//!    the one being rotated make up the rest);
//! 3. every rotated file not compressed yet is gzipped to `<file>.gz` (through `.gz.tmp`, so
//!    a crash never leaves half an archive under the final name);
//! 4. the current file is renamed to `<log>.<YYYYMMDD-hhmmss>` (local time) and containerd is
//!    asked to reopen the log (`ReopenContainerLog`), so the container writes a new file at
//!    the same path; if that fails the rename is undone, to be tried again next round.
//!
//! The newest rotated file stays uncompressed until the next rotation, so a `kubectl logs -f`
//! reading it can finish. Only running containers are rotated (a stopped one writes nothing),
//! so `kubectl logs --previous` reads the previous instance's last file as it was.
//!
//! # Limits
//! - Containers are handled one after another (upstream's default of one worker).
//! - Rotation is by size only; the disk-pressure rotation of newer kubelets is not done.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_apimachinery::quantity::Quantity;
use distro_cri::api::ContainerState;
use distro_cri::Cri;
use tokio::sync::watch;

/// Upstream's default `--container-log-max-size`.
pub const DEFAULT_MAX_SIZE: &str = "10Mi";
/// Upstream's default `--container-log-max-files`.
pub const DEFAULT_MAX_FILES: usize = 5;
/// Upstream's default `containerLogMonitorInterval`.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest monitor interval upstream's configuration validation accepts.
pub const MIN_MONITOR_INTERVAL: Duration = Duration::from_secs(3);

/// Upstream's suffix timestamp format (Go `20060102-150405`).
const TIMESTAMP_FORMAT: &str = "%Y%m%d-%H%M%S";
const COMPRESS_SUFFIX: &str = ".gz";
const TMP_SUFFIX: &str = ".tmp";

/// Errors of log rotation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--container-log-max-size` is not a quantity.
    #[error("invalid --container-log-max-size {value:?}: {reason}")]
    MaxSize {
        /// The flag's value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// `--container-log-max-files` below 2 (upstream: "must be > 1").
    #[error("invalid --container-log-max-files {0}, must be > 1")]
    MaxFiles(usize),
    /// A monitor interval below [`MIN_MONITOR_INTERVAL`].
    #[error("invalid --container-log-monitor-interval {0:?}, must be at least 3s")]
    MonitorInterval(Duration),
    /// A file operation on a container's log failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A CRI call failed.
    #[error(transparent)]
    Cri(Box<distro_cri::Error>),
    /// A blocking task panicked or was cancelled.
    #[error("log rotation task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// When and how container logs are rotated (the node's `--container-log-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Rotate a log file once it holds this many bytes; `None` (a negative size): never.
    pub max_size: Option<u64>,
    /// Files kept per container log, the current one included (at least 2).
    pub max_files: usize,
    /// How often log sizes are checked.
    pub monitor_interval: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_size: Some(10 * 1024 * 1024),
            max_files: DEFAULT_MAX_FILES,
            monitor_interval: DEFAULT_MONITOR_INTERVAL,
        }
    }
}

impl Policy {
    /// The policy of the flags' values, checked as upstream checks them: a quantity for the
    /// size (negative disables rotation), more than one file, an interval of at least 3 s.
    ///
    /// # Errors
    /// The first invalid value, naming its flag.
    pub fn parse(
        max_size: &str,
        max_files: usize,
        monitor_interval: Duration,
    ) -> Result<Policy, Error> {
        let q = Quantity::parse(max_size).map_err(|e| Error::MaxSize {
            value: max_size.into(),
            reason: e.to_string(),
        })?;
        if q.nanos() % 1_000_000_000 != 0 {
            return Err(Error::MaxSize {
                value: max_size.into(),
                reason: "not a whole number of bytes".into(),
            });
        }
        if max_files <= 1 {
            return Err(Error::MaxFiles(max_files));
        }
        if monitor_interval < MIN_MONITOR_INTERVAL {
            return Err(Error::MonitorInterval(monitor_interval));
        }
        Ok(Policy {
            max_size: u64::try_from(q.value()).ok(),
            max_files,
            monitor_interval,
        })
    }
}

/// Upstream's `isInUse`: temporary files never are, compressed files always are, and a
/// plain rotated file is unless its `.gz` exists (compression finished, removal did not).
fn in_use(name: &str, all: &[String]) -> bool {
    if name.ends_with(TMP_SUFFIX) {
        return false;
    }
    if name.ends_with(COMPRESS_SUFFIX) {
        return true;
    }
    let gz = format!("{name}{COMPRESS_SUFFIX}");
    !all.contains(&gz)
}

/// What to do with the rotated files (names of `<log>.*`) before rotating the current
/// file: `(remove, compress)`, each in order. Leftovers go, then the oldest files until at
/// most `max_files - 2` remain (names sort by their timestamps), then every remaining file
/// not yet compressed is compressed.
pub fn plan(rotated: &[String], max_files: usize) -> (Vec<String>, Vec<String>) {
    let (mut keep, mut remove): (Vec<String>, Vec<String>) =
        rotated.iter().cloned().partition(|n| in_use(n, rotated));
    keep.sort();
    let excess = keep.len().saturating_sub(max_files.saturating_sub(2));
    remove.extend(keep.drain(..excess));
    let compress = keep
        .into_iter()
        .filter(|n| !n.ends_with(COMPRESS_SUFFIX))
        .collect();
    (remove, compress)
}

/// Every file of `log`'s rotations in use, oldest first, then `log` itself (upstream's
/// `GetAllLogs`): what a reader of the whole history would read.
///
/// # Errors
/// The log's directory cannot be read.
pub fn all_logs(log: &Path) -> io::Result<Vec<PathBuf>> {
    let rotated = rotated_names(log)?;
    let mut inuse: Vec<String> = rotated
        .iter()
        .filter(|n| in_use(n, &rotated))
        .cloned()
        .collect();
    inuse.sort();
    let dir = log.parent().unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> = inuse.into_iter().map(|n| dir.join(n)).collect();
    out.push(log.to_path_buf());
    Ok(out)
}

/// Removes `log` and its rotations, in use or not (upstream's log manager's `Clean`), for a
/// container that is removed. Best effort: what cannot be removed stays.
pub fn remove_all(log: &Path) {
    let _ = fs::remove_file(log);
    let dir = log.parent().unwrap_or(Path::new("."));
    for name in rotated_names(log).unwrap_or_default() {
        let _ = fs::remove_file(dir.join(name));
    }
}

/// File names in `log`'s directory that start with `<log's name>.`.
fn rotated_names(log: &Path) -> io::Result<Vec<String>> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Ok(Vec::new());
    };
    let mut prefix: OsString = name.to_os_string();
    prefix.push(".");
    let prefix = prefix.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Gzips `path` to `path.gz` (through `path.gz.tmp`, with `path`'s mode), then removes it.
fn compress(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = fs::metadata(path)
        .map_err(io_err("stat", path))?
        .permissions()
        .mode();
    let mut src = fs::File::open(path).map_err(io_err("open", path))?;
    let mut gz_name = path.as_os_str().to_os_string();
    gz_name.push(COMPRESS_SUFFIX);
    let gz = PathBuf::from(gz_name);
    let mut tmp_name = gz.as_os_str().to_os_string();
    tmp_name.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut src, &mut enc).map_err(io_err("compress into", &tmp))?;
        enc.finish().map_err(io_err("finish", &tmp))?;
        fs::rename(&tmp, &gz).map_err(io_err("rename", &tmp))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    fs::remove_file(path).map_err(io_err("remove", path))
}

/// Steps 1–3 of the module docs for `log` (blocking).
fn prepare(log: &Path, max_files: usize) -> Result<(), Error> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let rotated = rotated_names(log).map_err(io_err("list", dir))?;
    let (remove, compress_these) = plan(&rotated, max_files);
    for n in remove {
        let p = dir.join(n);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &p)(e)),
            _ => {}
        }
    }
    for n in compress_these {
        compress(&dir.join(n))?;
    }
    Ok(())
}

/// The name `log` is rotated to at local time `now`.
pub fn rotated_name(log: &Path, now: chrono::DateTime<chrono::Local>) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(format!(".{}", now.format(TIMESTAMP_FORMAT)));
    PathBuf::from(name)
}

/// Rotates the log of running container `id` at `log` if it reached the policy's size
/// (upstream's `processContainer` and `rotateLog`). Returns whether it rotated.
///
/// # Errors
/// File operations or the CRI reopen failed; the current file is then left in place.
pub async fn rotate_if_needed(
    cri: &Cri,
    id: &str,
    log: &Path,
    policy: &Policy,
) -> Result<bool, Error> {
    let Some(max_size) = policy.max_size else {
        return Ok(false);
    };
    let size = match tokio::fs::metadata(log).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Lost (e.g. rotated away by a kubelet that died before the reopen).
            cri.reopen_container_log(id)
                .await
                .map_err(|e| Error::Cri(Box::new(e)))?;
            tokio::fs::metadata(log)
                .await
                .map_err(io_err("stat", log))?
                .len()
        }
        Err(e) => return Err(io_err("stat", log)(e)),
    };
    if size < max_size {
        return Ok(false);
    }
    let (path, max_files) = (log.to_path_buf(), policy.max_files);
    tokio::task::spawn_blocking(move || prepare(&path, max_files))
        .await
        .map_err(Error::Task)??;
    let rotated = rotated_name(log, chrono::Local::now());
    tokio::fs::rename(log, &rotated)
        .await
        .map_err(io_err("rename", log))?;
    if let Err(e) = cri.reopen_container_log(id).await {
        // Put it back, to be rotated next round.
        if let Err(back) = tokio::fs::rename(&rotated, log).await {
            tracing::error!(path = %rotated.display(), error = %back, "could not undo a log rotation");
        }
        return Err(Error::Cri(Box::new(e)));
    }
    // The reopen may race the container's exit: then the path holds an empty file and the
    // instance's last lines sit in the rotated one, where `kubectl logs --previous` would
    // not look. Put them back.
    let stopped = cri
        .container_status(id)
        .await
        .is_ok_and(|s| s.state != ContainerState::ContainerRunning as i32);
    if stopped && tokio::fs::metadata(log).await.is_ok_and(|m| m.len() == 0) {
        tokio::fs::rename(&rotated, log)
            .await
            .map_err(io_err("rename", &rotated))?;
        return Ok(false);
    }
    tracing::debug!(container = id, path = %rotated.display(), size, "container log rotated");
    Ok(true)
}

/// One round: every running container's log checked and rotated if needed. Failures of
/// one container are logged and do not stop the others.
async fn round(cri: &Cri, policy: &Policy) -> Result<(), Error> {
    let containers = cri
        .list_containers()
        .await
        .map_err(|e| Error::Cri(Box::new(e)))?;
    for c in containers {
        if c.state != ContainerState::ContainerRunning as i32 {
            continue;
        }
        let status = match cri.container_status(&c.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(container = %c.id, error = %e, "no status for log rotation");
                continue;
            }
        };
        if status.log_path.is_empty() {
            continue;
        }
        let log = PathBuf::from(&status.log_path);
        if let Err(e) = rotate_if_needed(cri, &c.id, &log, policy).await {
            tracing::warn!(container = %c.id, path = %log.display(), error = %e, "container log rotation failed");
        }
    }
    Ok(())
}

/// Rotates container logs by `policy` until `shutdown` turns true (nothing with a negative
/// size).
///
/// # Cancel safety
/// Stops between rounds; a round in progress finishes first, so no rotation is left half
/// done by shutdown.
pub async fn run(cri: Cri, policy: Policy, mut shutdown: watch::Receiver<bool>) {
    if policy.max_size.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(policy.monitor_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Err(e) = round(&cri, &policy).await {
            tracing::debug!(error = %e, "container log rotation round failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_are_checked_as_upstream() {
        let p = Policy::parse("10Mi", 5, DEFAULT_MONITOR_INTERVAL).unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(
            Policy::parse("1Ki", 2, MIN_MONITOR_INTERVAL)
                .unwrap()
                .max_size,
            Some(1024)
        );
        assert_eq!(
            Policy::parse("-1", 5, DEFAULT_MONITOR_INTERVAL)
                .unwrap()
                .max_size,
            None
        );
        for (size, files, secs, want) in [
            ("ten", 5, 10, "invalid --container-log-max-size \"ten\""),
            ("0.5", 5, 10, "not a whole number of bytes"),
            (
                "10Mi",
                1,
                10,
                "invalid --container-log-max-files 1, must be > 1",
            ),
            ("10Mi", 5, 2, "must be at least 3s"),
        ] {
            let err = Policy::parse(size, files, Duration::from_secs(secs)).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn plan_cleans_leftovers_keeps_max_files_minus_two_and_compresses() {
        let rotated = names(&[
            "0.log.20240101-000003",
            "0.log.20240101-000001.gz",
            "0.log.20240101-000002",
            "0.log.20240101-000002.gz",
            "0.log.20240101-000004.gz.tmp",
        ]);
        // 4 files: at most 2 rotated ones stay before the current one is rotated.
        let (remove, compress) = plan(&rotated, 4);
        assert_eq!(
            remove,
            names(&[
                "0.log.20240101-000002",
                "0.log.20240101-000004.gz.tmp",
                "0.log.20240101-000001.gz"
            ])
        );
        assert_eq!(compress, names(&["0.log.20240101-000003"]));
        // 2 files: none stays.
        let (remove, compress) = plan(&names(&["0.log.20240101-000003"]), 2);
        assert_eq!(remove, names(&["0.log.20240101-000003"]));
        assert!(compress.is_empty());
    }

    #[test]
    fn prepare_compresses_and_lists_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        fs::write(&log, "current\n").unwrap();
        fs::write(dir.path().join("0.log.20240101-000001"), "oldest\n").unwrap();
        fs::write(dir.path().join("0.log.20240101-000002"), "older\n").unwrap();
        fs::write(dir.path().join("1.log"), "other attempt\n").unwrap();
        prepare(&log, 3).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["0.log", "0.log.20240101-000002.gz", "1.log"]);
        let mut text = String::new();
        flate2::read::GzDecoder::new(
            fs::File::open(dir.path().join("0.log.20240101-000002.gz")).unwrap(),
        )
        .read_to_string(&mut text)
        .unwrap();
        assert_eq!(text, "older\n");
        assert_eq!(
            all_logs(&log).unwrap(),
            [dir.path().join("0.log.20240101-000002.gz"), log.clone()]
        );
    }

    #[test]
    fn rotated_names_carry_upstreams_timestamp() {
        use chrono::TimeZone;
        let t = chrono::Local.with_ymd_and_hms(2024, 3, 9, 7, 5, 1).unwrap();
        assert_eq!(
            rotated_name(Path::new("/l/0.log"), t),
            PathBuf::from("/l/0.log.20240309-070501")
        );
    }
}

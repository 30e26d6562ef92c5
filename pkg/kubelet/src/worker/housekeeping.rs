//! Housekeeping of what pods that are gone left on the node, as upstream's
//! `HandlePodCleanups` (`cleanupOrphanedPodDirs`) and its container GC's log-directory
//! eviction do.
//!
//! # Why
//! A pod worker removes its pod's volumes, directory and logs when the pod goes. A pod
//! deleted while the kubelet was down has no worker to do it; its containers, if still
//! running, are killed through the PLEG (the sandbox of an unknown pod gets a worker that
//! stops it, see [`super`]), but a pod whose sandbox is already gone, or a directory left by
//! a crash half-way through a cleanup, would stay on disk for ever.
//!
//! # Design
//! Every [`PERIOD`] (upstream's `housekeepingPeriod`), once the first pod list is complete
//! and containerd has been listed, the pod workers' loop lists `<root>/pods/` and the pod
//! log root and removes the entries of pods that are *unknown*: no worker (so not in the API
//! and not a static pod) and no sandbox in containerd (so not about to be stopped by a
//! worker either, which removes them itself when done). The pass runs inside the loop, so
//! no new worker (whose files must not be touched) can start while it runs.
//!
//! A pod directory goes only once its volumes are torn down and no mount is left under it;
//! otherwise it is kept and the failure is logged (once per pod), as upstream's "orphaned
//! pod found, but volumes are not cleaned up".

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Context;

/// How often orphaned directories are looked for (upstream: 2 s).
pub const PERIOD: Duration = Duration::from_secs(2);

/// What one pass found on disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OnDisk {
    /// `<root>/pods/<uid>` directories, by UID.
    pub pod_dirs: Vec<String>,
    /// `<log root>/<namespace>_<name>_<uid>` directories, with their UID.
    pub log_dirs: Vec<(PathBuf, String)>,
}

/// The pod UID a log directory is named after: the last `_`-separated part of
/// `<namespace>_<name>_<uid>` (names and namespaces are DNS labels or subdomains, never
/// holding `_`). `None` for names that are not a pod's log directory.
pub fn log_dir_uid(name: &str) -> Option<&str> {
    let mut parts = name.rsplitn(3, '_');
    let uid = parts.next()?;
    let (_name, _namespace) = (parts.next()?, parts.next()?);
    (!uid.is_empty()).then_some(uid)
}

/// Lists the pod and log directories of `pods_dir` and `log_root` (a missing one is empty).
pub async fn list(pods_dir: PathBuf, log_root: PathBuf) -> OnDisk {
    let listed = tokio::task::spawn_blocking(move || {
        let dirs = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        let mut pod_dirs = dirs(&pods_dir);
        pod_dirs.sort();
        let mut log_dirs: Vec<(PathBuf, String)> = dirs(&log_root)
            .into_iter()
            .filter_map(|n| Some((log_root.join(&n), log_dir_uid(&n)?.to_string())))
            .collect();
        log_dirs.sort();
        OnDisk { pod_dirs, log_dirs }
    })
    .await;
    listed.unwrap_or_default()
}

/// The housekeeping pass's memory: pods whose directory could not be removed, so the
/// failure is logged once per pod rather than every [`PERIOD`].
#[derive(Debug, Default)]
pub struct Housekeeping {
    stuck: HashSet<String>,
}

impl Housekeeping {
    /// Removes the pod and log directories of pods for which `known` is false (see the
    /// module docs for which pods those are).
    ///
    /// # Guarantees
    /// Best effort: failures are logged and retried on the next pass; a directory with a
    /// mount left under it is never removed.
    pub async fn clean(&mut self, ctx: &Context, known: impl Fn(&str) -> bool) {
        let on_disk = list(ctx.root_dir.join("pods"), ctx.sandbox.pod_log_root.clone()).await;
        let mut stuck = HashSet::new();
        for uid in on_disk.pod_dirs.iter().filter(|u| !known(u)) {
            match remove_pod_dir(ctx, uid).await {
                Ok(()) => tracing::info!(%uid, "orphaned pod found; its directory is removed"),
                Err(why) => {
                    if !self.stuck.contains(uid) {
                        tracing::warn!(%uid, error = %why, "orphaned pod found, but its volumes are not cleaned up; retrying");
                    }
                    stuck.insert(uid.clone());
                }
            }
        }
        self.stuck = stuck;
        for (dir, uid) in on_disk.log_dirs.iter().filter(|(_, u)| !known(u)) {
            match tokio::fs::remove_dir_all(dir).await {
                Ok(()) => {
                    tracing::info!(%uid, path = %dir.display(), "removed the logs of a pod that no longer exists")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::debug!(path = %dir.display(), error = %e, "removing an orphaned pod's logs failed")
                }
            }
        }
    }
}

/// Removes what pod `uid` left on the node once its worker is done with it (volumes,
/// hosts file, termination messages, logs with their rotations), as upstream's pod cleanup
/// and container GC do for pods that are gone. What cannot go yet (a busy mount) is left to
/// the next housekeeping pass, which finds the pod unknown.
pub(super) async fn remove_pod(ctx: &Context, uid: &str) {
    if let Err(why) = remove_pod_dir(ctx, uid).await {
        tracing::debug!(%uid, error = %why, "removing a finished pod's directory failed; housekeeping retries");
    }
    remove_pod_logs(&ctx.sandbox.pod_log_root, uid).await;
}

/// Removes `<pod_log_root>/<namespace>_<name>_<uid>` (found by its UID: an orphan's name
/// is not known).
async fn remove_pod_logs(pod_log_root: &Path, uid: &str) {
    let Ok(mut entries) = tokio::fs::read_dir(pod_log_root).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        if log_dir_uid(&e.file_name().to_string_lossy()) == Some(uid) {
            if let Err(err) = tokio::fs::remove_dir_all(e.path()).await {
                tracing::debug!(path = %e.path().display(), error = %err, "removing a pod's logs failed");
            }
        }
    }
}

/// Tears down the volumes of pod `uid`, then removes its directory if no mount is left
/// under it.
async fn remove_pod_dir(ctx: &Context, uid: &str) -> Result<(), String> {
    ctx.volumes.teardown(uid).await.map_err(|e| e.to_string())?;
    let dir = ctx.pod_dir(uid);
    tokio::task::spawn_blocking(move || {
        let mounts = crate::volume::mount::mounts().map_err(|e| e.to_string())?;
        if let Some(m) = mounts.iter().find(|m| m.mount_point.starts_with(&dir)) {
            return Err(format!("{} is still mounted", m.mount_point.display()));
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing {}: {e}", dir.display()))
            }
            _ => Ok(()),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_directory_names() {
        let uid = "0badc0de-0000-4000-8000-000000000001";
        assert_eq!(log_dir_uid(&format!("default_web_{uid}")), Some(uid));
        assert_eq!(log_dir_uid(&format!("kube-system_a.b-c_{uid}")), Some(uid));
        assert_eq!(log_dir_uid("default_web"), None);
        assert_eq!(log_dir_uid("stray"), None);
        assert_eq!(log_dir_uid("default_web_"), None);
    }

    #[tokio::test]
    async fn lists_pod_and_log_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let (pods, logs) = (tmp.path().join("pods"), tmp.path().join("logs"));
        std::fs::create_dir_all(pods.join("u1/volumes")).unwrap();
        std::fs::create_dir_all(pods.join("u2")).unwrap();
        std::fs::write(pods.join("not-a-dir"), "").unwrap();
        std::fs::create_dir_all(logs.join("ns_p_u1/main")).unwrap();
        std::fs::create_dir_all(logs.join("junk")).unwrap();
        let found = list(pods, logs.clone()).await;
        assert_eq!(found.pod_dirs, vec!["u1".to_string(), "u2".to_string()]);
        assert_eq!(
            found.log_dirs,
            vec![(logs.join("ns_p_u1"), "u1".to_string())]
        );
        let none = list(tmp.path().join("x"), tmp.path().join("y")).await;
        assert_eq!(none, OnDisk::default());
    }
}

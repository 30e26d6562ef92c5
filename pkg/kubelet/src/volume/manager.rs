//! The kubelet's entry points: set up a pod's volumes before its containers start, refresh
//! projected content when sources change, measure emptyDirs, and tear everything down.
//!
//! # Design
//! Each call first builds a plan per volume from the pod and the [`VolumeSources`] (async:
//! tokens may need a TokenRequest), then does the filesystem work for that volume on the
//! blocking pool. All state lives on disk and in `/proc/self/mountinfo`, so a restarted
//! kubelet can run `setup` again over what it left: existing tmpfs mounts are reused,
//! projections are rewritten only if their content changed, emptyDirs keep their data.
//!
//! # Update latency
//! Upstream refreshes configMap and secret volumes on its pod sync period (1 min) plus its
//! object cache TTL, so changes take up to about two minutes to land. Here every object a
//! pod reads has its own watch (`worker::objects`), whose events sync the pod at once, and
//! pods also resync every `worker::sync::RESYNC` (10 s): a change lands within a second or
//! two, and within 10 s even if a watch event was missed. A `subPath` mount never updates
//! (as upstream): it binds the file the key's symlink pointed to at container start.
//!
//! # Limits
//! - `fsGroupChangePolicy` is ignored: ownership is always applied (emptyDirs only when
//!   created, projections on every change); local PVs get no fsGroup handling.
//! - emptyDir `sizeLimit` on disk is measured ([`VolumeManager::usage`]), not enforced:
//!   evicting the pod is the eviction manager's job.
//! - Only emptyDir, configMap, secret, downwardAPI, projected, hostPath and
//!   persistentVolumeClaim / ephemeral volumes bound to `local` or `hostPath` PVs are
//!   supported; other types fail setup with a clear message.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, Pod, Volume};

use super::atomic_writer::{AtomicWriter, Payload};
use super::empty_dir::{disk_usage, memory_volume_size};
use super::host_path::check_type;
use super::mount::{bind_mount, mount_tmpfs, mounted_fs_type, unmount_all_under};
use super::ownership::set_volume_ownership;
use super::payload::{
    config_map_payload, downward_api_payload, fs_group_from, mode_bits, projected_payload,
    secret_payload, DEFAULT_MODE,
};
use super::sources::VolumeSources;
use super::token::TokenManager;
use super::{io_err, Error};

/// Directory of emptyDir volumes under a pod's `volumes/`.
pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
/// Directory of configMap volumes.
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
/// Directory of secret volumes.
pub const SECRET: &str = "kubernetes.io~secret";
/// Directory of downwardAPI volumes.
pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
/// Directory of projected volumes.
pub const PROJECTED: &str = "kubernetes.io~projected";
/// Directory of local persistent volumes (named after the PV).
pub const LOCAL_VOLUME: &str = "kubernetes.io~local-volume";

/// A volume ready to be bind-mounted into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    /// `spec.volumes[].name`.
    pub name: String,
    /// The host path the runtime bind-mounts.
    pub host_path: PathBuf,
    /// Whether the volume itself is read-only (configMap, secret, downwardAPI and projected
    /// always are, as upstream; a claim when `readOnly`). The kubelet ORs in
    /// `volumeMounts[].readOnly`.
    pub read_only: bool,
}

/// How much an emptyDir holds against its `sizeLimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUsage {
    /// `spec.volumes[].name`.
    pub name: String,
    /// Bytes in use.
    pub used_bytes: u64,
    /// `emptyDir.sizeLimit` in bytes, if set.
    pub size_limit: Option<u64>,
}

impl VolumeUsage {
    /// Whether the volume holds more than its limit: upstream evicts the pod then with
    /// `Usage of EmptyDir volume "x" exceeds the limit "y".`
    pub fn exceeds_limit(&self) -> bool {
        self.size_limit.is_some_and(|l| self.used_bytes > l)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Medium {
    Disk,
    /// tmpfs with this `size=` (kernel default without).
    Memory(Option<u64>),
}

#[derive(Debug)]
enum Plan {
    EmptyDir {
        dir: PathBuf,
        medium: Medium,
        fs_group: Option<u32>,
    },
    Projection {
        dir: PathBuf,
        medium: Medium,
        payload: Payload,
        fs_group: Option<u32>,
    },
    HostPath {
        path: PathBuf,
        kind: Option<String>,
    },
    Local {
        dir: PathBuf,
        source: PathBuf,
    },
}

/// Per-pod locks: setup, update and teardown of one pod never interleave.
type PodLocks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Sets up, updates and tears down pod volumes under `<root>/pods/<uid>/volumes`.
///
/// # Guarantees
/// Calls for the same pod are serialised (the pod worker's setup and a watch-triggered
/// update may race; two atomic writes into one directory must not), calls for different pods
/// run concurrently. Clones share the locks and the token cache.
#[derive(Debug, Clone)]
pub struct VolumeManager {
    root: PathBuf,
    tokens: Arc<TokenManager>,
    locks: Arc<PodLocks>,
}

impl VolumeManager {
    /// A manager keeping pod directories under `root` (the kubelet's root dir) and getting
    /// service account tokens from `tokens`.
    pub fn new(root: impl Into<PathBuf>, tokens: Arc<TokenManager>) -> Self {
        Self {
            root: root.into(),
            tokens,
            locks: Arc::default(),
        }
    }

    /// Waits for exclusive use of pod `uid`'s volumes.
    async fn lock_pod(&self, uid: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(uid.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The token manager, so the kubelet can ask when a pod's tokens need refreshing.
    pub fn tokens(&self) -> &Arc<TokenManager> {
        &self.tokens
    }

    /// `<root>/pods/<uid>/volumes`.
    pub fn pod_volumes_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join("pods").join(pod_uid).join("volumes")
    }

    /// Prepares every volume of `pod`, in spec order, and says where each one is.
    ///
    /// Safe to call again over existing state (after a restart or a failed attempt).
    ///
    /// # Errors
    /// [`Error::Volume`] naming the first volume that failed, with upstream's
    /// `MountVolume.SetUp failed for volume "x" : ...` message.
    pub async fn setup(
        &self,
        pod: &Pod,
        sources: &dyn VolumeSources,
    ) -> Result<Vec<MountedVolume>, Error> {
        let uid = pod_uid(pod)?;
        let _pod = self.lock_pod(uid).await;
        let mut out = Vec::new();
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let wrap = |e: Error| Error::Volume {
                name: volume.name.clone(),
                source: Box::new(e),
            };
            let (plan, read_only) = self.plan(pod, uid, volume, sources).await.map_err(wrap)?;
            let host_path = blocking(move || apply(plan).map(|(p, _)| p))
                .await
                .map_err(wrap)?;
            tracing::debug!(pod_uid = uid, volume = %volume.name, path = %host_path.display(), "volume set up");
            out.push(MountedVolume {
                name: volume.name.clone(),
                host_path,
                read_only,
            });
        }
        Ok(out)
    }

    /// Rewrites the configMap, secret, downwardAPI and projected volumes of `pod` whose
    /// directories exist (never resurrects a torn-down pod). Returns whether any content
    /// changed; unchanged volumes cost a read and compare.
    ///
    /// # Errors
    /// Every failing volume is tried and reported ([`Error::Aggregate`] when several).
    pub async fn update(&self, pod: &Pod, sources: &dyn VolumeSources) -> Result<bool, Error> {
        let uid = pod_uid(pod)?;
        let _pod = self.lock_pod(uid).await;
        let mut changed = false;
        let mut errors = Vec::new();
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let projected = volume.config_map.is_some()
                || volume.secret.is_some()
                || volume.downward_api.is_some()
                || volume.projected.is_some();
            if !projected {
                continue;
            }
            let result = async {
                let (plan, _) = self.plan(pod, uid, volume, sources).await?;
                blocking(move || match &plan {
                    Plan::Projection { dir, .. } if dir.is_dir() => {
                        apply(plan).map(|(_, changed)| changed)
                    }
                    _ => Ok(false),
                })
                .await
            }
            .await;
            match result {
                Ok(c) => {
                    if c {
                        tracing::debug!(pod_uid = uid, volume = %volume.name, "volume content updated");
                    }
                    changed |= c;
                }
                Err(e) => errors.push(Error::Volume {
                    name: volume.name.clone(),
                    source: Box::new(e),
                }),
            }
        }
        match errors.len() {
            0 => Ok(changed),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Aggregate(errors)),
        }
    }

    /// Measures the pod's emptyDir volumes (both media) for `sizeLimit` checks.
    ///
    /// # Errors
    /// [`Error::Io`] when a volume cannot be walked; missing volumes are skipped.
    pub async fn usage(&self, pod: &Pod) -> Result<Vec<VolumeUsage>, Error> {
        let uid = pod_uid(pod)?;
        let base = self.pod_volumes_dir(uid).join(EMPTY_DIR);
        let volumes: Vec<(String, PathBuf, Option<u64>)> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| {
                let e = v.empty_dir.as_ref()?;
                let limit = e
                    .size_limit
                    .as_ref()
                    .and_then(|q| distro_apimachinery::quantity::Quantity::parse(&q.0).ok())
                    .and_then(|q| u64::try_from(q.value()).ok());
                Some((v.name.clone(), base.join(&v.name), limit))
            })
            .collect();
        blocking(move || {
            let mut out = Vec::new();
            for (name, dir, size_limit) in volumes {
                if !dir.is_dir() {
                    continue;
                }
                out.push(VolumeUsage {
                    name,
                    used_bytes: disk_usage(&dir)?,
                    size_limit,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Removes everything of pod `pod_uid`: unmounts its tmpfs and bind mounts, deletes its
    /// volume directories (never crossing into another filesystem, so a mount that could not
    /// be unmounted keeps its content) and forgets its tokens. Idempotent.
    ///
    /// # Errors
    /// [`Error::Unmount`] for a busy mount, [`Error::Io`] for a removal that failed.
    pub async fn teardown(&self, pod_uid: &str) -> Result<(), Error> {
        validate_uid(pod_uid)?;
        let guard = self.lock_pod(pod_uid).await;
        let volumes = self.pod_volumes_dir(pod_uid);
        blocking(move || {
            if fs::symlink_metadata(&volumes).is_err() {
                return Ok(());
            }
            unmount_all_under(&volumes)?;
            remove_all_one_filesystem(&volumes)?;
            if let Some(pod_dir) = volumes.parent() {
                // The pod dir may hold other kubelet state; remove it only when empty.
                match fs::remove_dir(pod_dir) {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                        ) => {}
                    Err(e) => return Err(io_err("remove the pod dir", pod_dir)(e)),
                }
            }
            Ok(())
        })
        .await?;
        self.tokens.forget_pod(pod_uid);
        {
            // Drop the pod's lock entry unless another call is already waiting on it.
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            drop(guard);
            if locks
                .get(pod_uid)
                .is_some_and(|l| Arc::strong_count(l) == 1)
            {
                locks.remove(pod_uid);
            }
        }
        tracing::debug!(pod_uid, "volumes torn down");
        Ok(())
    }

    async fn plan(
        &self,
        pod: &Pod,
        uid: &str,
        volume: &Volume,
        sources: &dyn VolumeSources,
    ) -> Result<(Plan, bool), Error> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let base = self.pod_volumes_dir(uid);
        let dir = |plugin: &str| base.join(plugin).join(&volume.name);
        let fs_group = fs_group_from(pod);
        let in_memory = |size_limit| {
            Medium::Memory(memory_volume_size(
                &sources.node_allocatable(),
                pod,
                size_limit,
            ))
        };
        if let Some(e) = &volume.empty_dir {
            let medium = match e.medium.as_deref() {
                Some("Memory") => in_memory(e.size_limit.as_ref()),
                None | Some("") => Medium::Disk,
                Some(other) => {
                    return Err(Error::Unsupported(format!(
                        "emptyDir medium {other:?} is not supported"
                    )))
                }
            };
            let plan = Plan::EmptyDir {
                dir: dir(EMPTY_DIR),
                medium,
                fs_group,
            };
            return Ok((plan, false));
        }
        if let Some(c) = &volume.config_map {
            let cm = sources.config_map(namespace, &c.name);
            let payload = config_map_payload(
                &c.name,
                cm.as_deref(),
                c.items.as_deref().unwrap_or_default(),
                mode_bits(c.default_mode, DEFAULT_MODE),
                c.optional.unwrap_or(false),
            )?;
            let plan = Plan::Projection {
                dir: dir(CONFIG_MAP),
                medium: Medium::Disk,
                payload,
                fs_group,
            };
            return Ok((plan, true));
        }
        if let Some(s) = &volume.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let secret = sources.secret(namespace, &name);
            let payload = secret_payload(
                &name,
                secret.as_deref(),
                s.items.as_deref().unwrap_or_default(),
                mode_bits(s.default_mode, DEFAULT_MODE),
                s.optional.unwrap_or(false),
            )?;
            let plan = Plan::Projection {
                dir: dir(SECRET),
                medium: in_memory(None),
                payload,
                fs_group,
            };
            return Ok((plan, true));
        }
        if let Some(d) = &volume.downward_api {
            let payload = downward_api_payload(
                pod,
                d.items.as_deref().unwrap_or_default(),
                mode_bits(d.default_mode, DEFAULT_MODE),
                &sources.node_allocatable(),
            )?;
            let plan = Plan::Projection {
                dir: dir(DOWNWARD_API),
                medium: Medium::Disk,
                payload,
                fs_group,
            };
            return Ok((plan, true));
        }
        if let Some(p) = &volume.projected {
            let payload = projected_payload(pod, p, sources, &self.tokens).await?;
            let plan = Plan::Projection {
                dir: dir(PROJECTED),
                medium: in_memory(None),
                payload,
                fs_group,
            };
            return Ok((plan, true));
        }
        if let Some(h) = &volume.host_path {
            let plan = Plan::HostPath {
                path: PathBuf::from(&h.path),
                kind: h.type_.clone(),
            };
            return Ok((plan, false));
        }
        let claim = if let Some(c) = &volume.persistent_volume_claim {
            Some((c.claim_name.clone(), c.read_only.unwrap_or(false), false))
        } else if volume.ephemeral.is_some() {
            // Generic ephemeral volumes are claims named `<pod>-<volume>`, owned by the pod.
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            Some((format!("{pod_name}-{}", volume.name), false, true))
        } else {
            None
        };
        if let Some((claim_name, read_only, ephemeral)) = claim {
            if ephemeral {
                ephemeral_claim_is_for_pod(sources, pod, namespace, &claim_name)?;
            }
            let pv = bound_volume(sources, namespace, &claim_name)?;
            let pv_name = pv.metadata.name.clone().unwrap_or_default();
            let spec = pv.spec.as_ref();
            if let Some(local) = spec.and_then(|s| s.local.as_ref()) {
                let plan = Plan::Local {
                    dir: base.join(LOCAL_VOLUME).join(&pv_name),
                    source: PathBuf::from(&local.path),
                };
                return Ok((plan, read_only));
            }
            if let Some(h) = spec.and_then(|s| s.host_path.as_ref()) {
                let plan = Plan::HostPath {
                    path: PathBuf::from(&h.path),
                    kind: h.type_.clone(),
                };
                return Ok((plan, read_only));
            }
            return Err(Error::Unsupported(format!(
                "persistent volume {pv_name} is neither local nor hostPath"
            )));
        }
        Err(Error::Unsupported("volume type is not supported".into()))
    }
}

/// Upstream refuses a generic ephemeral volume whose claim the pod does not control (a
/// same-named claim made by someone else must not be used).
fn ephemeral_claim_is_for_pod(
    sources: &dyn VolumeSources,
    pod: &Pod,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let Some(claim) = sources.persistent_volume_claim(namespace, name) else {
        // bound_volume reports the missing claim.
        return Ok(());
    };
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let owned = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == pod_uid);
    if owned {
        return Ok(());
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    Err(Error::Claim(format!(
        "PVC {namespace}/{name} was not created for pod {namespace}/{pod_name} (pod is not owner)"
    )))
}

/// The PV bound to claim `namespace/name`, with upstream's messages for each way binding can
/// be incomplete.
fn bound_volume(
    sources: &dyn VolumeSources,
    namespace: &str,
    name: &str,
) -> Result<Arc<PersistentVolume>, Error> {
    let claim = sources
        .persistent_volume_claim(namespace, name)
        .ok_or_else(|| {
            Error::Claim(format!(
                "error processing PVC {namespace}/{name}: persistentvolumeclaim \"{name}\" not found"
            ))
        })?;
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(Error::Claim(format!(
            "can't start pod because PVC {namespace}/{name} is being deleted"
        )));
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume_name.is_empty() {
        return Err(Error::Claim(format!(
            "PVC {namespace}/{name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume_name:?})"
        )));
    }
    let pv = sources.persistent_volume(&volume_name).ok_or_else(|| {
        Error::Claim(format!(
            "failed to fetch PV {volume_name} from API server: persistentvolumes \"{volume_name}\" not found"
        ))
    })?;
    let claim_uid = claim.metadata.uid.clone().unwrap_or_default();
    match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
        None => Err(Error::Claim(format!(
            "found PV object {volume_name} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
        ))),
        Some(r) if r.uid.clone().unwrap_or_default() != claim_uid => Err(Error::Claim(format!(
            "found PV object {volume_name} but its pv.Spec.ClaimRef.UID ({}) does not point to claim.UID ({claim_uid})",
            r.uid.clone().unwrap_or_default()
        ))),
        Some(_) => Ok(pv),
    }
}

fn pod_uid(pod: &Pod) -> Result<&str, Error> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    validate_uid(uid)?;
    Ok(uid)
}

/// A pod uid becomes a path segment: it must be one.
fn validate_uid(uid: &str) -> Result<(), Error> {
    if uid.is_empty() || uid == "." || uid == ".." || uid.contains('/') {
        return Err(Error::Unsupported(format!("invalid pod uid {uid:?}")));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(Error::Task)?
}

/// Does a plan's filesystem work; returns the host path and whether content changed.
fn apply(plan: Plan) -> Result<(PathBuf, bool), Error> {
    match plan {
        Plan::EmptyDir {
            dir,
            medium,
            fs_group,
        } => {
            let created = prepare_dir(&dir, medium)?;
            if let (true, Some(gid)) = (created, fs_group) {
                set_volume_ownership(&dir, gid, false)?;
            }
            Ok((dir, created))
        }
        Plan::Projection {
            dir,
            medium,
            payload,
            fs_group,
        } => {
            prepare_dir(&dir, medium)?;
            let changed = AtomicWriter::new(&dir).write(&payload, fs_group)?;
            if let (true, Some(gid)) = (changed, fs_group) {
                // The version dir was given to the group before the swap; now the volume
                // root and its symlinks.
                set_volume_ownership(&dir, gid, true)?;
            }
            Ok((dir, changed))
        }
        Plan::HostPath { path, kind } => {
            check_type(&path, kind.as_deref())?;
            Ok((path, false))
        }
        Plan::Local { dir, source } => {
            if !source.is_dir() {
                return Err(Error::Claim(format!(
                    "local volume path {} does not exist or is not a directory",
                    source.display()
                )));
            }
            fs::create_dir_all(&dir).map_err(io_err("create the volume dir", &dir))?;
            if mounted_fs_type(&dir)?.is_none() {
                bind_mount(&source, &dir)?;
            }
            Ok((dir, false))
        }
    }
}

/// Creates the volume directory (0777, as upstream's emptyDir) and mounts its tmpfs when the
/// medium is memory and none is mounted yet. Returns whether anything was created.
fn prepare_dir(dir: &Path, medium: Medium) -> Result<bool, Error> {
    let mut created = false;
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_err("create the volume dir", dir))?;
        created = true;
    }
    if let Medium::Memory(size) = medium {
        match mounted_fs_type(dir)? {
            Some(t) if t == "tmpfs" => {}
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "{} is mounted as {other}, expected tmpfs",
                    dir.display()
                )))
            }
            None => {
                mount_tmpfs(dir, size)?;
                created = true;
            }
        }
    }
    if created {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777))
            .map_err(io_err("chmod the volume dir", dir))?;
    }
    Ok(created)
}

/// `rm -rf` that refuses to descend into another filesystem (upstream's
/// `RemoveAllOneFilesystem`), so a mount left behind keeps its content.
fn remove_all_one_filesystem(dir: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat for removal", dir)(e)),
    };
    remove_on_device(dir, meta.dev())
}

fn remove_on_device(path: &Path, dev: u64) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat for removal", path)(e)),
    };
    if !meta.is_dir() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
            _ => Ok(()),
        };
    }
    if meta.dev() != dev {
        return Err(Error::Unmount {
            path: path.to_path_buf(),
            source: io::Error::other("still a mount point, not removing its content"),
        });
    }
    for entry in fs::read_dir(path).map_err(io_err("list for removal", path))? {
        let entry = entry.map_err(io_err("list for removal", path))?;
        remove_on_device(&entry.path(), dev)?;
    }
    match fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::sources::StaticSources;
    use crate::volume::token::tests::setup;
    use crate::volume::token::Clock;
    use k8s_openapi::api::core::v1::ProjectedVolumeSource;
    use k8s_openapi::api::core::v1::{PodSpec, ServiceAccountTokenProjection, VolumeProjection};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::time::Duration;

    /// Unmounts what the test mounted even when an assertion fails.
    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = unmount_all_under(&self.0);
        }
    }

    #[tokio::test]
    async fn update_rotates_the_token_when_due() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: projected volumes live on tmpfs, which needs root");
            return;
        }
        let (clock, _source, tokens) = setup();
        let root = tempfile::tempdir().unwrap();
        let manager = VolumeManager::new(root.path(), Arc::new(tokens));
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-rotate".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "tok".into(),
                    projected: Some(ProjectedVolumeSource {
                        default_mode: None,
                        sources: Some(vec![VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                path: "token".into(),
                                expiration_seconds: Some(600),
                                audience: Some("vault".into()),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sources = StaticSources::default();
        let _guard = Guard(manager.pod_volumes_dir("uid-rotate"));
        let mounted = manager.setup(&pod, &sources).await.unwrap();
        let token = mounted[0].host_path.join("token");
        assert_eq!(fs::read_to_string(&token).unwrap(), "token-1");
        let due = manager.tokens().next_refresh("uid-rotate").unwrap();
        assert_eq!(due, clock.now() + Duration::from_secs(480));
        clock.advance(Duration::from_secs(480));
        assert!(
            !manager.update(&pod, &sources).await.unwrap(),
            "not yet due"
        );
        clock.advance(Duration::from_secs(1));
        assert!(manager.update(&pod, &sources).await.unwrap());
        assert_eq!(fs::read_to_string(&token).unwrap(), "token-2");
        assert!(manager.pod_volumes_dir("uid-rotate").is_dir());
        manager.teardown("uid-rotate").await.unwrap();
        assert!(!manager.pod_volumes_dir("uid-rotate").exists());
        assert_eq!(manager.tokens().next_refresh("uid-rotate"), None);
    }
}

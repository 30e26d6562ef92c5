//! The image GC against the real node: containerd through CRI for images and containers,
//! `statvfs` of containerd's root for the image filesystem, and the node's Events.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::SystemTime;

use distro_client::events::{EventType, Recorder};
use distro_cri::Cri;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::watch;

use super::gc::{FsStats, ImageInfo, ImageService, Manager, Policy};
use super::Error;

fn cri_err(e: distro_cri::Error) -> Error {
    Error::Cri(Box::new(e))
}

/// containerd's images and containers through CRI, and its root's filesystem.
#[derive(Debug, Clone)]
pub struct CriImages {
    cri: Cri,
    image_fs: PathBuf,
}

impl CriImages {
    /// Over `cri`, with the image filesystem under `image_fs` (containerd's root).
    pub fn new(cri: Cri, image_fs: PathBuf) -> Self {
        CriImages { cri, image_fs }
    }
}

#[async_trait::async_trait]
impl ImageService for CriImages {
    async fn list_images(&self) -> Result<Vec<ImageInfo>, Error> {
        Ok(self
            .cri
            .list_images()
            .await
            .map_err(cri_err)?
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                repo_tags: i.repo_tags,
                size: i.size,
                pinned: i.pinned,
            })
            .collect())
    }

    async fn images_in_use(&self) -> Result<HashSet<String>, Error> {
        let mut used = HashSet::new();
        for c in self.cri.list_containers().await.map_err(cri_err)? {
            used.insert(c.image_ref);
            if let Some(spec) = c.image {
                used.insert(spec.image);
            }
        }
        used.remove("");
        Ok(used)
    }

    async fn remove_image(&self, id: &str) -> Result<(), Error> {
        self.cri.remove_image(id).await.map_err(cri_err)
    }

    async fn fs_stats(&self) -> Result<FsStats, Error> {
        let path = self.image_fs.clone();
        tokio::task::spawn_blocking(move || {
            let s = nix::sys::statvfs::statvfs(&path).map_err(|e| Error::Io {
                path: path.clone(),
                source: std::io::Error::from(e),
            })?;
            let frsize = s.fragment_size();
            Ok(FsStats {
                capacity: s.blocks() * frsize,
                available: s.blocks_available() * frsize,
            })
        })
        .await
        .map_err(|e| Error::Io {
            path: self.image_fs.clone(),
            source: std::io::Error::other(e),
        })?
    }
}

/// Where and how the node's image GC runs.
#[derive(Debug, Clone)]
pub struct GcSettings {
    /// When images are collected.
    pub policy: Policy,
    /// containerd's root: the filesystem whose usage counts.
    pub image_fs: PathBuf,
    /// The records file (`<kubelet dir>/image-gc-state.json`).
    pub state_file: PathBuf,
    /// The pause image, never deleted.
    pub pause_image: String,
    /// The node, for Events.
    pub node_name: String,
    /// The node's one Event recorder (the kubelet's, see `worker::Settings::events`).
    pub events: Recorder,
}

/// Runs the image GC every [`Policy::period`] until `shutdown` turns true. Failures are
/// written as Events on the Node as upstream does: `FreeDiskSpaceFailed` when unused images
/// do not free enough, `ImageGCFailed` when a pass fails twice in a row. They are logged as
/// warnings once per change of the kind of failure (upstream logs each period; a disk that
/// stays above the high threshold with nothing to delete would warn every 5 minutes
/// forever), and at debug level while the same failure repeats.
pub async fn run(cri: Cri, settings: GcSettings, mut shutdown: watch::Receiver<bool>) {
    let period = settings.policy.period();
    let events = settings.events.clone();
    let mut gc = Manager::new(
        CriImages::new(cri, settings.image_fs.clone()),
        settings.policy.clone(),
        &[settings.pause_image.as_str()],
        Some(settings.state_file.clone()),
    );
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed_before = false;
    let mut last_failure: Option<std::mem::Discriminant<Error>> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match gc.collect(SystemTime::now()).await {
            Ok(pass) => {
                failed_before = false;
                if last_failure.take().is_some() {
                    tracing::info!("image garbage collection succeeded again");
                }
                if !pass.removed.is_empty() {
                    tracing::info!(removed = ?pass.removed, freed = pass.freed, "image garbage collection");
                }
            }
            Err(e) => {
                if quiet_repeat(&mut last_failure, &e) {
                    tracing::debug!(error = %e, "image garbage collection failed again");
                } else {
                    tracing::warn!(error = %e, "image garbage collection failed (logged again when the failure changes)");
                }
                if let Error::NotEnoughFreed { .. } = e {
                    node_event(
                        &events,
                        &settings.node_name,
                        "FreeDiskSpaceFailed",
                        &e.to_string(),
                    );
                }
                if failed_before {
                    node_event(
                        &events,
                        &settings.node_name,
                        "ImageGCFailed",
                        &e.to_string(),
                    );
                }
                failed_before = true;
            }
        }
    }
}

/// Whether `e` is the same kind of failure as the last one (then it is not warned about
/// again); records it as the last one.
fn quiet_repeat(last: &mut Option<std::mem::Discriminant<Error>>, e: &Error) -> bool {
    let kind = std::mem::discriminant(e);
    last.replace(kind) == Some(kind)
}

/// A Warning event on the Node (upstream's node reference names the node as its UID).
fn node_event(events: &Recorder, node: &str, reason: &str, message: &str) {
    let node = ObjectReference {
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        ..Default::default()
    };
    events.record(node, EventType::Warning, reason, message.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_failure_is_warned_about_once() {
        let mut last = None;
        let full = |freed| Error::NotEnoughFreed {
            to_free: 100,
            freed,
        };
        assert!(!quiet_repeat(&mut last, &full(0)), "first failure warns");
        assert!(
            quiet_repeat(&mut last, &full(5)),
            "same kind, other numbers: quiet"
        );
        let io = Error::Io {
            path: "/x".into(),
            source: std::io::Error::other("gone"),
        };
        assert!(!quiet_repeat(&mut last, &io), "a new kind warns");
        last = None; // a success in between
        assert!(!quiet_repeat(&mut last, &full(0)));
    }
}

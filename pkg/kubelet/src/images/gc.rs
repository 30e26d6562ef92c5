//! Image garbage collection, upstream's `ImageGCManager`: unused images are deleted when
//! the image filesystem fills up, least recently used first, and (`--image-maximum-gc-age`)
//! when no container has used them for longer than the maximum age.
//!
//! # Design
//! Each pass lists the images and the containers (running or exited: an exited container
//! still holds its image for a restart) and records per image when it was first seen and
//! when a container last used it. The records live in a small JSON file in the kubelet dir,
//! so ages survive restarts (upstream keeps them in memory and waits one maximum age after
//! every start instead). An image never used counts as last used when first seen, so an
//! image is deleted *an age after its last use, not after its upload*.
//!
//! Images in use by any container are never deleted, nor pinned ones (CRI's `pinned`, and
//! the pause image, which sandboxes use but containers do not name).
//!
//! Disk pressure (`--image-gc-high-threshold`, 85 %): when usage of the filesystem under
//! containerd's root is at or above it, images are deleted least recently used first
//! (ties: first seen first) until usage would be at `--image-gc-low-threshold` (80 %).
//! Images younger than [`Policy::min_age`] (2 min, upstream's default) or seen for the
//! first time in this pass are skipped. When not enough can be freed, the node gets a
//! `FreeDiskSpaceFailed` event; a pass failing twice in a row gets `ImageGCFailed`.
//!
//! # Limits
//! - Freed space is estimated from the images' sizes as CRI reports them (shared layers
//!   count once per image), as upstream does.
//! - No eviction of pods under disk pressure (the eviction manager's job).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::reference::Reference;
use super::Error;

/// How often the GC runs when the maximum age does not ask for more (upstream's
/// `ImageGCPeriod`).
pub const PERIOD: Duration = Duration::from_secs(300);

/// When images are collected.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Disk usage percent at or above which images are deleted (`--image-gc-high-threshold`).
    pub high_threshold_percent: u8,
    /// Disk usage percent deletions aim for (`--image-gc-low-threshold`).
    pub low_threshold_percent: u8,
    /// Images younger than this are not deleted for space (upstream's `ImageMinimumGCAge`).
    pub min_age: Duration,
    /// Delete images unused for longer than this (`--image-maximum-gc-age`); zero: never.
    pub max_age: Duration,
}

impl Default for Policy {
    /// Upstream's defaults: 85 %, 80 %, 2 minutes, no maximum age.
    fn default() -> Self {
        Policy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            max_age: Duration::ZERO,
        }
    }
}

impl Policy {
    /// The GC period: [`PERIOD`], or half the maximum age when that is shorter (at least a
    /// second), so an age limit is honoured within half its length.
    pub fn period(&self) -> Duration {
        if self.max_age.is_zero() {
            PERIOD
        } else {
            (self.max_age / 2).clamp(Duration::from_secs(1), PERIOD)
        }
    }

    /// Checks the thresholds as upstream's kubelet config validation does.
    ///
    /// # Errors
    /// A threshold above 100, or the low one above the high one.
    pub fn validate(&self) -> Result<(), String> {
        if self.high_threshold_percent > 100 {
            return Err(format!(
                "invalid configuration: imageGCHighThresholdPercent ({}) must be between 0 and 100",
                self.high_threshold_percent
            ));
        }
        if self.low_threshold_percent > 100 {
            return Err(format!(
                "invalid configuration: imageGCLowThresholdPercent ({}) must be between 0 and 100",
                self.low_threshold_percent
            ));
        }
        if self.low_threshold_percent > self.high_threshold_percent {
            return Err(format!(
                "invalid configuration: imageGCLowThresholdPercent ({}) must be less than imageGCHighThresholdPercent ({})",
                self.low_threshold_percent, self.high_threshold_percent
            ));
        }
        Ok(())
    }
}

/// An image as the GC sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// The image ID (`sha256:...`).
    pub id: String,
    /// Its names (`docker.io/library/busybox:latest`).
    pub repo_tags: Vec<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Pinned by the runtime: never collected.
    pub pinned: bool,
}

/// Capacity and free space of the image filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsStats {
    /// Total size.
    pub capacity: u64,
    /// Space available to unprivileged users.
    pub available: u64,
}

/// What the GC needs from the runtime: a trait, so the decisions test without containerd.
#[async_trait::async_trait]
pub trait ImageService: Send + Sync {
    /// Every image.
    async fn list_images(&self) -> Result<Vec<ImageInfo>, Error>;
    /// The images (IDs or references) of every container, running or not.
    async fn images_in_use(&self) -> Result<HashSet<String>, Error>;
    /// Deletes an image by ID.
    async fn remove_image(&self, id: &str) -> Result<(), Error>;
    /// The image filesystem's size and free space.
    async fn fs_stats(&self) -> Result<FsStats, Error>;
}

/// When an image was first seen and last used, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// First seen by the GC.
    pub first_detected: u64,
    /// Last seen in use by a container (first seen, if never).
    pub last_used: u64,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq)]
pub struct Pass {
    /// IDs of the deleted images, in deletion order.
    pub removed: Vec<String>,
    /// Bytes freed (by the images' sizes).
    pub freed: u64,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The image GC of one node.
pub struct Manager<S> {
    service: S,
    policy: Policy,
    /// Normalised names never collected (the pause image).
    pinned: Vec<String>,
    records: HashMap<String, Record>,
    state: Option<PathBuf>,
    loaded: bool,
}

impl<S: ImageService> Manager<S> {
    /// A GC over `service`; `pinned` names (e.g. the pause image) are never deleted;
    /// `state` is the records file (`None`: in memory only).
    pub fn new(service: S, policy: Policy, pinned: &[&str], state: Option<PathBuf>) -> Self {
        Manager {
            service,
            policy,
            pinned: pinned
                .iter()
                .map(|p| Reference::parse(p).normalized())
                .collect(),
            records: HashMap::new(),
            state,
            loaded: false,
        }
    }

    /// The records as of the last pass.
    pub fn records(&self) -> &HashMap<String, Record> {
        &self.records
    }

    fn is_pinned(&self, image: &ImageInfo) -> bool {
        image.pinned
            || image
                .repo_tags
                .iter()
                .any(|t| self.pinned.contains(&Reference::parse(t).normalized()))
    }

    async fn load(&mut self) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        let Some(path) = &self.state else { return };
        match tokio::fs::read(path).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => self.records = r,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable image GC state")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable image GC state")
            }
        }
    }

    async fn save(&self) -> Result<(), Error> {
        let Some(path) = &self.state else {
            return Ok(());
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let body = serde_json::to_vec(&self.records).map_err(|e| Error::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, body).await.map_err(io(&tmp))?;
        tokio::fs::rename(&tmp, path).await.map_err(io(path))
    }

    /// Updates the records from the runtime; returns the images, the in-use set.
    async fn detect(&mut self, now: u64) -> Result<(Vec<ImageInfo>, HashSet<String>), Error> {
        self.load().await;
        let images = self.service.list_images().await?;
        let in_use = self.service.images_in_use().await?;
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.records.retain(|id, _| present.contains(id.as_str()));
        for image in &images {
            let used = is_used(image, &in_use);
            let r = self.records.entry(image.id.clone()).or_insert(Record {
                first_detected: now,
                last_used: now,
            });
            if used {
                r.last_used = now;
            }
        }
        Ok((images, in_use))
    }

    /// One pass: deletes images past the maximum age, then frees space if usage is at or
    /// above the high threshold.
    ///
    /// # Errors
    /// Listing or a deletion failed; [`Error::NotEnoughFreed`] when the unused images
    /// could not bring usage down to the low threshold.
    pub async fn collect(&mut self, now: SystemTime) -> Result<Pass, Error> {
        let now = millis(now);
        let (images, in_use) = self.detect(now).await?;
        let mut candidates: Vec<(ImageInfo, Record)> = images
            .into_iter()
            .filter(|i| !is_used(i, &in_use) && !self.is_pinned(i))
            .filter_map(|i| self.records.get(&i.id).map(|r| (i.clone(), *r)))
            .collect();
        candidates.sort_by_key(|(_, r)| (r.last_used, r.first_detected));
        let mut pass = Pass::default();
        let result = self.free(&mut pass, candidates, now).await;
        // The records change even when a deletion failed: keep what was learnt.
        self.save().await?;
        result.map(|()| pass)
    }

    async fn free(
        &mut self,
        pass: &mut Pass,
        mut candidates: Vec<(ImageInfo, Record)>,
        now: u64,
    ) -> Result<(), Error> {
        let max_age = u64::try_from(self.policy.max_age.as_millis()).unwrap_or(u64::MAX);
        if max_age > 0 {
            let mut kept = Vec::new();
            for (image, record) in candidates {
                if now.saturating_sub(record.last_used) > max_age {
                    tracing::info!(image = %image.id, tags = ?image.repo_tags, "removing an image unused for longer than the maximum age");
                    self.remove(pass, &image).await?;
                } else {
                    kept.push((image, record));
                }
            }
            candidates = kept;
        }

        let stats = self.service.fs_stats().await?;
        if stats.capacity == 0 {
            return Ok(());
        }
        let used = stats.capacity.saturating_sub(stats.available);
        let usage = used.saturating_mul(100) / stats.capacity;
        if usage < u64::from(self.policy.high_threshold_percent) {
            return Ok(());
        }
        let target =
            stats.capacity * u64::from(100 - self.policy.low_threshold_percent.min(100)) / 100;
        let to_free = target.saturating_sub(stats.available);
        // Every period while the disk stays full: the service logs changes of the outcome.
        tracing::debug!(
            usage,
            high = self.policy.high_threshold_percent,
            to_free,
            "image filesystem above the high threshold; freeing space"
        );
        let min_age = u64::try_from(self.policy.min_age.as_millis()).unwrap_or(u64::MAX);
        let mut freed = 0;
        for (image, record) in candidates {
            if freed >= to_free {
                break;
            }
            // Seen for the first time now: its last use is unknown (upstream skips it too).
            if record.first_detected >= now || now.saturating_sub(record.first_detected) < min_age {
                continue;
            }
            self.remove(pass, &image).await?;
            freed += image.size;
        }
        if freed < to_free {
            return Err(Error::NotEnoughFreed { to_free, freed });
        }
        Ok(())
    }

    async fn remove(&mut self, pass: &mut Pass, image: &ImageInfo) -> Result<(), Error> {
        self.service.remove_image(&image.id).await?;
        self.records.remove(&image.id);
        pass.removed.push(image.id.clone());
        pass.freed += image.size;
        Ok(())
    }
}

/// Whether a container uses `image` (by ID, or by one of its names).
fn is_used(image: &ImageInfo, in_use: &HashSet<String>) -> bool {
    in_use.contains(&image.id)
        || image.repo_tags.iter().any(|t| {
            in_use.contains(t)
                || in_use
                    .iter()
                    .any(|u| !u.starts_with("sha256:") && Reference::parse(u).normalized() == *t)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Fake {
        images: Arc<Mutex<Vec<ImageInfo>>>,
        in_use: Arc<Mutex<HashSet<String>>>,
        stats: Arc<Mutex<(u64, u64)>>,
    }

    #[async_trait::async_trait]
    impl ImageService for Fake {
        async fn list_images(&self) -> Result<Vec<ImageInfo>, Error> {
            Ok(self.images.lock().unwrap().clone())
        }
        async fn images_in_use(&self) -> Result<HashSet<String>, Error> {
            Ok(self.in_use.lock().unwrap().clone())
        }
        async fn remove_image(&self, id: &str) -> Result<(), Error> {
            let mut images = self.images.lock().unwrap();
            let size = images.iter().find(|i| i.id == id).map_or(0, |i| i.size);
            images.retain(|i| i.id != id);
            // Deleting frees the image's bytes on the fake filesystem.
            self.stats.lock().unwrap().1 += size;
            Ok(())
        }
        async fn fs_stats(&self) -> Result<FsStats, Error> {
            let (capacity, available) = *self.stats.lock().unwrap();
            Ok(FsStats {
                capacity,
                available,
            })
        }
    }

    fn image(id: &str, tag: &str, size: u64) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            repo_tags: vec![tag.into()],
            size,
            pinned: false,
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn fake(images: Vec<ImageInfo>, in_use: &[&str], capacity: u64, available: u64) -> Fake {
        let f = Fake::default();
        *f.images.lock().unwrap() = images;
        *f.in_use.lock().unwrap() = in_use.iter().map(|s| s.to_string()).collect();
        *f.stats.lock().unwrap() = (capacity, available);
        f
    }

    const PAUSE: &str = "rancher/mirrored-pause:3.6";

    fn pause() -> ImageInfo {
        image("sha256:p", "docker.io/rancher/mirrored-pause:3.6", 50)
    }

    #[tokio::test]
    async fn below_the_high_threshold_nothing_is_deleted() {
        let f = fake(vec![image("sha256:a", "a:1", 10), pause()], &[], 1000, 160);
        let mut gc = Manager::new(f.clone(), Policy::default(), &[PAUSE], None);
        assert_eq!(gc.collect(at(0)).await.unwrap(), Pass::default());
        assert_eq!(
            gc.collect(at(600)).await.unwrap(),
            Pass::default(),
            "84 % used"
        );
        assert_eq!(f.images.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn above_it_least_recently_used_go_first_until_the_low_threshold() {
        // 90 % used; the low threshold (80 %) needs 100 bytes freed.
        let images = vec![
            image("sha256:old", "old:1", 60),
            image("sha256:older", "older:1", 60),
            image("sha256:used", "used:1", 500),
            image("sha256:newer", "newer:1", 60),
            pause(),
        ];
        let f = fake(images, &["sha256:older", "sha256:newer"], 1000, 900);
        let mut gc = Manager::new(f.clone(), Policy::default(), &[PAUSE], None);
        assert_eq!(
            gc.collect(at(0)).await.unwrap(),
            Pass::default(),
            "below the threshold"
        );
        // First pass saw everything; `older` and `newer` were in use then. Now only `used` is.
        *f.in_use.lock().unwrap() = HashSet::from(["sha256:used".to_string()]);
        gc.collect(at(100)).await.unwrap();
        *f.in_use.lock().unwrap() =
            HashSet::from(["sha256:used".to_string(), "sha256:newer".to_string()]);
        gc.collect(at(200)).await.unwrap();
        *f.in_use.lock().unwrap() = HashSet::from(["sha256:used".to_string()]);
        f.stats.lock().unwrap().1 = 100;
        let pass = gc.collect(at(300)).await.unwrap();
        // Last used: old 0 (never), older 0, newer 200; `used` and pause are not candidates.
        assert_eq!(pass.removed, ["sha256:old", "sha256:older"]);
        assert_eq!(pass.freed, 120);
        let left: Vec<String> = f
            .images
            .lock()
            .unwrap()
            .iter()
            .map(|i| i.id.clone())
            .collect();
        assert_eq!(left, ["sha256:used", "sha256:newer", "sha256:p"]);
    }

    #[tokio::test]
    async fn not_enough_to_free_is_an_error_naming_the_amounts() {
        let images = vec![
            image("sha256:a", "a:1", 10),
            image("sha256:b", "b:1", 900),
            pause(),
        ];
        let f = fake(images, &["sha256:b"], 1000, 50);
        let mut gc = Manager::new(f.clone(), Policy::default(), &[PAUSE], None);
        let _ = gc.collect(at(0)).await;
        let err = gc.collect(at(300)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Failed to garbage collect required amount of images. Attempted to free 150 bytes, but only found 10 bytes eligible to free."
        );
        assert_eq!(f.images.lock().unwrap().len(), 2, "in use and pause kept");
    }

    #[tokio::test]
    async fn young_and_newly_seen_images_are_not_deleted_for_space() {
        let f = fake(vec![image("sha256:a", "a:1", 500)], &[], 1000, 0);
        let mut gc = Manager::new(f.clone(), Policy::default(), &[], None);
        assert!(gc.collect(at(0)).await.is_err(), "first seen now");
        assert!(gc.collect(at(60)).await.is_err(), "younger than 2 minutes");
        assert_eq!(gc.collect(at(200)).await.unwrap().removed, ["sha256:a"]);
    }

    #[tokio::test]
    async fn maximum_age_deletes_unused_images_but_never_used_or_pinned_ones() {
        let images = vec![
            image("sha256:a", "docker.io/library/a:1", 1),
            image("sha256:b", "docker.io/library/b:1", 1),
            ImageInfo {
                pinned: true,
                ..image("sha256:c", "c:1", 1)
            },
            pause(),
        ];
        // `b` is in use by name, as a container may name it.
        let f = fake(images, &["b:1"], 1000, 900);
        let policy = Policy {
            max_age: Duration::from_secs(3600),
            ..Policy::default()
        };
        assert_eq!(policy.period(), Duration::from_secs(300));
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("gc.json");
        let mut gc = Manager::new(f.clone(), policy.clone(), &[PAUSE], Some(state.clone()));
        gc.collect(at(0)).await.unwrap();
        assert_eq!(
            gc.collect(at(3600)).await.unwrap(),
            Pass::default(),
            "not older yet"
        );
        // A restart keeps the records: `a` was first seen at 0.
        let mut gc = Manager::new(f.clone(), policy, &[PAUSE], Some(state));
        let pass = gc.collect(at(3601)).await.unwrap();
        assert_eq!(pass.removed, ["sha256:a"]);
        assert_eq!(gc.records().len(), 3);
        assert_eq!(gc.records()["sha256:b"].last_used, millis(at(3601)));
    }

    #[test]
    fn periods_and_validation() {
        let p = |max: u64| Policy {
            max_age: Duration::from_secs(max),
            ..Policy::default()
        };
        assert_eq!(p(0).period(), PERIOD);
        assert_eq!(p(4).period(), Duration::from_secs(2));
        assert_eq!(p(1).period(), Duration::from_secs(1));
        assert!(Policy::default().validate().is_ok());
        let bad = Policy {
            low_threshold_percent: 90,
            ..Policy::default()
        };
        assert!(bad.validate().unwrap_err().contains("must be less than"));
    }
}

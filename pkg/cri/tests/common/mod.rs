//! A containerd of the test's own on a temp data dir, and its cleanup.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_cri::containerd::{self, Paths, Settings};
use distro_cri::Cri;
use distro_supervisor::Supervised;

/// A running containerd for one test.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub paths: Paths,
    pub containerd: Option<Supervised>,
    pub cri: Cri,
}

impl Node {
    /// Writes the config for a fresh data dir and starts containerd on it.
    pub async fn start(prepare_images: impl FnOnce(&Path)) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("distro-cri-")
            .tempdir_in("/tmp")
            .unwrap();
        let paths = Paths::new(&dir.path().join("data"), &dir.path().join("run"));
        std::fs::create_dir_all(&paths.images).unwrap();
        prepare_images(&paths.images);
        let p = paths.clone();
        let settings = tokio::task::spawn_blocking(move || {
            Settings::detect(
                &p,
                containerd::DEFAULT_PAUSE_IMAGE,
                Path::new("/nonexistent/registries.yaml"),
            )
            .unwrap()
        })
        .await
        .unwrap();
        containerd::prepare(&paths, &settings, &std::env::current_exe().unwrap()).unwrap();
        let sup = containerd::start(&paths).await.unwrap();
        let cri = match Cri::wait_ready(&paths.socket, Duration::from_secs(20)).await {
            Ok(c) => c,
            Err(e) => panic!(
                "{e}\n{}",
                std::fs::read_to_string(&paths.log).unwrap_or_default()
            ),
        };
        Node {
            dir,
            paths,
            containerd: Some(sup),
            cri,
        }
    }

    /// Stops containerd and removes every mount and file under the temp dir.
    pub async fn cleanup(mut self) {
        if let Some(s) = self.containerd.take() {
            s.stop().await.unwrap();
        }
        unmount_under(self.dir.path());
        unmount_under(&self.paths.state);
    }
}

/// Unmounts (lazily, deepest first) every mount point under `dir`: containerd's snapshot,
/// rootfs and shm mounts.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

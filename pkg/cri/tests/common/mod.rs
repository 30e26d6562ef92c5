//! A containerd of the test's own on a temp data dir, and its cleanup.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use distro_cri::containerd::{self, Paths, Settings};
use distro_cri::Cri;
use distro_supervisor::Supervised;
use distro_testharness::node::kill_containerd;
pub use distro_testharness::node::unmount_under;

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
        Node::start_with(Path::new("/nonexistent/registries.yaml"), prepare_images).await
    }

    /// Like [`Node::start`] with a registries.yaml.
    pub async fn start_with(registries: &Path, prepare_images: impl FnOnce(&Path)) -> Node {
        let registries = registries.to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix("distro-cri-")
            .tempdir_in("/tmp")
            .unwrap();
        let paths = Paths::new(&dir.path().join("data"), &dir.path().join("run"));
        std::fs::create_dir_all(&paths.images).unwrap();
        prepare_images(&paths.images);
        let p = paths.clone();
        let settings = tokio::task::spawn_blocking(move || {
            Settings::detect(&p, containerd::DEFAULT_PAUSE_IMAGE, &registries).unwrap()
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

impl Drop for Node {
    /// After a failed assertion: kills what this test's containerd started (its shims'
    /// children, its shims, found by this node's unique socket path in their arguments) and
    /// containerd itself, then unmounts, so a failing test leaves nothing behind.
    fn drop(&mut self) {
        let Some(_supervised) = self.containerd.take() else {
            return;
        };
        kill_containerd(&self.paths.socket, &self.paths.config);
        unmount_under(self.dir.path());
        unmount_under(&self.paths.state);
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

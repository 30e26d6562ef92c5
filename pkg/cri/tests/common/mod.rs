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
        let Some(sup) = self.containerd.take() else {
            return;
        };
        let socket = self.paths.socket.to_string_lossy().to_string();
        let shims = processes(|_, cmd| cmd.contains("containerd-shim") && cmd.contains(&socket));
        let children = processes(|ppid, _| shims.iter().any(|(p, _)| *p == ppid));
        for (pid, _) in children.iter().chain(shims.iter()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(pid) = sup.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        unmount_under(self.dir.path());
        unmount_under(&self.paths.state);
    }
}

/// Processes (pid, ppid) whose (ppid, NUL-joined command line) match.
fn processes(f: impl Fn(i32, &str) -> bool) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // ppid is the second field after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        if f(ppid, &cmd) {
            out.push((pid, ppid));
        }
    }
    out
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

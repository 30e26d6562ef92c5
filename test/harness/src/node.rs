//! Helpers for tests that run a real node (root, containerd): the test images in the node's
//! air-gap directory, and a guard that removes what the node leaves behind (its containerd,
//! shims and containers, mounts, runtime dir, bridge) when the test ends, passed or failed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The busybox test image (`hack/build-test-images`).
pub const BUSYBOX: &str = "distro.test/busybox:latest";

/// Builds the test images once per `target_tmp` (cargo's `CARGO_TARGET_TMPDIR`), under a
/// file lock as several test binaries may want them at once, and returns their directory.
pub fn test_images(target_tmp: &Path) -> PathBuf {
    let dir = target_tmp.join("test-images");
    std::fs::create_dir_all(&dir).expect("images dir");
    let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
    lock.lock().expect("locking the images dir");
    let done = dir.join(".built");
    if !done.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/build-test-images");
        let out = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .output()
            .expect("running hack/build-test-images");
        assert!(
            out.status.success(),
            "build-test-images: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&done, "").expect("marker");
    }
    dir
}

/// Copies the test images of `target_tmp` into `<data>/agent/images/`.
pub fn install_images(target_tmp: &Path, data: &Path) {
    let src = test_images(target_tmp);
    let dst = data.join("agent/images");
    std::fs::create_dir_all(&dst).expect("agent images dir");
    for e in std::fs::read_dir(&src).expect("images").flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with('.') {
            std::fs::copy(e.path(), dst.join(&name)).expect("copy image");
        }
    }
}

/// On drop, kills the distro process running on `data` (`server` or `agent`) and the
/// containerd, shims and containers of that data dir, unmounts what is under it and its
/// runtime dir, and deletes the test's pod `bridge`. Only processes naming this data dir's
/// socket or config are touched.
pub struct NodeCleanup {
    /// The node's data dir.
    pub data: PathBuf,
    /// The pods' bridge the test's node made (a unique name).
    pub bridge: String,
}

fn processes() -> Vec<(i32, i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        out.push((pid, ppid, cmd));
    }
    out
}

fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

impl NodeCleanup {
    fn state_dir(&self) -> Option<PathBuf> {
        let config =
            std::fs::read_to_string(self.data.join("agent/etc/containerd/config.toml")).ok()?;
        let line = config.lines().find(|l| l.starts_with("state = "))?;
        Some(PathBuf::from(
            line.trim_start_matches("state = ").trim_matches('"'),
        ))
    }
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        // distro first, or its kubelet restarts and remounts what is cleaned up here.
        for (pid, _, cmd) in processes() {
            let distro = cmd.contains(" agent ") || cmd.contains(" server ");
            if distro && cmd.contains(&data) && !cmd.starts_with("containerd") {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let Some(state) = self.state_dir() else {
            return;
        };
        let Some(socket) = state.parent().map(|p| p.join("containerd.sock")) else {
            return;
        };
        let socket = socket.to_string_lossy().to_string();
        let config = self
            .data
            .join("agent/etc/containerd/config.toml")
            .to_string_lossy()
            .to_string();
        std::thread::sleep(Duration::from_millis(100));
        let procs = processes();
        let shims: Vec<i32> = procs
            .iter()
            .filter(|(_, _, c)| c.contains("containerd-shim") && c.contains(&socket))
            .map(|(p, _, _)| *p)
            .collect();
        let mut victims: Vec<i32> = procs
            .iter()
            .filter(|(_, pp, _)| shims.contains(pp))
            .map(|(p, _, _)| *p)
            .collect();
        victims.extend(&shims);
        victims.extend(
            procs
                .iter()
                .filter(|(_, _, c)| c.contains("containerd --config") && c.contains(&config))
                .map(|(p, _, _)| *p),
        );
        for pid in victims {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(200));
        unmount_under(&self.data);
        unmount_under(&state);
        if let Some(run) = state.parent() {
            let _ = std::fs::remove_dir_all(run);
        }
    }
}

//! Helpers for tests that run a real containerd node (`Agent::start_containerd`): the test
//! images, and a cleanup that removes what the node's containerd and CNI plugin left behind
//! after a failed assertion. The same steps `cmd/distro/tests/kubelet.rs` takes, shared here
//! so further real-containerd test files need not copy them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Builds the test images once per `target_tmp` (cargo's `CARGO_TARGET_TMPDIR`), under a file
/// lock since several test binaries may want them at once, with `repo`'s
/// `hack/build-test-images`; returns their directory.
///
/// # Panics
/// When the script fails (missing busybox-static or gcc): the message says which.
pub fn test_images(target_tmp: &Path, repo: &Path) -> PathBuf {
    let dir = target_tmp.join("test-images");
    std::fs::create_dir_all(&dir).expect("images dir");
    let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
    lock.lock().expect("locking the images dir");
    let done = dir.join(".built");
    if !done.exists() {
        let out = Command::new("bash")
            .arg(repo.join("hack/build-test-images"))
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

/// Copies the image tarballs of `images` into `<data>/agent/images/` (air-gap import).
pub fn install_images(images: &Path, data: &Path) {
    let dst = data.join("agent/images");
    std::fs::create_dir_all(&dst).expect("agent images dir");
    for e in std::fs::read_dir(images).expect("images").flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with('.') {
            std::fs::copy(e.path(), dst.join(&name)).expect("copy image");
        }
    }
}

/// The CNI plugin's nftables table.
const NFT_TABLE: &str = "distro-cni";

/// Whether the CNI plugin's nftables table exists (take this before starting the node: a
/// table the test made is removed by [`NodeCleanup`], a shared one only loses this test's rule).
pub fn nft_table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", NFT_TABLE])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// On drop: kills the node's agent, containerd, shims and containers (only processes naming
/// this data dir's socket or config), unmounts and removes its runtime dir, and removes the
/// test's bridge and masquerade rule.
pub struct NodeCleanup {
    /// The agent's data dir.
    pub data: PathBuf,
    /// The pods' bridge (`--cni-bridge`) this test's node made.
    pub bridge: String,
    /// Whether the CNI table existed before the test ([`nft_table_exists`]).
    pub table_existed: bool,
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

    /// The node's containerd socket, once its config is written.
    pub fn socket(&self) -> Option<PathBuf> {
        Some(self.state_dir()?.parent()?.join("containerd.sock"))
    }
}

/// `(pid, ppid, cmdline)` of every process.
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

/// Removes `bridge` and, from the shared table, only that bridge's masquerade rule (the
/// whole table when the test created it).
fn remove_network(bridge: &str, table_existed: bool) {
    let _ = Command::new("ip").args(["link", "del", bridge]).status();
    if !table_existed {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", NFT_TABLE])
            .status();
        return;
    }
    let Ok(out) = Command::new("nft")
        .args(["-a", "list", "chain", "inet", NFT_TABLE, "postrouting"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.contains(&format!("masquerade {bridge}\"")) {
            if let Some(handle) = line.rsplit("# handle ").next() {
                let _ = Command::new("nft")
                    .args(["delete", "rule", "inet", NFT_TABLE, "postrouting", "handle"])
                    .arg(handle.trim())
                    .status();
            }
        }
    }
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let (Some(state), Some(socket)) = (self.state_dir(), self.socket()) else {
            return;
        };
        let socket = socket.to_string_lossy().to_string();
        let config = self
            .data
            .join("agent/etc/containerd/config.toml")
            .to_string_lossy()
            .to_string();
        // The agent first, or its kubelet restarts and remounts what is cleaned up here.
        let data = self.data.to_string_lossy().to_string();
        for (pid, _, cmd) in processes() {
            if cmd.contains(" agent ") && cmd.contains(&data) && !cmd.starts_with("containerd") {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
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
        remove_network(&self.bridge, self.table_existed);
    }
}

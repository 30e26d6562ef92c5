//! A real containerd node for end-to-end tests: `distro agent --runtime containerd` with the
//! test images loaded, its own bridge, and a cleanup that removes only what it made (its
//! containerd, shims and containers by socket/config path, mounts under its data dir, its
//! bridge and masquerade rule). Shared by test files with `mod common;`.
//!
//! The helpers are those of `kubelet.rs`, moved here so that more test files can start a
//! node without copying them again.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use distro_testharness::{eventually, Agent, Server, LATEST};
use serde_json::Value;

/// Builds the test images once per target dir (under a file lock, as several test
/// binaries may want them at once) and returns their directory.
pub fn test_images() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-images");
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

/// Copies the image tarballs into `<data>/agent/images/`.
pub fn install_images(data: &Path) {
    let src = test_images();
    let dst = data.join("agent/images");
    std::fs::create_dir_all(&dst).expect("agent images dir");
    for e in std::fs::read_dir(&src).expect("images").flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with('.') {
            std::fs::copy(e.path(), dst.join(&name)).expect("copy image");
        }
    }
}

/// Kills what the agent's containerd left (after a failed assertion), unmounts and removes
/// its runtime dir. Only processes naming this data dir's socket or config are touched.
pub struct Cleanup {
    pub data: PathBuf,
    /// The pods' bridge this test's node made, and whether the plugin's nftables table
    /// existed before (if not, this test made it and removes it).
    pub bridge: String,
    /// Whether the CNI plugin's table existed before this test.
    pub table_existed: bool,
}

/// The CNI plugin's nftables table.
const NFT_TABLE: &str = "distro-cni";

pub fn nft_table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", NFT_TABLE])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Removes this test's bridge and, from the shared table, only the masquerade rule of that
/// bridge (the whole table when this test created it).
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

impl Cleanup {
    fn state_dir(&self) -> Option<PathBuf> {
        let config =
            std::fs::read_to_string(self.data.join("agent/etc/containerd/config.toml")).ok()?;
        let line = config.lines().find(|l| l.starts_with("state = "))?;
        Some(PathBuf::from(
            line.trim_start_matches("state = ").trim_matches('"'),
        ))
    }

    fn socket(&self) -> Option<PathBuf> {
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

impl Drop for Cleanup {
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

/// The test image with a shell.
pub const BUSYBOX: &str = "distro.test/busybox:latest";

/// A server and one containerd node joined to it. Dropping it removes the node's
/// containers, mounts and network first, then stops the agent and the server.
pub struct Node {
    /// Cleans up the node's runtime (dropped first).
    pub cleanup: Cleanup,
    /// The agent.
    pub agent: Agent,
    /// The server.
    pub server: Server,
    /// The node's name.
    pub name: String,
}

impl Node {
    /// Starts a server (with `server_args`) and a containerd node named `<prefix>-<pid>`,
    /// and waits until the node is Ready.
    pub fn start(prefix: &str, server_args: &[&str]) -> Node {
        let server = Server::start_with(Path::new(env!("CARGO_BIN_EXE_distro")), server_args);
        let name = format!("{prefix}-{}", std::process::id());
        let bridge = format!("dl{}", std::process::id() % 10_000_000);
        let table_existed = nft_table_exists();
        let agent = Agent::start_containerd(
            Path::new(env!("CARGO_BIN_EXE_distro")),
            &server,
            &["--node-name", &name, "--cni-bridge", &bridge],
            install_images,
        );
        let cleanup = Cleanup {
            data: agent.data_dir(),
            bridge,
            table_existed,
        };
        let node = Node {
            cleanup,
            agent,
            server,
            name,
        };
        eventually(
            Duration::from_secs(60),
            Duration::from_millis(100),
            "node Ready",
            || {
                let out = node
                    .server
                    .kubectl(LATEST, &["get", "node", &node.name, "-o", "json"]);
                let n: Value = serde_json::from_slice(&out.stdout).ok()?;
                n["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    .then_some(())
            },
        );
        node
    }
}

//! A server and one real containerd node for end-to-end tests, on the harness's
//! `containerd_node` helpers (test images, cleanup of what the node leaves behind). Shared
//! by test files with `mod common;`.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use distro_testharness::containerd_node::{
    install_images, nft_table_exists, test_images, NodeCleanup,
};
use distro_testharness::{eventually, Agent, Server, LATEST};
use serde_json::Value;

fn install(data: &Path) {
    let images = test_images(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    );
    install_images(&images, data);
}

/// The test image with a shell.
pub const BUSYBOX: &str = "distro.test/busybox:latest";

/// A server and one containerd node joined to it. Dropping it removes the node's
/// containers, mounts and network first, then stops the agent and the server.
pub struct Node {
    /// Cleans up the node's runtime (dropped first).
    pub cleanup: NodeCleanup,
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
            install,
        );
        let cleanup = NodeCleanup {
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

//! Integration tests (root, real containerd): `distro server` is also a node, as k3s.
//!
//! One server with its node per test; pods are hostNetwork (no pod bridge, no nftables).

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::node::{install_images, NodeCleanup, BUSYBOX};
use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(100);

fn images(data: &Path) {
    install_images(Path::new(env!("CARGO_TARGET_TMPDIR")), data);
}

/// A server with its node named uniquely for this test process, and its cleanup.
fn server_with_node(tag: &str, extra: &[&str]) -> (Server, NodeCleanup, String) {
    let node = format!("{tag}-{}", std::process::id());
    let bridge = format!("dn{}{tag}", std::process::id() % 100_000);
    let mut args = vec!["--node-name", &node, "--cni-bridge", &bridge];
    args.extend_from_slice(extra);
    let s = Server::start_with_node(bin(), &args, images);
    let cleanup = NodeCleanup {
        data: s.data_dir(),
        bridge: bridge.clone(),
    };
    (s, cleanup, node)
}

fn node_json(s: &Server, node: &str) -> Option<Value> {
    let out = s.kubectl(LATEST, &["get", "node", node, "-o", "json"]);
    serde_json::from_slice(&out.stdout).ok()
}

fn condition<'a>(n: &'a Value, kind: &str) -> Option<&'a Value> {
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn ready_node(s: &Server, node: &str) -> Value {
    eventually(Duration::from_secs(60), EVERY, "node Ready", || {
        let n = node_json(s, node)?;
        (condition(&n, "Ready")?["status"] == "True").then_some(n)
    })
}

fn pod_manifest(name: &str, node: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
"#
    )
}

#[test]
fn server_is_a_node_with_role_labels_and_runs_pods() {
    let began = Instant::now();
    let (mut s, _cleanup, node) = server_with_node("srv", &[]);
    let n = ready_node(&s, &node);
    let info = &n["status"]["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://1.")),
        "{info}"
    );
    // k3s's role labels, set by the server (NodeRestriction forbids the kubelet to).
    let labels = eventually(Duration::from_secs(10), EVERY, "role labels", || {
        let n = node_json(&s, &node)?;
        let l = n["metadata"]["labels"].clone();
        (l["node-role.kubernetes.io/control-plane"] == "true").then_some(l)
    });
    assert_eq!(labels["node-role.kubernetes.io/master"], "true", "{labels}");
    let table = s.ok(LATEST, &["get", "nodes", "--no-headers"]);
    assert!(
        table.contains(&node) && table.contains("control-plane,master"),
        "{table}"
    );

    // A pod scheduled by the server's own scheduler runs on its node.
    let manifest = pod_manifest("hello", &node, "echo hi; exec sleep 3600")
        .replace(&format!("  nodeName: {node}\n"), "");
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&manifest));
    eventually(Duration::from_secs(30), EVERY, "hello Running", || {
        let t = s.ok(
            LATEST,
            &["get", "pod", "hello", "-o", "wide", "--no-headers"],
        );
        (t.contains("1/1") && t.contains("Running") && t.contains(&node)).then_some(())
    });
    s.ok(LATEST, &["delete", "pod", "hello", "--wait=true"]);

    let status = s.stop();
    assert!(
        status.success(),
        "server stopped cleanly: {status}\n{}",
        s.log()
    );
    eprintln!("server_is_a_node: {:?}", began.elapsed());
}

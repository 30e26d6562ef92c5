//! End-to-end (root, real containerd and runc): what a user sees walking through a node with
//! real kubectl, where a walkthrough found distro differing from upstream's kubelet. Each
//! test names the difference it guards against.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use distro_testharness::get::node_json;
use distro_testharness::node::{events, host_pod_manifest, install_images, pod, NodeCleanup};
use distro_testharness::{eventually, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(200);

/// The oldest kubectl the cluster supports.
const OLDEST: u32 = 27;

/// A server with its node named uniquely for this test process and `tag`, and its cleanup.
fn server_with_node(tag: &str) -> (Server, NodeCleanup, String) {
    let node = format!("{tag}-{}", std::process::id());
    let bridge = format!("dw{}{tag}", std::process::id() % 100_000);
    let s = Server::start_with_node(
        bin(),
        &["--node-name", &node, "--cni-bridge", &bridge],
        |d| install_images(Path::new(env!("CARGO_TARGET_TMPDIR")), d),
    );
    let cleanup = NodeCleanup {
        data: s.data_dir(),
        bridge,
        table_existed: true,
    };
    (s, cleanup, node)
}

/// Walkthrough finding: a failed pull's messages differed from upstream's kubelet (1.32+).
/// The Failed event and the ErrImagePull message carried distro's own "containerd
/// PullImage:" prefix instead of the runtime's gRPC status text; the ImagePullBackOff message
/// lacked the last pull error (`Back-off pulling image "x": ErrImagePull: rpc error: …`); and
/// no `Error: ImagePullBackOff` event was recorded while backing off.
#[test]
fn a_failed_pull_reads_as_upstreams() {
    let (s, _cleanup, node) = server_with_node("pull");
    // Nothing listens on port 1: containerd's resolve fails at once, as for any dead registry.
    let image = "127.0.0.1:1/walk/none:v1";
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: badimage, namespace: default}}\nspec:\n  nodeName: {node}\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: main, image: {image:?}}}\n"
        )),
    );
    let waiting = eventually(Duration::from_secs(60), EVERY, "ImagePullBackOff", || {
        let w = pod(&s, "badimage")?["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ImagePullBackOff").then_some(w)
    });
    let msg = waiting["message"].as_str().unwrap_or_default();
    let prefix = format!(
        "Back-off pulling image {image:?}: ErrImagePull: rpc error: code = Unknown desc = failed to pull and unpack image {image:?}: "
    );
    assert!(msg.starts_with(&prefix), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");

    let ev = eventually(Duration::from_secs(30), EVERY, "pull events", || {
        let ev = events(&s, "badimage");
        ev.iter()
            .any(|(r, m)| r == "Failed" && m == "Error: ImagePullBackOff")
            .then_some(ev)
    });
    let failed = format!(
        "Failed to pull image {image:?}: rpc error: code = Unknown desc = failed to pull and unpack image {image:?}: "
    );
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Failed" && m.starts_with(&failed)),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Failed" && m == "Error: ErrImagePull"),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(r, m)| r == "BackOff" && m == &format!("Back-off pulling image {image:?}")),
        "{ev:?}"
    );
    assert!(
        !ev.iter().any(|(_, m)| m.contains("containerd PullImage")),
        "{ev:?}"
    );
}

/// Walkthrough finding: `kubectl describe node` showed allocatable memory and ephemeral
/// storage as bare bytes (`25276182528`) beside capacity's `24683772Ki`, where upstream's
/// kubelet keeps the BinarySI form (capacity `264212084Ki`; allocatable in capacity's format).
#[test]
fn node_quantities_read_as_upstreams() {
    let (s, _cleanup, node) = server_with_node("qty");
    let st = eventually(Duration::from_secs(60), EVERY, "ephemeral storage", || {
        let n = node_json(&s, &node)?;
        n["status"]["capacity"]["ephemeral-storage"]
            .is_string()
            .then(|| n["status"].clone())
    });
    // The harness's `--eviction-hard=` reserves nothing: allocatable reads as capacity.
    for resource in ["memory", "ephemeral-storage"] {
        let cap = st["capacity"][resource].as_str().unwrap_or_default();
        assert_eq!(st["allocatable"][resource], cap, "{resource}: {st}");
        // Canonical BinarySI: a suffix, unless the bytes are not a multiple of 1024.
        let bare: u64 = cap.parse().unwrap_or(0);
        assert!(
            ["Ki", "Mi", "Gi", "Ti"].iter().any(|u| cap.ends_with(u)) || !bare.is_multiple_of(1024),
            "{resource}: {cap}"
        );
    }
}

/// Walkthrough finding: `/stats/summary` had no filesystem figures: upstream's kubelet
/// reports the node's `fs` (nodefs) and each container's `rootfs` (its writable layer),
/// which disk dashboards and `kubectl get --raw` users read.
#[test]
fn stats_summary_has_filesystems() {
    let (s, _cleanup, node) = server_with_node("fs");
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&host_pod_manifest(
            "writer",
            &node,
            "head -c 1048576 /dev/zero > /blob; exec sleep 3600",
            "",
        )),
    );
    let path = format!("/api/v1/nodes/{node}/proxy/stats/summary");
    let summary = eventually(Duration::from_secs(60), EVERY, "writer's rootfs", || {
        let out = s.kubectl(OLDEST, &["get", "--raw", &path]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let pod = v["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == "writer")?
            .clone();
        // The 1 MiB file is in the writable layer once the runtime's stats catch up.
        (pod["containers"][0]["rootfs"]["usedBytes"].as_u64()? >= 1 << 20).then_some(v)
    });
    let fs = &summary["node"]["fs"];
    let (cap, avail, used) = (
        fs["capacityBytes"].as_u64().unwrap_or(0),
        fs["availableBytes"].as_u64().unwrap_or(0),
        fs["usedBytes"].as_u64().unwrap_or(0),
    );
    assert!(cap > 0 && avail <= cap && used <= cap, "{fs}");
    assert!(fs["inodes"].as_u64().unwrap_or(0) > 0, "{fs}");
    assert!(fs["time"].is_string(), "{fs}");
}

/// Walkthrough finding: a crash-looping pod was re-synced every second while it waited out
/// its backoff, posting a BackOff event each time (`x16 over 54s` where upstream's pod
/// workers, re-syncing about every 10 s, show a handful). Now the worker sleeps until the
/// backoff ends (at most 10 s) and restarts the container on time.
#[test]
fn a_crash_loop_posts_backoff_events_at_upstreams_pace() {
    let (s, _cleanup, node) = server_with_node("loop");
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&host_pod_manifest(
            "crash",
            &node,
            "echo crashing; exit 1",
            "",
        )),
    );
    // The first restart is immediate, the second follows a 10 s backoff.
    eventually(Duration::from_secs(60), EVERY, "two restarts", || {
        let p = pod(&s, "crash")?;
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 2).then_some(())
    });
    let ev = s.json(
        LATEST,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=crash",
        ],
    );
    let backoffs: i64 = ev["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "BackOff")
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum();
    assert!(
        (1..=4).contains(&backoffs),
        "BackOff events over one 10 s backoff: {backoffs}: {ev}"
    );
}

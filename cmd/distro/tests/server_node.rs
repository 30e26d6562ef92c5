//! Integration tests (root, real containerd): `distro server` is also a node, as k3s.
//!
//! One server with its node per test; pods are hostNetwork (no pod bridge, no nftables).

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::get::{condition, node_json, ready_node};
use distro_testharness::node::{df, host_pod_manifest, install_images, NodeCleanup, BUSYBOX};
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
        table_existed: true,
    };
    (s, cleanup, node)
}

/// Whether containerd of the server's node runs a container of pod `uid`.
fn running_containers(s: &Server, uid: &str) -> bool {
    let socket = distro_cri::containerd::Paths::new(&s.data_dir(), Path::new("/run/distro")).socket;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cri = distro_cri::Cri::connect(&socket).await.expect("containerd");
        let list = cri.list_containers().await.expect("listing containers");
        list.iter().any(|c| {
            c.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some(uid)
                && c.state == distro_cri::api::ContainerState::ContainerRunning as i32
        })
    })
}

#[test]
fn server_is_a_node_with_role_labels_and_runs_pods() {
    let began = Instant::now();
    // Thresholds this machine does not meet (its disk may be fuller than upstream's 10%).
    let (mut s, _cleanup, node) = server_with_node(
        "srv",
        &["--eviction-hard=memory.available<100Mi,nodefs.available<1%"],
    );
    let n = ready_node(&s, &node);
    let info = &n["status"]["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://1.")),
        "{info}"
    );
    // The status reporter's full status: this machine's identity, capacity with ephemeral
    // storage, allocatable less the hard eviction thresholds, containerd's images.
    let n = eventually(Duration::from_secs(20), EVERY, "full node status", || {
        let n = node_json(&s, &node)?;
        n["status"]["images"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
            .then_some(n)
    });
    let info = &n["status"]["nodeInfo"];
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(info["bootID"], boot_id.trim(), "{info}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info["kernelVersion"], kernel.trim(), "{info}");
    assert_eq!(info["operatingSystem"], "linux");
    assert!(
        info["kubeletVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.")),
        "{info}"
    );
    let st = &n["status"];
    // Canonical BinarySI quantities, as upstream's: bare bytes or the largest exact suffix.
    let bytes = |v: &Value| {
        let s = v.as_str()?;
        for (suffix, unit) in [
            ("Ki", 1u64 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
        ] {
            if let Some(n) = s.strip_suffix(suffix) {
                return n.parse::<u64>().ok().map(|n| n * unit);
            }
        }
        s.parse::<u64>().ok()
    };
    let quantity = |section: &str, resource: &str| {
        bytes(&st[section][resource]).unwrap_or_else(|| panic!("{section}.{resource}: {st}"))
    };
    let cap_storage = quantity("capacity", "ephemeral-storage");
    assert_eq!(
        quantity("allocatable", "ephemeral-storage"),
        cap_storage - (cap_storage as f64 * 0.01).round() as u64,
        "nodefs.available<1% taken off allocatable"
    );
    assert_eq!(
        quantity("allocatable", "memory"),
        quantity("capacity", "memory") - (100 << 20),
        "memory.available<100Mi taken off allocatable"
    );
    let names: Vec<&str> = st["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["names"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
        })
        .collect();
    assert!(names.contains(&BUSYBOX), "{names:?}");
    for (kind, status, reason, message) in [
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ] {
        let c = condition(&n, kind).expect(kind);
        assert_eq!(
            (
                c["status"].as_str(),
                c["reason"].as_str(),
                c["message"].as_str()
            ),
            (Some(status), Some(reason), Some(message)),
            "{c}"
        );
    }
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
    let manifest = host_pod_manifest("hello", &node, "echo hi; exec sleep 3600", "")
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

/// The node's data dir is a small tmpfs this test mounts (removed by the cleanup's unmount),
/// so filling it crosses a nodefs threshold without touching the machine's disks.
#[test]
fn disk_pressure_evicts_ranked_pods_taints_and_clears() {
    let began = Instant::now();
    let node = format!("evict-{}", std::process::id());
    let bridge = format!("dv{}", std::process::id() % 100_000);
    let s = Server::start_with_node(
        bin(),
        &[
            "--node-name",
            &node,
            "--cni-bridge",
            &bridge,
            "--eviction-hard=nodefs.available<50%",
            "--eviction-pressure-transition-period=0s",
        ],
        |data| {
            std::fs::create_dir_all(data).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=96m", "distro-test"])
                .arg(data)
                .status()
                .unwrap();
            assert!(ok.success(), "mounting a tmpfs");
            images(data);
        },
    );
    let _cleanup = NodeCleanup {
        data: s.data_dir(),
        bridge,
        table_existed: true,
    };
    let n = ready_node(&s, &node);
    assert_eq!(condition(&n, "DiskPressure").unwrap()["status"], "False");

    // hog uses disk beyond its (absent) request; guard stays within its request.
    let hog = host_pod_manifest(
        "hog",
        &node,
        "dd if=/dev/zero of=/data/junk bs=1M count=2; exec sleep 3600",
        "",
    )
    .replace(
        "    command:",
        "    volumeMounts: [{name: data, mountPath: /data}]\n    command:",
    ) + "  volumes: [{name: data, emptyDir: {}}]\n";
    let guard = host_pod_manifest("guard", &node, "exec sleep 3600", "").replace(
        "    command:",
        "    resources: {requests: {ephemeral-storage: 10Mi}}\n    command:",
    );
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!("{hog}---\n{guard}")),
    );
    for name in ["hog", "guard"] {
        eventually(Duration::from_secs(30), EVERY, "pods Running", || {
            let t = s.ok(LATEST, &["get", "pod", name, "--no-headers"]);
            t.contains("Running").then_some(())
        });
    }

    // Fill the node's filesystem to 40% available: below the 50% threshold.
    let (size, avail) = df(&s.data_dir());
    let fill = s.data_dir().join("fill");
    let len = avail - size * 2 / 5;
    let ok = std::process::Command::new("fallocate")
        .args(["-l", &len.to_string()])
        .arg(&fill)
        .status()
        .unwrap();
    assert!(ok.success());

    let evicted = eventually(Duration::from_secs(30), EVERY, "hog evicted", || {
        let p: Value = serde_json::from_slice(
            &s.kubectl(LATEST, &["get", "pod", "hog", "-o", "json"])
                .stdout,
        )
        .ok()?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    // Ranked last (within its request): still running when the first eviction is seen
    // (the next may come one monitoring interval, 10 s, later).
    let guard_phase = s.ok(
        LATEST,
        &["get", "pod", "guard", "-o", "jsonpath={.status.phase}"],
    );
    assert_eq!(guard_phase, "Running");
    let st = &evicted["status"];
    assert_eq!(st["reason"], "Evicted", "{st}");
    let msg = st["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: ")
            && msg.contains(", available: "),
        "{msg}"
    );
    let n = eventually(
        Duration::from_secs(20),
        EVERY,
        "DiskPressure and its taint",
        || {
            let n = node_json(&s, &node)?;
            let c = condition(&n, "DiskPressure")?;
            let tainted = n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["key"] == "node.kubernetes.io/disk-pressure" && t["effect"] == "NoSchedule"
                })
            });
            (c["status"] == "True" && tainted).then_some(n)
        },
    );
    assert_eq!(
        condition(&n, "DiskPressure").unwrap()["reason"],
        "KubeletHasDiskPressure"
    );
    // The evicted pod's containers are stopped (a terminal phase), as containerd shows.
    let uid = evicted["metadata"]["uid"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(20),
        EVERY,
        "hog's containers stopped",
        || (!running_containers(&s, &uid)).then_some(()),
    );

    std::fs::remove_file(&fill).unwrap();
    eventually(Duration::from_secs(30), EVERY, "pressure cleared", || {
        let n = node_json(&s, &node)?;
        let c = condition(&n, "DiskPressure")?;
        let tainted = n["spec"]["taints"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == "node.kubernetes.io/disk-pressure")
        });
        (c["status"] == "False" && !tainted).then_some(())
    });
    eprintln!("disk_pressure_evicts: {:?}", began.elapsed());
}

fn mirror(s: &Server, name: &str) -> Option<Value> {
    let out = s.kubectl(LATEST, &["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

#[test]
fn static_pods_run_from_files_with_mirror_pods() {
    let began = Instant::now();
    let (s, _cleanup, node) = server_with_node("stat", &[]);
    let n = ready_node(&s, &node);
    let node_uid = n["metadata"]["uid"].as_str().unwrap().to_string();
    let dir = s.data_dir().join("agent/pod-manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yaml");
    let manifest = |greeting: &str| {
        host_pod_manifest(
            "web",
            &node,
            &format!("echo {greeting}; exec sleep 3600"),
            "",
        )
        .replace(&format!("  nodeName: {node}\n"), "")
        .replace(
            "metadata: {name: web, namespace: default}",
            "metadata: {name: web}",
        )
    };
    std::fs::write(&file, manifest("one")).unwrap();

    // The mirror pod: named after the node, annotated, owned by the Node, Running.
    let name = format!("web-{node}");
    let m = eventually(Duration::from_secs(30), EVERY, "mirror pod Running", || {
        let m = mirror(&s, &name)?;
        (m["status"]["phase"] == "Running").then_some(m)
    });
    let ann = &m["metadata"]["annotations"];
    assert_eq!(ann["kubernetes.io/config.source"], "file", "{ann}");
    let hash = ann["kubernetes.io/config.mirror"]
        .as_str()
        .expect("mirror annotation")
        .to_string();
    assert_eq!(ann["kubernetes.io/config.hash"], hash.as_str());
    let owner = &m["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["uid"].as_str()),
        (Some("Node"), Some(node_uid.as_str())),
        "{owner}"
    );
    assert_eq!(m["spec"]["nodeName"], node.as_str());

    // Deleted by hand: recreated (a new object), the static pod kept running.
    let first_uid = m["metadata"]["uid"].as_str().unwrap().to_string();
    s.ok(LATEST, &["delete", "pod", &name, "--wait=false"]);
    eventually(Duration::from_secs(20), EVERY, "mirror recreated", || {
        let m = mirror(&s, &name)?;
        // With the static pod's status written to the new object too.
        (m["metadata"]["uid"] != first_uid.as_str()
            && m["metadata"]["deletionTimestamp"].is_null()
            && m["status"]["phase"] == "Running")
            .then_some(())
    });

    // The file changes: a new pod, a new mirror.
    std::fs::write(&file, manifest("two")).unwrap();
    let m = eventually(
        Duration::from_secs(30),
        EVERY,
        "mirror of the new file",
        || {
            let m = mirror(&s, &name)?;
            let h = m["metadata"]["annotations"]["kubernetes.io/config.mirror"].as_str()?;
            (h != hash && m["status"]["phase"] == "Running").then_some(m)
        },
    );
    assert!(m["spec"]["containers"][0]["command"]
        .to_string()
        .contains("echo two"));

    // The file goes: the mirror goes.
    std::fs::remove_file(&file).unwrap();
    eventually(Duration::from_secs(20), EVERY, "mirror removed", || {
        mirror(&s, &name).is_none().then_some(())
    });
    // ... and the static pod's containers stop (its UID is the config hash).
    let uid = m["metadata"]["annotations"]["kubernetes.io/config.hash"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(Duration::from_secs(20), EVERY, "static pod stopped", || {
        (!running_containers(&s, &uid)).then_some(())
    });
    eprintln!("static_pods: {:?}", began.elapsed());
}

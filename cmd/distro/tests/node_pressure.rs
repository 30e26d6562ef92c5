//! Integration tests (root, real containerd): the node under pressure — admission refusals,
//! soft eviction thresholds — and the kubelet's `/spec`.
//!
//! The node's data dir is a small tmpfs each test mounts (removed by the cleanup's unmount),
//! so filling it crosses a nodefs threshold without touching the machine's disks. Pods are
//! hostNetwork (no pod bridge, no nftables).

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::get::{condition, node_json, ready_node};
use distro_testharness::node::{df, host_pod_manifest, install_images, pod, NodeCleanup};
use distro_testharness::{eventually, Agent, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(200);

/// A server whose node's data dir is a 96 MiB tmpfs, with `extra` flags; and its cleanup.
fn server_on_tmpfs(tag: &str, extra: &[&str]) -> (Server, NodeCleanup, String) {
    let node = format!("{tag}-{}", std::process::id());
    let bridge = format!("np{}{tag}", std::process::id() % 100_000);
    let mut args = vec!["--node-name", &node, "--cni-bridge", &bridge];
    args.extend_from_slice(extra);
    let s = Server::start_with_node(bin(), &args, |data| {
        std::fs::create_dir_all(data).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=96m", "distro-test"])
            .arg(data)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs");
        install_images(Path::new(env!("CARGO_TARGET_TMPDIR")), data);
    });
    let cleanup = NodeCleanup {
        data: s.data_dir(),
        bridge,
        table_existed: true,
    };
    (s, cleanup, node)
}

fn disk_pressure(s: &Server, node: &str) -> bool {
    node_json(s, node)
        .as_ref()
        .and_then(|n| condition(n, "DiskPressure"))
        .is_some_and(|c| c["status"] == "True")
}

fn failed(s: &Server, name: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        EVERY,
        &format!("{name} Failed"),
        || {
            let p = pod(s, name)?;
            (p["status"]["phase"] == "Failed").then_some(p)
        },
    )
}

/// Fills the data dir's tmpfs until 40% is available; returns the filler file.
fn fill_to_40_percent(s: &Server) -> std::path::PathBuf {
    let (size, avail) = df(&s.data_dir());
    let fill = s.data_dir().join("fill");
    let ok = std::process::Command::new("fallocate")
        .args(["-l", &(avail - size * 2 / 5).to_string()])
        .arg(&fill)
        .status()
        .unwrap();
    assert!(ok.success());
    fill
}

/// Events about pod `name` with `reason`.
fn events(s: &Server, name: &str, reason: &str) -> Vec<Value> {
    let selector = format!("involvedObject.name={name},reason={reason}");
    let out = s.kubectl(
        LATEST,
        &["get", "events", "--field-selector", &selector, "-o", "json"],
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// Pods bound by name that the node cannot take are refused as upstream's kubelet refuses
/// them: NodeAffinity, OutOfcpu, and under DiskPressure every new non-critical pod.
#[test]
fn node_refuses_pods_it_cannot_admit() {
    let began = Instant::now();
    let (s, _cleanup, node) = server_on_tmpfs(
        "adm",
        &[
            "--eviction-hard=nodefs.available<50%",
            "--eviction-pressure-transition-period=0s",
        ],
    );
    ready_node(&s, &node);
    check_spec(&s, &node);

    let elsewhere = host_pod_manifest("elsewhere", &node, "exec sleep 3600", "").replace(
        "  hostNetwork: true\n",
        "  hostNetwork: true\n  nodeSelector: {disk: none}\n",
    );
    let greedy = host_pod_manifest(
        "greedy",
        &node,
        "exec sleep 3600",
        "    resources: {requests: {cpu: \"1000\"}}\n",
    );
    let fine = host_pod_manifest("fine", &node, "exec sleep 3600", "");
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!("{elsewhere}---\n{greedy}---\n{fine}")),
    );
    let p = failed(&s, "elsewhere");
    assert_eq!(p["status"]["reason"], "NodeAffinity", "{}", p["status"]);
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    );
    let p = failed(&s, "greedy");
    assert_eq!(p["status"]["reason"], "OutOfcpu", "{}", p["status"]);
    let msg = p["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: "
        ),
        "{msg}"
    );
    eventually(Duration::from_secs(30), EVERY, "fine Running", || {
        (pod(&s, "fine")?["status"]["phase"] == "Running").then_some(())
    });
    assert!(!events(&s, "greedy", "OutOfcpu").is_empty());

    // Under DiskPressure a new pod is refused; the running one is evicted (hard threshold).
    let fill = fill_to_40_percent(&s);
    eventually(Duration::from_secs(30), EVERY, "DiskPressure", || {
        disk_pressure(&s, &node).then_some(())
    });
    let late = host_pod_manifest(
        "late",
        &node,
        "exec sleep 3600",
        "    resources: {requests: {memory: 10Mi}}\n",
    );
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&late));
    let p = failed(&s, "late");
    assert_eq!(p["status"]["reason"], "Evicted", "{}", p["status"]);
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: The node had condition: [DiskPressure]. "
    );
    let ev = eventually(Duration::from_secs(10), EVERY, "Evicted event", || {
        events(&s, "late", "Evicted").pop()
    });
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["message"], "The node had condition: [DiskPressure]. ");
    assert!(
        pod(&s, "late").unwrap()["status"]["containerStatuses"].is_null(),
        "a refused pod never starts"
    );
    std::fs::remove_file(&fill).unwrap();
    eprintln!("node_refuses_pods_it_cannot_admit: {:?}", began.elapsed());
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

/// A soft threshold sets the condition at once but evicts only after its grace period, and
/// the evicted pod gets `--eviction-max-pod-grace-period`, not its own 60 s, to stop.
#[test]
fn soft_threshold_evicts_after_its_grace_period() {
    let began = Instant::now();
    let (s, _cleanup, node) = server_on_tmpfs(
        "soft",
        &[
            "--eviction-hard=",
            "--eviction-soft=nodefs.available<50%",
            "--eviction-soft-grace-period=nodefs.available=20s",
            "--eviction-max-pod-grace-period=2",
            "--eviction-minimum-reclaim=nodefs.available=1Mi",
            "--eviction-pressure-transition-period=0s",
        ],
    );
    ready_node(&s, &node);
    // Ignores SIGTERM: only the kill at the end of its grace period stops it.
    let stubborn = host_pod_manifest(
        "stubborn",
        &node,
        "trap '' TERM; while true; do sleep 1; done",
        "",
    )
    .replace(
        "terminationGracePeriodSeconds: 1",
        "terminationGracePeriodSeconds: 60",
    );
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&stubborn));
    let uid = eventually(Duration::from_secs(30), EVERY, "stubborn Running", || {
        let p = pod(&s, "stubborn")?;
        (p["status"]["phase"] == "Running")
            .then(|| p["metadata"]["uid"].as_str().unwrap().to_string())
    });

    let fill = fill_to_40_percent(&s);
    eventually(Duration::from_secs(30), EVERY, "DiskPressure", || {
        disk_pressure(&s, &node).then_some(())
    });
    let pressured = Instant::now();
    let p = failed(&s, "stubborn");
    let waited = pressured.elapsed();
    assert!(
        waited >= Duration::from_secs(15),
        "evicted {waited:?} after the condition, before the 20 s grace period"
    );
    assert_eq!(p["status"]["reason"], "Evicted", "{}", p["status"]);
    let msg = p["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("The node was low on resource: ephemeral-storage."),
        "{msg}"
    );
    let evicted = Instant::now();
    eventually(
        Duration::from_secs(30),
        EVERY,
        "stubborn's container stopped",
        || (!running_containers(&s, &uid)).then_some(()),
    );
    let stopped = evicted.elapsed();
    assert!(
        stopped < Duration::from_secs(20),
        "stopping took {stopped:?}: the max pod grace period (2 s) applies, not the pod's 60 s"
    );
    std::fs::remove_file(&fill).unwrap();
    eprintln!(
        "soft_threshold_evicts_after_its_grace_period: {:?}",
        began.elapsed()
    );
}

/// `/spec` through the API server's node proxy: cAdvisor's MachineInfo of this machine.
fn check_spec(s: &Server, node: &str) {
    let path = format!("/api/v1/nodes/{node}/proxy/spec");
    let spec: Value = serde_json::from_str(&s.ok(LATEST, &["get", "--raw", &path])).unwrap();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u64;
    assert_eq!(spec["num_cores"], cores, "{spec}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(spec["memory_capacity"], kib * 1024, "{spec}");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(spec["boot_id"], boot_id.trim());
    assert!(spec["machine_id"].is_string() && spec["system_uuid"].is_string());
    let fs = spec["filesystems"].as_array().expect("filesystems");
    assert!(
        fs.iter().all(
            |f| f["device"].as_str().is_some_and(|d| d.starts_with("/dev/"))
                && f["capacity"].as_u64().is_some()
        ),
        "{spec}"
    );
}

/// `/spec` on a simulated node too (the API server's kubelet client needs `nodes/spec`).
#[test]
fn spec_is_served_by_simulated_nodes() {
    let began = Instant::now();
    let s = Server::start(bin());
    let node = format!("specfake-{}", std::process::id());
    let _agent = Agent::start(bin(), &s, &["--node-name", &node]);
    ready_node(&s, &node);
    check_spec(&s, &node);
    eprintln!("spec_is_served_by_simulated_nodes: {:?}", began.elapsed());
}

//! End-to-end (root, real containerd and runc): the kubelet's housekeeping, as upstream's
//! `HandlePodCleanups` — a pod deleted while its node's agent was down has its containers
//! killed and removed, its volumes unmounted and its pod and log directories removed when
//! the agent comes back, while a pod still in the API is adopted untouched; stray pod and
//! log directories of pods nobody knows go too. And a node whose address changes reports
//! the new one as its pods' `status.hostIP` (existing pods and new ones, whose downward API
//! `status.hostIP` sees it too). A crash-looping container keeps only its newest dead attempt
//! (upstream's container GC, `MaxPerPodContainer` 1).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use distro_testharness::cluster::{Cluster, Options};
use distro_testharness::node::{install_images, pod, runtime_containers, start_agent, BUSYBOX};
use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(100);

/// Mount points under `dir` (this process shares the agent's mount namespace).
fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// A pod with a disk and a memory emptyDir and a configMap volume (plus the service account
/// token volume the API server adds), writing to its log.
fn volume_pod(node: &str, name: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 30
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: fast, emptyDir: {{medium: Memory}}}}
  - {{name: cfg, configMap: {{name: cfg}}}}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo started > /scratch/x; echo started > /fast/x; echo greeting=$(cat /cfg/greeting); exec sleep 3600"]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: fast, mountPath: /fast}}
    - {{name: cfg, mountPath: /cfg}}
"#
    )
}

/// `<log root>/default_<name>_<uid>`.
fn log_dir(data: &Path, name: &str, uid: &str) -> PathBuf {
    data.join(format!("agent/logs/pods/default_{name}_{uid}"))
}

#[test]
fn a_pod_deleted_while_the_node_was_down_is_cleaned_up_and_others_are_adopted() {
    let began = Instant::now();
    let s = Server::start(bin());
    let node = format!("hk-{}", std::process::id());
    let bridge = format!("dh{}", std::process::id() % 10_000_000);
    let (mut a, cleanup) = start_agent(
        bin(),
        &s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &node,
        &bridge,
        &[],
    );
    let data = a.data_dir();
    let pods_dir = data.join("agent/kubelet/pods");

    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: default}}\ndata: {{greeting: hello}}\n{}{}",
            volume_pod(&node, "doomed"),
            volume_pod(&node, "kept"),
        )),
    );
    let running = |name: &str| {
        let p = pod(&s, name)?;
        let cs = &p["status"]["containerStatuses"][0];
        cs["state"]["running"].is_object().then_some(p)
    };
    let doomed = eventually(Duration::from_secs(60), EVERY, "doomed Running", || {
        running("doomed")
    });
    let kept = eventually(Duration::from_secs(30), EVERY, "kept Running", || {
        running("kept")
    });
    let uid = |p: &Value| p["metadata"]["uid"].as_str().expect("uid").to_string();
    let (doomed_uid, kept_uid) = (uid(&doomed), uid(&kept));
    let kept_id = kept["status"]["containerStatuses"][0]["containerID"].clone();
    let doomed_dir = pods_dir.join(&doomed_uid);
    let doomed_logs = log_dir(&data, "doomed", &doomed_uid);
    eventually(Duration::from_secs(10), EVERY, "doomed logged", || {
        std::fs::read_dir(doomed_logs.join("main"))
            .ok()?
            .next()
            .map(|_| ())
    });
    assert!(doomed_dir.join("volumes").is_dir());
    // The memory emptyDir and the token volume are tmpfs mounts.
    assert!(
        mounts_under(&doomed_dir).len() >= 2,
        "{:?}",
        mounts_under(&doomed_dir)
    );

    // The node goes down (its containers keep running), and meanwhile the pod is deleted.
    let status = a.stop();
    assert!(status.success(), "{}", a.log());
    s.ok(
        LATEST,
        &["delete", "pod", "doomed", "--force", "--grace-period=0"],
    );
    eventually(Duration::from_secs(10), EVERY, "doomed gone", || {
        pod(&s, "doomed").is_none().then_some(())
    });
    // Leftovers of pods nobody knows any more: a pod dir without volumes, a log dir
    // without a pod dir.
    let stray_uid = "0badc0de-0000-4000-8000-000000000001";
    let stray_dir = pods_dir.join(stray_uid);
    std::fs::create_dir_all(stray_dir.join("containers/main")).unwrap();
    std::fs::write(stray_dir.join("etc-hosts"), "127.0.0.1 localhost\n").unwrap();
    let stray_logs = log_dir(&data, "ghost", stray_uid);
    std::fs::create_dir_all(stray_logs.join("main")).unwrap();
    std::fs::write(stray_logs.join("main/0.log"), "old\n").unwrap();

    a.start_again();
    let socket = cleanup.socket().expect("containerd socket");
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(250),
        "the deleted pod's containers, mounts and directories removed",
        || {
            let containers = runtime_containers(&socket, &doomed_uid, "container");
            let sandboxes = runtime_containers(&socket, &doomed_uid, "sandbox");
            let mounts = mounts_under(&doomed_dir);
            let left = (
                containers.is_empty(),
                sandboxes.is_empty(),
                mounts.is_empty(),
                !doomed_dir.exists(),
                !doomed_logs.exists(),
                !stray_dir.exists(),
                !stray_logs.exists(),
            );
            (left == (true, true, true, true, true, true, true)).then_some(())
        },
    );
    // The pod still in the API was adopted: same container, not restarted, files kept.
    let kept = pod(&s, "kept").expect("kept");
    let cs = &kept["status"]["containerStatuses"][0];
    assert_eq!(cs["containerID"], kept_id, "adopted, not replaced: {cs}");
    assert_eq!(cs["restartCount"], 0, "{cs}");
    assert_eq!(runtime_containers(&socket, &kept_uid, "container").len(), 1);
    assert!(pods_dir.join(&kept_uid).join("volumes").is_dir());
    assert!(log_dir(&data, "kept", &kept_uid).is_dir());
    assert!(
        mounts_under(&pods_dir.join(&kept_uid)).len() >= 2,
        "the kept pod's mounts stay"
    );
    let logs = s.ok(LATEST, &["logs", "kept"]);
    assert!(logs.contains("greeting=hello"), "{logs}");

    s.ok(LATEST, &["delete", "pod", "kept", "--wait=false"]);
    eventually(Duration::from_secs(60), EVERY, "kept gone", || {
        (pod(&s, "kept").is_none() && !pods_dir.join(&kept_uid).exists()).then_some(())
    });
    let status = a.stop();
    assert!(status.success(), "{}", a.log());
    eprintln!("housekeeping e2e took {:?}", began.elapsed());
    drop(cleanup);
}

/// A pod reporting its downward API `status.hostIP`.
fn host_ip_pod(node: &str, name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo host=$HOST_IP; exec sleep 3600"]
    env:
    - name: HOST_IP
      valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}
"#
    )
}

#[test]
fn pods_report_the_nodes_current_address_as_host_ip() {
    let began = Instant::now();
    let c = Cluster::start(
        bin(),
        Options {
            nodes: 1,
            server_args: vec![],
            agent_args: vec![],
            ipv6: false,
            detect_node_ip: true,
        },
        |data| install_images(Path::new(env!("CARGO_TARGET_TMPDIR")), data),
    );
    c.wait_ready(Duration::from_secs(60));
    let (s, n) = (&c.server, &c.nodes[0]);
    let old_ip = n.ip.clone();
    let host_ips = |name: &str| -> Option<(String, Vec<String>)> {
        let p = pod(s, name)?;
        p["status"]["containerStatuses"][0]["state"]["running"].as_object()?;
        let ip = p["status"]["hostIP"].as_str()?.to_string();
        let ips = p["status"]["hostIPs"]
            .as_array()?
            .iter()
            .filter_map(|i| i["ip"].as_str().map(str::to_string))
            .collect();
        Some((ip, ips))
    };
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&host_ip_pod(&n.name, "before")),
    );
    let (ip, ips) = eventually(Duration::from_secs(60), EVERY, "before Running", || {
        host_ips("before")
    });
    assert_eq!((ip, ips), (old_ip.clone(), vec![old_ip.clone()]));

    // DHCP hands the node another address.
    let new_ip = format!("{}.52", distro_testharness::cluster::LAN_PREFIX);
    for args in [
        [
            "-n",
            &n.netns.name,
            "addr",
            "del",
            &format!("{old_ip}/24"),
            "dev",
            "eth0",
        ],
        [
            "-n",
            &n.netns.name,
            "addr",
            "add",
            &format!("{new_ip}/24"),
            "dev",
            "eth0",
        ],
    ] {
        assert!(Command::new("ip").args(args).status().unwrap().success());
    }
    // The running pod's status follows.
    eventually(
        Duration::from_secs(30),
        EVERY,
        "before's hostIP updated",
        || {
            let (ip, ips) = host_ips("before")?;
            (ip == new_ip && ips == vec![new_ip.clone()]).then_some(())
        },
    );
    // A new pod gets the new address, in its status and in its environment.
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&host_ip_pod(&n.name, "after")),
    );
    let (ip, ips) = eventually(Duration::from_secs(60), EVERY, "after Running", || {
        host_ips("after")
    });
    assert_eq!((ip, ips), (new_ip.clone(), vec![new_ip.clone()]));
    let logs = eventually(Duration::from_secs(30), EVERY, "after's log", || {
        let out = s.kubectl(LATEST, &["logs", "after"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.contains("host=")).then_some(text)
    });
    assert!(logs.contains(&format!("host={new_ip}")), "{logs}");
    s.ok(LATEST, &["delete", "pods", "--all", "--wait=false"]);
    eventually(Duration::from_secs(30), EVERY, "pods gone", || {
        s.ok(LATEST, &["get", "pods", "--no-headers"])
            .trim()
            .is_empty()
            .then_some(())
    });
    eprintln!("host IP test took {:?}", began.elapsed());
}

#[test]
fn a_crash_looping_container_keeps_only_its_newest_dead_attempt() {
    let began = Instant::now();
    let s = Server::start(bin());
    let node = format!("gc-{}", std::process::id());
    let bridge = format!("dg{}", std::process::id() % 10_000_000);
    let (mut a, cleanup) = start_agent(
        bin(),
        &s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &node,
        &bridge,
        &[],
    );
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: crash, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo attempt; exit 1"]
"#
        )),
    );
    // Three attempts: 0, then 1 after 10 s of back-off, then 2 after 20 s more.
    let p = eventually(
        Duration::from_secs(90),
        EVERY,
        "crash restarted twice",
        || {
            let p = pod(&s, "crash")?;
            (p["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 2).then_some(p)
        },
    );
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let socket = cleanup.socket().expect("containerd socket");
    let logs = log_dir(&a.data_dir(), "crash", &uid).join("main");
    let files = || -> Vec<String> {
        let mut f: Vec<String> = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        f.sort();
        f
    };
    // At most the newest dead attempt beside the current one, in containerd and on disk;
    // the first attempt is gone.
    eventually(
        Duration::from_secs(20),
        EVERY,
        "old attempts removed",
        || {
            let containers = runtime_containers(&socket, &uid, "container");
            let f = files();
            (containers.len() <= 2 && f.len() <= 2 && !f.contains(&"0.log".to_string()))
                .then_some(())
        },
    );
    // The restart count and the previous attempt's state and logs survive.
    let p = pod(&s, "crash").expect("crash");
    let cs = &p["status"]["containerStatuses"][0];
    assert!(cs["restartCount"].as_i64() >= Some(2), "{cs}");
    let out = s.kubectl(LATEST, &["logs", "crash", "--previous"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("attempt"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.ok(LATEST, &["delete", "pod", "crash", "--wait=false"]);
    eventually(Duration::from_secs(30), EVERY, "crash gone", || {
        pod(&s, "crash").is_none().then_some(())
    });
    let status = a.stop();
    assert!(status.success(), "{}", a.log());
    eprintln!("container GC test took {:?}", began.elapsed());
    drop(cleanup);
}

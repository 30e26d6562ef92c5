//! End-to-end (root, real containerd and runc): the kubelet behaviours of issue 4 that
//! kubelet.rs, probes.rs and logs.rs leave out — a container over its memory limit is
//! OOMKilled (exit 137, the limit really in its cgroup) and crash-loops with upstream's
//! CrashLoopBackOff message and BackOff events; configMap and secret volumes (whole, with
//! `items` and `defaultMode`) follow `kubectl apply` within seconds while a `subPath` mount
//! keeps its first content, as upstream.

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::node::{events, pod, Node, BUSYBOX};
use distro_testharness::{eventually, Server, LATEST};

const EVERY: Duration = Duration::from_millis(100);

/// The memory limit of the `oom` pod: 20Mi.
const LIMIT: u64 = 20 * 1024 * 1024;

/// A pod that prints its cgroup's memory limit, then grows its shell (PID 1 of the container)
/// past the limit by reading 100 MiB into a variable: the kernel's OOM killer picks it.
fn oom_pod(node: &str) -> String {
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; x=$(head -c 100m /dev/zero | tr '\\0' a); echo survived ${#x}";
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: oom, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {script:?}]
    resources: {{limits: {{memory: 20Mi}}}}
"#
    )
}

/// A ConfigMap and a Secret with `value`.
fn sources(value: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg, namespace: default}}
data: {{greeting: {value}, other: other-{value}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec, namespace: default}}
stringData: {{token: secret-{value}}}
"#
    )
}

/// A pod mounting the ConfigMap whole, through `items` with a `defaultMode`, one key by
/// `subPath`, and the Secret.
fn volumes_pod(node: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: vols, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: whole, configMap: {{name: cfg}}}}
  - name: picked
    configMap:
      name: cfg
      defaultMode: 0400
      items: [{{key: greeting, path: sub/greet.txt}}]
  - {{name: sec, secret: {{secretName: sec}}}}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: whole, mountPath: /cfg}}
    - {{name: picked, mountPath: /items}}
    - {{name: whole, mountPath: /sub/greeting, subPath: greeting}}
    - {{name: sec, mountPath: /sec}}
"#
    )
}

/// `cat` of `paths` inside the `vols` pod, one line each (`-` for a missing file).
fn read_files(s: &Server, paths: &[&str]) -> Option<Vec<String>> {
    let script = paths
        .iter()
        .map(|p| format!("echo $(cat {p} 2>/dev/null || echo -)"))
        .collect::<Vec<_>>()
        .join("; ");
    let out = s.kubectl(LATEST, &["exec", "vols", "--", "sh", "-c", &script]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    })
}

fn check_oom(s: &Server) {
    // OOMKilled with 137, as containerd reports it, and restarts that back off.
    let p = eventually(
        Duration::from_secs(60),
        EVERY,
        "oom restarted twice in CrashLoopBackOff",
        || {
            let p = pod(s, "oom")?;
            let cs = &p["status"]["containerStatuses"][0];
            (cs["restartCount"].as_i64()? >= 2
                && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff")
                .then_some(p)
        },
    );
    let cs = &p["status"]["containerStatuses"][0];
    let last = &cs["lastState"]["terminated"];
    assert_eq!(last["reason"], "OOMKilled", "{cs}");
    assert_eq!(last["exitCode"], 137, "{cs}");
    assert!(last["finishedAt"].is_string(), "{cs}");
    assert_eq!(p["status"]["qosClass"], "Burstable");
    assert_eq!(p["status"]["phase"], "Running");

    // Upstream's messages: the waiting state and the BackOff event.
    let uid = p["metadata"]["uid"].as_str().expect("uid");
    let message = cs["state"]["waiting"]["message"].as_str().expect("message");
    let suffix = format!(" restarting failed container=main pod=oom_default({uid})");
    assert!(
        ["10s", "20s", "40s"]
            .iter()
            .any(|d| message == format!("back-off {d}{suffix}")),
        "{message}"
    );
    let want = format!("Back-off restarting failed container main in pod oom_default({uid})");
    eventually(Duration::from_secs(10), EVERY, "BackOff event", || {
        events(s, "oom")
            .iter()
            .any(|(r, m)| r == "BackOff" && *m == want)
            .then_some(())
    });

    // The limit really was the container's cgroup's: it printed it before dying.
    let previous = s.ok(LATEST, &["logs", "oom", "--previous"]);
    assert_eq!(previous.lines().next(), Some(LIMIT.to_string().as_str()));
    assert!(!previous.contains("survived"), "{previous}");

    // The restart count keeps growing.
    let before = cs["restartCount"].as_i64().unwrap();
    eventually(
        Duration::from_secs(60),
        EVERY,
        "oom restarted again",
        || {
            let p = pod(s, "oom")?;
            (p["status"]["containerStatuses"][0]["restartCount"].as_i64()? > before).then_some(())
        },
    );
}

fn check_volumes(s: &Server) {
    let paths = [
        "/cfg/greeting",
        "/cfg/other",
        "/items/sub/greet.txt",
        "/sub/greeting",
        "/sec/token",
    ];
    eventually(Duration::from_secs(30), EVERY, "vols Running", || {
        let p = pod(s, "vols")?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    let first = eventually(Duration::from_secs(10), EVERY, "vols files", || {
        read_files(s, &paths)
    });
    assert_eq!(
        first,
        ["one", "other-one", "one", "one", "secret-one"],
        "{first:?}"
    );

    // Projections as upstream's AtomicWriter writes them: keys are symlinks into `..data`,
    // itself a symlink to a timestamped directory; `items` place keys at their paths only,
    // with `defaultMode` on the files.
    let layout = s.ok(
        LATEST,
        &[
            "exec",
            "vols",
            "--",
            "sh",
            "-c",
            "readlink /cfg/greeting; readlink /cfg/..data; ls /items; stat -L -c %a /items/sub/greet.txt; stat -L -c %a /cfg/greeting",
        ],
    );
    let lines: Vec<&str> = layout.lines().collect();
    assert_eq!(lines[0], "..data/greeting", "{layout}");
    assert!(lines[1].starts_with("..20"), "{layout}");
    assert_eq!(lines[2], "sub", "{layout}");
    assert_eq!(lines[3], "400", "{layout}");
    assert_eq!(lines[4], "644", "{layout}");

    // `kubectl apply` changes both sources: every projection follows, the subPath does not.
    let t0 = Instant::now();
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&sources("two")));
    let seen = eventually(Duration::from_secs(30), EVERY, "update seen", || {
        let now = read_files(s, &paths)?;
        (now[0] == "two" && now[1] == "other-two" && now[2] == "two" && now[4] == "secret-two")
            .then_some(now)
    });
    let took = t0.elapsed();
    eprintln!("configMap and secret updates reached the container in {took:?}");
    assert!(took < Duration::from_secs(10), "update took {took:?}");
    assert_eq!(seen[3], "one", "a subPath mount does not follow updates");
    let data = s.ok(LATEST, &["exec", "vols", "--", "readlink", "/cfg/..data"]);
    assert_ne!(data.trim(), lines[1], "a new timestamped directory");

    // A removed key disappears from the whole volume.
    s.ok(
        LATEST,
        &[
            "patch",
            "configmap",
            "cfg",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/data/other"}]"#,
        ],
    );
    eventually(Duration::from_secs(10), EVERY, "key removed", || {
        (read_files(s, &paths)?[1] == "-").then_some(())
    });
}

#[test]
fn oom_kill_crash_loop_and_live_volume_updates() {
    let began = Instant::now();
    let node = Node::start(
        Path::new(env!("CARGO_BIN_EXE_distro")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "kmore",
        &[],
    );
    let s = &node.server;
    let n = &node.name;
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            "{}{}{}",
            sources("one"),
            oom_pod(n),
            volumes_pod(n)
        )),
    );

    check_volumes(s);
    check_oom(s);

    s.ok(LATEST, &["delete", "pods", "--all", "--wait=false"]);
    eventually(Duration::from_secs(30), EVERY, "pods gone", || {
        s.ok(LATEST, &["get", "pods", "--no-headers"])
            .trim()
            .is_empty()
            .then_some(())
    });
    eprintln!("kubelet_more e2e took {:?}", began.elapsed());
    drop(node);
}

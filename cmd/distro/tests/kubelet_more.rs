//! End-to-end (root, real containerd and runc): the kubelet behaviours of issue 4 that
//! kubelet.rs, probes.rs and logs.rs leave out — a container over its memory limit is
//! OOMKilled (exit 137, the limit really in its cgroup) and crash-loops with upstream's
//! CrashLoopBackOff message and BackOff events; configMap and secret volumes (whole, with
//! `items` and `defaultMode`) follow `kubectl apply` within seconds while a `subPath` mount
//! keeps its first content, as upstream; container logs rotate by `--container-log-max-size`
//! into timestamped, then gzipped files, at most `--container-log-max-files`, while
//! `kubectl logs` (also `-f` across a rotation, and `--previous`) reads on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use distro_testharness::get::ready_node;
use distro_testharness::node::{events, follow_logs, pod, start_agent, BUSYBOX};
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
    // OOMKilled with 137, as containerd reports it, then CrashLoopBackOff.
    let p = eventually(
        Duration::from_secs(60),
        EVERY,
        "oom in CrashLoopBackOff",
        || {
            let p = pod(s, "oom")?;
            let cs = &p["status"]["containerStatuses"][0];
            (cs["state"]["waiting"]["reason"] == "CrashLoopBackOff").then_some(p)
        },
    );
    let cs = &p["status"]["containerStatuses"][0];
    let last = &cs["lastState"]["terminated"];
    assert_eq!(last["reason"], "OOMKilled", "{cs}");
    assert_eq!(last["exitCode"], 137, "{cs}");
    assert!(last["finishedAt"].is_string(), "{cs}");
    assert_eq!(p["status"]["qosClass"], "Burstable");
    assert_eq!(p["status"]["phase"], "Running");

    // Upstream's messages: the waiting state and the BackOff event. As upstream, the first
    // restart is immediate, then the backoff starts at 10 s and doubles per restart.
    let uid = p["metadata"]["uid"].as_str().expect("uid");
    let restarts = cs["restartCount"].as_u64().expect("restartCount");
    assert!((1..=4).contains(&restarts), "{cs}");
    let backoff = 10u64 << (restarts - 1);
    let message = cs["state"]["waiting"]["message"].as_str().expect("message");
    assert_eq!(
        message,
        format!("back-off {backoff}s restarting failed container=main pod=oom_default({uid})")
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

    // The restart count grows once the backoff is over, and the next attempt is OOMKilled
    // too.
    let deadline = Duration::from_secs(backoff + 60);
    eventually(deadline, EVERY, "oom restarted again", || {
        let p = pod(s, "oom")?;
        let cs = &p["status"]["containerStatuses"][0];
        (cs["restartCount"].as_u64()? > restarts
            && cs["lastState"]["terminated"]["reason"] == "OOMKilled")
            .then_some(())
    });
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

/// The node's log rotation flags: small files, checked often.
const ROTATION: [&str; 3] = [
    "--container-log-max-size=4Ki",
    "--container-log-max-files=3",
    "--container-log-monitor-interval=3s",
];

/// A pod writing numbered lines (about 4 KiB/s): its first instance stops after 300 lines
/// with `bye-1`, the second runs on.
fn chatty_pod(node: &str) -> String {
    let script = "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; i=0; \
        while [ $n -ge 2 ] || [ $i -lt 300 ]; do i=$((i+1)); \
        echo line-$i-0123456789abcdefghijklmnopqrstuvwxyz; usleep 20000; done; echo bye-$n; exit 1";
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: chatty, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  volumes: [{{name: d, emptyDir: {{}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: d, mountPath: /d}}]
"#
    )
}

/// The numbers of `line-N-...` lines (`bye-` lines left out); anything else fails.
fn line_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| !l.starts_with("bye-"))
        .map(|l| {
            l.strip_prefix("line-")
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected log line {l:?}"))
        })
        .collect()
}

fn assert_contiguous(numbers: &[u64], what: &str) {
    assert!(!numbers.is_empty(), "{what}: no lines");
    for w in numbers.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{what}: a gap or repeat at {w:?}");
    }
}

/// Names of `<attempt>.log*` files in `dir`, leaving out `.tmp` files of a compression
/// in progress.
fn log_files(dir: &Path, attempt: u32) -> Vec<String> {
    let prefix = format!("{attempt}.log");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && !n.ends_with(".tmp"))
        .collect();
    v.sort();
    v
}

fn check_rotation(s: &Server, logs: &Path) {
    // The first instance's lines end with bye-1, read back through --previous.
    let p = eventually(Duration::from_secs(60), EVERY, "chatty restarted", || {
        let p = pod(s, "chatty")?;
        let cs = &p["status"]["containerStatuses"][0];
        (cs["restartCount"].as_i64()? >= 1 && cs["state"]["running"].is_object()).then_some(p)
    });
    let uid = p["metadata"]["uid"].as_str().expect("uid");
    let dir = logs.join(format!("default_chatty_{uid}/main"));
    let previous = s.ok(LATEST, &["logs", "chatty", "--previous"]);
    assert_eq!(previous.lines().last(), Some("bye-1"), "{previous}");
    // A rotation just before the exit may have left only the last lines in the file.
    let numbers = line_numbers(&previous);
    if !numbers.is_empty() {
        assert_eq!(numbers.last(), Some(&300));
        assert_contiguous(&numbers, "--previous");
    }

    // The running instance's log rotates: a plain newest rotation, older ones gzipped,
    // never more than 3 files.
    let files = eventually(
        Duration::from_secs(60),
        EVERY,
        "rotated and gzipped",
        || {
            let files = log_files(&dir, 1);
            assert!(files.len() <= 3, "{files:?}");
            let gz = files.iter().filter(|f| f.ends_with(".gz")).count();
            (gz == 1 && files.len() == 3).then_some(files)
        },
    );
    assert_eq!(files[0], "1.log", "{files:?}");
    for rotated in &files[1..] {
        let stamp = rotated.trim_start_matches("1.log.").trim_end_matches(".gz");
        assert!(
            stamp.len() == 15
                && stamp.as_bytes()[8] == b'-'
                && stamp.chars().filter(char::is_ascii_digit).count() == 14,
            "{rotated}"
        );
    }
    let gz = files.iter().find(|f| f.ends_with(".gz")).unwrap();
    let unzipped = Command::new("gzip")
        .arg("-dc")
        .arg(dir.join(gz))
        .output()
        .expect("gzip");
    let text = String::from_utf8_lossy(&unzipped.stdout);
    assert!(
        unzipped.status.success() && text.lines().all(|l| l.contains(" stdout F line-")),
        "{text}"
    );
    let size = std::fs::metadata(dir.join("1.log")).map_or(0, |m| m.len());
    assert!(size < 64 * 1024, "current file {size} bytes");

    // `kubectl logs` shows the current file only: its first lines were rotated away.
    let current = line_numbers(&s.ok(LATEST, &["logs", "chatty"]));
    assert!(current[0] > 1, "{:?}", &current[..3]);
    assert_contiguous(&current, "kubectl logs");

    // `kubectl logs -f` goes on across a rotation without losing or repeating lines.
    let newest = |files: &[String]| files.iter().find(|f| !f.ends_with(".gz")).cloned();
    let rotated_before = newest(&files[1..]);
    let (mut child, rx) = follow_logs(s, LATEST, &["--tail=1", "chatty"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("kubectl logs -f stalled");
        seen.extend(line_numbers(&line.expect("kubectl logs -f ended")));
        let files = log_files(&dir, 1);
        assert!(files.len() <= 3, "{files:?}");
        // A rotation since the follow began, and lines written after it.
        if newest(&files[1..]) != rotated_before && seen.len() > 300 {
            break;
        }
        assert!(Instant::now() < deadline, "no rotation while following");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_contiguous(&seen, "kubectl logs -f");
    eprintln!("followed {} lines across a rotation", seen.len());
}

#[test]
fn oom_kill_crash_loop_live_volume_updates_and_log_rotation() {
    let began = Instant::now();
    let bin = Path::new(env!("CARGO_BIN_EXE_distro"));
    let server = Server::start(bin);
    let s = &server;
    let node = format!("kmore-{}", std::process::id());
    let n = &node;
    let bridge = format!("dr{}", std::process::id() % 10_000_000);
    let (agent, cleanup) = start_agent(
        bin,
        s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        n,
        &bridge,
        &ROTATION,
    );
    ready_node(s, n);
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            "{}{}{}{}",
            sources("one"),
            oom_pod(n),
            volumes_pod(n),
            chatty_pod(n)
        )),
    );

    check_volumes(s);
    check_oom(s);
    let logs: PathBuf = agent.data_dir().join("agent/logs/pods");
    check_rotation(s, &logs);

    s.ok(LATEST, &["delete", "pods", "--all", "--wait=false"]);
    eventually(Duration::from_secs(30), EVERY, "pods gone", || {
        s.ok(LATEST, &["get", "pods", "--no-headers"])
            .trim()
            .is_empty()
            .then_some(())
    });
    // As upstream, a removed pod's log directory goes with it, rotated files included.
    eventually(
        Duration::from_secs(30),
        EVERY,
        "pod log directories removed",
        || {
            let left: Vec<_> = std::fs::read_dir(&logs)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            left.is_empty().then_some(())
        },
    );
    eprintln!("kubelet_more e2e took {:?}", began.elapsed());
    drop(cleanup);
    drop(agent);
}

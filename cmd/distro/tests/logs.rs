//! End-to-end (root, real containerd and runc): a containerd node serves the kubelet API —
//! `kubectl top` shows a busy pod's real CPU, `/metrics/cadvisor` and `/metrics` through
//! `nodes/proxy` — and `kubectl logs` reads its containers' CRI log files with every flag,
//! for kubectl 1.27 and the latest.

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::node::{follow_logs, Node, BUSYBOX};
use distro_testharness::{eventually, Server, LATEST};

const EVERY: Duration = Duration::from_millis(100);

/// The oldest kubectl the cluster supports.
const OLDEST: u32 = 27;

/// A pod on `node` (hostNetwork: no pod network needed) with `containers` and
/// `init` containers, each `(name, script)`.
fn pod(
    node: &str,
    name: &str,
    policy: &str,
    init: &[(&str, &str)],
    containers: &[(&str, &str)],
) -> String {
    let list = |cs: &[(&str, &str)]| {
        cs.iter()
            .map(|(n, script)| {
                format!(
                    "  - name: {n}\n    image: {BUSYBOX}\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {script:?}]\n    volumeMounts: [{{name: d, mountPath: /d}}]\n"
                )
            })
            .collect::<String>()
    };
    let init = if init.is_empty() {
        String::new()
    } else {
        format!("  initContainers:\n{}", list(init))
    };
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}
spec:
  nodeName: {node}
  hostNetwork: true
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: d, emptyDir: {{}}}}]
{init}  containers:
{}"#,
        list(containers)
    )
}

/// A line longer than containerd's 16 KiB record: written as a partial and a full record.
const LONG: usize = 20_000;

fn manifest(node: &str) -> String {
    let lines = format!(
        "head -c {LONG} /dev/zero | tr '\\0' x; echo; for i in 1 2 3 4 5; do echo line-$i; done; sleep 0.3; echo err-line >&2; exec sleep 3600"
    );
    [
        pod(node, "busy", "Always", &[], &[("spin", "while :; do :; done")]),
        pod(node, "lines", "Always", &[], &[("main", &lines)]),
        pod(
            node,
            "multi",
            "Always",
            &[("setup", "echo from-init")],
            &[("a", "echo from-a; exec sleep 3600"), ("b", "echo from-b; exec sleep 3600")],
        ),
        // Exits once, then runs: its previous instance's log stays readable.
        pod(
            node,
            "restarts",
            "Always",
            &[],
            &[(
                "main",
                "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo attempt-$n; [ $n -ge 2 ] || exit 1; exec sleep 3600",
            )],
        ),
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: absent, namespace: default}}\nspec:\n  nodeName: {node}\n  hostNetwork: true\n  containers:\n  - name: main\n    image: distro.test/absent:1\n    imagePullPolicy: Never\n"
        ),
        // A registry on a closed loopback port: the pull fails at once.
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: unpullable, namespace: default}}\nspec:\n  nodeName: {node}\n  hostNetwork: true\n  containers:\n  - name: main\n    image: 127.0.0.1:1/none:1\n    imagePullPolicy: Always\n"
        ),
    ]
    .concat()
}

/// Millicores of a `kubectl top` CPU column (`12m`, `1`).
fn millis(v: &str) -> u64 {
    v.strip_suffix('m')
        .map(|m| m.parse().unwrap_or(0))
        .unwrap_or_else(|| v.parse::<u64>().unwrap_or(0) * 1000)
}

/// Polls `kubectl top <args>` until the row starting with `first` shows CPU above zero.
fn top_shows_cpu(s: &Server, minor: u32, args: &[&str], first: &str) {
    let mut full = vec!["top"];
    full.extend_from_slice(args);
    eventually(
        Duration::from_secs(30),
        EVERY,
        &format!("kubectl 1.{minor} {full:?} with CPU > 0"),
        || {
            let out = s.kubectl(minor, &full);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.lines()
                .skip(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|r| r.first() == Some(&first))
                // `--containers` adds the container's name before the CPU column.
                .filter(|r| {
                    let cpu = if full.contains(&"--containers") { 2 } else { 1 };
                    r.len() > cpu && millis(r[cpu]) > 0
                })
                .map(|_| ())
        },
    );
}

#[test]
fn containerd_node_serves_metrics_and_logs() {
    let began = std::time::Instant::now();
    let node = Node::start(
        Path::new(env!("CARGO_BIN_EXE_distro")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "logs",
        &["--metrics-resolution=1s"],
    );
    let s = &node.server;
    let n = &node.name;
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&manifest(n)));

    // The Node publishes the kubelet's port, and the API server reaches it.
    let port = s.ok(
        LATEST,
        &[
            "get",
            "node",
            n,
            "-o",
            "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
        ],
    );
    assert!(port.trim().parse::<u16>().is_ok_and(|p| p > 0), "{port}");
    let healthz = s.ok(
        LATEST,
        &["get", "--raw", &format!("/api/v1/nodes/{n}/proxy/healthz")],
    );
    assert_eq!(healthz.trim(), "ok");

    // A busy loop's CPU is measured from its cgroup and reaches kubectl top.
    eventually(Duration::from_secs(30), EVERY, "busy Running", || {
        let t = s.ok(LATEST, &["get", "pod", "busy", "--no-headers"]);
        t.contains("Running").then_some(())
    });
    for minor in [OLDEST, LATEST] {
        top_shows_cpu(s, minor, &["pod", "busy"], "busy");
        top_shows_cpu(s, minor, &["pod", "busy", "--containers"], "busy");
        top_shows_cpu(s, minor, &["node", n], n);
    }

    // cAdvisor's series with upstream's labels, through nodes/proxy.
    let uid = s.ok(
        LATEST,
        &["get", "pod", "busy", "-o", "jsonpath={.metadata.uid}"],
    );
    let cadvisor = s.ok(
        LATEST,
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{n}/proxy/metrics/cadvisor"),
        ],
    );
    let prefix = format!(
        "container_cpu_usage_seconds_total{{container=\"spin\",cpu=\"total\",id=\"/kubepods/besteffort/pod{}/",
        uid.trim()
    );
    let line = cadvisor
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{cadvisor}"));
    assert!(
        line.contains(&format!(",image=\"{BUSYBOX}\","))
            && line.contains(",namespace=\"default\",pod=\"busy\"}"),
        "{line}"
    );
    let seconds: f64 = line
        .split(' ')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(seconds > 0.0, "{line}");
    assert!(cadvisor.contains("container_memory_working_set_bytes{container=\"spin\","));
    assert!(cadvisor
        .contains("container_cpu_usage_seconds_total{container=\"\",cpu=\"total\",id=\"/\","));
    assert!(cadvisor.contains("\nmachine_cpu_cores "));

    // The kubelet's own metrics.
    let metrics = s.ok(
        LATEST,
        &["get", "--raw", &format!("/api/v1/nodes/{n}/proxy/metrics")],
    );
    assert!(
        metrics.contains(&format!("kubelet_node_name{{node=\"{n}\"}} 1\n")),
        "{metrics}"
    );
    assert!(metrics.contains("\nkubelet_running_pods "), "{metrics}");
    assert!(
        metrics.contains("\nprocess_resident_memory_bytes "),
        "{metrics}"
    );

    // /pods lists what is bound to the node.
    let pods: serde_json::Value = serde_json::from_str(&s.ok(
        LATEST,
        &["get", "--raw", &format!("/api/v1/nodes/{n}/proxy/pods")],
    ))
    .expect("pods JSON");
    assert_eq!(pods["kind"], "PodList");
    assert!(
        pods["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|p| p["metadata"]["name"] == "busy")),
        "{pods}"
    );

    // The summary names the pod and its container; from the second request on, the busy
    // loop's CPU rate (usageNanoCores) is most of a core.
    let summary = eventually(Duration::from_secs(10), EVERY, "a CPU rate", || {
        let raw = s.ok(
            LATEST,
            &[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{n}/proxy/stats/summary"),
            ],
        );
        let summary: serde_json::Value = serde_json::from_str(&raw).expect("summary JSON");
        let rate = summary["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == "busy")?["cpu"]["usageNanoCores"]
            .as_u64()?;
        (rate > 100_000_000).then_some(summary)
    });
    let busy = summary["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == "busy"))
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(busy["containers"][0]["name"], "spin");
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );

    check_logs(s, n);

    s.ok(LATEST, &["delete", "pod", "--all", "--wait=true"]);
    eprintln!(
        "containerd_node_serves_metrics_and_logs: {:?}",
        began.elapsed()
    );
}

fn logs(s: &Server, minor: u32, args: &[&str]) -> String {
    let mut full = vec!["logs"];
    full.extend_from_slice(args);
    s.ok(minor, &full)
}

fn logs_fail(s: &Server, minor: u32, args: &[&str]) -> String {
    let mut full = vec!["logs"];
    full.extend_from_slice(args);
    s.fails(minor, &full)
}

fn check_logs(s: &Server, n: &str) {
    let long = "x".repeat(LONG);
    let numbered: String = (1..=5).map(|i| format!("line-{i}\n")).collect();
    let all = format!("{long}\n{numbered}err-line\n");
    eventually(
        Duration::from_secs(30),
        EVERY,
        "lines' log complete",
        || {
            let out = s.kubectl(LATEST, &["logs", "lines"]);
            (String::from_utf8_lossy(&out.stdout) == all).then_some(())
        },
    );
    // The follow pods start now, so their second line is written after kubectl attached.
    let follow_pod = |name: &str| {
        pod(
            n,
            name,
            "Never",
            &[],
            &[("main", "echo first; sleep 5; echo second; sleep 1")],
        )
    };
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&(follow_pod("follow-old") + &follow_pod("follow-new"))),
    );

    for minor in [OLDEST, LATEST] {
        // Partial records joined, both streams, every option.
        assert_eq!(logs(s, minor, &["lines"]), all, "kubectl 1.{minor}");
        assert_eq!(logs(s, minor, &["lines", "-c", "main"]), all);
        assert_eq!(logs(s, minor, &["lines", "--tail=2"]), "line-5\nerr-line\n");
        assert_eq!(logs(s, minor, &["lines", "--tail=0"]), "");
        // The long line was written as two records and counts as one line.
        assert_eq!(logs(s, minor, &["lines", "--tail=7"]), all);
        assert_eq!(
            logs(s, minor, &["lines", "--limit-bytes=10"]),
            "x".repeat(10)
        );
        assert_eq!(logs(s, minor, &["lines", "--since=1h"]), all);
        assert_eq!(
            logs(s, minor, &["lines", "--since-time=2000-01-01T00:00:00Z"]),
            all
        );
        assert_eq!(
            logs(s, minor, &["lines", "--since-time=2099-01-01T00:00:00Z"]),
            ""
        );
        let stamped = logs(s, minor, &["lines", "--timestamps", "--tail=1"]);
        let (time, rest) = stamped.split_once(' ').expect("timestamp");
        assert_eq!(rest, "err-line\n");
        assert!(
            time.len() == 30 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
            "{stamped}"
        );
        assert!(
            time[..19]
                .bytes()
                .all(|b| b.is_ascii_digit() || b"-:T".contains(&b))
                && time[20..29].bytes().all(|b| b.is_ascii_digit()),
            "{time}"
        );
        assert_eq!(
            logs(s, minor, &["lines", "--prefix", "--tail=1"]),
            "[pod/lines/main] err-line\n"
        );
        assert_eq!(
            logs(s, minor, &["-l", "app=lines", "--tail=2"]),
            "line-5\nerr-line\n"
        );
        // Several containers: kubectl names them (its order varies by version).
        let mut every: Vec<String> = logs(s, minor, &["multi", "--all-containers", "--prefix"])
            .lines()
            .map(String::from)
            .collect();
        every.sort();
        assert_eq!(
            every,
            [
                "[pod/multi/a] from-a",
                "[pod/multi/b] from-b",
                "[pod/multi/setup] from-init"
            ]
        );
        assert_eq!(logs(s, minor, &["multi", "-c", "b"]), "from-b\n");
        // Upstream's errors.
        let err = logs_fail(s, minor, &["lines", "--previous"]);
        assert!(
            err.contains("previous terminated container \"main\" in pod \"lines\" not found"),
            "{err}"
        );
        // Upstream's wording for the two pull failures.
        eventually(
            Duration::from_secs(20),
            EVERY,
            "a pull failure's message",
            || {
                let err = logs_fail(s, minor, &["unpullable"]);
                let waiting = "container \"main\" in pod \"unpullable\" is waiting to start: ";
                (err.contains(&format!("{waiting}image can't be pulled"))
                    || err.contains(&format!("{waiting}trying and failing to pull image")))
                .then_some(())
            },
        );
        let err = logs_fail(s, minor, &["absent"]);
        assert!(
            err.contains(
                "container \"main\" in pod \"absent\" is waiting to start: ErrImageNeverPull"
            ),
            "{err}"
        );
        let err = s.fails(
            minor,
            &["get", "--raw", "/api/v1/namespaces/default/pods/multi/log"],
        );
        assert!(
            err.contains("a container name must be specified for pod multi, choose one of: [a b] or one of the init containers: [setup]"),
            "{err}"
        );
        let err = logs_fail(s, minor, &["lines", "-c", "nope"]);
        assert!(
            err.contains("container nope is not valid for pod lines"),
            "{err}"
        );
    }

    // -f sees a line written after it started, and ends when the container exits.
    for (minor, name) in [(OLDEST, "follow-old"), (LATEST, "follow-new")] {
        eventually(
            Duration::from_secs(20),
            EVERY,
            "follow pod's first line",
            || {
                let out = s.kubectl(LATEST, &["logs", name]);
                String::from_utf8_lossy(&out.stdout)
                    .starts_with("first\n")
                    .then_some(())
            },
        );
        let started = Instant::now();
        let (mut child, rx) = follow_logs(s, minor, &[name]);
        let next = || {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a line or EOF in time")
        };
        assert_eq!(next().as_deref(), Some("first"), "kubectl 1.{minor}");
        let before = logs(s, LATEST, &[name]);
        let second = next();
        if before.contains("second") {
            // Too slow to prove it: the line was already there when -f began.
            eprintln!(
                "{name}: second line written before -f attached ({:?})",
                started.elapsed()
            );
        }
        assert_eq!(second.as_deref(), Some("second"));
        assert_eq!(
            next(),
            None,
            "kubectl 1.{minor} logs -f ends when the container exits"
        );
        let status = child.wait().expect("kubectl exit");
        assert!(status.success(), "{status}");
    }

    // --previous reads the instance that exited before the restart.
    eventually(Duration::from_secs(40), EVERY, "restarts restarted", || {
        let out = s.kubectl(LATEST, &["logs", "restarts"]);
        (String::from_utf8_lossy(&out.stdout) == "attempt-2\n").then_some(())
    });
    for minor in [OLDEST, LATEST] {
        assert_eq!(logs(s, minor, &["restarts", "--previous"]), "attempt-1\n");
        assert_eq!(
            logs(s, minor, &["restarts", "-p", "--timestamps=false"]),
            "attempt-1\n"
        );
    }
}

/// Simulated nodes run no processes: `kubectl logs` says so instead of showing an empty log.
/// The API server's own checks (container choice, unscheduled pods, option validation)
/// answer before any kubelet is asked.
#[test]
fn simulated_nodes_and_apiserver_checks() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_distro"));
    let s = Server::start(bin);
    let _a = distro_testharness::Agent::start(bin, &s, &["--node-name", "sim"]);
    eventually(
        Duration::from_secs(30),
        EVERY,
        "simulated node Ready",
        || {
            let out = s.kubectl(LATEST, &["get", "node", "sim", "--no-headers"]);
            String::from_utf8_lossy(&out.stdout)
                .contains(" Ready")
                .then_some(())
        },
    );
    let pod = |name: &str, node: &str, containers: &[&str]| {
        let list: String = containers
            .iter()
            .map(|c| format!("  - {{name: {c}, image: {BUSYBOX}}}\n"))
            .collect();
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  {node}\n  containers:\n{list}"
        )
    };
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(
            &[
                pod("sim", "nodeName: sim", &["main"]),
                pod("two", "nodeName: sim", &["a", "b"]),
                pod("nowhere", "nodeSelector: {absent: label}", &["main"]),
            ]
            .concat(),
        ),
    );
    eventually(Duration::from_secs(20), EVERY, "sim Running", || {
        let out = s.kubectl(LATEST, &["get", "pod", "sim", "--no-headers"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("Running")
            .then_some(())
    });
    for minor in [OLDEST, LATEST] {
        let err = logs_fail(&s, minor, &["sim"]);
        assert!(
            err.contains("Error from server (BadRequest): container \"main\" in pod \"sim\" has no logs: this node's runtime is simulated and runs no processes"),
            "{err}"
        );
        let err = s.fails(
            minor,
            &["get", "--raw", "/api/v1/namespaces/default/pods/two/log"],
        );
        assert!(
            err.contains("a container name must be specified for pod two, choose one of: [a b]")
                && !err.contains("init containers"),
            "{err}"
        );
        let err = s.fails(
            minor,
            &[
                "get",
                "--raw",
                "/api/v1/namespaces/default/pods/sim/log?tailLines=-1",
            ],
        );
        assert!(
            err.contains("The PodLogOptions \"sim\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"),
            "{err}"
        );
        // Not scheduled: no log yet, and no error (as upstream).
        let raw = s.ok(
            minor,
            &[
                "get",
                "--raw",
                "/api/v1/namespaces/default/pods/nowhere/log",
            ],
        );
        assert_eq!(raw, "");
        let err = logs_fail(&s, minor, &["missing"]);
        assert!(err.contains("pods \"missing\" not found"), "{err}");
    }
}

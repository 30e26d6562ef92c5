//! Integration tests: node lifecycle and taint-based eviction, seen through real kubectl.
//! No kubelet runs here: the test creates Node objects, renews their Leases in
//! `kube-node-lease` as a kubelet would (a heartbeat thread) and stops renewing one to
//! simulate its loss.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(100);

fn now_micros() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A node reporting Ready, with room for pods, and its Lease.
fn add_node(s: &Server, name: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}}}\n"
    );
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&manifest));
    report_ready(s, name, "True");
    let lease = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {name}\n  leaseDurationSeconds: 40\n  renewTime: \"{}\"\n",
        now_micros()
    );
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&lease));
}

/// Posts the node's status as its kubelet would: Ready `status`, heartbeat now.
fn report_ready(s: &Server, name: &str, status: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let res = r#"{"cpu": "4", "memory": "8Gi", "pods": "110"}"#;
    let reason = if status == "True" {
        "KubeletReady"
    } else {
        "KubeletNotReady"
    };
    let patch = format!(
        r#"{{"status": {{"capacity": {res}, "allocatable": {res}, "conditions": [{{"type": "Ready", "status": "{status}", "reason": "{reason}", "message": "test node", "lastHeartbeatTime": "{now}", "lastTransitionTime": "{now}"}}]}}}}"#
    );
    s.ok(
        LATEST,
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
}

fn renew(s: &Server, name: &str) {
    let patch = format!(r#"{{"spec": {{"renewTime": "{}"}}}}"#, now_micros());
    let _ = s.kubectl(
        LATEST,
        &[
            "patch",
            "lease",
            name,
            "-n",
            "kube-node-lease",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
}

fn node(s: &Server, name: &str) -> Value {
    s.json(LATEST, &["get", "node", name])
}

fn condition(node: &Value, type_: &str) -> Value {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

fn taints(node: &Value) -> BTreeSet<(String, String)> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["key"].as_str().unwrap_or_default().to_string(),
                t["effect"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pods(s: &Server) -> Vec<Value> {
    let list = s.json(LATEST, &["get", "pods", "-l", "app=web"]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or_default()
}

fn live(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
}

/// Reports every live pod of app `web` Running and Ready, as a kubelet would.
fn settle(s: &Server) {
    settle_on(s, "");
}

/// [`settle`] for the pods of `node` only (every bound pod when empty): a lost node's pods
/// must keep the status the node lifecycle controller gives them.
fn settle_on(s: &Server, node: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let pods = pods(s);
    let bound = pods
        .iter()
        .filter(|p| live(p) && !node_of(p).is_empty() && (node.is_empty() || node_of(p) == node));
    for pod in bound {
        let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ]}});
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let _ = s.kubectl(
            LATEST,
            &[
                "patch",
                "pod",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ],
        );
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - {name: web, image: nginx}
";

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

#[test]
fn lost_node_turns_unknown_is_tainted_and_its_pods_move() {
    let s = Server::start_with(bin(), &["--node-monitor-grace-period=2s"]);
    let v = LATEST;
    let alive: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The kubelets' heartbeats: renew the Lease of every live node twice a second.
        let heartbeat = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let names: Vec<String> = alive.lock().unwrap().iter().cloned().collect();
                for n in names {
                    renew(&s, &n);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&s, v, &alive)));
        stop.store(true, Ordering::Relaxed);
        let _ = heartbeat.join();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
}

fn scenario(s: &Server, v: u32, alive: &Mutex<BTreeSet<String>>) {
    add_node(s, "n1");
    alive.lock().unwrap().insert("n1".into());
    s.ok_stdin(v, &["apply", "-f", "-"], Some(DEPLOYMENT));
    // Bound and Ready, as a kubelet would report them: the node lifecycle controller only
    // turns an existing Ready condition False.
    let first: Vec<String> = eventually(SOON, EVERY, "2 pods bound to n1 and Ready", || {
        settle(s);
        let p = pods(s);
        let ready = |p: &Value| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        };
        (p.len() == 2 && p.iter().all(|p| node_of(p) == "n1" && ready(p))).then(|| {
            p.iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        })
    });
    // DefaultTolerationSeconds: the pod's own toleration stays, not-ready gets 300 s.
    let pod = s.json(v, &["get", "pod", &first[0]]);
    let tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let seconds = |key: &str| {
        tolerations
            .iter()
            .find(|t| t["key"] == key && t["effect"] == "NoExecute")
            .map(|t| t["tolerationSeconds"].clone())
    };
    assert_eq!(
        seconds(UNREACHABLE),
        Some(Value::from(2)),
        "{tolerations:?}"
    );
    assert_eq!(
        seconds(NOT_READY),
        Some(Value::from(300)),
        "{tolerations:?}"
    );

    // A second node, alive; then n1's heartbeats stop.
    add_node(s, "n2");
    alive.lock().unwrap().insert("n2".into());
    alive.lock().unwrap().remove("n1");

    let lost = eventually(SOON, EVERY, "n1 Ready=Unknown", || {
        let n = node(s, "n1");
        (condition(&n, "Ready")["status"] == "Unknown").then_some(n)
    });
    let ready = condition(&lost, "Ready");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    assert_eq!(condition(&lost, "MemoryPressure")["status"], "Unknown");
    assert_eq!(
        condition(&node(s, "n2"), "Ready")["status"],
        "True",
        "n2 keeps heartbeating"
    );
    eventually(SOON, EVERY, "n1 tainted unreachable", || {
        let t = taints(&node(s, "n1"));
        (t.contains(&(UNREACHABLE.into(), "NoExecute".into()))
            && t.contains(&(UNREACHABLE.into(), "NoSchedule".into())))
        .then_some(())
    });

    // After their 2 s toleration the pods are evicted and replaced on n2.
    eventually(Duration::from_secs(60), EVERY, "2 live pods on n2", || {
        settle_on(s, "n2");
        let p = pods(s);
        let on_n2 = p.iter().filter(|p| live(p) && node_of(p) == "n2").count();
        (on_n2 == 2).then_some(())
    });
    for name in &first {
        // Deleted gracefully: without a kubelet they stay terminating, marked as upstream.
        let out = s.kubectl(v, &["get", "pod", name, "-o", "json"]);
        if !out.status.success() {
            continue;
        }
        let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(!live(&pod), "evicted pod {name} is terminating");
        let target = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "DisruptionTarget")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(target["reason"], "DeletionByTaintManager", "{pod}");
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            ready["status"], "False",
            "pods of a lost node are not ready"
        );
    }
    let events = s.ok(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=TaintManagerEviction",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    );
    for name in &first {
        assert!(
            events.contains(&format!("Marking for deletion Pod default/{name}")),
            "{events}"
        );
    }
    let describe = s.ok(v, &["describe", "node", "n1"]);
    assert!(describe.contains("NodeStatusUnknown"), "{describe}");
    assert!(describe.contains(UNREACHABLE), "{describe}");

    // n1 comes back: the kubelet posts Ready again, the taints go.
    alive.lock().unwrap().insert("n1".into());
    report_ready(s, "n1", "True");
    eventually(SOON, EVERY, "n1 untainted", || {
        taints(&node(s, "n1")).is_empty().then_some(())
    });
    // A kubelet reporting Ready=False gets the not-ready taints instead.
    report_ready(s, "n2", "False");
    eventually(SOON, EVERY, "n2 tainted not-ready", || {
        let t = taints(&node(s, "n2"));
        (t.contains(&(NOT_READY.into(), "NoExecute".into()))
            && t.contains(&(NOT_READY.into(), "NoSchedule".into())))
        .then_some(())
    });
}

fn bare_pod(s: &Server, name: &str, node: Option<&str>) {
    let node = node.map_or(String::new(), |n| format!("  nodeName: {n}\n"));
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{gc: test}}}}\nspec:\n{node}  containers:\n  - {{name: c, image: busybox}}\n"
    );
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&manifest));
}

fn set_phase(s: &Server, name: &str, phase: &str) {
    let patch = format!(r#"{{"status": {{"phase": "{phase}"}}}}"#);
    s.ok(
        LATEST,
        &[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
}

fn gc_pods(s: &Server) -> BTreeSet<String> {
    let list = s.json(LATEST, &["get", "pods", "-l", "gc=test"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn pod_gc_trims_terminated_pods_and_frees_out_of_service_nodes() {
    let s = Server::start_with(bin(), &["--terminated-pod-gc-threshold=2"]);
    let v = LATEST;
    for name in ["done-1", "done-2", "done-3", "running"] {
        bare_pod(&s, name, None);
    }
    for name in ["done-1", "done-2", "done-3"] {
        set_phase(&s, name, "Succeeded");
    }
    set_phase(&s, "running", "Running");
    eventually(SOON, EVERY, "terminated pods trimmed to 2", || {
        let left = gc_pods(&s);
        let done = left.iter().filter(|n| n.starts_with("done-")).count();
        (done == 2).then_some(left)
    });
    assert!(gc_pods(&s).contains("running"), "running pods are kept");

    // A terminating pod on a not-Ready, out-of-service node is force-deleted.
    add_node(&s, "dead");
    report_ready(&s, "dead", "False");
    bare_pod(&s, "stuck", Some("dead"));
    s.ok(v, &["delete", "pod", "stuck", "--wait=false"]);
    let pod = s.json(v, &["get", "pod", "stuck"]);
    assert!(!live(&pod), "a bound pod waits for its kubelet");
    s.ok(
        v,
        &[
            "taint",
            "node",
            "dead",
            "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
        ],
    );
    eventually(SOON, EVERY, "stuck pod force-deleted", || {
        (!gc_pods(&s).contains("stuck")).then_some(())
    });
}

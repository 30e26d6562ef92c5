//! Integration tests: `distro agent --runtime fake` joining a real server with its token, seen
//! through real kubectl — node registration and Lease, CA pinning, credential reuse across
//! restarts, and simulated nodes running a Deployment and completing pods.

use std::path::Path;
use std::time::Duration;

use distro_testharness::get::{condition, node_ready};
use distro_testharness::{eventually, Agent, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(20);
const EVERY: Duration = Duration::from_millis(100);

/// Node client certificate requests (nodes also request kubelet serving certificates).
fn client_csrs(s: &Server) -> Vec<Value> {
    s.json(LATEST, &["get", "csr"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .cloned()
        .collect()
}

/// All certificate requests.
fn csr_count(s: &Server) -> usize {
    s.json(LATEST, &["get", "csr"])["items"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn joins_with_the_token_registers_a_ready_node_and_reuses_credentials() {
    let s = Server::start(bin());
    let mut a = Agent::start(
        bin(),
        &s,
        &[
            "--node-name",
            "worker-1",
            "--node-label",
            "tier=web",
            "--node-taint",
            "dedicated=web:NoSchedule",
        ],
    );
    let node = eventually(SOON, EVERY, "node worker-1 Ready", || {
        node_ready(&s, "worker-1")
    });
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["node.distro.io/fake"], "true", "honestly labelled");
    assert_eq!(labels["tier"], "web");
    assert_eq!(labels["kubernetes.io/hostname"], "worker-1");
    let taints = node["spec"]["taints"].as_array().expect("taints");
    assert!(taints
        .iter()
        .any(|t| t["key"] == "dedicated" && t["value"] == "web" && t["effect"] == "NoSchedule"));
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert_eq!(condition(&node, "Ready").unwrap()["reason"], "KubeletReady");

    // The node's identity came through the CSR API, auto-approved and signed.
    let items = client_csrs(&s);
    let csrs = serde_json::json!(items);
    assert_eq!(items.len(), 1, "one client CSR: {csrs}");
    let before_restart = csr_count(&s);
    let csr = &items[0];
    assert_eq!(csr["spec"]["username"], "system:bootstrap:server");
    assert_eq!(
        csr["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    let approved = condition(csr, "Approved").expect("approved");
    assert_eq!(approved["reason"], "AutoApproved");
    assert!(csr["status"]["certificate"].is_string(), "signed: {csr}");
    let table = s.ok(LATEST, &["get", "csr"]);
    assert!(table.contains("Approved,Issued"), "{table}");

    // Its Lease is renewed as the node itself.
    let lease = eventually(SOON, EVERY, "node lease", || {
        let out = s.kubectl(
            LATEST,
            &[
                "get",
                "lease",
                "-n",
                "kube-node-lease",
                "worker-1",
                "-o",
                "json",
            ],
        );
        serde_json::from_slice::<Value>(&out.stdout).ok()
    });
    assert_eq!(lease["spec"]["holderIdentity"], "worker-1");
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    let describe = s.ok(LATEST, &["describe", "node", "worker-1"]);
    assert!(describe.contains("NodeReady"), "{describe}");

    // A restart reuses the stored certificate: no new CSR, node still Ready.
    let before = lease["spec"]["renewTime"].clone();
    a.restart();
    eventually(SOON, EVERY, "lease renewed after restart", || {
        let out = s.kubectl(
            LATEST,
            &[
                "get",
                "lease",
                "-n",
                "kube-node-lease",
                "worker-1",
                "-o",
                "json",
            ],
        );
        let l: Value = serde_json::from_slice(&out.stdout).ok()?;
        (l["spec"]["renewTime"] != before).then_some(())
    });
    assert_eq!(
        csr_count(&s),
        before_restart,
        "the restarted agent asked for no new certificate"
    );
    assert!(a.log().contains("nodes registered"), "{}", a.log());
    assert!(node_ready(&s, "worker-1").is_some());
}

#[test]
fn a_server_whose_ca_does_not_match_the_token_is_refused() {
    let s = Server::start(bin());
    let token = s.token();
    let (_, creds) = token.split_once("::").expect("K10 token");
    let wrong = format!("K10{}::{creds}", "0".repeat(64));
    let mut a = Agent::start_raw(
        bin(),
        &s.server_url().expect("url"),
        &wrong,
        &["--node-name", "w"],
    );
    let status = a.wait_exit(SOON);
    assert!(!status.success());
    let log = a.log();
    assert!(
        log.contains("the server's CA does not match the token's hash; check --token / --join"),
        "{log}"
    );
    assert_eq!(csr_count(&s), 0, "nothing was sent to an untrusted server");

    // A bad secret with the right CA hash gets no certificate either.
    let hash = token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::"))
        .map(|(h, _)| h.to_string())
        .expect("hash");
    let bad = format!("K10{hash}::server:not-the-secret");
    let mut a = Agent::start_raw(
        bin(),
        &s.server_url().expect("url"),
        &bad,
        &["--node-name", "w"],
    );
    assert!(!a.wait_exit(SOON).success());
    assert!(a.log().contains("Unauthorized"), "{}", a.log());
    assert!(s.kubectl(LATEST, &["get", "node", "w"]).status.code() != Some(0));
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx:1.27, resources: {requests: {cpu: 100m}}}
"#;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: done
  annotations: {fake.distro.io/run-seconds: "1"}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata:
  name: crash
  annotations: {fake.distro.io/run-seconds: "0", fake.distro.io/exit-code: "3"}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox}]
"#;

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 4
  parallelism: 2
  template:
    metadata:
      annotations: {fake.distro.io/run-seconds: "1"}
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox}]
"#;

#[test]
fn simulated_nodes_run_a_deployment_and_complete_pods() {
    let s = Server::start(bin());
    let _a = Agent::start(bin(), &s, &["--node-name", "sim", "--fake-nodes", "3"]);
    for i in 0..3 {
        eventually(SOON, EVERY, "simulated nodes Ready", || {
            node_ready(&s, &format!("sim-{i}"))
        });
    }
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(DEPLOYMENT));
    let out = s.ok(
        LATEST,
        &["rollout", "status", "deployment/web", "--timeout=40s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = s.json(LATEST, &["get", "deployment", "web"]);
    assert_eq!(condition(&d, "Available").unwrap()["status"], "True");
    assert_eq!(d["status"]["readyReplicas"], 6);
    let pods = s.json(LATEST, &["get", "pods", "-l", "app=web"]);
    let items = pods["items"].as_array().expect("pods");
    assert_eq!(items.len(), 6);
    let mut ips = std::collections::HashSet::new();
    for p in items {
        assert_eq!(p["status"]["phase"], "Running");
        assert!(p["spec"]["nodeName"].as_str().unwrap().starts_with("sim-"));
        assert!(p["status"]["hostIP"].is_string());
        ips.insert(p["status"]["podIP"].as_str().expect("podIP").to_string());
    }
    assert_eq!(ips.len(), 6, "distinct pod IPs");

    // restartPolicy Never: one pod completes, one fails with its exit code.
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(PODS));
    let phase = |name: &str| {
        s.json(LATEST, &["get", "pod", name])["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    eventually(SOON, EVERY, "pod done Succeeded", || {
        (phase("done") == "Succeeded").then_some(())
    });
    eventually(SOON, EVERY, "pod crash Failed", || {
        (phase("crash") == "Failed").then_some(())
    });
    let crash = s.json(LATEST, &["get", "pod", "crash"]);
    assert_eq!(
        crash["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );

    // Deleting is finished by the node: the pods go away without a force delete.
    s.ok(LATEST, &["delete", "deployment", "web", "--wait=false"]);
    eventually(SOON, EVERY, "deployment pods gone", || {
        let pods = s.json(LATEST, &["get", "pods", "-l", "app=web"]);
        pods["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
    s.ok(LATEST, &["delete", "pod", "done", "--timeout=10s"]);

    // A Job runs to completion on the simulated nodes, its pods finished by them.
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(JOB));
    let out = s.ok(
        LATEST,
        &[
            "wait",
            "--for=condition=Complete",
            "job/batch",
            "--timeout=40s",
        ],
    );
    assert!(out.contains("condition met"), "{out}");
    let job = s.json(LATEST, &["get", "job", "batch"]);
    assert_eq!(job["status"]["succeeded"], 4, "{job}");
}

//! Integration tests: what a joined node's own credentials may do (the Node authorizer and
//! NodeRestriction admission), join tokens made with `distro token`, and unique node names —
//! through the real binary, kubectl and `distro agent --runtime fake`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_testharness::{eventually, Agent, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(20);
const EVERY: Duration = Duration::from_millis(100);

fn node_exists(s: &Server, name: &str) -> bool {
    s.kubectl(LATEST, &["get", "node", name]).status.success()
}

/// A kubeconfig with the node's own client certificate, as the agent stored it.
fn node_kubeconfig(s: &Server, a: &Agent, node: &str, dir: &Path) -> PathBuf {
    let agent_dir = a.data_dir().join("agent");
    let url = s.server_url().expect("server URL");
    let kc = dir.join(format!("{node}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: u\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        ca = agent_dir.join("server-ca.crt").display(),
        crt = agent_dir.join(format!("client-kubelet-{node}.crt")).display(),
        key = agent_dir.join(format!("client-kubelet-{node}.key")).display(),
    );
    std::fs::write(&kc, text).expect("node kubeconfig");
    kc
}

/// kubectl as the node: (success, stdout + stderr).
fn as_node(s: &Server, kc: &Path, args: &[&str]) -> (bool, String) {
    let mut a = vec!["--kubeconfig", kc.to_str().expect("utf-8 path")];
    a.extend(args);
    let out = s.kubectl(LATEST, &a);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const OTHER_NODE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: other-node}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: other-node, namespace: kube-node-lease}
spec: {holderIdentity: other-node}
"#;

const WORKLOAD: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: used-secret}
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated-secret}
stringData: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  nodeName: na-1
  containers: [{name: c, image: busybox}]
  volumes: [{name: s, secret: {secretName: used-secret}}]
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere}
spec:
  nodeName: other-node
  containers: [{name: c, image: busybox}]
"#;

#[test]
fn a_node_reaches_only_its_own_objects() {
    let s = Server::start(bin());
    let a = Agent::start(bin(), &s, &["--node-name", "na-1"]);
    eventually(SOON, EVERY, "node na-1 registered", || {
        node_exists(&s, "na-1").then_some(())
    });
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(OTHER_NODE));
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(WORKLOAD));
    let kc = node_kubeconfig(&s, &a, "na-1", &s.data_dir());

    // Upstream's system:node role exists but is bound to no one: the Node authorizer decides.
    s.ok(LATEST, &["get", "clusterrole", "system:node"]);
    let bindings = s.json(LATEST, &["get", "clusterrolebindings"]);
    assert!(
        !bindings["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b["roleRef"]["name"] == "system:node"),
        "system:node is not bound"
    );

    // Its own Node and Lease, not another node's Lease.
    let (ok, out) = as_node(&s, &kc, &["get", "node", "na-1", "-o", "name"]);
    assert!(ok, "{out}");
    let (ok, out) = as_node(&s, &kc, &["-n", "kube-node-lease", "get", "lease", "na-1"]);
    assert!(ok, "{out}");
    let (ok, out) = as_node(
        &s,
        &kc,
        &["-n", "kube-node-lease", "get", "lease", "other-node"],
    );
    assert!(!ok && out.contains("Forbidden"), "{out}");
    assert!(
        out.contains("can only access node lease with the same name as the requesting node"),
        "{out}"
    );

    // The fake runtime, now as a restricted node, still reports its pod's status.
    eventually(SOON, EVERY, "pod reader Running", || {
        let phase = s.ok(
            LATEST,
            &["get", "pod", "reader", "-o", "jsonpath={.status.phase}"],
        );
        (phase == "Running").then_some(())
    });

    // A Secret its pod uses, not one no pod of it uses.
    let (ok, out) = as_node(&s, &kc, &["get", "secret", "used-secret", "-o", "name"]);
    assert!(ok, "{out}");
    let (ok, out) = as_node(&s, &kc, &["get", "secret", "unrelated-secret"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "secrets \"unrelated-secret\" is forbidden: User \"system:node:na-1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'na-1' and this object"
        ),
        "{out}"
    );
    // Listing all secrets is not reading one its pods use.
    let (ok, out) = as_node(&s, &kc, &["get", "secrets"]);
    assert!(!ok && out.contains("Forbidden"), "{out}");

    // NodeRestriction: not another node, not a reserved label on itself.
    let (ok, out) = as_node(&s, &kc, &["label", "node", "other-node", "x=y"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("node \"na-1\" is not allowed to modify node \"other-node\""),
        "{out}"
    );
    let (ok, out) = as_node(
        &s,
        &kc,
        &[
            "label",
            "node",
            "na-1",
            "node-role.kubernetes.io/control-plane=true",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "node \"na-1\" is not allowed to modify labels: node-role.kubernetes.io/control-plane"
        ),
        "{out}"
    );
    let (ok, out) = as_node(&s, &kc, &["label", "node", "na-1", "tier=web"]);
    assert!(ok, "an ordinary label is the node's to set: {out}");
    // Not another node's pods' status, nor deleting them.
    // (A PUT of the status as the kubelet sends it: kubectl patch would first GET pods/status,
    // which nodes may not, as upstream.)
    let pod = s.ok(LATEST, &["get", "pod", "elsewhere", "-o", "json"]);
    let pod_file = s.data_dir().join("elsewhere.json");
    std::fs::write(&pod_file, pod).expect("pod file");
    let (ok, out) = as_node(
        &s,
        &kc,
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/default/pods/elsewhere/status",
            "-f",
            pod_file.to_str().expect("utf-8"),
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "node \"na-1\" can only update pod status for pods with spec.nodeName set to itself"
        ),
        "{out}"
    );
    let (ok, out) = as_node(&s, &kc, &["delete", "pod", "elsewhere", "--wait=false"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("node \"na-1\" can only delete pods with spec.nodeName set to itself"),
        "{out}"
    );
    // Its own pods, but only mirror pods may it create.
    let (ok, out) = as_node(&s, &kc, &["delete", "pod", "reader", "--wait=false"]);
    assert!(ok, "its own pod: {out}");
    let (ok, out) = as_node(&s, &kc, &["run", "p2", "--image=busybox"]);
    assert!(!ok && out.contains("can only create mirror pods"), "{out}");
    drop(a);
}

/// Runs `distro token …` against the server's data dir.
fn token_cmd(s: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .arg("token")
        .arg("--data-dir")
        .arg(s.data_dir())
        .args(args)
        .output()
        .expect("running distro token")
}

fn token_ok(s: &Server, args: &[&str]) -> String {
    let out = token_cmd(s, args);
    assert!(
        out.status.success(),
        "distro token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn join_tokens_create_list_delete_and_expire() {
    let s = Server::start(bin());
    let token = token_ok(&s, &["create", "--ttl", "1h", "--description", "x"]);
    let (hash_part, creds) = token.split_once("::").expect("K10<hash>::<id>.<secret>");
    let server_hash = s
        .token()
        .split_once("::")
        .expect("server token")
        .0
        .to_string();
    assert_eq!(hash_part, server_hash, "pins this cluster's CA");
    let (id, secret) = creds.split_once('.').expect("<id>.<secret>");
    assert_eq!((id.len(), secret.len()), (6, 16), "{creds}");

    let stored = s.json(
        LATEST,
        &[
            "-n",
            "kube-system",
            "get",
            "secret",
            &format!("bootstrap-token-{id}"),
        ],
    );
    assert_eq!(stored["type"], "bootstrap.kubernetes.io/token");

    let list = token_ok(&s, &["list"]);
    let header = list.lines().next().unwrap_or("");
    for col in [
        "TOKEN",
        "TTL",
        "EXPIRES",
        "USAGES",
        "DESCRIPTION",
        "EXTRA GROUPS",
    ] {
        assert!(header.contains(col), "{list}");
    }
    let row = list
        .lines()
        .find(|l| l.starts_with(creds))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("authentication,signing") && row.contains(" x "),
        "{row}"
    );
    assert!(
        row.contains("59m") || row.contains("60m") || row.contains("1h"),
        "{row}"
    );

    // An agent joins with it, exactly as with the server token.
    let mut a = Agent::start_raw(
        bin(),
        &s.server_url().unwrap(),
        &token,
        &["--node-name", "tok-1"],
    );
    eventually(SOON, EVERY, "node tok-1 registered", || {
        node_exists(&s, "tok-1").then_some(())
    });
    let csrs = s.json(LATEST, &["get", "csr"]);
    assert!(
        csrs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["spec"]["username"] == format!("system:bootstrap:{id}")),
        "{csrs}"
    );
    a.stop();

    // Deleted: a new join with it is refused, saying why.
    assert_eq!(
        token_ok(&s, &["delete", id]),
        format!("bootstrap token \"{id}\" deleted")
    );
    assert!(!token_ok(&s, &["list"]).contains(creds));
    let mut b = Agent::start_raw(
        bin(),
        &s.server_url().unwrap(),
        &token,
        &["--node-name", "tok-2"],
    );
    let status = b.wait_exit(SOON);
    assert!(!status.success());
    let log = b.log();
    assert!(log.contains("the server refused the join token"), "{log}");

    // Expired: refused too (and cleaned up).
    let short = token_ok(&s, &["create", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1100));
    let mut c = Agent::start_raw(
        bin(),
        &s.server_url().unwrap(),
        &short,
        &["--node-name", "tok-3"],
    );
    let status = c.wait_exit(SOON);
    assert!(!status.success());
    assert!(
        c.log().contains("the server refused the join token"),
        "{}",
        c.log()
    );
    assert!(!node_exists(&s, "tok-3"));
    let short_id = short
        .split_once("::")
        .and_then(|(_, c)| c.split_once('.'))
        .expect("id")
        .0;
    let secret = format!("bootstrap-token-{short_id}");
    eventually(
        SOON,
        EVERY,
        "the token cleaner deleted the expired token",
        || {
            let out = s.kubectl(LATEST, &["-n", "kube-system", "get", "secret", &secret]);
            (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"))
                .then_some(())
        },
    );

    // Bad options are refused before anything is created.
    let out = token_cmd(&s, &["create", "--groups", "admins"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("system:bootstrappers:"));
}

#[test]
fn a_node_name_belongs_to_one_agent() {
    let s = Server::start(bin());
    let mut a = Agent::start(bin(), &s, &["--node-name", "dup"]);
    eventually(SOON, EVERY, "node dup registered", || {
        node_exists(&s, "dup").then_some(())
    });
    let stored = s.json(
        LATEST,
        &[
            "-n",
            "kube-system",
            "get",
            "secret",
            "dup.node-password.distro",
        ],
    );
    assert!(stored["data"]["hash"].is_string(), "{stored}");

    // Another agent (another data dir, so another password) is refused before any certificate.
    let csrs_before = s.json(LATEST, &["get", "csr"])["items"]
        .as_array()
        .map_or(0, Vec::len);
    let mut b = Agent::start(bin(), &s, &["--node-name", "dup"]);
    assert!(!b.wait_exit(SOON).success());
    let log = b.log();
    assert!(
        log.contains("node \"dup\" is already registered by another agent"),
        "{log}"
    );
    assert!(
        log.contains("--node-name") && log.contains("kubectl delete node dup"),
        "{log}"
    );
    let csrs_after = s.json(LATEST, &["get", "csr"])["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        csrs_before, csrs_after,
        "no certificate requested for a taken name"
    );

    // The first agent keeps its name across a restart.
    a.restart();
    eventually(SOON, EVERY, "the restarted agent registered again", || {
        (a.log().matches("nodes registered and Ready").count() == 2).then_some(())
    });
    assert!(!a.log().contains("already registered"), "{}", a.log());

    // Once the old node is removed, the name is free.
    a.stop();
    s.ok(LATEST, &["delete", "node", "dup"]);
    let _c = Agent::start(bin(), &s, &["--node-name", "dup"]);
    eventually(SOON, EVERY, "node dup registered again", || {
        node_exists(&s, "dup").then_some(())
    });
}

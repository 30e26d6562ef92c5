//! Integration tests: the in-process controllers (namespace lifecycle, default ServiceAccount,
//! root CA ConfigMap) seen through real kubectl.

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::{eventually, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(50);

fn exists(s: &Server, args: &[&str]) -> bool {
    s.kubectl(LATEST, args).status.success()
}

fn wait_for(s: &Server, what: &str, args: &[&str]) {
    eventually(SOON, EVERY, what, || exists(s, args).then_some(()));
}

fn ca_pem(s: &Server) -> String {
    std::fs::read_to_string(s.data_dir().join("server/tls/server-ca.crt")).expect("CA file")
}

#[test]
fn every_namespace_gets_default_sa_and_root_ca_and_keeps_them() {
    let s = Server::start(bin());
    let v = LATEST;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        wait_for(
            &s,
            &format!("ServiceAccount default in {ns}"),
            &["get", "sa", "default", "-n", ns],
        );
        wait_for(
            &s,
            &format!("ConfigMap kube-root-ca.crt in {ns}"),
            &["get", "cm", "kube-root-ca.crt", "-n", ns],
        );
    }

    s.ok(v, &["create", "namespace", "team-a"]);
    let start = Instant::now();
    wait_for(
        &s,
        "default SA in team-a",
        &["get", "sa", "default", "-n", "team-a"],
    );
    wait_for(
        &s,
        "root CA in team-a",
        &["get", "cm", "kube-root-ca.crt", "-n", "team-a"],
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a new namespace was populated in {:?}",
        start.elapsed()
    );
    let cm = s.json(v, &["get", "cm", "kube-root-ca.crt", "-n", "team-a"]);
    assert_eq!(cm["data"]["ca.crt"], ca_pem(&s).as_str());
    assert!(cm["metadata"]["annotations"]["kubernetes.io/description"]
        .as_str()
        .is_some_and(|d| d.starts_with("Contains a CA bundle")));

    // Deleted: recreated.
    s.ok(v, &["delete", "sa", "default", "-n", "team-a"]);
    s.ok(v, &["delete", "cm", "kube-root-ca.crt", "-n", "team-a"]);
    wait_for(
        &s,
        "default SA back",
        &["get", "sa", "default", "-n", "team-a"],
    );
    wait_for(
        &s,
        "root CA back",
        &["get", "cm", "kube-root-ca.crt", "-n", "team-a"],
    );

    // Edited: corrected.
    s.ok(
        v,
        &[
            "patch",
            "cm",
            "kube-root-ca.crt",
            "-n",
            "team-a",
            "--type=merge",
            "-p",
            r#"{"data":{"ca.crt":"tampered"}}"#,
        ],
    );
    let want = ca_pem(&s);
    eventually(SOON, EVERY, "root CA corrected", || {
        let cm = s.json(v, &["get", "cm", "kube-root-ca.crt", "-n", "team-a"]);
        (cm["data"]["ca.crt"] == want.as_str()).then_some(())
    });
}

#[test]
fn deleting_a_namespace_removes_its_content_and_the_namespace() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok(v, &["create", "namespace", "doomed"]);
    let objects = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: doomed}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: more, namespace: doomed}
data: {b: "2"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: doomed}
stringData: {password: hunter2}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: doomed}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
"#;
    s.ok_stdin(v, &["create", "-f", "-"], Some(objects));
    wait_for(
        &s,
        "default SA in doomed",
        &["get", "sa", "default", "-n", "doomed"],
    );

    let start = Instant::now();
    // kubectl waits until the namespace is gone.
    let out = s.ok(v, &["delete", "namespace", "doomed", "--timeout=20s"]);
    let took = start.elapsed();
    assert!(out.contains("namespace \"doomed\" deleted"), "{out}");
    assert!(
        took < Duration::from_secs(5),
        "kubectl delete ns took {took:?}"
    );

    let err = s.fails(v, &["get", "namespace", "doomed"]);
    assert!(err.contains("namespaces \"doomed\" not found"), "{err}");
    // The same name can be used again, and is populated again.
    s.ok(v, &["create", "namespace", "doomed"]);
    wait_for(
        &s,
        "default SA in new doomed",
        &["get", "sa", "default", "-n", "doomed"],
    );
    wait_for(
        &s,
        "root CA in new doomed",
        &["get", "cm", "kube-root-ca.crt", "-n", "doomed"],
    );
    // Nothing of the old namespace's content came back with the name.
    let out = s.ok(
        v,
        &[
            "get",
            "cm,secrets,deployments,sa",
            "-n",
            "doomed",
            "-o",
            "name",
        ],
    );
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    assert_eq!(
        names,
        vec!["configmap/kube-root-ca.crt", "serviceaccount/default"],
        "old content is gone"
    );
}

#[test]
fn terminating_namespace_reports_conditions_while_content_has_finalizers() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok(v, &["create", "namespace", "stuck"]);
    s.ok_stdin(
        v,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: stuck, finalizers: [example.com/hold]}\n"),
    );
    s.ok(v, &["delete", "namespace", "stuck", "--wait=false"]);
    let ns = eventually(SOON, EVERY, "finalizer condition", || {
        let ns = s.json(v, &["get", "namespace", "stuck"]);
        let conds = ns["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds
            .iter()
            .any(|c| c["type"] == "NamespaceFinalizersRemaining" && c["status"] == "True")
            .then_some(ns)
    });
    assert_eq!(ns["status"]["phase"], "Terminating");
    let conds = ns["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let finalizers = conds
        .iter()
        .find(|c| c["type"] == "NamespaceFinalizersRemaining")
        .expect("condition");
    assert_eq!(finalizers["reason"], "SomeFinalizersRemain");
    assert!(
        finalizers["message"]
            .as_str()
            .is_some_and(|m| m.contains("example.com/hold in 1 resource instances")),
        "{finalizers}"
    );
    // Releasing the object lets the namespace go.
    s.ok(
        v,
        &[
            "patch",
            "cm",
            "held",
            "-n",
            "stuck",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    eventually(Duration::from_secs(15), EVERY, "namespace gone", || {
        (!exists(&s, &["get", "namespace", "stuck"])).then_some(())
    });
}

//! Integration tests: the ReplicaSet controller and the garbage collector seen through real
//! kubectl (no kubelet yet, so pods stay Pending).

use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(8);
const EVERY: Duration = Duration::from_millis(50);

fn rs_yaml(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, image: busybox}}]
"#
    )
}

/// Live (not terminating) pods of the `app=<name>` label.
fn pods(s: &Server, name: &str) -> Vec<serde_json::Value> {
    let list = s.json(
        LATEST,
        &["get", "pods", "-l", &format!("app={name}"), "-o", "json"],
    );
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn wait_pods(s: &Server, name: &str, n: usize) -> Vec<serde_json::Value> {
    eventually(SOON, EVERY, &format!("{n} pods of {name}"), || {
        let p = pods(s, name);
        (p.len() == n).then_some(p)
    })
}

fn wait_status_replicas(s: &Server, name: &str, n: u64) {
    eventually(SOON, EVERY, &format!("{name} status.replicas={n}"), || {
        let rs = s.json(LATEST, &["get", "rs", name, "-o", "json"]);
        (rs["status"]["replicas"].as_u64() == Some(n)
            && rs["status"]["observedGeneration"] == rs["metadata"]["generation"])
            .then_some(())
    });
}

#[test]
fn replicaset_keeps_its_pods_and_scales() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(v, &["create", "-f", "-"], Some(&rs_yaml("web", 3)));
    let rs = s.json(v, &["get", "rs", "web", "-o", "json"]);
    let uid = rs["metadata"]["uid"].as_str().expect("uid").to_string();
    let created = wait_pods(&s, "web", 3);
    for p in &created {
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(r["uid"], uid.as_str(), "{p}");
        assert_eq!(r["kind"], "ReplicaSet");
        assert_eq!(r["controller"], true);
        assert_eq!(r["blockOwnerDeletion"], true);
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    }
    wait_status_replicas(&s, "web", 3);
    // A brief pause would reveal over-creation from a lagging cache.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pods(&s, "web").len(), 3, "no over-creation");

    let events = s.ok(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ],
    );
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(events.contains("Created pod: web-"), "{events}");

    s.ok(v, &["scale", "rs", "web", "--replicas=5"]);
    wait_pods(&s, "web", 5);
    wait_status_replicas(&s, "web", 5);
    s.ok(v, &["scale", "rs", "web", "--replicas=2"]);
    wait_pods(&s, "web", 2);
    wait_status_replicas(&s, "web", 2);
    let events = s.ok(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ],
    );
    assert!(events.contains("Deleted pod: web-"), "{events}");

    // A deleted pod is replaced.
    let victim = pods(&s, "web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(v, &["delete", "pod", &victim, "--wait=false"]);
    eventually(SOON, EVERY, "replacement pod", || {
        let p = pods(&s, "web");
        (p.len() == 2 && p.iter().all(|p| p["metadata"]["name"] != victim.as_str())).then_some(())
    });

    // An orphan that matches is adopted (and, being surplus, removed); one that stops
    // matching is released.
    s.ok_stdin(
        v,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: stray, labels: {app: web}}\nspec: {containers: [{name: c, image: busybox}]}\n"),
    );
    wait_pods(&s, "web", 2);
    let owned = pods(&s, "web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(v, &["label", "pod", &owned, "app=other", "--overwrite"]);
    eventually(SOON, EVERY, "released pod", || {
        let p = s.json(v, &["get", "pod", &owned, "-o", "json"]);
        p["metadata"]["ownerReferences"].is_null().then_some(())
    });
    wait_pods(&s, "web", 2);
}

#[test]
fn deleting_a_replicaset_cascades_as_asked() {
    let s = Server::start(bin());
    let v = LATEST;
    let all = [rs_yaml("bg", 2), rs_yaml("orph", 2), rs_yaml("fg", 2)].join("---\n");
    s.ok_stdin(v, &["create", "-f", "-"], Some(&all));
    for name in ["bg", "orph", "fg"] {
        wait_pods(&s, name, 2);
    }

    // Background (kubectl's default): the set goes at once, its pods after.
    s.ok(v, &["delete", "rs", "bg"]);
    wait_pods(&s, "bg", 0);

    // Orphan: the pods stay, without the reference.
    s.ok(v, &["delete", "rs", "orph", "--cascade=orphan"]);
    eventually(SOON, EVERY, "orph gone", || {
        (!s.kubectl(v, &["get", "rs", "orph"]).status.success()).then_some(())
    });
    let kept = pods(&s, "orph");
    assert_eq!(kept.len(), 2);
    assert!(
        kept.iter()
            .all(|p| p["metadata"]["ownerReferences"].is_null()),
        "{kept:?}"
    );

    // Foreground: the pods go before the set. A finalizer holds one pod back, so the
    // set must wait for it.
    let fg = pods(&s, "fg");
    let held = fg[0]["metadata"]["name"].as_str().unwrap().to_string();
    let other = fg[1]["metadata"]["name"].as_str().unwrap().to_string();
    s.ok(
        v,
        &[
            "patch",
            "pod",
            &held,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
        ],
    );
    s.ok(
        v,
        &["delete", "rs", "fg", "--cascade=foreground", "--wait=false"],
    );
    eventually(SOON, EVERY, "fg waits for its held pod", || {
        let other_gone = !s.kubectl(v, &["get", "pod", &other]).status.success();
        let pod = s.json(v, &["get", "pod", &held, "-o", "json"]);
        (other_gone && !pod["metadata"]["deletionTimestamp"].is_null()).then_some(())
    });
    let rs = s.json(v, &["get", "rs", "fg", "-o", "json"]);
    assert!(
        rs["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "foregroundDeletion")),
        "{rs}"
    );
    s.ok(
        v,
        &[
            "patch",
            "pod",
            &held,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    eventually(SOON, EVERY, "fg gone after its pods", || {
        (!s.kubectl(v, &["get", "rs", "fg"]).status.success()).then_some(())
    });
    assert!(!s.kubectl(v, &["get", "pod", &held]).status.success());

    // An ownerReference to a gone owner (or a uid that does not match) counts as gone.
    s.ok_stdin(
        v,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dangling\n  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: kube-root-ca.crt, uid: 00000000-0000-0000-0000-000000000000}]\n"),
    );
    eventually(SOON, EVERY, "dangling ConfigMap collected", || {
        (!s.kubectl(v, &["get", "cm", "dangling"]).status.success()).then_some(())
    });
}

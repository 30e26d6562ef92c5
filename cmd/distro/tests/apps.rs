//! Integration tests: the StatefulSet and DaemonSet controllers seen through real kubectl. No
//! kubelet runs here, so pods "become ready" by patching their status as a kubelet would, and
//! nodes are Node objects created by the test.

use std::path::Path;
use std::time::Duration;

use distro_testharness::fake::add_ready_node;
use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(50);

/// The pods labelled `app=<app>`, by name.
fn pods(s: &Server, app: &str) -> Vec<Value> {
    let list = s.json(LATEST, &["get", "pods", "-l", &format!("app={app}")]);
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|p| name(p).to_string());
    items
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

fn names(items: &[Value]) -> Vec<String> {
    items.iter().map(|p| name(p).to_string()).collect()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Reports the pod Running and Ready, as a kubelet would. It may be gone meanwhile (a scale
/// down or update deleted it): failures are ignored.
fn make_ready(s: &Server, pod: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ]}});
    let _ = s.kubectl(
        LATEST,
        &[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
    );
}

/// Acts as the kubelets: marks every not-ready pod of `app` Ready, and confirms the deletion
/// of terminating ones (a bound pod is deleted gracefully, so it stays until its kubelet
/// says it stopped).
fn settle(s: &Server, app: &str) {
    for pod in pods(s, app) {
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            let _ = s.kubectl(
                LATEST,
                &[
                    "delete",
                    "pod",
                    name(&pod),
                    "--grace-period=0",
                    "--force",
                    "--wait=false",
                ],
            );
        } else if !ready(&pod) {
            make_ready(s, name(&pod));
        }
    }
}

fn revision_label(pod: &Value) -> String {
    pod["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn claims(s: &Server) -> Vec<String> {
    let list = s.json(LATEST, &["get", "pvc"]);
    let mut n = names(list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]));
    n.sort();
    n
}

/// StatefulSet `web` of 3 with claim template `www`; `retention` is both the whenScaled and
/// the whenDeleted claim policy.
fn sts_yaml(policy: &str, retention: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: 3
  serviceName: nginx
  podManagementPolicy: {policy}
  persistentVolumeClaimRetentionPolicy: {{whenScaled: {retention}, whenDeleted: {retention}}}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.26
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {{storage: 1Gi}}
"#
    )
}

fn sts(s: &Server) -> Value {
    s.json(LATEST, &["get", "sts", "web"])
}

/// Drives the set until `done` holds, marking pods Ready as they come; `check` sees every
/// intermediate pod list (ordering invariants).
fn drive_sts(s: &Server, what: &str, check: impl Fn(&[Value]), done: impl Fn(&[Value]) -> bool) {
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        what,
        || {
            let now = pods(s, "web");
            check(&now);
            if done(&now) {
                return Some(());
            }
            settle(s, "web");
            None
        },
    );
}

#[test]
fn statefulset_ordered_claims_partitioned_update_undo_and_scale_down() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(
        v,
        &["apply", "-f", "-"],
        Some(&sts_yaml("OrderedReady", "Retain")),
    );

    // OrderedReady: web-0 alone until it is Ready.
    let first = eventually(SOON, EVERY, "web-0", || pods(&s, "web").into_iter().next());
    assert_eq!(name(&first), "web-0");
    assert_eq!(first["spec"]["hostname"], "web-0");
    assert_eq!(first["spec"]["subdomain"], "nginx");
    assert_eq!(
        first["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "www-web-0"
    );
    assert_eq!(
        first["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-0"
    );
    assert_eq!(names(&pods(&s, "web")), ["web-0"], "web-1 waits for web-0");
    // Each ordinal appears only once every lower one is Ready.
    let ordered = |now: &[Value]| {
        for (i, p) in now.iter().enumerate() {
            assert_eq!(
                name(p),
                format!("web-{i}"),
                "gap in ordinals: {:?}",
                names(now)
            );
        }
        if let Some((last, lower)) = now.split_last() {
            if !lower.iter().all(ready) {
                panic!("{} created before lower ordinals were Ready", name(last));
            }
        }
    };
    drive_sts(&s, "three ready pods", ordered, |now| {
        now.len() == 3 && now.iter().all(ready)
    });
    assert_eq!(claims(&s), ["www-web-0", "www-web-1", "www-web-2"]);
    eventually(SOON, EVERY, "ready status", || {
        let st = sts(&s)["status"].clone();
        (st["readyReplicas"] == 3 && st["currentReplicas"] == 3 && st["updatedReplicas"] == 3)
            .then_some(())
    });
    let out = s.ok(v, &["rollout", "status", "sts/web", "--timeout=10s"]);
    // The apiserver defaults partition to 0, so kubectl reports a partitioned roll out.
    assert!(
        out.contains("partitioned roll out complete: 3 new pods"),
        "{out}"
    );
    let events = s.ok(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=SuccessfulCreate",
        ],
    );
    assert!(
        events.contains("create Pod web-0 in StatefulSet web successful"),
        "{events}"
    );
    assert!(
        events.contains("create Claim www-web-0 Pod web-0 in StatefulSet web success"),
        "{events}"
    );
    let old_rev = sts(&s)["status"]["currentRevision"]
        .as_str()
        .unwrap()
        .to_string();

    // A partitioned update: only ordinals >= 2 move to the new revision.
    s.ok(
        v,
        &[
            "patch",
            "sts",
            "web",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
        ],
    );
    s.ok(v, &["set", "image", "sts/web", "nginx=nginx:1.27"]);
    drive_sts(
        &s,
        "web-2 updated",
        |_| {},
        |now| {
            now.len() == 3
                && now.iter().all(ready)
                && now[2]["spec"]["containers"][0]["image"] == "nginx:1.27"
        },
    );
    let new_rev = eventually(SOON, EVERY, "partitioned status", || {
        let st = sts(&s)["status"].clone();
        (st["updatedReplicas"] == 1 && st["currentReplicas"] == 2).then(|| {
            st["updateRevision"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    });
    assert_ne!(new_rev, old_rev);
    let now = pods(&s, "web");
    assert_eq!(
        now.iter().map(revision_label).collect::<Vec<_>>(),
        [old_rev.clone(), old_rev.clone(), new_rev.clone()]
    );
    let out = s.ok(v, &["rollout", "status", "sts/web", "--timeout=10s"]);
    assert!(
        out.contains("partitioned roll out complete: 1 new pods"),
        "{out}"
    );

    // Partition 0: the rest follow, highest ordinal first.
    s.ok(
        v,
        &[
            "patch",
            "sts",
            "web",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
        ],
    );
    let top_down = |now: &[Value]| {
        let revs: Vec<String> = now.iter().map(revision_label).collect();
        // Once a lower ordinal is new, every higher one present must be too.
        if let Some(i) = revs.iter().position(|r| *r == new_rev) {
            assert!(
                revs[i..].iter().all(|r| *r == new_rev),
                "update out of order: {revs:?}"
            );
        }
    };
    drive_sts(&s, "all updated", top_down, |now| {
        now.len() == 3 && now.iter().all(|p| ready(p) && revision_label(p) == new_rev)
    });
    eventually(SOON, EVERY, "update complete", || {
        let st = sts(&s)["status"].clone();
        (st["currentRevision"] == new_rev.as_str() && st["updatedReplicas"] == 3).then_some(())
    });

    // History and undo: back to the first template, renumbered as revision 3.
    let history = s.ok(v, &["rollout", "history", "sts/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    s.ok(v, &["rollout", "undo", "sts/web"]);
    drive_sts(
        &s,
        "rolled back",
        |_| {},
        |now| now.len() == 3 && now.iter().all(|p| ready(p) && revision_label(p) == old_rev),
    );
    let revs = s.json(v, &["get", "controllerrevisions"]);
    let numbered: Vec<(String, i64)> = revs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (name(r).to_string(), r["revision"].as_i64().unwrap_or(0)))
        .collect();
    assert!(numbered.contains(&(old_rev.clone(), 3)), "{numbered:?}");
    assert_eq!(
        numbered.len(),
        2,
        "undo reuses the old revision: {numbered:?}"
    );

    // Scale down: highest ordinal first; claims are retained.
    s.ok(v, &["scale", "sts", "web", "--replicas=1"]);
    drive_sts(
        &s,
        "scaled to 1",
        |now| {
            let n = names(now);
            assert!(
                !n.contains(&"web-2".to_string()) || n.contains(&"web-1".to_string()),
                "web-1 removed before web-2: {n:?}"
            );
        },
        |now| names(now) == ["web-0"],
    );
    assert_eq!(claims(&s), ["www-web-0", "www-web-1", "www-web-2"]);
    let events = s.ok(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=SuccessfulDelete",
        ],
    );
    assert!(
        events.contains("delete Pod web-2 in StatefulSet web successful"),
        "{events}"
    );
    let described = s.ok(v, &["describe", "sts", "web"]);
    assert!(
        described.contains("SuccessfulDelete") && described.contains("Pods Status:"),
        "{described}"
    );
}

#[test]
fn parallel_statefulset_creates_at_once_and_deletes_scaled_claims() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(
        v,
        &["apply", "-f", "-"],
        Some(&sts_yaml("Parallel", "Delete")),
    );
    // Parallel: all three without any becoming Ready.
    eventually(SOON, EVERY, "three pods at once", || {
        (names(&pods(&s, "web")) == ["web-0", "web-1", "web-2"]).then_some(())
    });
    assert!(pods(&s, "web").iter().all(|p| !ready(p)));
    assert_eq!(claims(&s), ["www-web-0", "www-web-1", "www-web-2"]);
    // whenScaled: Delete removes the claims of the condemned ordinals with their pods.
    s.ok(v, &["scale", "sts", "web", "--replicas=1"]);
    eventually(SOON, EVERY, "scaled down with claims", || {
        (names(&pods(&s, "web")) == ["web-0"] && claims(&s) == ["www-web-0"]).then_some(())
    });
    // Orphaned pods are adopted by a new set of the same name: no pod is replaced.
    let before = pods(&s, "web")[0]["metadata"]["uid"].clone();
    s.ok(v, &["delete", "sts", "web", "--cascade=orphan"]);
    eventually(SOON, EVERY, "set gone", || {
        let out = s.kubectl(v, &["get", "sts", "web"]);
        (!out.status.success()).then_some(())
    });
    s.ok_stdin(
        v,
        &["apply", "-f", "-"],
        Some(&sts_yaml("Parallel", "Delete").replace("replicas: 3", "replicas: 1")),
    );
    let uid = sts(&s)["metadata"]["uid"].clone();
    eventually(SOON, EVERY, "web-0 adopted", || {
        let now = pods(&s, "web");
        (now.len() == 1 && now[0]["metadata"]["ownerReferences"][0]["uid"] == uid).then_some(())
    });
    assert_eq!(
        pods(&s, "web")[0]["metadata"]["uid"],
        before,
        "adopted, not replaced"
    );
    // whenDeleted: Delete: the set owns its claims, so they go with it.
    s.ok(v, &["delete", "sts", "web"]);
    eventually(SOON, EVERY, "claims deleted with the set", || {
        (pods(&s, "web").is_empty() && claims(&s).is_empty()).then_some(())
    });
}

const DS_YAML: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 1}
  template:
    metadata:
      labels: {app: agent}
    spec:
      nodeSelector: {role: worker}
      containers:
      - name: agent
        image: agent:1
"#;

/// The node each live pod of `agent` is meant for (its pinning affinity), sorted.
fn target_nodes(now: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = now
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    n.sort();
    n
}

fn ds_status(s: &Server) -> Value {
    s.json(LATEST, &["get", "ds", "agent"])["status"].clone()
}

#[test]
fn daemonset_follows_nodes_taints_and_selectors_then_rolls_and_undoes() {
    let s = Server::start(bin());
    let v = LATEST;
    add_ready_node(&s, "w1", ", role: worker", "", "4", "8Gi");
    add_ready_node(&s, "w2", ", role: worker", "", "4", "8Gi");
    add_ready_node(
        &s,
        "t1",
        ", role: worker",
        "{key: dedicated, value: db, effect: NoSchedule}",
        "4",
        "8Gi",
    );
    add_ready_node(&s, "i1", ", role: infra", "", "4", "8Gi");
    s.ok_stdin(v, &["apply", "-f", "-"], Some(DS_YAML));

    // The tainted node and the one the selector rules out get none.
    eventually(SOON, EVERY, "pods on w1 and w2", || {
        (target_nodes(&pods(&s, "agent")) == ["w1", "w2"]).then_some(())
    });
    let pod = pods(&s, "agent").remove(0);
    let tolerations = pod["spec"]["tolerations"].to_string();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/disk-pressure",
    ] {
        assert!(tolerations.contains(key), "{key} missing: {tolerations}");
    }
    assert!(pod["metadata"]["generateName"] == "agent-");
    // The scheduler binds them through the affinity.
    eventually(SOON, EVERY, "pods bound to their nodes", || {
        pods(&s, "agent")
            .iter()
            .all(|p| !p["spec"]["nodeName"].is_null())
            .then_some(())
    });
    for p in pods(&s, "agent") {
        assert_eq!(
            target_nodes(std::slice::from_ref(&p))[0],
            p["spec"]["nodeName"].as_str().unwrap()
        );
    }
    settle(&s, "agent");
    eventually(SOON, EVERY, "status", || {
        let st = ds_status(&s);
        (st["desiredNumberScheduled"] == 2
            && st["currentNumberScheduled"] == 2
            && st["numberReady"] == 2
            && st["numberAvailable"] == 2
            && st["updatedNumberScheduled"] == 2
            && st["numberMisscheduled"] == 0)
            .then_some(())
    });
    let out = s.ok(v, &["rollout", "status", "ds/agent", "--timeout=10s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let events = s.ok(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=SuccessfulCreate",
        ],
    );
    assert!(events.contains("Created pod: agent-"), "{events}");
    let described = s.ok(v, &["describe", "ds", "agent"]);
    assert!(
        described.contains("Desired Number of Nodes Scheduled: 2")
            && described.contains("SuccessfulCreate"),
        "{described}"
    );

    // Untainting t1 admits it; relabelling w2 evicts its daemon.
    s.ok(v, &["taint", "node", "t1", "dedicated-"]);
    eventually(SOON, EVERY, "pod on t1", || {
        (target_nodes(&pods(&s, "agent")) == ["t1", "w1", "w2"]).then_some(())
    });
    s.ok(v, &["label", "node", "w2", "role=infra", "--overwrite"]);
    eventually(SOON, EVERY, "pod off w2", || {
        (target_nodes(&pods(&s, "agent")) == ["t1", "w1"]).then_some(())
    });
    settle(&s, "agent");
    eventually(SOON, EVERY, "two available", || {
        (ds_status(&s)["numberAvailable"] == 2).then_some(())
    });

    // Rolling update, one node at a time (maxUnavailable 1).
    let old_hash = revision_label(&pods(&s, "agent")[0]);
    s.ok(v, &["set", "image", "ds/agent", "agent=agent:2"]);
    let one_at_a_time = |now: &[Value]| {
        let serving = now
            .iter()
            .filter(|p| ready(p) && p["metadata"]["deletionTimestamp"].is_null())
            .count();
        assert!(
            serving >= 1,
            "more than maxUnavailable down: {:?}",
            names(now)
        );
    };
    let image = |p: &Value| {
        p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let rolled = |want: &str| {
        let want = want.to_string();
        move |now: &[Value]| {
            target_nodes(now) == ["t1", "w1"] && now.iter().all(|p| ready(p) && image(p) == want)
        }
    };
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        "rolled to agent:2",
        || {
            let now = pods(&s, "agent");
            one_at_a_time(&now);
            if rolled("agent:2")(&now) {
                return Some(());
            }
            settle(&s, "agent");
            None
        },
    );
    let new_hash = revision_label(&pods(&s, "agent")[0]);
    assert_ne!(new_hash, old_hash);
    s.ok(v, &["rollout", "status", "ds/agent", "--timeout=10s"]);
    let history = s.ok(v, &["rollout", "history", "ds/agent"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo: back to agent:1, the first revision renumbered 3, no third revision.
    s.ok(v, &["rollout", "undo", "ds/agent"]);
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        "rolled back",
        || {
            let now = pods(&s, "agent");
            if rolled("agent:1")(&now) {
                return Some(());
            }
            settle(&s, "agent");
            None
        },
    );
    assert_eq!(revision_label(&pods(&s, "agent")[0]), old_hash);
    let revs = s.json(v, &["get", "controllerrevisions"]);
    let mut numbers: Vec<i64> = revs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_i64().unwrap_or(0))
        .collect();
    numbers.sort();
    assert_eq!(numbers, [2, 3]);

    // Re-created after an orphaning delete, the set adopts the pods instead of doubling them.
    let uids = |now: &[Value]| {
        let mut u: Vec<String> = now
            .iter()
            .map(|p| {
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        u.sort();
        u
    };
    let before = uids(&pods(&s, "agent"));
    s.ok(v, &["delete", "ds", "agent", "--cascade=orphan"]);
    eventually(SOON, EVERY, "set gone", || {
        (!s.kubectl(v, &["get", "ds", "agent"]).status.success()).then_some(())
    });
    s.ok_stdin(v, &["apply", "-f", "-"], Some(DS_YAML));
    let uid = s.json(v, &["get", "ds", "agent"])["metadata"]["uid"].clone();
    eventually(SOON, EVERY, "pods adopted", || {
        let now = pods(&s, "agent");
        now.iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
            .then_some(())
    });
    settle(&s, "agent");
    eventually(SOON, EVERY, "adopted set available", || {
        (ds_status(&s)["numberAvailable"] == 2).then_some(())
    });
    assert_eq!(uids(&pods(&s, "agent")), before, "adopted, not replaced");
}

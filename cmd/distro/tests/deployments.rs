//! Integration tests: the deployment controller, with the ReplicaSet controller and garbage
//! collector it works with, seen through real kubectl. No kubelet runs here, so pods "become
//! ready" by patching their status as a kubelet would report them.

use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(50);

/// The ReplicaSets of app `web`, oldest revision first.
fn replicasets(s: &Server) -> Vec<Value> {
    let list = s.json(LATEST, &["get", "rs", "-l", "app=web"]);
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(revision);
    items
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn size(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn sizes(s: &Server) -> Vec<i64> {
    replicasets(s).iter().map(size).collect()
}

/// Reports every pod of app `web` Running and Ready, as a kubelet would.
fn settle(s: &Server) {
    let pods = s.json(LATEST, &["get", "pods", "-l", "app=web"]);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for pod in pods["items"].as_array().into_iter().flatten() {
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready || !pod["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ]}});
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        // A pod may be deleted meanwhile by a scale-down: ignore failures.
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

/// Settles ReplicaSets until the sizes are `want` (a rollout moves one step per report).
fn roll_until(s: &Server, what: &str, want: &[i64]) {
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        what,
        || {
            settle(s);
            (sizes(s) == want).then_some(())
        },
    );
}

fn progressing_reason(s: &Server) -> String {
    let d = s.json(LATEST, &["get", "deploy", "web"]);
    d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing")
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn rollout_scale_history_undo_pause() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok(
        v,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=3",
        ],
    );
    let first = eventually(SOON, EVERY, "first ReplicaSet", || {
        replicasets(&s).into_iter().next()
    });
    let name = first["metadata"]["name"].as_str().unwrap().to_string();
    let hash = first["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(name, format!("web-{hash}"));
    assert_eq!(size(&first), 3);
    assert_eq!(revision(&first), 1);
    assert_eq!(
        first["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    let owner = &first["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("Deployment"), Some(true))
    );
    assert_eq!(
        first["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"],
        "3"
    );
    assert_eq!(
        first["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"],
        "4"
    );

    settle(&s);
    eventually(SOON, EVERY, "deployment complete", || {
        let d = s.json(v, &["get", "deploy", "web"]);
        (d["status"]["availableReplicas"] == 3
            && d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
            && progressing_reason(&s) == "NewReplicaSetAvailable")
            .then_some(())
    });
    let events = s.ok(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=ScalingReplicaSet",
        ],
    );
    assert!(
        events.contains(&format!("Scaled up replica set {name} to 3 from 0")),
        "{events}"
    );

    // A new template: a second ReplicaSet, revision 2, grown by maxSurge (1 of 3) only.
    s.ok(v, &["set", "image", "deploy/web", "nginx=nginx:1.27"]);
    eventually(SOON, EVERY, "second ReplicaSet within surge", || {
        (sizes(&s) == [3, 1]).then_some(())
    });
    let rss = replicasets(&s);
    assert_eq!(revision(&rss[1]), 2);
    // Nothing available on the new one: maxUnavailable 0 keeps the old one whole.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sizes(&s), [3, 1]);
    roll_until(&s, "rolled over to revision 2", &[0, 3]);
    eventually(SOON, EVERY, "revision 2 complete", || {
        settle(&s);
        (progressing_reason(&s) == "NewReplicaSetAvailable").then_some(())
    });
    let history = s.ok(v, &["rollout", "history", "deploy/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo: the first ReplicaSet comes back as revision 3; no third one is made.
    s.ok(v, &["rollout", "undo", "deploy/web"]);
    eventually(SOON, EVERY, "old ReplicaSet reused as revision 3", || {
        let rss = replicasets(&s);
        (rss.len() == 2 && rss[1]["metadata"]["name"] == name.as_str() && revision(&rss[1]) == 3)
            .then_some(())
    });
    let rss = replicasets(&s);
    assert_eq!(
        rss[1]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    roll_until(&s, "rolled back", &[0, 3]);

    // Scaling.
    s.ok(v, &["scale", "deploy", "web", "--replicas=5"]);
    roll_until(&s, "scaled to 5", &[0, 5]);

    // Paused: a template change makes no ReplicaSet; resumed, it does.
    s.ok(v, &["rollout", "pause", "deploy/web"]);
    eventually(SOON, EVERY, "paused condition", || {
        (progressing_reason(&s) == "DeploymentPaused").then_some(())
    });
    s.ok(v, &["set", "image", "deploy/web", "nginx=nginx:1.28"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(replicasets(&s).len(), 2, "no rollout while paused");
    s.ok(v, &["scale", "deploy", "web", "--replicas=4"]);
    roll_until(&s, "scaled while paused", &[0, 4]);
    s.ok(v, &["rollout", "resume", "deploy/web"]);
    eventually(SOON, EVERY, "rollout after resume", || {
        (replicasets(&s).len() == 3).then_some(())
    });
    roll_until(&s, "rolled over to revision 4", &[0, 0, 4]);
}

#[test]
fn recreate_scales_old_to_zero_before_the_new() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok(
        v,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ],
    );
    s.ok(
        v,
        &[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
        ],
    );
    roll_until(&s, "first ReplicaSet", &[2]);
    s.ok(v, &["set", "image", "deploy/web", "nginx=nginx:1.27"]);
    // The old set goes to zero; with the ReplicaSet controller deleting its (never started)
    // pods at once, the new set may already exist by the time we look, but never beside a
    // non-zero old one.
    eventually(SOON, EVERY, "old scaled to zero", || {
        let now = sizes(&s);
        assert!(
            now.len() < 2 || now[0] == 0,
            "new set beside a live old one: {now:?}"
        );
        (now.first() == Some(&0)).then_some(())
    });
    roll_until(&s, "new ReplicaSet after old pods went", &[0, 2]);
}

//! Integration tests for what kubectl does with the OpenAPI documents: client-side `apply`
//! with validation on, `explain`, `diff`, and strategic merge by merge key.

use std::path::Path;

use distro_testharness::{Server, KUBECTL_VERSIONS, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

fn deployment(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: {image}
        ports:
        - containerPort: 80
      - name: side
        image: busybox
        env:
        - {{name: A, value: "1"}}
"#
    )
}

#[test]
fn every_kubectl_version_applies_with_validation_and_explains() {
    let s = Server::start(bin());
    for &v in KUBECTL_VERSIONS {
        let name = format!("web-{v}");
        let out = s.ok_stdin(
            v,
            &["apply", "-f", "-"],
            Some(&deployment(&name, "nginx:1.25")),
        );
        assert!(out.contains("created"), "kubectl 1.{v}: {out}");
        // Re-applying a changed image merges containers by name: the sidecar survives.
        let out = s.ok_stdin(
            v,
            &["apply", "-f", "-"],
            Some(&deployment(&name, "nginx:1.26")),
        );
        assert!(out.contains("configured"), "kubectl 1.{v}: {out}");
        let d = s.json(v, &["get", "deploy", &name]);
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 2, "kubectl 1.{v}: {containers:?}");
        assert_eq!(containers[0]["image"], "nginx:1.26");
        assert_eq!(containers[1]["env"][0]["value"], "1");

        let out = s.ok(v, &["explain", "pod.spec.containers.ports"]);
        assert!(
            out.contains("containerPort"),
            "kubectl 1.{v} explain: {out}"
        );
        let out = s.ok(v, &["explain", "deployment.spec.strategy"]);
        assert!(
            out.contains("rollingUpdate"),
            "kubectl 1.{v} explain: {out}"
        );
    }
}

#[test]
fn validation_names_unknown_fields_and_diff_shows_changes() {
    let s = Server::start(bin());
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndatta:\n  a: b\n";
    let err = s.fails_stdin(LATEST, &["apply", "-f", "-"], Some(bad));
    assert!(err.contains("datta"), "{err}");
    assert!(s.kubectl(LATEST, &["get", "configmap", "c"]).status.code() != Some(0));

    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&deployment("d", "nginx:1.25")),
    );
    let out = s.kubectl_stdin(
        LATEST,
        &["diff", "-f", "-"],
        Some(&deployment("d", "nginx:1.27")),
    );
    // kubectl diff exits 1 when there are differences.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.contains("-      - image: nginx:1.25"), "{diff}");
    assert!(diff.contains("+      - image: nginx:1.27"), "{diff}");
    let out = s.kubectl_stdin(
        LATEST,
        &["diff", "-f", "-"],
        Some(&deployment("d", "nginx:1.25")),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn openapi_documents_are_cacheable() {
    let s = Server::start(bin());
    let v2 = s.ok(LATEST, &["get", "--raw", "/openapi/v2"]);
    let doc: serde_json::Value = serde_json::from_str(&v2).expect("v2 is JSON");
    assert_eq!(doc["swagger"], "2.0");
    assert!(doc["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
    let index: serde_json::Value =
        serde_json::from_str(&s.ok(LATEST, &["get", "--raw", "/openapi/v3"])).expect("index");
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .expect("apps/v1 listed");
    let gv: serde_json::Value =
        serde_json::from_str(&s.ok(LATEST, &["get", "--raw", url])).expect("gv doc");
    assert!(gv["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
}

//! Integration tests for server-side apply and managedFields, driven by real kubectl:
//! `apply --server-side` with every supported version, pruning of dropped fields, conflicts
//! between managers and `--force-conflicts`, managedFields as `kubectl get` shows them, and the
//! interplay with client-side apply.

use std::path::Path;

use distro_testharness::{Server, KUBECTL_VERSIONS, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

fn deployment(name: &str, replicas: u32, containers: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
{containers}"#
    )
}

const MAIN: &str = "      - {name: main, image: nginx}\n";
const SIDE: &str = "      - {name: side, image: busybox, env: [{name: A, value: \"1\"}]}\n";

fn entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(list: &'a [Value], manager: &str, op: &str) -> Option<&'a Value> {
    list.iter()
        .find(|e| e["manager"] == manager && e["operation"] == op)
}

#[test]
fn every_kubectl_version_applies_server_side_and_prunes_dropped_fields() {
    let s = Server::start(bin());
    for &v in KUBECTL_VERSIONS {
        let name = format!("cm-{v}");
        let first = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{team: a}}\ndata:\n  keep: \"1\"\n  drop: \"2\"\n"
        );
        let out = s.ok_stdin(v, &["apply", "--server-side", "-f", "-"], Some(&first));
        assert!(out.contains("serverside-applied"), "kubectl 1.{v}: {out}");
        let second = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  keep: \"3\"\n"
        );
        let out = s.ok_stdin(v, &["apply", "--server-side", "-f", "-"], Some(&second));
        assert!(out.contains("serverside-applied"), "kubectl 1.{v}: {out}");
        let cm = s.json(v, &["get", "cm", &name, "--show-managed-fields"]);
        assert_eq!(
            cm["data"],
            serde_json::json!({"keep": "3"}),
            "kubectl 1.{v}"
        );
        assert!(
            cm["metadata"].get("labels").is_none(),
            "kubectl 1.{v}: {cm}"
        );
        let list = entries(&cm);
        assert_eq!(list.len(), 1, "kubectl 1.{v}: {list:?}");
        assert_eq!(list[0]["manager"], "kubectl");
        assert_eq!(list[0]["operation"], "Apply");
        assert_eq!(list[0]["apiVersion"], "v1");
        assert_eq!(list[0]["fieldsType"], "FieldsV1");
        assert_eq!(
            list[0]["fieldsV1"],
            serde_json::json!({"f:data": {"f:keep": {}}}),
            "kubectl 1.{v}"
        );
        assert!(list[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}

#[test]
fn conflicts_name_the_owner_and_force_takes_ownership() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(
        v,
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        Some(&deployment("web", 2, MAIN)),
    );
    let err = s.fails_stdin(
        v,
        &["apply", "--server-side", "--field-manager=b", "-f", "-"],
        Some(&deployment("web", 3, MAIN)),
    );
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"),
        "{err}"
    );
    let out = s.ok_stdin(
        v,
        &[
            "apply",
            "--server-side",
            "--field-manager=b",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&deployment("web", 3, MAIN)),
    );
    assert!(out.contains("serverside-applied"), "{out}");
    let d = s.json(v, &["get", "deploy", "web", "--show-managed-fields"]);
    assert_eq!(d["spec"]["replicas"], 3);
    let list = entries(&d);
    let a = entry(&list, "a", "Apply").expect("a's entry");
    assert!(a["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "{a}");
    let b = entry(&list, "b", "Apply").expect("b's entry");
    assert!(b["fieldsV1"]["f:spec"].get("f:replicas").is_some(), "{b}");

    // An update by another client takes the field over; applying a different value conflicts
    // with it, named as an updater.
    s.ok(
        v,
        &[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":4}}"#,
        ],
    );
    let err = s.fails_stdin(
        v,
        &["apply", "--server-side", "--field-manager=b", "-f", "-"],
        Some(&deployment("web", 5, MAIN)),
    );
    assert!(
        err.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using apps/v1: .spec.replicas"
        ),
        "{err}"
    );
    // Server-side dry run changes nothing.
    let out = s.ok_stdin(
        v,
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&deployment("dry", 1, MAIN)),
    );
    assert!(out.contains("serverside-applied (server dry run)"), "{out}");
    s.fails(v, &["get", "deploy", "dry"]);

    // Writes through the scale subresource are owned under that subresource.
    s.ok_stdin(
        v,
        &["apply", "--server-side", "--field-manager=c", "-f", "-"],
        Some(&deployment("scaled", 2, MAIN)),
    );
    s.ok(v, &["scale", "deploy", "scaled", "--replicas=4"]);
    let err = s.fails_stdin(
        v,
        &["apply", "--server-side", "--field-manager=c", "-f", "-"],
        Some(&deployment("scaled", 2, MAIN)),
    );
    assert!(
        err.contains("with subresource \"scale\" using apps/v1: .spec.replicas"),
        "{err}"
    );
}

#[test]
fn containers_merge_by_name_and_managed_fields_show_upstream_format() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(v, &["create", "-f", "-"], Some(&deployment("web", 1, MAIN)));
    // A second manager adds a container: the first one is kept.
    s.ok_stdin(
        v,
        &["apply", "--server-side", "--field-manager=side", "-f", "-"],
        Some(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n{SIDE}"
        )),
    );
    let d = s.json(v, &["get", "deploy", "web", "--show-managed-fields"]);
    let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["main", "side"]);
    assert_eq!(d["metadata"]["generation"], 2);
    let list = entries(&d);
    // Apply entries come first, then updates.
    assert_eq!(list[0]["manager"], "side");
    let side = &list[0]["fieldsV1"];
    assert_eq!(
        serde_json::to_string(side).unwrap(),
        r#"{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"side\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:name":{}}}}}}}"#
    );
    let create = entry(&list, "kubectl-create", "Update").expect("kubectl-create entry");
    assert_eq!(create["apiVersion"], "apps/v1");
    let f = &create["fieldsV1"];
    assert!(f["f:spec"]["f:replicas"].is_object(), "{f}");
    assert!(
        f["f:spec"]["f:template"]["f:metadata"]["f:labels"]["."].is_object(),
        "{f}"
    );
    assert!(
        f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"main\"}"]["f:image"]
            .is_object(),
        "{f}"
    );
    // Defaulted fields belong to the creator, as upstream.
    assert!(f["f:spec"]["f:progressDeadlineSeconds"].is_object(), "{f}");
    let yaml = s.ok(
        v,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "yaml",
            "--show-managed-fields",
        ],
    );
    assert!(yaml.contains("fieldsType: FieldsV1"), "{yaml}");
    assert!(yaml.contains("k:{\"name\":\"side\"}:"), "{yaml}");
    assert!(yaml.contains("manager: kubectl-create"), "{yaml}");
    // Without the flag kubectl hides them.
    let yaml = s.ok(v, &["get", "deploy", "web", "-o", "yaml"]);
    assert!(!yaml.contains("managedFields"), "{yaml}");
    // A label by kubectl-label: the new labels map and the label are its own (`.` marks the
    // map it added, as upstream); generation does not move.
    s.ok(v, &["label", "deploy", "web", "tier=front"]);
    let d = s.json(v, &["get", "deploy", "web", "--show-managed-fields"]);
    let list = entries(&d);
    let label = entry(&list, "kubectl-label", "Update").expect("kubectl-label entry");
    assert_eq!(
        label["fieldsV1"],
        serde_json::json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}})
    );
    assert_eq!(d["metadata"]["generation"], 2);
}

#[test]
fn client_side_and_server_side_apply_interplay() {
    let s = Server::start(bin());
    for v in [27, LATEST] {
        let name = format!("web-{v}");
        s.ok_stdin(v, &["apply", "-f", "-"], Some(&deployment(&name, 2, MAIN)));
        // Server-side apply of the same file takes over from client-side apply (no conflict),
        // and kubectl migrates the client-side entry.
        let out = s.ok_stdin(
            v,
            &["apply", "--server-side", "-f", "-"],
            Some(&deployment(&name, 3, MAIN)),
        );
        assert!(out.contains("serverside-applied"), "kubectl 1.{v}: {out}");
        let d = s.json(v, &["get", "deploy", &name, "--show-managed-fields"]);
        assert_eq!(d["spec"]["replicas"], 3);
        let list = entries(&d);
        let kubectl = entry(&list, "kubectl", "Apply").expect("kubectl's apply entry");
        assert!(
            kubectl["fieldsV1"]["f:spec"]["f:replicas"].is_object(),
            "{list:?}"
        );
        let last: Value = serde_json::from_str(
            d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .expect("annotation kept"),
        )
        .expect("annotation is JSON");
        assert_eq!(last["spec"]["replicas"], 3, "kubectl 1.{v}");
        // Back to client-side apply: it patches from the synced annotation.
        let out = s.ok_stdin(
            v,
            &["apply", "-f", "-"],
            Some(&deployment(&name, 1, &format!("{MAIN}{SIDE}"))),
        );
        assert!(out.contains("configured"), "kubectl 1.{v}: {out}");
        let d = s.json(v, &["get", "deploy", &name, "--show-managed-fields"]);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let list = entries(&d);
        assert!(
            entry(&list, "kubectl-client-side-apply", "Update").is_some(),
            "kubectl 1.{v}: {list:?}"
        );
    }
}

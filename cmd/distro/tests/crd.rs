//! Integration tests for CustomResourceDefinitions: the real `distro server` serving custom
//! resources to real kubectl 1.27–1.33 (establishment, validation, pruning, defaulting,
//! printer columns, explain, status and scale subresources, versions, deletion).

use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Server, KUBECTL_VERSIONS, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should look like.
            required: [size]
            properties:
              replicas: {type: integer, minimum: 0, default: 1}
              color: {type: string, enum: [red, blue], default: red}
              size: {type: string, description: How big the widget is.}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
  - name: v1beta1
    served: true
    storage: false
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

fn widget(name: &str, spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn establish(s: &Server, crd: &str, name: &str) {
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(crd));
    s.ok(
        LATEST,
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=10s",
            &format!("crd/{name}"),
        ],
    );
    // Established within a second of creation, by the server's own clock (seconds precision,
    // so a difference of at most 1), not this busy machine's kubectl start-up times.
    let c = s.json(LATEST, &["get", "crd", name]);
    let ts = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or("")).expect("timestamp")
    };
    let created = ts(&c["metadata"]["creationTimestamp"]);
    let conds = c["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let est = conds
        .iter()
        .find(|x| x["type"] == "Established")
        .expect("Established");
    let took = ts(&est["lastTransitionTime"]) - created;
    assert!(took.num_seconds() <= 1, "established after {took:?}");
}

#[test]
fn custom_resources_are_served_like_upstream() {
    let s = Server::start(bin());
    establish(&s, CRD, "widgets.example.com");
    let crd = s.json(LATEST, &["get", "crd", "widgets.example.com"]);
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]));
    assert_eq!(
        crd["metadata"]["finalizers"][0],
        "customresourcecleanup.apiextensions.k8s.io"
    );

    // Every kubectl creates and re-applies with validation on; defaults are filled in.
    for &v in KUBECTL_VERSIONS {
        let name = format!("w{v}");
        let out = s.ok_stdin(
            v,
            &["apply", "-f", "-"],
            Some(&widget(&name, "  size: big\n")),
        );
        assert!(out.contains("created"), "kubectl 1.{v}: {out}");
        let out = s.ok_stdin(
            v,
            &["apply", "-f", "-"],
            Some(&widget(&name, "  size: small\n  color: blue\n")),
        );
        assert!(out.contains("configured"), "kubectl 1.{v}: {out}");
        let w = s.json(v, &["get", "widget", &name]);
        assert_eq!(w["spec"]["replicas"], 1, "kubectl 1.{v}: {w}");
        assert_eq!(w["spec"]["color"], "blue");
        assert_eq!(w["spec"]["size"], "small");
        assert_eq!(w["metadata"]["generation"], 2);
    }

    // Invalid objects are refused with upstream's field messages, and nothing is stored.
    let err = s.fails_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&widget(
            "bad",
            "  size: x\n  replicas: many\n  color: green\n",
        )),
    );
    assert!(
        err.contains(r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#),
        "{err}"
    );
    assert!(
        err.contains(r#"spec.color: Unsupported value: "green": supported values: "red", "blue""#),
        "{err}"
    );
    let err = s.fails_stdin(
        LATEST,
        &["create", "-f", "-"],
        Some(&widget("bad", "  color: red\n")),
    );
    assert!(err.contains("spec.size: Required value"), "{err}");
    let err = s.fails(LATEST, &["get", "widget", "bad"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    // Unknown fields: rejected under strict validation, pruned otherwise.
    let extra = widget("extra", "  size: m\n  bogus: 1\n");
    let err = s.fails_stdin(
        LATEST,
        &["apply", "--validate=strict", "-f", "-"],
        Some(&extra),
    );
    assert!(err.contains(r#"unknown field "spec.bogus""#), "{err}");
    s.ok_stdin(
        LATEST,
        &["apply", "--validate=false", "-f", "-"],
        Some(&extra),
    );
    let w = s.json(LATEST, &["get", "widget", "extra"]);
    assert!(w["spec"].get("bogus").is_none(), "{w}");

    // Short name, printer columns.
    let out = s.ok(LATEST, &["get", "wd"]);
    let header = out.lines().next().unwrap_or("");
    for col in ["NAME", "REPLICAS", "COLOR", "AGE"] {
        assert!(header.contains(col), "{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("w33") && l.contains("blue")),
        "{out}"
    );

    // explain reads the published schema.
    let out = s.ok(LATEST, &["explain", "widget.spec"]);
    assert!(
        out.contains("replicas") && out.contains("How big the widget is"),
        "{out}"
    );

    // Status subresource: spec is ignored there, status is ignored on the main resource.
    s.ok(
        LATEST,
        &[
            "patch",
            "widget",
            "w33",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":2,"selector":"app=w"},"spec":{"size":"ignored"}}"#,
        ],
    );
    s.ok(
        LATEST,
        &[
            "patch",
            "widget",
            "w33",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":9}}"#,
        ],
    );
    let w = s.json(LATEST, &["get", "widget", "w33"]);
    assert_eq!(w["status"]["replicas"], 2, "{w}");
    assert_eq!(w["spec"]["size"], "small");
    assert_eq!(
        w["metadata"]["generation"], 2,
        "status writes don't bump generation: {w}"
    );

    // Scale subresource.
    let out = s.ok(LATEST, &["scale", "widget", "w33", "--replicas=3"]);
    assert!(out.contains("scaled"), "{out}");
    let w = s.json(LATEST, &["get", "widget", "w33"]);
    assert_eq!(w["spec"]["replicas"], 3);
    assert_eq!(w["metadata"]["generation"], 3);
    let raw = s.ok(
        LATEST,
        &[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/default/widgets/w33/scale",
        ],
    );
    let scale: serde_json::Value = serde_json::from_str(&raw).expect("Scale JSON");
    assert_eq!(scale["status"]["selector"], "app=w", "{scale}");
    let err = s.fails(LATEST, &["scale", "widget", "w33", "--replicas=-1"]);
    assert!(!err.is_empty());

    // Both versions read the same object (v1 is preferred, so plain `widget` above was v1).
    let v2 = s.json(LATEST, &["get", "widgets.v1beta1.example.com", "w33"]);
    assert_eq!(v2["apiVersion"], "example.com/v1beta1");
    assert_eq!(v2["spec"]["replicas"], 3);

    // Deleting the CRD deletes its objects and the resource.
    s.ok(
        LATEST,
        &["delete", "crd", "widgets.example.com", "--timeout=10s"],
    );
    let out = s.ok(LATEST, &["api-resources", "--api-group=example.com"]);
    assert!(!out.contains("widgets"), "{out}");
    let err = s.fails(LATEST, &["get", "widgets"]);
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );
    establish(&s, CRD, "widgets.example.com");
    let out = eventually(
        Duration::from_secs(5),
        Duration::from_millis(100),
        "an empty widget list",
        || {
            let o = s.kubectl(LATEST, &["get", "widgets", "-A"]);
            let text = String::from_utf8_lossy(&o.stderr).into_owned();
            (o.status.success() && text.contains("No resources found")).then_some(text)
        },
    );
    assert!(out.contains("No resources found"), "{out}");
    s.ok(LATEST, &["delete", "crd", "widgets.example.com"]);

    // Built-in kinds still apply with validation once CRDs have come and gone.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\ndata:\n  a: \"1\"\n";
    for &v in KUBECTL_VERSIONS {
        s.ok_stdin(v, &["apply", "-f", "-"], Some(cm));
    }
}

#[test]
fn bad_and_conflicting_crds_are_reported() {
    let mut s = Server::start(bin());
    let non_structural = CRD.replace(
        "            type: object\n            description: What",
        "            description: What",
    );
    let err = s.fails_stdin(LATEST, &["apply", "-f", "-"], Some(&non_structural));
    assert!(
        err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"),
        "{err}"
    );
    let misnamed = CRD.replace("name: widgets.example.com", "name: gadgets.example.com");
    let err = s.fails_stdin(LATEST, &["apply", "-f", "-"], Some(&misnamed));
    assert!(
        err.contains("must be spec.names.plural+\".\"+spec.group"),
        "{err}"
    );
    let two_storage = CRD.replace("storage: false", "storage: true");
    let err = s.fails_stdin(LATEST, &["apply", "-f", "-"], Some(&two_storage));
    assert!(
        err.contains("must have exactly one version marked as storage version"),
        "{err}"
    );

    establish(&s, CRD, "widgets.example.com");
    // Same kind under another plural in the same group: names not accepted, not established.
    let clash = CRD
        .replace("widgets.example.com", "gizmos.example.com")
        .replace("plural: widgets", "plural: gizmos")
        .replace("singular: widget", "singular: gizmo")
        .replace("shortNames: [wd]", "shortNames: [gz]");
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&clash));
    let crd = eventually(
        Duration::from_secs(5),
        Duration::from_millis(100),
        "NamesAccepted=False",
        || {
            let c = s.json(LATEST, &["get", "crd", "gizmos.example.com"]);
            let conds = c["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conds
                .iter()
                .any(|x| x["type"] == "NamesAccepted" && x["status"] == "False")
                .then_some(c)
        },
    );
    let conds = crd["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names = conds
        .iter()
        .find(|c| c["type"] == "NamesAccepted")
        .cloned()
        .unwrap_or_default();
    assert_eq!(names["reason"], "KindConflict", "{crd}");
    assert_eq!(names["message"], "\"Widget\" is already in use");
    let established = conds
        .iter()
        .find(|c| c["type"] == "Established")
        .cloned()
        .unwrap_or_default();
    assert_eq!(established["status"], "False");
    s.fails(LATEST, &["get", "gizmos"]);

    // Once the first CRD goes, the second one's names are free.
    s.ok(LATEST, &["delete", "crd", "widgets.example.com"]);
    s.ok(
        LATEST,
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=10s",
            "crd/gizmos.example.com",
        ],
    );
    s.ok(LATEST, &["get", "gizmos"]);

    // A restarted server serves the CRDs in storage from the start (kind Widget is gizmos now).
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&widget("g1", "  size: s\n")),
    );
    s.restart();
    let g = s.json(LATEST, &["get", "gizmo", "g1"]);
    assert_eq!(g["spec"]["replicas"], 1, "{g}");
}

//! Integration tests for the subresources with their own semantics (scale, binding, eviction,
//! token, CSR approval), the review APIs behind `kubectl auth`, and `/metrics`, driven by real
//! kubectl.

use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Server, KUBECTL_VERSIONS, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const WORKLOADS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  replicas: 1
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts}
spec:
  replicas: 1
  serviceName: sts
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  replicas: 1
  selector: {app: rc}
  template:
    metadata: {labels: {app: rc}}
    spec: {containers: [{name: c, image: nginx}]}
"#;

fn pod(name: &str, labels: &str, sa: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec: {{serviceAccountName: {sa}, containers: [{{name: c, image: nginx}}]}}\n"
    )
}

fn replicas(s: &Server, what: &str) -> i64 {
    s.json(LATEST, &["get", what])["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

#[test]
fn kubectl_scale_works_for_every_version_and_kind() {
    let s = Server::start(bin());
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(WORKLOADS));
    for (i, &v) in KUBECTL_VERSIONS.iter().enumerate() {
        let n = (i + 2).to_string();
        let out = s.ok(v, &["scale", "deploy/web", "--replicas", &n]);
        assert!(out.contains("deployment.apps/web scaled"), "1.{v}: {out}");
        assert_eq!(replicas(&s, "deploy/web"), (i + 2) as i64, "kubectl 1.{v}");
    }
    for what in ["rs/rs", "sts/sts", "rc/rc"] {
        s.ok(LATEST, &["scale", what, "--replicas=3"]);
        assert_eq!(replicas(&s, what), 3, "{what}");
    }
    // --current-replicas goes through GET and PUT of the Scale.
    s.ok(
        27,
        &["scale", "rc/rc", "--current-replicas=3", "--replicas=4"],
    );
    assert_eq!(replicas(&s, "rc/rc"), 4);
    let err = s.fails(
        LATEST,
        &["scale", "rs/rs", "--current-replicas=9", "--replicas=1"],
    );
    assert!(err.contains("Expected replicas to be 9, was 3"), "{err}");

    let scale = s.ok(
        LATEST,
        &[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ],
    );
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("Scale JSON");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["status"]["selector"], "app=web");
    // A Scale with a stale resourceVersion is a conflict, as upstream.
    let stale = serde_json::json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
        "spec": {"replicas": 1}});
    let err = s.fails_stdin(
        LATEST,
        &[
            "replace",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            "-f",
            "-",
        ],
        Some(&stale.to_string()),
    );
    assert!(
        err.contains("Operation cannot be fulfilled on deployments.apps \"web\""),
        "{err}"
    );
    let err = s.fails(LATEST, &["scale", "deploy/web", "--replicas=-1"]);
    assert!(err.contains("replicas"), "{err}");
}

#[test]
fn binding_assigns_a_pod_once() {
    let s = Server::start(bin());
    for p in ["p1", "p2"] {
        s.ok_stdin(
            LATEST,
            &["create", "-f", "-"],
            Some(&pod(p, "app: x", "default")),
        );
    }
    let binding = |pod: &str, node: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"{pod}"}},"target":{{"kind":"Node","name":"{node}"}}}}"#
        )
    };
    let out = s.ok_stdin(
        LATEST,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/p1/binding",
            "-f",
            "-",
        ],
        Some(&binding("p1", "n1")),
    );
    assert!(out.contains("Success"), "{out}");
    let p = s.json(LATEST, &["get", "pod", "p1"]);
    assert_eq!(p["spec"]["nodeName"], "n1");
    assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
    let err = s.fails_stdin(
        LATEST,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/p1/binding",
            "-f",
            "-",
        ],
        Some(&binding("p1", "n2")),
    );
    assert!(
        err.contains(r#"pod p1 is already assigned to node \"n1\""#)
            || err.contains(r#"pod p1 is already assigned to node "n1""#),
        "{err}"
    );
    // The namespaced `bindings` resource takes the pod from the body.
    s.ok_stdin(
        LATEST,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/bindings",
            "-f",
            "-",
        ],
        Some(&binding("p2", "n2")),
    );
    assert_eq!(
        s.json(LATEST, &["get", "pod", "p2"])["spec"]["nodeName"],
        "n2"
    );
}

#[test]
fn eviction_is_refused_by_a_budget_then_allowed() {
    let s = Server::start(bin());
    s.ok_stdin(
        LATEST,
        &["create", "-f", "-"],
        Some(&pod("victim", "app: db", "default")),
    );
    // Only running pods are protected (pending ones are evicted freely, as upstream).
    s.ok(
        LATEST,
        &[
            "patch",
            "pod",
            "victim",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
    );
    s.ok(
        LATEST,
        &[
            "create",
            "pdb",
            "db",
            "--selector=app=db",
            "--min-available=1",
        ],
    );
    // The disruption controller computes the budget: one healthy pod, one required.
    let allowed = |want: i64| {
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(50),
            "the budget's status",
            || {
                let pdb = s.json(LATEST, &["get", "pdb", "db"]);
                (pdb["status"]["disruptionsAllowed"] == want
                    && pdb["status"]["observedGeneration"] == 1)
                    .then_some(())
            },
        )
    };
    allowed(0);
    let eviction = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"victim","namespace":"default"}}"#;
    let url = "/api/v1/namespaces/default/pods/victim/eviction";
    let err = s.fails_stdin(LATEST, &["create", "--raw", url, "-f", "-"], Some(eviction));
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    assert!(s.ok(LATEST, &["get", "pod", "victim"]).contains("victim"));

    // A second healthy pod: one disruption allowed, and the eviction spends it.
    s.ok_stdin(
        LATEST,
        &["create", "-f", "-"],
        Some(&pod("spare", "app: db", "default")),
    );
    s.ok(
        LATEST,
        &[
            "patch",
            "pod",
            "spare",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
    );
    allowed(1);
    s.ok_stdin(LATEST, &["create", "--raw", url, "-f", "-"], Some(eviction));
    let err = s.fails(LATEST, &["get", "pod", "victim"]);
    assert!(err.contains("not found"), "{err}");
    allowed(0);

    // `kubectl drain` evicts what runs on a node.
    s.ok_stdin(
        LATEST,
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}"#),
    );
    s.ok_stdin(
        LATEST,
        &["create", "-f", "-"],
        Some(&pod("worker", "app: w", "default")),
    );
    s.ok_stdin(
        LATEST,
        &["create", "--raw", "/api/v1/namespaces/default/pods/worker/binding", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"worker"},"target":{"name":"n1"}}"#),
    );
    let out = s.ok(
        LATEST,
        &[
            "drain",
            "n1",
            "--force",
            "--grace-period=0",
            "--timeout=20s",
        ],
    );
    assert!(
        out.contains("pod/worker evicted") && out.contains("drained"),
        "{out}"
    );
    let err = s.fails(LATEST, &["get", "pod", "worker"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn created_tokens_authenticate_until_their_objects_go() {
    let s = Server::start(bin());
    s.ok(LATEST, &["create", "serviceaccount", "bot"]);
    let token = s.ok(LATEST, &["create", "token", "bot"]).trim().to_string();
    for &v in KUBECTL_VERSIONS {
        let out = s.ok(v, &["--token", &token, "auth", "whoami"]);
        assert!(
            out.contains("system:serviceaccount:default:bot"),
            "1.{v}: {out}"
        );
    }
    let err = s.fails(LATEST, &["--token", &token, "get", "pods"]);
    assert!(
        err.contains(r#"pods is forbidden: User "system:serviceaccount:default:bot" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{err}"
    );
    let err = s.fails(LATEST, &["create", "token", "bot", "--duration=5m"]);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = s.fails(LATEST, &["create", "token", "nobody"]);
    assert!(
        err.contains(r#"serviceaccounts "nobody" not found"#),
        "{err}"
    );
    // A token for another audience is not for the API server.
    let vault = s.ok(LATEST, &["create", "token", "bot", "--audience=vault"]);
    let err = s.fails(LATEST, &["--token", vault.trim(), "get", "pods"]);
    assert!(err.contains("Unauthorized"), "{err}");

    // A pod-bound token dies with its pod.
    s.ok_stdin(
        LATEST,
        &["create", "-f", "-"],
        Some(&pod("holder", "a: b", "bot")),
    );
    let bound = s.ok(
        LATEST,
        &[
            "create",
            "token",
            "bot",
            "--bound-object-kind=Pod",
            "--bound-object-name=holder",
        ],
    );
    let out = s.ok(LATEST, &["--token", bound.trim(), "auth", "whoami"]);
    assert!(out.contains("system:serviceaccount:default:bot"), "{out}");
    s.ok(LATEST, &["delete", "pod", "holder", "--wait=false"]);
    let err = s.fails(LATEST, &["--token", bound.trim(), "auth", "whoami"]);
    assert!(err.contains("Unauthorized"), "{err}");
    // And every token of the account dies with it.
    s.ok(LATEST, &["delete", "serviceaccount", "bot"]);
    let err = s.fails(LATEST, &["--token", &token, "auth", "whoami"]);
    assert!(err.contains("Unauthorized"), "{err}");
}

#[test]
fn auth_can_i_answers_for_users_and_lists_rules() {
    let s = Server::start(bin());
    for &v in KUBECTL_VERSIONS {
        assert_eq!(
            s.ok(v, &["auth", "can-i", "create", "pods"]).trim(),
            "yes",
            "1.{v}"
        );
        let out = s.kubectl(v, &["auth", "can-i", "create", "pods", "--as=bob"]);
        assert!(!out.status.success(), "1.{v}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no", "1.{v}");
        let who = s.ok(v, &["auth", "whoami"]);
        assert!(
            who.contains("system:admin") && who.contains("system:masters"),
            "1.{v}: {who}"
        );
    }
    s.ok(
        LATEST,
        &[
            "create",
            "rolebinding",
            "bob-edit",
            "--clusterrole=edit",
            "--user=bob",
        ],
    );
    s.ok(
        LATEST,
        &[
            "create",
            "clusterrole",
            "logs",
            "--verb=get",
            "--resource=pods/log",
        ],
    );
    s.ok(
        LATEST,
        &[
            "create",
            "clusterrolebinding",
            "bob-logs",
            "--clusterrole=logs",
            "--user=bob",
        ],
    );
    let yes = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend(args);
        s.kubectl(LATEST, &a).status.success()
    };
    assert!(yes(&["create", "deployments", "--as=bob"]));
    assert!(!yes(&[
        "create",
        "deployments",
        "--as=bob",
        "-n",
        "kube-system"
    ]));
    assert!(yes(&[
        "get",
        "pods",
        "--subresource=log",
        "--as=bob",
        "-n",
        "kube-system"
    ]));
    assert!(!yes(&[
        "get",
        "pods",
        "--subresource=exec",
        "--as=bob",
        "-n",
        "kube-system"
    ]));
    assert!(yes(&["get", "/metrics"]));
    assert!(!yes(&["get", "/metrics", "--as=bob"]));
    assert!(yes(&[
        "get",
        "/api",
        "--as=bob",
        "--as-group=system:authenticated"
    ]));

    let list = s.ok(LATEST, &["auth", "can-i", "--list"]);
    assert!(list.contains("*.*"), "{list}");
    let list = s.ok(LATEST, &["auth", "can-i", "--list", "--as=bob"]);
    assert!(list.contains("deployments.apps"), "{list}");
    assert!(list.contains("pods/log"), "{list}");
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );

    // Reviews are checked like any request: bob may not ask about others.
    let sar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"eve","resourceAttributes":{"verb":"get","resource":"pods"}}}"#;
    let err = s.fails_stdin(
        LATEST,
        &[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "-f",
            "-",
            "--as=bob",
        ],
        Some(sar),
    );
    assert!(
        err.contains("cannot create resource \"subjectaccessreviews\""),
        "{err}"
    );
    let out = s.ok_stdin(
        LATEST,
        &[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "-f",
            "-",
        ],
        Some(sar),
    );
    assert!(out.contains(r#""allowed":false"#), "{out}");
}

const CSR_REQUEST: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlJQgotLS0tLUVORCBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K";

fn csr(name: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec: {{request: {CSR_REQUEST}, signerName: example.com/client, usages: [client auth]}}\n"
    )
}

#[test]
fn certificate_approve_and_deny_set_conditions() {
    let s = Server::start(bin());
    for (name, v) in [("a27", 27), ("a33", LATEST)] {
        s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&csr(name)));
        let out = s.ok(v, &["certificate", "approve", name]);
        assert!(out.contains("approved"), "1.{v}: {out}");
        let got = s.json(LATEST, &["get", "csr", name]);
        assert_eq!(got["status"]["conditions"][0]["type"], "Approved");
        assert_eq!(got["status"]["conditions"][0]["reason"], "KubectlApprove");
        assert_eq!(got["spec"]["username"], "system:admin");
    }
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&csr("d")));
    s.ok(LATEST, &["certificate", "deny", "d"]);
    let table = s.ok(LATEST, &["get", "csr", "d"]);
    assert!(
        table.contains("Denied") && table.contains("system:admin"),
        "{table}"
    );
    // The status subresource cannot approve.
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&csr("s")));
    s.ok(
        LATEST,
        &[
            "patch",
            "csr",
            "s",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Approved","status":"True","reason":"Sneaky"}]}}"#,
        ],
    );
    assert!(s.ok(LATEST, &["get", "csr", "s"]).contains("Pending"));
    // Approving needs the approve verb on the signer.
    s.ok(
        LATEST,
        &[
            "create",
            "clusterrole",
            "csr-edit",
            "--verb=get,update",
            "--resource=certificatesigningrequests,certificatesigningrequests/approval",
        ],
    );
    s.ok(
        LATEST,
        &[
            "create",
            "clusterrolebinding",
            "bob-csr",
            "--clusterrole=csr-edit",
            "--user=bob",
        ],
    );
    let err = s.fails(LATEST, &["certificate", "approve", "s", "--as=bob"]);
    assert!(
        err.contains(
            r#"user not permitted to approve requests with signerName \"example.com/client\""#
        ) || err.contains(
            r#"user not permitted to approve requests with signerName "example.com/client""#
        ),
        "{err}"
    );
}

#[test]
fn metrics_are_served_to_those_allowed() {
    let s = Server::start(bin());
    s.ok(LATEST, &["get", "pods"]);
    let out = s.ok(LATEST, &["get", "--raw", "/metrics"]);
    for needle in [
        r#"apiserver_request_total{code="200",component="apiserver",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"}"#,
        "apiserver_request_duration_seconds_bucket{",
        "apiserver_current_inflight_requests{request_kind=\"readOnly\"}",
        r#"apiserver_storage_objects{resource="namespaces"} 4"#,
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_start_time_seconds ",
    ] {
        assert!(out.contains(needle), "missing {needle} in:\n{out}");
    }
    let err = s.fails(LATEST, &["get", "--raw", "/metrics", "--as=bob"]);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
}

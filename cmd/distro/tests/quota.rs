//! Integration tests: ResourceQuota admission and status, and LimitRange defaults and
//! limits, seen through real kubectl.

use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(100);

fn pod(name: &str, ns: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {resources}\n"
    )
}

#[test]
fn quota_rejects_over_hard_limits_and_reports_usage() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok(v, &["create", "namespace", "team"]);
    s.ok(
        v,
        &[
            "create",
            "quota",
            "q",
            "-n",
            "team",
            "--hard=pods=3,requests.cpu=1,configmaps=2",
        ],
    );
    // The controller fills the status (kube-root-ca.crt is one ConfigMap already).
    eventually(SOON, EVERY, "quota status", || {
        let q = s.json(v, &["get", "quota", "q", "-n", "team"]);
        (q["status"]["hard"]["pods"] == "3"
            && q["status"]["used"]["pods"] == "0"
            && q["status"]["used"]["configmaps"] == "1")
            .then_some(())
    });

    let cpu = |c: &str| format!("{{requests: {{cpu: {c}}}}}");
    for name in ["p1", "p2"] {
        s.ok_stdin(
            v,
            &["create", "-f", "-"],
            Some(&pod(name, "team", &cpu("400m"))),
        );
    }
    let err = s.fails_stdin(
        v,
        &["create", "-f", "-"],
        Some(&pod("p3", "team", &cpu("300m"))),
    );
    assert!(
        err.contains(r#"pods "p3" is forbidden: exceeded quota: q, requested: requests.cpu=300m, used: requests.cpu=800m, limited: requests.cpu=1"#),
        "{err}"
    );
    let err = s.fails_stdin(v, &["create", "-f", "-"], Some(&pod("p3", "team", "{}")));
    assert!(
        err.contains("failed quota: q: must specify requests.cpu"),
        "{err}"
    );
    s.ok_stdin(
        v,
        &["create", "-f", "-"],
        Some(&pod("p3", "team", &cpu("100m"))),
    );
    let err = s.fails_stdin(
        v,
        &["create", "-f", "-"],
        Some(&pod("p4", "team", &cpu("100m"))),
    );
    assert!(
        err.contains("exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3"),
        "{err}"
    );
    s.ok(v, &["create", "configmap", "one", "-n", "team"]);
    let err = s.fails(v, &["create", "configmap", "two", "-n", "team"]);
    assert!(
        err.contains(r#"configmaps "two" is forbidden: exceeded quota: q, requested: configmaps=1, used: configmaps=2, limited: configmaps=2"#),
        "{err}"
    );

    eventually(SOON, EVERY, "quota usage", || {
        let q = s.json(v, &["get", "quota", "q", "-n", "team"]);
        (q["status"]["used"]["pods"] == "3"
            && q["status"]["used"]["requests.cpu"] == "900m"
            && q["status"]["used"]["configmaps"] == "2")
            .then_some(())
    });
    // Deleting frees the quota again.
    s.ok(v, &["delete", "pod", "p1", "-n", "team", "--wait=false"]);
    eventually(SOON, EVERY, "usage after delete", || {
        let q = s.json(v, &["get", "quota", "q", "-n", "team"]);
        (q["status"]["used"]["pods"] == "2").then_some(())
    });
    s.ok_stdin(
        v,
        &["create", "-f", "-"],
        Some(&pod("p4", "team", &cpu("100m"))),
    );
    let describe = s.ok(v, &["describe", "quota", "q", "-n", "team"]);
    assert!(describe.contains("requests.cpu"), "{describe}");
}

const LIMITS: &str = "apiVersion: v1
kind: LimitRange
metadata: {name: limits, namespace: lr}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 128Mi}
    defaultRequest: {cpu: 100m}
    max: {cpu: '1'}
    maxLimitRequestRatio: {cpu: '10'}
";

#[test]
fn limitrange_defaults_and_rejects() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok(v, &["create", "namespace", "lr"]);
    s.ok_stdin(v, &["create", "-f", "-"], Some(LIMITS));

    s.ok_stdin(v, &["create", "-f", "-"], Some(&pod("plain", "lr", "{}")));
    let p = s.json(v, &["get", "pod", "plain", "-n", "lr"]);
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["limits"]["cpu"], "500m", "{r}");
    assert_eq!(r["requests"]["cpu"], "100m", "{r}");
    assert_eq!(r["limits"]["memory"], "128Mi", "{r}");
    assert_eq!(
        r["requests"]["memory"], "128Mi",
        "defaultRequest falls back to default: {r}"
    );

    let err = s.fails_stdin(
        v,
        &["create", "-f", "-"],
        Some(&pod(
            "big",
            "lr",
            "{limits: {cpu: '2'}, requests: {cpu: 500m}}",
        )),
    );
    assert!(
        err.contains(
            r#"pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#
        ),
        "{err}"
    );
    let err = s.fails_stdin(
        v,
        &["create", "-f", "-"],
        Some(&pod(
            "skewed",
            "lr",
            "{limits: {cpu: '1'}, requests: {cpu: 50m}}",
        )),
    );
    assert!(
        err.contains(
            "cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000"
        ),
        "{err}"
    );
    // Other namespaces are not limited.
    s.ok_stdin(
        v,
        &["create", "-f", "-"],
        Some(&pod("free", "default", "{limits: {cpu: '2'}}")),
    );
}

//! Integration tests: the real `distro server` driven by real kubectl 1.27–1.33.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Server, KUBECTL_VERSIONS, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

fn configmap(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\ndata:\n  a: \"1\"\n"
    )
}

#[test]
fn every_kubectl_version_creates_gets_patches_and_deletes() {
    let s = Server::start(bin());
    for &v in KUBECTL_VERSIONS {
        let name = format!("cm-{v}");
        let ns_out = s.ok(v, &["get", "namespaces"]);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(ns_out.contains(ns), "kubectl 1.{v} get ns: {ns_out}");
        }
        s.ok_stdin(
            v,
            &["create", "--validate=false", "-f", "-"],
            Some(&configmap(&name, "tier: web")),
        );
        let got = s.json(v, &["get", "configmap", &name]);
        assert_eq!(got["data"]["a"], "1");
        assert!(!got["metadata"]["uid"].as_str().unwrap_or("").is_empty());
        assert!(!got["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .is_empty());
        s.ok(v, &["label", "configmap", &name, "extra=yes"]);
        s.ok(
            v,
            &[
                "patch",
                "configmap",
                &name,
                "--type=merge",
                "-p",
                r#"{"data":{"b":"2"}}"#,
            ],
        );
        s.ok(
            v,
            &[
                "patch",
                "configmap",
                &name,
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/data/c","value":"3"}]"#,
            ],
        );
        let got = s.json(v, &["get", "cm", &name]);
        assert_eq!(
            got["data"],
            serde_json::json!({"a": "1", "b": "2", "c": "3"})
        );
        assert_eq!(got["metadata"]["labels"]["extra"], "yes");
        let table = s.ok(v, &["get", "cm", &name]);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(table.contains("DATA") && table.contains("AGE"), "{table}");
        let out = s.ok(v, &["delete", "configmap", &name]);
        assert!(
            out.contains(&format!("configmap \"{name}\" deleted")),
            "{out}"
        );
        let err = s.fails(v, &["get", "configmap", &name]);
        assert!(
            err.contains(&format!("configmaps \"{name}\" not found")),
            "{err}"
        );
    }
}

#[test]
fn discovery_lists_short_names_and_groups() {
    let s = Server::start(bin());
    for &v in KUBECTL_VERSIONS {
        let out = s.ok(v, &["api-resources"]);
        for needle in [
            "deployments",
            "deploy",
            "apps/v1",
            "customresourcedefinitions",
            "crd,crds",
            "networkpolicies",
        ] {
            assert!(
                out.contains(needle),
                "kubectl 1.{v} api-resources lacks {needle}:\n{out}"
            );
        }
        let versions = s.ok(v, &["api-versions"]);
        assert!(
            versions.contains("rbac.authorization.k8s.io/v1"),
            "{versions}"
        );
    }
    let out = s.ok(LATEST, &["get", "deploy"]);
    assert!(out.is_empty() || out.contains("No resources"), "{out}");
}

#[test]
fn errors_are_statuses_naming_the_problem() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(
        v,
        &["create", "--validate=false", "-f", "-"],
        Some(&configmap("dup", "")),
    );
    let err = s.fails_stdin(
        v,
        &["create", "--validate=false", "-f", "-"],
        Some(&configmap("dup", "")),
    );
    assert!(err.contains("configmaps \"dup\" already exists"), "{err}");
    let err = s.fails_stdin(
        v,
        &["create", "--validate=false", "-f", "-"],
        Some(&configmap("Bad_Name", "")),
    );
    assert!(
        err.contains(
            "The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{err}"
    );
    assert!(err.contains("a lowercase RFC 1123 subdomain"), "{err}");
    let err = s.fails_stdin(
        v,
        &["create", "--validate=false", "-f", "-"],
        Some(&configmap("badlabel", "\"a b\": c")),
    );
    assert!(
        err.contains("metadata.labels: Invalid value: \"a b\""),
        "{err}"
    );
    let err = s.fails(v, &["get", "nosuchkind"]);
    assert!(
        err.contains("the server doesn't have a resource type \"nosuchkind\""),
        "{err}"
    );
    // kubectl 1.33 follows a 404 by checking the namespace and reports that instead.
    let err = s.fails(v, &["get", "cm", "-n", "nowhere", "x"]);
    assert!(
        err.contains("configmaps \"x\" not found")
            || err.contains("namespaces \"nowhere\" not found"),
        "{err}"
    );
    let err = s.fails_stdin(
        v,
        &["create", "--validate=false", "-n", "nowhere", "-f", "-"],
        Some(&configmap("x", "")),
    );
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
}

#[test]
fn label_and_field_selectors_and_pagination() {
    let s = Server::start(bin());
    let v = LATEST;
    let mut docs = String::new();
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        docs.push_str(&configmap(
            &format!("c{i:02}"),
            &format!("tier: {tier}, num: \"{i}\""),
        ));
        docs.push_str("---\n");
    }
    s.ok_stdin(v, &["create", "--validate=false", "-f", "-"], Some(&docs));
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["get", "cm", "-o", "name"];
        a.extend_from_slice(args);
        s.ok(v, &a)
            .lines()
            .map(String::from)
            .filter(|l| l.contains("/c"))
            .collect()
    };
    assert_eq!(names(&["-l", "tier=even"]).len(), 13);
    assert_eq!(names(&["-l", "tier!=even"]).len(), 12);
    assert_eq!(names(&["-l", "num in (1,2,3)"]).len(), 3);
    assert_eq!(names(&["-l", "!tier"]).len(), 0);
    assert_eq!(
        names(&["--field-selector", "metadata.name=c07"]),
        vec!["configmap/c07".to_string()]
    );
    assert_eq!(names(&["--field-selector", "metadata.name!=c07"]).len(), 24);
    // kubectl pages through with limit/continue when asked for small chunks.
    assert_eq!(names(&["--chunk-size=4"]).len(), 25);
    assert_eq!(names(&["--chunk-size=4", "-l", "tier=odd"]).len(), 12);
    let err = s.fails(v, &["get", "cm", "--field-selector", "spec.bogus=x"]);
    assert!(err.contains("not a known field selector"), "{err}");
    let err = s.fails(v, &["get", "cm", "-l", "a in b"]);
    assert!(
        err.contains("unable to parse requirement") || err.contains("parse"),
        "{err}"
    );
}

#[test]
fn watch_streams_changes_to_kubectl() {
    let s = Server::start(bin());
    for &v in &[27, LATEST] {
        let name = format!("watched-{v}");
        let mut child = std::process::Command::new(distro_testharness::kubectl_path(v))
            .args(["get", "cm", "--watch", "--output-watch-events"])
            .env("KUBECONFIG", &s.kubeconfig)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The watch starts with the current state; then our create must show up.
        std::thread::sleep(Duration::from_millis(300));
        s.ok_stdin(
            v,
            &["create", "--validate=false", "-f", "-"],
            Some(&configmap(&name, "")),
        );
        s.ok(v, &["label", "cm", &name, "x=y"]);
        s.ok(v, &["delete", "cm", &name]);
        let mut seen = Vec::new();
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(10),
            "watch events",
            || {
                while let Ok(l) = rx.try_recv() {
                    seen.push(l);
                }
                // Table rows: EVENT NAME DATA AGE.
                let has = |event: &str| {
                    seen.iter().any(|l| {
                        let cols: Vec<&str> = l.split_whitespace().collect();
                        cols.first() == Some(&event) && cols.get(1) == Some(&name.as_str())
                    })
                };
                (has("ADDED") && has("MODIFIED") && has("DELETED")).then_some(())
            },
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn restart_keeps_every_object_and_revision() {
    let mut s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(
        v,
        &["create", "--validate=false", "-f", "-"],
        Some(&configmap("survivor", "a: b")),
    );
    let before = s.json(v, &["get", "cm", "survivor"]);
    s.restart();
    let after = s.json(v, &["get", "cm", "survivor"]);
    assert_eq!(before, after);
    s.ok(v, &["label", "cm", "survivor", "c=d"]);
    let later = s.json(v, &["get", "cm", "survivor"]);
    let rv = |o: &serde_json::Value| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .parse::<i64>()
            .unwrap_or(0)
    };
    assert!(
        rv(&later) > rv(&after),
        "revisions continue after a restart"
    );
    let status = s.stop();
    assert!(
        status.success(),
        "SIGTERM stops the server cleanly: {status}"
    );
}

#[test]
fn optimistic_concurrency_rejects_stale_updates() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(
        v,
        &["create", "--validate=false", "-f", "-"],
        Some(&configmap("occ", "")),
    );
    let mut obj = s.json(v, &["get", "cm", "occ"]);
    s.ok(v, &["label", "cm", "occ", "bump=1"]);
    obj["data"]["a"] = serde_json::json!("changed");
    let err = s.fails_stdin(
        v,
        &["replace", "--validate=false", "-f", "-"],
        Some(&obj.to_string()),
    );
    assert!(err.contains("the object has been modified; please apply your changes to the latest version and try again"), "{err}");
}

#[test]
fn anonymous_requests_are_refused_but_health_answers() {
    let s = Server::start(bin());
    let url = s.server_url().expect("url");
    let curl = |path: &str| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                &format!("{url}{path}"),
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (body.to_string(), code.to_string())
    };
    assert_eq!(curl("/healthz"), ("ok".into(), "200".into()));
    assert_eq!(curl("/readyz").1, "200");
    let (body, code) = curl("/api/v1/namespaces");
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
}

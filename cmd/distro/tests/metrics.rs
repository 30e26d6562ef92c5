//! Integration tests: resource metrics end to end. Simulated nodes (`distro agent --runtime
//! fake`) serve the kubelet API with the usage their pods' annotations declare; the server
//! scrapes them every `--metrics-resolution` and serves metrics.k8s.io, which `kubectl top`
//! (1.27 and 1.33) reads. The kubelet API's own authentication and authorization are checked
//! with curl and certificates the test signs with the cluster CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use distro_testharness::{eventually, Agent, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(20);
const EVERY: Duration = Duration::from_millis(200);
const OLDEST: u32 = 27;

fn start() -> (Server, Agent) {
    let s = Server::start_with(bin(), &["--metrics-resolution=1s"]);
    let a = Agent::start(bin(), &s, &["--node-name", "mt", "--fake-nodes", "2"]);
    eventually(SOON, EVERY, "two Ready simulated nodes", || {
        let out = s.kubectl(LATEST, &["get", "nodes", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.lines().filter(|l| l.contains(" Ready")).count() == 2).then_some(())
    });
    (s, a)
}

fn pod(name: &str, app: &str, cpu: &str, memory: &str, containers: &[&str]) -> String {
    let cs: String = containers
        .iter()
        .map(|c| format!("  - {{name: {c}, image: busybox}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {app}}}\n  annotations:\n    fake.distro.io/cpu-usage: \"{cpu}\"\n    fake.distro.io/memory-usage: \"{memory}\"\nspec:\n  containers:\n{cs}"
    )
}

/// Polls `kubectl top ...` until its rows (header dropped, split in columns) satisfy `ok`;
/// panics with the last output otherwise.
fn top(s: &Server, minor: u32, args: &[&str], what: &str, ok: impl Fn(&[Vec<String>]) -> bool) {
    let mut full = vec!["top"];
    full.extend_from_slice(args);
    let start = std::time::Instant::now();
    loop {
        let out = s.kubectl(minor, &full);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let rows: Vec<Vec<String>> = stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect();
        if out.status.success() && ok(&rows) {
            return;
        }
        if start.elapsed() > SOON {
            panic!(
                "kubectl 1.{minor} {full:?}: timed out waiting for {what}; last output:\n{stdout}{}\nserver log tail:\n{}",
                String::from_utf8_lossy(&out.stderr),
                s.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(EVERY);
    }
}

fn row<'a>(rows: &'a [Vec<String>], first: &[&str]) -> Option<&'a Vec<String>> {
    rows.iter()
        .find(|r| r.len() >= first.len() && r.iter().zip(first).all(|(a, b)| a == b))
}

fn millis(v: &str) -> u64 {
    v.trim_end_matches('m').parse().unwrap_or(0)
}

fn mebis(v: &str) -> u64 {
    v.trim_end_matches("Mi").parse().unwrap_or(0)
}

#[test]
fn kubectl_top_shows_annotated_usage_and_follows_changes() {
    let (s, _agent) = start();
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&pod("web", "web", "250m", "64Mi", &["app", "sidecar"])),
    );
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&pod("db", "db", "100m", "32Mi", &["db"])),
    );
    for minor in [LATEST, OLDEST] {
        top(&s, minor, &["pod"], "kubectl top pod", |rows| {
            row(rows, &["web", "250m", "64Mi"]).is_some()
                && row(rows, &["db", "100m", "32Mi"]).is_some()
        });
        top(&s, minor, &["pod", "-A"], "kubectl top pod -A", |rows| {
            row(rows, &["default", "web", "250m", "64Mi"]).is_some()
        });
        top(
            &s,
            minor,
            &["pod", "web", "--containers"],
            "kubectl top pod --containers",
            |rows| {
                row(rows, &["web", "app", "125m", "32Mi"]).is_some()
                    && row(rows, &["web", "sidecar", "125m", "32Mi"]).is_some()
            },
        );
        top(
            &s,
            minor,
            &["pod", "-l", "app=db"],
            "kubectl top pod -l",
            |rows| rows.len() == 1 && row(rows, &["db", "100m", "32Mi"]).is_some(),
        );
        // Nodes: the two simulated nodes carry both pods' usage between them.
        top(&s, minor, &["node"], "kubectl top node", |rows| {
            let nodes: Vec<_> = rows.iter().filter(|r| r[0].starts_with("mt-")).collect();
            nodes.len() == 2
                && nodes.iter().map(|r| millis(&r[1])).sum::<u64>() == 350
                && nodes.iter().map(|r| mebis(&r[3])).sum::<u64>() == 96
        });
    }
    // The raw API, as the HPA reads it.
    let raw = s.ok(
        LATEST,
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
        ],
    );
    let metrics: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(metrics["kind"], "PodMetrics");
    assert_eq!(metrics["containers"][0]["name"], "app");
    // About the resolution (the scrape interval, as measured between samples).
    let window = metrics["window"].as_str().unwrap_or_default();
    assert!(window.ends_with('s'), "{metrics}");
    let out = s.ok(LATEST, &["api-resources", "--api-group=metrics.k8s.io"]);
    assert!(
        out.contains("PodMetrics") && out.contains("NodeMetrics"),
        "{out}"
    );
    // kubectl get shows metrics-server's table.
    let out = s.ok(LATEST, &["get", "podmetrics", "web", "--no-headers"]);
    let cols: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(cols[..3], ["web", "250m", "64Mi"], "{out}");
    // The HPA controller's identity may read the API (and so may view/edit/admin).
    for user in [
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "system:kube-controller-manager",
    ] {
        let out = s.ok(
            LATEST,
            &["auth", "can-i", "list", "pods.metrics.k8s.io", "--as", user],
        );
        assert_eq!(out.trim(), "yes", "{user}");
    }
    let out = s.ok(LATEST, &["explain", "podmetrics.containers"]);
    assert!(out.contains("Container name"), "{out}");
    // As k3s: the group has its APIService, Available (served in-process: Local).
    let out = s.ok(
        LATEST,
        &[
            "get",
            "apiservice",
            "v1beta1.metrics.k8s.io",
            "--no-headers",
        ],
    );
    let cols: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        cols[..3],
        ["v1beta1.metrics.k8s.io", "Local", "True"],
        "{out}"
    );

    s.ok(
        LATEST,
        &[
            "annotate",
            "pod",
            "web",
            "--overwrite",
            "fake.distro.io/cpu-usage=500m",
        ],
    );
    top(
        &s,
        LATEST,
        &["pod", "web"],
        "the new usage after annotate",
        |rows| row(rows, &["web", "500m", "64Mi"]).is_some(),
    );
}

/// Signs a client certificate for `user` with the cluster CA (openssl), in `dir`.
fn client_cert(s: &Server, dir: &Path, user: &str) -> (PathBuf, PathBuf) {
    let tls = s.data_dir().join("server").join("tls");
    let (key, csr, crt) = (
        dir.join(format!("{user}.key")),
        dir.join(format!("{user}.csr")),
        dir.join(format!("{user}.crt")),
    );
    // Extensions make it an X.509 v3 certificate (rustls refuses v1).
    let ext = dir.join("client.ext");
    std::fs::write(
        &ext,
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
        "-subj",
        &format!("/CN={user}"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        tls.join("server-ca.crt").to_str().unwrap(),
        "-CAkey",
        tls.join("server-ca.key").to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]);
    (crt, key)
}

/// `curl` trusting only the cluster CA (kubelets serve certificates it signed for their
/// address): status code and body.
fn curl(ca: &Path, url: &str, cert: Option<(&Path, &Path)>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", url]);
    cmd.arg("--cacert").arg(ca);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code = code.trim().parse().unwrap_or(0);
    if code == 0 {
        return (0, String::from_utf8_lossy(&out.stderr).to_string());
    }
    (code, body.to_string())
}

#[test]
fn kubelet_api_authenticates_and_authorizes_callers() {
    let (s, _agent) = start();
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&pod("one", "one", "300m", "16Mi", &["c"])),
    );
    let node = eventually(SOON, EVERY, "the pod scheduled and running", || {
        let p = s.json(LATEST, &["get", "pod", "one"]);
        (p["status"]["phase"] == "Running")
            .then(|| p["spec"]["nodeName"].as_str().unwrap().to_string())
    });
    let n = s.json(LATEST, &["get", "node", &node]);
    let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    assert_ne!(port, 10250, "--fake-nodes gives every node its own port");
    let ip = n["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("https://{ip}:{port}");
    let ca = s
        .data_dir()
        .join("server")
        .join("tls")
        .join("server-ca.crt");

    let (code, _) = curl(&ca, &format!("{base}/healthz"), None);
    assert_eq!(code, 200, "healthz answers anyone");
    let (code, body) = curl(&ca, &format!("{base}/stats/summary"), None);
    assert_eq!((code, body.as_str()), (401, "Unauthorized"));

    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = client_cert(&s, dir.path(), "nobody-special");
    let (code, body) = curl(&ca, &format!("{base}/stats/summary"), Some((&crt, &key)));
    assert_eq!(
        (code, body.as_str()),
        (
            403,
            "Forbidden (user=nobody-special, verb=get, resource=nodes, subresource=stats)"
        )
    );
    let (code, body) = curl(&ca, &format!("{base}/pods"), Some((&crt, &key)));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("subresource=proxy"), "{body}");

    // Granted nodes/stats (and nothing else), the same user gets the summary.
    s.ok(
        LATEST,
        &[
            "create",
            "clusterrole",
            "stats-reader",
            "--verb=get",
            "--resource=nodes/stats",
        ],
    );
    s.ok(
        LATEST,
        &[
            "create",
            "clusterrolebinding",
            "stats-reader",
            "--clusterrole=stats-reader",
            "--user=stats-user",
        ],
    );
    let (crt, key) = client_cert(&s, dir.path(), "stats-user");
    let summary = eventually(SOON, EVERY, "the pod in /stats/summary", || {
        let (code, body) = curl(&ca, &format!("{base}/stats/summary"), Some((&crt, &key)));
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["pods"].as_array().is_some_and(|p| !p.is_empty())).then_some(v)
    });
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    let p = &summary["pods"][0];
    assert_eq!(p["podRef"]["name"], "one");
    assert_eq!(p["podRef"]["namespace"], "default");
    assert_eq!(p["cpu"]["usageNanoCores"], 300_000_000u64);
    assert_eq!(p["memory"]["workingSetBytes"], 16u64 << 20);
    assert!(p["containers"][0]["cpu"]["usageCoreNanoSeconds"].is_u64());
    assert!(summary["node"]["cpu"]["time"].is_string());
    let (code, _) = curl(&ca, &format!("{base}/metrics/resource"), Some((&crt, &key)));
    assert_eq!(code, 403, "nodes/stats does not grant nodes/metrics");

    // The API server's own kubelet client (system:kubelet-api-admin) reads the metrics.
    let tls = s.data_dir().join("server").join("tls");
    let (code, body) = curl(
        &ca,
        &format!("{base}/metrics/resource"),
        Some((
            &tls.join("client-kube-apiserver-kubelet-client.crt"),
            &tls.join("client-kube-apiserver-kubelet-client.key"),
        )),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"one\"}"
        ),
        "{body}"
    );
    assert!(body.contains("node_memory_working_set_bytes "), "{body}");

    // nodes/proxy: the API server relays to the kubelet as its kubelet client.
    let raw = |path: &str| s.ok(LATEST, &["get", "--raw", path]);
    assert_eq!(
        raw(&format!("/api/v1/nodes/{node}/proxy/healthz")).trim(),
        "ok"
    );
    let pods: serde_json::Value =
        serde_json::from_str(&raw(&format!("/api/v1/nodes/{node}/proxy/pods"))).unwrap();
    assert_eq!(pods["kind"], "PodList");
    assert!(pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["metadata"]["name"] == "one"));
    let summary: serde_json::Value = serde_json::from_str(&raw(&format!(
        "/api/v1/nodes/{node}/proxy/stats/summary?only_cpu_and_memory=true"
    )))
    .unwrap();
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    // Without nodes/proxy the caller is refused by the API server; an unknown node is 404.
    let denied = s.kubectl(
        LATEST,
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/pods"),
            "--as=stats-user",
        ],
    );
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("cannot get resource \"nodes/proxy\"") || err.contains("Forbidden"),
        "{err}"
    );
    let missing = s.kubectl(
        LATEST,
        &["get", "--raw", "/api/v1/nodes/nope/proxy/healthz"],
    );
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

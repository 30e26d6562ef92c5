//! Integration tests: the Endpoints and EndpointSlice controllers, the disruption controller,
//! the eviction subresource and `kubectl drain`, through real kubectl. No kubelet runs here:
//! tests report pod IPs and readiness as a kubelet would, and a small stand-in "kubelet"
//! thread finishes the deletion of pods whose grace period began (what a kubelet does once
//! the containers stopped).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use distro_testharness::fake::add_ready_node;
use distro_testharness::{eventually, Server, LATEST};
use serde_json::{json, Value};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(100);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A schedulable, Ready node in zone `zone-a`.
fn node(s: &Server, name: &str) {
    let zone = ", topology.kubernetes.io/zone: zone-a";
    add_ready_node(s, name, zone, "", "8", "16Gi");
}

/// A pod bound to `node`, with a container port named `http`.
fn pod(s: &Server, name: &str, labels: &str, node: &str, http: i32, extra: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n{extra}  containers:\n  - name: c\n    image: nginx\n    ports: [{{name: http, containerPort: {http}}}]\n"
    );
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&manifest));
}

/// Reports the pod Running with `ip`, Ready or not, as its kubelet would.
fn report(s: &Server, name: &str, ip: &str, ready: bool) {
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
    "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": now()},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
    ]}});
    s.ok(
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

fn endpoints(s: &Server, name: &str) -> Option<Value> {
    let out = s.kubectl(LATEST, &["get", "endpoints", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("endpoints JSON"))
}

/// `(ip, port)` pairs.
type Addresses = Vec<(String, i64)>;

/// `(ip, port)` pairs of the Endpoints' ready and not-ready addresses.
fn addresses(ep: &Value) -> (Addresses, Addresses) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in ep["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        let port = ports.first().copied().unwrap_or(0);
        for (key, out) in [
            ("addresses", &mut ready),
            ("notReadyAddresses", &mut not_ready),
        ] {
            for a in subset[key].as_array().into_iter().flatten() {
                out.push((a["ip"].as_str().unwrap_or_default().to_string(), port));
            }
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

fn pairs(list: &[(&str, i64)]) -> Addresses {
    list.iter().map(|(ip, p)| (ip.to_string(), *p)).collect()
}

/// The slices of Service `name`.
fn slices(s: &Server, name: &str) -> Vec<Value> {
    let list = s.json(
        LATEST,
        &[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={name}"),
        ],
    );
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The slice endpoint of pod `pod`, with its slice's first port.
fn slice_endpoint(slices: &[Value], pod: &str) -> Option<(Value, i64)> {
    slices.iter().find_map(|sl| {
        sl["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["targetRef"]["name"] == pod)
            .map(|e| (e.clone(), sl["ports"][0]["port"].as_i64().unwrap_or(0)))
    })
}

fn conditions(e: &Value) -> (bool, bool, bool) {
    let c = &e["conditions"];
    (
        c["ready"].as_bool().unwrap_or(false),
        c["serving"].as_bool().unwrap_or(false),
        c["terminating"].as_bool().unwrap_or(false),
    )
}

#[test]
fn endpoints_and_slices_follow_pods() {
    let s = Server::start(bin());
    let v = LATEST;
    node(&s, "n1");
    let web = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}"#;
    s.ok_stdin(v, &["create", "-f", "-"], Some(web));
    // The named target port resolves per pod.
    pod(&s, "a", "app: web", "n1", 8080, "");
    pod(&s, "b", "app: web", "n1", 9090, "");
    report(&s, "a", "10.1.0.1", true);
    report(&s, "b", "10.1.0.2", false);
    let ep = eventually(
        SOON,
        EVERY,
        "Endpoints with a ready and a not-ready pod",
        || {
            endpoints(&s, "web").filter(|ep| {
                addresses(ep) == (pairs(&[("10.1.0.1", 8080)]), pairs(&[("10.1.0.2", 9090)]))
            })
        },
    );
    assert_eq!(ep["metadata"]["labels"]["team"], "a");
    assert!(
        ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string(),
        "{ep}"
    );
    let subset = ep["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ss| ss["addresses"].is_array())
        .unwrap();
    assert_eq!(subset["ports"][0]["name"], "http");
    let addr = &subset["addresses"][0];
    assert_eq!(
        (
            &addr["nodeName"],
            &addr["targetRef"]["kind"],
            &addr["targetRef"]["name"]
        ),
        (&json!("n1"), &json!("Pod"), &json!("a"))
    );

    let sl = eventually(SOON, EVERY, "slices with both pods", || {
        let sl = slices(&s, "web");
        (slice_endpoint(&sl, "a").is_some() && slice_endpoint(&sl, "b").is_some()).then_some(sl)
    });
    for slice in &sl {
        let l = &slice["metadata"]["labels"];
        assert_eq!(
            l["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(l["team"], "a");
        assert_eq!(slice["addressType"], "IPv4");
        let owner = &slice["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"]),
            (&json!("Service"), &json!("web"))
        );
    }
    let (a, port_a) = slice_endpoint(&sl, "a").unwrap();
    let (b, port_b) = slice_endpoint(&sl, "b").unwrap();
    assert_eq!((port_a, port_b), (8080, 9090));
    assert_eq!(conditions(&a), (true, true, false));
    assert_eq!(conditions(&b), (false, false, false));
    assert_eq!(
        (&a["nodeName"], &a["zone"]),
        (&json!("n1"), &json!("zone-a"))
    );

    // Readiness follows the pod.
    report(&s, "b", "10.1.0.2", true);
    eventually(SOON, EVERY, "b ready in Endpoints", || {
        endpoints(&s, "web").filter(|ep| {
            addresses(ep) == (pairs(&[("10.1.0.1", 8080), ("10.1.0.2", 9090)]), vec![])
        })
    });
    // A terminating pod (its grace period runs: no kubelet here) leaves Endpoints but stays
    // in its slice as serving and terminating.
    s.ok(v, &["delete", "pod", "a", "--wait=false"]);
    eventually(SOON, EVERY, "terminating pod out of Endpoints", || {
        endpoints(&s, "web").filter(|ep| addresses(ep) == (pairs(&[("10.1.0.2", 9090)]), vec![]))
    });
    eventually(SOON, EVERY, "terminating pod in its slice", || {
        slice_endpoint(&slices(&s, "web"), "a")
            .filter(|(e, _)| conditions(e) == (false, true, true))
    });

    // Headless, publishing not-ready pods, with hostnames.
    let db = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"app": "db"},
                 "ports": [{"name": "pg", "port": 5432}]}}"#;
    s.ok_stdin(v, &["create", "-f", "-"], Some(db));
    let external = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"},
        "spec": {"ports": [{"port": 443}]}}"#;
    s.ok_stdin(v, &["create", "-f", "-"], Some(external));
    pod(
        &s,
        "db-0",
        "app: db",
        "n1",
        5432,
        "  hostname: db-0\n  subdomain: db\n",
    );
    report(&s, "db-0", "10.1.0.3", false);
    let ep = eventually(SOON, EVERY, "headless Endpoints", || {
        endpoints(&s, "db").filter(|ep| addresses(ep) == (pairs(&[("10.1.0.3", 5432)]), vec![]))
    });
    assert_eq!(ep["subsets"][0]["addresses"][0]["hostname"], "db-0");
    assert_eq!(
        ep["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    let (e, _) = eventually(SOON, EVERY, "headless slice", || {
        slice_endpoint(&slices(&s, "db"), "db-0")
    });
    assert_eq!(conditions(&e), (true, false, false), "{e}");
    assert_eq!(e["hostname"], "db-0");

    // Settled objects are not rewritten.
    let versions = || {
        let mut v: Vec<Value> = slices(&s, "db")
            .iter()
            .chain(slices(&s, "web").iter())
            .map(|sl| sl["metadata"]["resourceVersion"].clone())
            .collect();
        v.push(endpoints(&s, "db").unwrap()["metadata"]["resourceVersion"].clone());
        v
    };
    let before = versions();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(versions(), before, "settled endpoints were rewritten");

    // A Service without a selector is left to whoever manages its endpoints.
    assert!(endpoints(&s, "external").is_none());
    assert!(slices(&s, "external").is_empty());
    // Nothing failed, so no failure Events.
    let events = s.ok(v, &["get", "events", "-A"]);
    assert!(!events.contains("FailedToUpdateEndpoint"), "{events}");

    // A deleted Service takes its Endpoints and slices along.
    s.ok(v, &["delete", "service", "web"]);
    eventually(SOON, EVERY, "Endpoints and slices of web gone", || {
        (endpoints(&s, "web").is_none() && slices(&s, "web").is_empty()).then_some(())
    });
}

/// Stands in for the kubelets of the test nodes: reports their pods Running and Ready with
/// an IP, and finishes deleting pods whose grace period began (noting whether the pod was
/// marked as a disruption target).
struct Kubelet<'a> {
    s: &'a Server,
    stop: AtomicBool,
    next_ip: AtomicU32,
    /// Pods whose deletion it finished: name and whether `DisruptionTarget` was set.
    finished: Mutex<Vec<(String, bool)>>,
}

impl<'a> Kubelet<'a> {
    fn new(s: &'a Server) -> Self {
        Kubelet {
            s,
            stop: AtomicBool::new(false),
            next_ip: AtomicU32::new(10),
            finished: Mutex::new(Vec::new()),
        }
    }

    fn run(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let out = self.s.kubectl(LATEST, &["get", "pods", "-o", "json"]);
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            for p in list["items"].as_array().into_iter().flatten() {
                let name = p["metadata"]["name"].as_str().unwrap_or_default();
                if p["spec"]["nodeName"].is_null() {
                    continue;
                }
                let conds = p["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !p["metadata"]["deletionTimestamp"].is_null() {
                    let target = conds
                        .iter()
                        .any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True");
                    let out = self.s.kubectl(
                        LATEST,
                        &["delete", "pod", name, "--grace-period=0", "--force"],
                    );
                    if out.status.success() {
                        self.finished
                            .lock()
                            .unwrap()
                            .push((name.to_string(), target));
                    }
                } else if !conds
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                {
                    let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
                    let _ = self.s.kubectl(
                        LATEST,
                        &[
                            "patch",
                            "pod",
                            name,
                            "--subresource=status",
                            "--type=merge",
                            "-p",
                            &json!({"status": {"phase": "Running", "podIP": format!("10.2.0.{n}"),
                                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now()}]}})
                            .to_string(),
                        ],
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

fn pdb_status(s: &Server) -> Value {
    s.json(LATEST, &["get", "pdb", "web"])
}

fn condition(pdb: &Value) -> (String, String) {
    let c = pdb["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "DisruptionAllowed")
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or_default().into(),
        c["reason"].as_str().unwrap_or_default().into(),
    )
}

/// Waits for the budget's `(expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed)`.
fn budget_is(s: &Server, what: &str, want: (i64, i64, i64, i64)) -> Value {
    eventually(SOON, EVERY, what, || {
        let p = pdb_status(s);
        let st = &p["status"];
        let got = (
            st["expectedPods"].as_i64().unwrap_or(-1),
            st["desiredHealthy"].as_i64().unwrap_or(-1),
            st["currentHealthy"].as_i64().unwrap_or(-1),
            st["disruptionsAllowed"].as_i64().unwrap_or(-1),
        );
        (got == want && st["observedGeneration"] == p["metadata"]["generation"]).then_some(p)
    })
}

fn pods_on(s: &Server, node: &str, label: &str) -> Vec<String> {
    let list = s.json(
        LATEST,
        &[
            "get",
            "pods",
            "-l",
            label,
            "--field-selector",
            &format!("spec.nodeName={node}"),
        ],
    );
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn budgets_and_drain() {
    let s = Server::start(bin());
    let v = LATEST;
    node(&s, "n1");
    let kubelet = Kubelet::new(&s);
    std::thread::scope(|scope| {
        scope.spawn(|| kubelet.run());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            budgets_and_drain_steps(&s, v, &kubelet)
        }));
        kubelet.stop.store(true, Ordering::Relaxed);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
}

fn budgets_and_drain_steps(s: &Server, v: u32, kubelet: &Kubelet) {
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
    eventually(
        Duration::from_secs(20),
        EVERY,
        "three web pods on n1",
        || (pods_on(s, "n1", "app=web").len() == 3).then_some(()),
    );

    // maxUnavailable scales from the Deployment (through its ReplicaSet).
    s.ok(
        v,
        &[
            "create",
            "pdb",
            "web",
            "--selector=app=web",
            "--max-unavailable=1",
        ],
    );
    let p = budget_is(s, "maxUnavailable 1 of 3", (3, 2, 3, 1));
    assert_eq!(condition(&p), ("True".into(), "SufficientPods".into()));
    s.ok(
        v,
        &[
            "patch",
            "pdb",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"maxUnavailable":null,"minAvailable":"50%"}}"#,
        ],
    );
    budget_is(s, "minAvailable 50% of 3 rounds up", (3, 2, 3, 1));
    s.ok(
        v,
        &[
            "patch",
            "pdb",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":3}}"#,
        ],
    );
    let p = budget_is(s, "minAvailable 3", (3, 3, 3, 0));
    assert_eq!(condition(&p), ("False".into(), "InsufficientPods".into()));

    // A DaemonSet's pod on n1, made and bound by the DaemonSet controller and the scheduler.
    let ds = r#"{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"metadata": {"labels": {"app": "agent"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#;
    s.ok_stdin(v, &["create", "-f", "-"], Some(ds));
    let agent = eventually(SOON, EVERY, "the DaemonSet's pod bound to n1", || {
        pods_on(s, "n1", "app=agent").pop()
    });
    node(s, "n2");

    // The budget allows nothing: drain cordons, then keeps retrying the evictions.
    let drained = std::thread::scope(|scope| {
        let drain =
            scope.spawn(|| s.kubectl(v, &["drain", "n1", "--ignore-daemonsets", "--timeout=50s"]));
        eventually(SOON, EVERY, "n1 cordoned", || {
            (s.json(v, &["get", "node", "n1"])["spec"]["unschedulable"] == true).then_some(())
        });
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            pods_on(s, "n1", "app=web").len(),
            3,
            "the budget was not honoured"
        );
        // Loosened: one at a time, each replacement Ready on n2 before the next goes.
        s.ok(
            v,
            &[
                "patch",
                "pdb",
                "web",
                "--type=merge",
                "-p",
                r#"{"spec":{"minAvailable":2}}"#,
            ],
        );
        drain.join().expect("drain thread")
    });
    let stdout = String::from_utf8_lossy(&drained.stdout);
    let stderr = String::from_utf8_lossy(&drained.stderr);
    assert!(
        drained.status.success(),
        "drain failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("ignoring DaemonSet-managed Pods: default/{agent}")),
        "{stderr}"
    );
    assert!(stdout.contains("node/n1 drained"), "{stdout}");
    assert!(pods_on(s, "n1", "app=web").is_empty());
    assert_eq!(pods_on(s, "n1", "app=agent"), std::slice::from_ref(&agent));
    eventually(SOON, EVERY, "three web pods on n2", || {
        (pods_on(s, "n2", "app=web").len() == 3).then_some(())
    });
    let finished = kubelet.finished.lock().unwrap().clone();
    let evicted: Vec<_> = finished
        .iter()
        .filter(|(n, _)| n.starts_with("web-"))
        .collect();
    assert_eq!(evicted.len(), 3, "{finished:?}");
    assert!(
        evicted.iter().all(|(_, target)| *target),
        "DisruptionTarget missing: {finished:?}"
    );
    budget_is(s, "budget after the drain", (3, 2, 3, 1));
}

#[test]
fn bare_pod_drain_old_and_new_kubectl() {
    let s = Server::start(bin());
    let kubelet = Kubelet::new(&s);
    std::thread::scope(|scope| {
        scope.spawn(|| kubelet.run());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for v in [27, LATEST] {
                let (n, p) = (format!("bare-node-{v}"), format!("bare-{v}"));
                node(&s, &n);
                pod(&s, &p, "app: bare", &n, 80, "");
                eventually(SOON, EVERY, "bare pod ready", || {
                    let pod = s.json(v, &["get", "pod", &p]);
                    (pod["status"]["podIP"].is_string()).then_some(())
                });
                // A pod no controller would recreate needs --force.
                let err = s.fails(v, &["drain", &n, "--timeout=20s"]);
                assert!(
                    err.contains("--force") && err.contains(&p),
                    "kubectl 1.{v}: {err}"
                );
                let out = s.ok(v, &["drain", &n, "--force", "--timeout=20s"]);
                assert!(
                    out.contains(&format!("pod/{p} evicted")) && out.contains("drained"),
                    "kubectl 1.{v}: {out}"
                );
                assert_eq!(
                    s.json(v, &["get", "node", &n])["spec"]["unschedulable"],
                    true
                );
                let gone = s.kubectl(v, &["get", "pod", &p]);
                assert!(!gone.status.success(), "kubectl 1.{v}: {p} still exists");
            }
        }));
        kubelet.stop.store(true, Ordering::Relaxed);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
}

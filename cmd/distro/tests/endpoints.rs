//! Integration tests: the Endpoints and EndpointSlice controllers, through real kubectl. No
//! kubelet runs here: tests report pod IPs and readiness as a kubelet would.

use std::path::Path;
use std::time::Duration;

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

/// A schedulable, Ready node.
fn node(s: &Server, name: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}, topology.kubernetes.io/zone: zone-a}}\n"
    );
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&manifest));
    let res = r#"{"cpu": "8", "memory": "16Gi", "pods": "110"}"#;
    let status = format!(
        r#"{{"status": {{"capacity": {res}, "allocatable": {res}, "conditions": [{{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node", "lastHeartbeatTime": "{t}", "lastTransitionTime": "{t}"}}]}}}}"#,
        t = now()
    );
    s.ok(
        LATEST,
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ],
    );
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

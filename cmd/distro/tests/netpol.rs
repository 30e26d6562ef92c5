//! End-to-end (root, real containerd and runc): NetworkPolicies enforced by the node's
//! nftables table (`distro-policy-<bridge>`). A server pod (busybox httpd) is reached by
//! client-a and client-b (default namespace) and client-c (another namespace); then:
//! default-deny ingress blocks everyone (a dropped connection times out, it is not refused);
//! a rule for `role=client-a` on a named port lets client-a in, directly and through the
//! server's ClusterIP, while client-b stays out; a namespaceSelector rule lets client-c in;
//! the kubelet's readiness probes (from the node) keep passing throughout;
//! an egress default-deny blocks client-a's connections and its DNS until a rule allows
//! UDP 53; deleting the policies restores access.
//!
//! Cross-node and dual-stack: in a two-node cluster (network namespaces, VXLAN), the server
//! pod's node enforces its ingress rule and the client's node its egress rule, for IPv4 and
//! IPv6 alike.
//!
//! The single node uses its own bridge, DNS link and tables; the test removes its policy
//! table after the agent stops (the harness removes the rest, and the cluster's namespaces
//! take their tables with them).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distro_testharness::cluster::{Cluster, Options};
use distro_testharness::node::{dns_ip, install_images, pod_pid, start_agent, BUSYBOX};
use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(200);
/// Policy changes are enforced within a second; generous for a loaded 2-core CI machine.
const ENFORCED: Duration = Duration::from_secs(20);

/// Removes the node's policy table; declared before the agent so it is dropped after it
/// (nothing re-creates the table then).
struct PolicyTable(String);

impl Drop for PolicyTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .output();
    }
}

const HTTPD: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

fn manifest() -> String {
    let sleeper = |name: &str, ns: &str, role: &str| {
        format!(
            r#"
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{role: {role}}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: sleep
    image: distro.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#
        )
    };
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: np-other, labels: {{team: x}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, labels: {{app: server}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: httpd
    image: distro.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "{HTTPD}"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{port: 8080}}, periodSeconds: 1, failureThreshold: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: server}}
spec:
  selector: {{app: server}}
  ports: [{{port: 80, targetPort: http}}]
{}{}{}"#,
        sleeper("client-a", "default", "client-a"),
        sleeper("client-b", "default", "client-b"),
        sleeper("client-c", "np-other", "client-c"),
    )
}

const DENY_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
"#;

const ALLOW_A: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-a}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client-a}}}]
    ports: [{port: http}]
"#;

const ALLOW_NS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-team-x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: x}}}]
"#;

const DENY_EGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-a}
spec:
  podSelector: {matchLabels: {role: client-a}}
  policyTypes: [Egress]
"#;

const EGRESS_DNS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-a}
spec:
  podSelector: {matchLabels: {role: client-a}}
  policyTypes: [Egress]
  egress:
  - ports: [{protocol: UDP, port: 53}]
"#;

/// An HTTP GET of `http://addr:port/` from inside the network namespace of process `pid`
/// (the host's busybox `nc`, 2 s timeout): the body, or `None` with how long it took.
fn get_in(pid: &str, addr: &str, port: u16) -> Result<String, Duration> {
    let began = Instant::now();
    let mut child = Command::new("nsenter")
        .args(["-t", pid, "-n", "busybox", "nc", "-w", "2", addr])
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nsenter");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
    }
    let out = child.wait_with_output().expect("nc");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    match text.split("\r\n\r\n").nth(1).map(str::trim) {
        Some(body) if !body.is_empty() => Ok(body.to_string()),
        _ => Err(began.elapsed()),
    }
}

/// Whether a DNS query for the kubernetes Service from the network namespace of `pid`
/// to the node's DNS server `dns` is answered (within 3 s).
fn dns_in(pid: &str, dns: &str) -> bool {
    Command::new("nsenter")
        .args(["-t", pid, "-n", "timeout", "3", "busybox", "nslookup"])
        .args(["kubernetes.default.svc.cluster.local", dns])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn apply(s: &Server, yaml: &str) {
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(yaml));
}

#[test]
fn network_policies_isolate_pods() {
    let began = Instant::now();
    let s = Server::start(bin());
    let node = format!("netpol-{}", std::process::id());
    let bridge = format!("np{}", std::process::id() % 10_000_000);
    let _table = PolicyTable(format!("distro-policy-{bridge}"));
    let (_agent, cleanup) = start_agent(
        bin(),
        &s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &node,
        &bridge,
        &[],
    );
    apply(&s, &manifest());
    eventually(Duration::from_secs(90), EVERY, "pods running", || {
        let pods = s.json(LATEST, &["get", "pods", "-A"]);
        let running = pods["items"]
            .as_array()?
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (running == 4).then_some(())
    });
    let socket = cleanup.socket().expect("containerd socket");
    let pid = |ns: &str, name: &str| pod_pid(&socket, &s, ns, name);
    let (a, b, c) = (
        pid("default", "client-a"),
        pid("default", "client-b"),
        pid("np-other", "client-c"),
    );
    let server_ip = s.json(LATEST, &["get", "pod", "server"])["status"]["podIP"]
        .as_str()
        .expect("server IP")
        .to_string();
    let cluster_ip = s.json(LATEST, &["get", "svc", "server"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let dns = dns_ip(&bridge);
    let reaches = |client: &str| get_in(client, &server_ip, 8080).is_ok();

    // Without policies everyone reaches the server, and DNS answers.
    eventually(Duration::from_secs(20), EVERY, "open access", || {
        (reaches(&a) && reaches(&b) && reaches(&c) && dns_in(&a, &dns)).then_some(())
    });
    let setup = began.elapsed();

    // Default-deny ingress for the server: every client times out (dropped, not refused).
    let t = Instant::now();
    apply(&s, DENY_INGRESS);
    eventually(ENFORCED, EVERY, "deny ingress", || {
        (!reaches(&a) && !reaches(&b) && !reaches(&c)).then_some(())
    });
    eprintln!("deny enforced after {:?}", t.elapsed());
    let blocked = get_in(&b, &server_ip, 8080).expect_err("client-b blocked");
    assert!(
        blocked >= Duration::from_millis(1500),
        "a denied connection should time out (dropped), it ended after {blocked:?}"
    );

    // Allow role=client-a on the named port: client-a in (also through the ClusterIP),
    // client-b still out.
    apply(&s, ALLOW_A);
    eventually(ENFORCED, EVERY, "client-a allowed", || {
        reaches(&a).then_some(())
    });
    assert!(!reaches(&b), "client-b must stay blocked");
    assert!(!reaches(&c), "client-c must stay blocked");
    let via_service = eventually(
        Duration::from_secs(10),
        EVERY,
        "client-a via ClusterIP",
        || get_in(&a, &cluster_ip, 80).ok(),
    );
    assert_eq!(via_service, "server");
    assert!(
        get_in(&b, &cluster_ip, 80).is_err(),
        "client-b must stay blocked through the ClusterIP"
    );

    // A namespaceSelector rule: client-c's namespace is team=x.
    apply(&s, ALLOW_NS);
    eventually(ENFORCED, EVERY, "client-c allowed", || {
        reaches(&c).then_some(())
    });
    assert!(!reaches(&b), "client-b must stay blocked");
    // The kubelet's probes come from the node itself: never filtered, so the server has
    // stayed Ready under its policies all along (2 failed probes, 1 s apart, would flip it).
    let ready = s.json(LATEST, &["get", "pod", "server"])["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
    assert_eq!(
        ready.as_ref().map(|r| r["status"].clone()),
        Some(Value::from("True")),
        "server readiness: {ready:?}"
    );

    // Egress default-deny for client-a: no more connections, no DNS...
    apply(&s, DENY_EGRESS);
    eventually(ENFORCED, EVERY, "client-a egress denied", || {
        (!reaches(&a) && !dns_in(&a, &dns)).then_some(())
    });
    assert!(
        reaches(&c),
        "client-c is not affected by client-a's egress policy"
    );
    // ...until a rule allows UDP 53: DNS answers, the server stays unreachable.
    apply(&s, EGRESS_DNS);
    eventually(ENFORCED, EVERY, "client-a DNS allowed", || {
        dns_in(&a, &dns).then_some(())
    });
    assert!(!reaches(&a), "client-a may only send DNS");

    // Deleting the policies restores access.
    s.ok(LATEST, &["delete", "networkpolicy", "--all"]);
    eventually(ENFORCED, EVERY, "access restored", || {
        (reaches(&a) && reaches(&b) && reaches(&c)).then_some(())
    });
    eprintln!("setup {setup:?}, total {:?}", began.elapsed());
}

/// A client pod on `node` asking `web` at each of `web_ips` every half second and logging
/// one line per round, `OK` or `FAIL` per address (e.g. `OK FAIL`).
fn prober(name: &str, role: &str, node: &str, web_ips: &[String]) -> String {
    let ips = web_ips.join(" ");
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{role: {role}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "while true; do r=; for ip in {ips}; do if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 $ip 8080 | grep -q web; then r=\"$r OK\"; else r=\"$r FAIL\"; fi; done; echo $r; sleep 0.5; done"]
"#
    )
}

/// The last line pod `pod` of `data`'s node logged (CRI log format: the content is the
/// fourth field).
fn last_line(data: &Path, pod: &str) -> String {
    let mut stack = vec![data.join("agent/logs/pods")];
    let mut last = String::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(&format!("default_{pod}_")) {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if let Some(l) = text.lines().last() {
                    last = l.splitn(4, ' ').nth(3).unwrap_or_default().to_string();
                }
            }
        }
    }
    last
}

/// Cross-node and dual-stack: the server pod on node 1 is guarded by its node (ingress),
/// client-a's egress by node 0, over both families; pod traffic crosses the VXLAN overlays
/// with pod source addresses.
#[test]
fn policies_hold_across_nodes_in_both_families() {
    let began = Instant::now();
    const CIDRS: &str = "10.42.0.0/16,fd42::/56";
    let c = Cluster::start(
        bin(),
        Options {
            nodes: 2,
            server_args: vec!["--cluster-cidr", CIDRS],
            agent_args: vec!["--cluster-cidr", CIDRS],
            ipv6: true,
            detect_node_ip: false,
        },
        |data| install_images(Path::new(env!("CARGO_TARGET_TMPDIR")), data),
    );
    c.wait_ready(Duration::from_secs(60));
    let (n0, n1) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default, labels: {{app: web}}}}
spec:
  nodeName: {n1}
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo web > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
        )),
    );
    let web_ips: Vec<String> = eventually(Duration::from_secs(60), EVERY, "web running", || {
        let p = c.server.json(LATEST, &["get", "pod", "web"]);
        let ips: Vec<String> = p["status"]["podIPs"]
            .as_array()?
            .iter()
            .filter_map(|i| i["ip"].as_str().map(String::from))
            .collect();
        (p["status"]["phase"] == "Running" && ips.len() == 2).then_some(ips)
    });
    let clients = prober("client-a", "client-a", &n0, &web_ips)
        + &prober("client-b", "client-b", &n0, &web_ips);
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&clients));
    let data = c.nodes[0].agent.data_dir();
    let state = || (last_line(&data, "client-a"), last_line(&data, "client-b"));
    eventually(
        Duration::from_secs(60),
        EVERY,
        "both clients reach web",
        || (state() == ("OK OK".into(), "OK OK".into())).then_some(()),
    );

    // Ingress on node 1: only client-a.
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(
            r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client-a}}}], ports: [{port: 8080}]}]
"#,
        ),
    );
    eventually(ENFORCED, EVERY, "client-b blocked across nodes", || {
        (state() == ("OK OK".into(), "FAIL FAIL".into())).then_some(())
    });

    // Egress on node 0: client-a may no longer call out.
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(DENY_EGRESS));
    eventually(
        ENFORCED,
        EVERY,
        "client-a egress blocked on its node",
        || (state() == ("FAIL FAIL".into(), "FAIL FAIL".into())).then_some(()),
    );
    c.server.ok(LATEST, &["delete", "networkpolicy", "--all"]);
    eventually(ENFORCED, EVERY, "access restored", || {
        (state() == ("OK OK".into(), "OK OK".into())).then_some(())
    });
    eprintln!("cross-node total {:?}", began.elapsed());
}

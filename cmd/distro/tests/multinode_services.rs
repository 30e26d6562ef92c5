//! End-to-end (root, real containerd, network namespaces): Services, NodePorts, cluster DNS
//! and node loss across the nodes of a harness [`cluster`](distro_testharness::cluster).
//! Every test starts its own two-node cluster and puts the servers on node 1 (`node-1`), the
//! clients on node 0, so every packet crosses the overlay:
//!
//! - a ClusterIP reaches both endpoints on the other node over TCP and UDP, and the endpoint
//!   sees the client pod's own address; `sessionAffinity: ClientIP` sticks to one, and
//!   `internalTrafficPolicy: Local` drops on the node without endpoints;
//! - a NodePort (TCP and UDP) answers a machine on the LAN (not a node) on a node without
//!   endpoints, and with `externalTrafficPolicy: Local` only on the node with one (keeping
//!   the client's address);
//! - the same over IPv6 in a dual-stack cluster (ClusterIP, NodePort from the LAN, AAAA);
//! - a pod resolves a Service, a headless Service (one record per ready endpoint) and a pod's
//!   `hostname.subdomain` on the other node through its own node's DNS;
//! - a node whose agent is killed turns `Ready=Unknown`, its endpoints leave the Service,
//!   and its pod, tolerating `unreachable` for 5 s, is recreated on the other node.
//!
//! The UDP peer is a tiny static C program (`udptool`, built here with gcc as
//! `hack/build-test-images` builds its pause) that pods run from a hostPath, as busybox's nc
//! speaks no UDP.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use distro_testharness::cluster::{Cluster, Options, LAN_CLIENT};
use distro_testharness::node::{install_images, BUSYBOX};
use distro_testharness::{eventually, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(250);

/// The node the servers run on, and the node the clients run on.
const SERVER_NODE: &str = "node-1";
const CLIENT_NODE: &str = "node-0";

/// `udptool serve PORT` answers every datagram with `UDP=<sender's address>`; `udptool ask
/// HOST PORT` sends one and prints the answer (exit 1 after 2 s without one).
const UDPTOOL: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

int main(int argc, char **argv) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (argc == 3 && strcmp(argv[1], "serve") == 0) {
        a.sin_port = htons(atoi(argv[2]));
        if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
        for (;;) {
            char buf[512], reply[64];
            struct sockaddr_in peer;
            socklen_t len = sizeof peer;
            if (recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len) < 0) continue;
            int n = snprintf(reply, sizeof reply, "UDP=%s\n", inet_ntoa(peer.sin_addr));
            sendto(s, reply, n, 0, (struct sockaddr *)&peer, len);
        }
    }
    if (argc == 4 && strcmp(argv[1], "ask") == 0) {
        struct timeval t = {2, 0};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
        a.sin_port = htons(atoi(argv[3]));
        if (inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) { fputs("bad address\n", stderr); return 2; }
        sendto(s, "hi", 2, 0, (struct sockaddr *)&a, sizeof a);
        char buf[512];
        ssize_t n = recv(s, buf, sizeof buf - 1, 0);
        if (n < 0) { perror("recv"); return 1; }
        buf[n] = 0;
        fputs(buf, stdout);
        return 0;
    }
    fputs("usage: udptool serve PORT | udptool ask HOST PORT\n", stderr);
    return 2;
}
"#;

/// A directory pods mount (hostPath `/tools`): `udptool` and `www/cgi-bin/ip`, a CGI
/// answering `REMOTE=<client address> HOST=<pod hostname>`. Built once per test binary; the
/// rename makes it whole for parallel binaries too.
fn tools() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mnet-tools");
        let cgi = dir.join("www/cgi-bin");
        std::fs::create_dir_all(&cgi).expect("tools dir");
        let script = cgi.join("ip");
        std::fs::write(
            &script,
            "#!/bin/sh\necho Content-Type: text/plain\necho\necho \"REMOTE=$REMOTE_ADDR HOST=$(hostname)\"\n",
        )
        .expect("CGI script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("CGI mode");
        let pid = std::process::id();
        let src = dir.join(format!("udptool-{pid}.c"));
        std::fs::write(&src, UDPTOOL).expect("udptool source");
        let tmp = dir.join(format!("udptool-{pid}"));
        let out = Command::new("gcc")
            .args(["-static", "-Os", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("running gcc (apt-get install gcc libc6-dev)");
        assert!(
            out.status.success(),
            "gcc udptool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, dir.join("udptool")).expect("udptool in place");
        let _ = std::fs::remove_file(&src);
        dir
    })
}

/// Starts a two-node VXLAN cluster (plus `server_args`) and waits until both nodes are Ready.
fn cluster(server_args: Vec<&str>) -> Cluster {
    cluster_with(Options {
        nodes: 2,
        server_args,
        agent_args: vec![],
        ipv6: false,
        detect_node_ip: false,
    })
}

/// [`cluster`] with all the options.
fn cluster_with(opts: Options<'_>) -> Cluster {
    tools();
    let c = Cluster::start(bin(), opts, |data| {
        install_images(Path::new(env!("CARGO_TARGET_TMPDIR")), data)
    });
    assert_eq!(c.nodes[0].name, CLIENT_NODE);
    assert_eq!(c.nodes[1].name, SERVER_NODE);
    c.wait_ready(Duration::from_secs(90));
    c
}

/// A Deployment `echo` of two pods on [`SERVER_NODE`]: the CGI on TCP 8080 and `udptool
/// serve` on UDP 9090.
fn echo_deployment() -> String {
    let tools = tools().display();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {SERVER_NODE}}}
      terminationGracePeriodSeconds: 1
      volumes: [{{name: tools, hostPath: {{path: "{tools}", type: Directory}}}}]
      containers:
      - name: web
        image: {BUSYBOX}
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8080", "-h", "/tools/www"]
        volumeMounts: [{{name: tools, mountPath: /tools}}]
      - name: udp
        image: {BUSYBOX}
        imagePullPolicy: Never
        command: ["/tools/udptool", "serve", "9090"]
        volumeMounts: [{{name: tools, mountPath: /tools}}]
"#
    )
}

/// A pod `client` on [`CLIENT_NODE`] that only sleeps: the tests `kubectl exec` into it.
fn client_pod() -> String {
    let tools = tools().display();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: default}}
spec:
  nodeName: {CLIENT_NODE}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: tools, hostPath: {{path: "{tools}", type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{{name: tools, mountPath: /tools}}]
"#
    )
}

/// A pod `name` on `node` serving the CGI on 8080, labelled `app: web`.
fn web_pod(name: &str, node: &str) -> String {
    let tools = tools().display();
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: tools, hostPath: {{path: "{tools}", type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "8080", "-h", "/tools/www"]
    volumeMounts: [{{name: tools, mountPath: /tools}}]
"#
    )
}

/// The pod names answering 16 requests to the CGI at `ip:80` from the client pod.
fn hosts_answering(c: &Cluster, ip: &str) -> Option<Vec<String>> {
    let script = format!("for i in $(seq 16); do {}; done", http_get(ip, 80));
    let mut hosts: Vec<String> = answers(&in_client(c, &script)?)
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    Some(hosts)
}

/// `(name, node, pod IP)` of the Running, not deleted pods matching `selector`.
fn running(c: &Cluster, selector: &str) -> Vec<(String, String, String)> {
    let out = c
        .server
        .kubectl(LATEST, &["get", "pods", "-l", selector, "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_string(),
                p["spec"]["nodeName"].as_str()?.to_string(),
                p["status"]["podIP"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Waits until `n` pods matching `selector` run, and returns them.
fn wait_running(c: &Cluster, selector: &str, n: usize) -> Vec<(String, String, String)> {
    eventually(
        Duration::from_secs(60),
        EVERY,
        &format!("{n} Running pods {selector}"),
        || {
            let pods = running(c, selector);
            (pods.len() == n).then_some(pods)
        },
    )
}

/// The client pod's IP, once it runs.
fn start_client(c: &Cluster) -> String {
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&client_pod()));
    eventually(Duration::from_secs(60), EVERY, "client Running", || {
        let p = c.server.json(LATEST, &["get", "pod", "client"]);
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(String::from))
            .flatten()
    })
}

/// Runs `script` with `sh -c` in the client pod; its stdout when it succeeded.
fn in_client(c: &Cluster, script: &str) -> Option<String> {
    let out = c
        .server
        .kubectl(LATEST, &["exec", "client", "--", "sh", "-c", script]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A shell line asking the CGI at `host:port` over HTTP.
fn http_get(host: &str, port: u16) -> String {
    format!("printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

/// Every `(REMOTE, HOST)` pair the CGI answered in `out`, IPv4-mapped addresses unmapped
/// (httpd listens on a dual-stack socket).
fn answers(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("REMOTE=")?;
            let (remote, host) = rest.split_once(" HOST=")?;
            let remote = remote
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim_start_matches("::ffff:");
            Some((remote.to_string(), host.to_string()))
        })
        .collect()
}

/// The first allocated nodePort of Service `name`.
fn node_port(c: &Cluster, name: &str) -> u16 {
    let svc = c.server.json(LATEST, &["get", "svc", name]);
    svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no nodePort: {svc}"))
}

/// Asks the CGI at `<ip>:<port>` from the LAN; its answers (none when nothing answered).
fn from_lan(c: &Cluster, ip: &str, port: u16) -> Vec<(String, String)> {
    let out: Output = c.lan_exec(&[
        "sh",
        "-c",
        &format!("printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {ip} {port}"),
    ]);
    answers(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn cluster_ip_reaches_endpoints_on_another_node_over_tcp_and_udp() {
    let began = Instant::now();
    let c = cluster(vec![]);
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&echo_deployment()));
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(
            r#"apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
  - {name: dns, port: 53, targetPort: 9090, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: echo-sticky, namespace: default}
spec:
  sessionAffinity: ClientIP
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-node-local, namespace: default}
spec:
  internalTrafficPolicy: Local
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#,
        ),
    );
    let client_ip = start_client(&c);
    let echo = wait_running(&c, "app=echo", 2);
    assert!(echo.iter().all(|(_, n, _)| n == SERVER_NODE), "{echo:?}");
    let cluster_ip = c.server.json(LATEST, &["get", "svc", "echo"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();

    // TCP: sixteen connections reach both endpoints (random choice), each seeing the client
    // pod's own address (no masquerade inside the cluster).
    let script = format!("for i in $(seq 16); do {}; done", http_get(&cluster_ip, 80));
    let seen = eventually(
        Duration::from_secs(40),
        EVERY,
        "both endpoints answering over TCP",
        || {
            let a = answers(&in_client(&c, &script)?);
            let mut hosts: Vec<&str> = a.iter().map(|(_, h)| h.as_str()).collect();
            hosts.sort_unstable();
            hosts.dedup();
            (hosts.len() == 2).then_some(a)
        },
    );
    assert!(
        seen.iter().all(|(remote, _)| *remote == client_ip),
        "endpoints saw {seen:?}, the client is {client_ip}"
    );

    // UDP through the same Service, again keeping the source.
    let udp = eventually(Duration::from_secs(30), EVERY, "a UDP answer", || {
        in_client(&c, &format!("/tools/udptool ask {cluster_ip} 53"))
    });
    assert_eq!(udp.trim(), format!("UDP={client_ip}"));

    // sessionAffinity: ClientIP: every connection of the client goes to one endpoint.
    let sticky = c.server.json(LATEST, &["get", "svc", "echo-sticky"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let hosts = eventually(Duration::from_secs(20), EVERY, "the sticky service", || {
        hosts_answering(&c, &sticky).filter(|h| !h.is_empty())
    });
    assert_eq!(hosts.len(), 1, "{hosts:?}");

    // internalTrafficPolicy: Local, and node 0 has no endpoint: node 0's proxy drops it
    // (as upstream: "has no local endpoints"), once programmed.
    let local_ip = c.server.json(LATEST, &["get", "svc", "echo-node-local"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    eventually(
        Duration::from_secs(20),
        EVERY,
        "node 0 dropping the Local service",
        || {
            let t = c.nodes[0].netns.exec(&["nft", "list", "ruleset"]);
            String::from_utf8_lossy(&t.stdout)
                .contains(&format!("{local_ip} . tcp . 80 : drop"))
                .then_some(())
        },
    );
    let out = in_client(&c, &http_get(&local_ip, 80)).unwrap_or_default();
    assert!(answers(&out).is_empty(), "answered from node 0: {out}");
    eprintln!("cluster IP test took {:?}", began.elapsed());
}

#[test]
fn node_ports_answer_the_lan_and_local_policy_only_where_endpoints_are() {
    let began = Instant::now();
    let c = cluster(vec![]);
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&echo_deployment()));
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(
            r#"apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  type: NodePort
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
  - {name: dns, port: 53, targetPort: 9090, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: echo-local, namespace: default}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#,
        ),
    );
    wait_running(&c, "app=echo", 2);
    let (node0, node1) = (&c.nodes[0].ip, &c.nodes[1].ip);
    let cluster_port = node_port(&c, "echo");
    let local_port = node_port(&c, "echo-local");

    // Cluster policy: node 0 has no endpoint and still answers, forwarding to node 1.
    eventually(
        Duration::from_secs(40),
        EVERY,
        "the NodePort on node 0 answering the LAN",
        || (!from_lan(&c, node0, cluster_port).is_empty()).then_some(()),
    );
    // Local policy: node 1 answers, and its endpoint sees the LAN client's own address.
    let local = eventually(
        Duration::from_secs(40),
        EVERY,
        "the Local NodePort on node 1 answering the LAN",
        || {
            let a = from_lan(&c, node1, local_port);
            (!a.is_empty()).then_some(a)
        },
    );
    assert_eq!(local[0].0, LAN_CLIENT, "{local:?}");
    // Node 0 has programmed that NodePort (with no local endpoint) and drops its traffic.
    eventually(
        Duration::from_secs(20),
        EVERY,
        "node 0's proxy knowing the Local NodePort",
        || {
            let t = c.nodes[0].netns.exec(&["nft", "list", "ruleset"]);
            String::from_utf8_lossy(&t.stdout)
                .contains(&format!(". {local_port} : goto external-"))
                .then_some(())
        },
    );
    let none = from_lan(&c, node0, local_port);
    assert!(
        none.is_empty(),
        "node 0 answered a Local NodePort: {none:?}"
    );

    // UDP: the same Service's UDP NodePort on node 0, asked from the LAN.
    let svc = c.server.json(LATEST, &["get", "svc", "echo"]);
    let udp_port = svc["spec"]["ports"][1]["nodePort"]
        .as_u64()
        .expect("UDP nodePort");
    let udptool = tools().join("udptool");
    let udptool = udptool.to_str().expect("path");
    eventually(
        Duration::from_secs(30),
        EVERY,
        "the UDP NodePort on node 0 answering the LAN",
        || {
            let out = c.lan_exec(&[udptool, "ask", node0, &udp_port.to_string()]);
            String::from_utf8_lossy(&out.stdout)
                .starts_with("UDP=")
                .then_some(())
        },
    );
    eprintln!("NodePort test took {:?}", began.elapsed());
}

#[test]
fn pods_resolve_services_and_pods_on_another_node() {
    let began = Instant::now();
    let c = cluster(vec![]);
    let mut manifest = String::from(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop}
spec:
  selector: {app: db}
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, protocol: TCP}]
"#,
    );
    // db-late never passes its readiness probe: no record of it.
    for (pod, probe) in [
        ("db-0", ""),
        ("db-1", ""),
        (
            "db-late",
            "\n    readinessProbe: {exec: {command: [\"false\"]}, periodSeconds: 1}",
        ),
    ] {
        manifest.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: shop, labels: {{app: db}}}}
spec:
  nodeName: {SERVER_NODE}
  hostname: {pod}
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sleep", "3600"]{probe}
"#
        ));
    }
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&manifest));
    start_client(&c);
    let front_ip = c
        .server
        .json(LATEST, &["get", "svc", "-n", "shop", "front"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let db = eventually(Duration::from_secs(60), EVERY, "db pods Running", || {
        let out = c
            .server
            .kubectl(LATEST, &["get", "pods", "-n", "shop", "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ips: Vec<(String, String)> = list["items"]
            .as_array()?
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| {
                Some((
                    p["metadata"]["name"].as_str()?.to_string(),
                    p["status"]["podIP"].as_str()?.to_string(),
                ))
            })
            .collect();
        (ips.len() == 3).then_some(ips)
    });
    let (late, db): (Vec<_>, Vec<_>) = db.into_iter().partition(|(name, _)| name == "db-late");

    let lookup = |name: &str, want: &[&str]| {
        eventually(
            Duration::from_secs(30),
            EVERY,
            &format!("{name} resolving to {want:?}"),
            || {
                let out = in_client(&c, &format!("nslookup {name}"))?;
                want.iter()
                    .all(|ip| out.contains(&format!("Address: {ip}\n")))
                    .then_some(out)
            },
        )
    };
    let out = lookup("front.shop.svc.cluster.local", &[&front_ip]);
    // (The server's own line is `Address:<tab>`.)
    assert_eq!(out.matches("Address: ").count(), 1, "{out}");
    // The headless Service: one record per ready endpoint, both on the other node.
    let ips: Vec<&str> = db.iter().map(|(_, ip)| ip.as_str()).collect();
    let out = lookup("db.shop.svc.cluster.local", &ips);
    assert_eq!(out.matches("Address: ").count(), 2, "{out}");
    assert!(!out.contains(&format!("Address: {}\n", late[0].1)), "{out}");
    for (pod, ip) in &db {
        lookup(&format!("{pod}.db.shop.svc.cluster.local"), &[ip]);
    }
    eprintln!("DNS test took {:?}", began.elapsed());
}

#[test]
fn a_killed_agents_pod_is_recreated_on_another_node() {
    let began = Instant::now();
    let c = cluster(vec!["--node-monitor-grace-period=20s"]);
    // Node 0 cordoned, so the pod lands on node 1; then schedulable again.
    c.server.ok(LATEST, &["cordon", CLIENT_NODE]);
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: sleeper, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: sleeper}}}}
  template:
    metadata: {{labels: {{app: sleeper}}}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      containers:
      - name: main
        image: {BUSYBOX}
        imagePullPolicy: Never
        command: ["sleep", "3600"]
"#
        )),
    );
    let first = wait_running(&c, "app=sleeper", 1);
    assert_eq!(first[0].1, SERVER_NODE, "{first:?}");
    c.server.ok(LATEST, &["uncordon", CLIENT_NODE]);
    // A Service with an endpoint on each node.
    let web = String::from(
        r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#,
    ) + &web_pod("web-a", CLIENT_NODE)
        + &web_pod("web-b", SERVER_NODE);
    c.server.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&web));
    start_client(&c);
    wait_running(&c, "app=web", 2);
    let web_ip = c.server.json(LATEST, &["get", "svc", "web"])["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    eventually(
        Duration::from_secs(40),
        EVERY,
        "both web pods answering",
        || (hosts_answering(&c, &web_ip)? == ["web-a", "web-b"]).then_some(()),
    );

    // SIGKILL: no goodbye, the Lease just stops being renewed (containerd may stay; the
    // harness removes it).
    let pid = c.nodes[1].agent.pid().expect("node 1's agent running");
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    eventually(
        Duration::from_secs(60),
        EVERY,
        "node 1 Ready=Unknown",
        || {
            let n = c.server.json(LATEST, &["get", "node", SERVER_NODE]);
            n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "Unknown")
                .then_some(())
        },
    );
    // Its pods are marked not Ready, so the Service sends node 0's client only to web-a.
    eventually(
        Duration::from_secs(30),
        EVERY,
        "only web-a answering",
        || (hosts_answering(&c, &web_ip)? == ["web-a"]).then_some(()),
    );
    let again = eventually(
        Duration::from_secs(60),
        EVERY,
        "the pod recreated and Running on node 0",
        || {
            let pods = running(&c, "app=sleeper");
            pods.into_iter()
                .find(|(name, node, _)| node == CLIENT_NODE && *name != first[0].0)
        },
    );
    assert_ne!(again.0, first[0].0);
    eprintln!("killed agent test took {:?}", began.elapsed());
}

#[test]
fn dual_stack_services_reach_endpoints_on_another_node_over_ipv6() {
    let began = Instant::now();
    const CIDRS: &str = "10.42.0.0/16,fd42::/56";
    let c = cluster_with(Options {
        nodes: 2,
        server_args: vec![
            "--cluster-cidr",
            CIDRS,
            "--service-cidr",
            "10.43.0.0/16,fd43::/112",
        ],
        agent_args: vec!["--cluster-cidr", CIDRS],
        ipv6: true,
        detect_node_ip: false,
    });
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&echo_deployment()));
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(
            r#"apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#,
        ),
    );
    start_client(&c);
    let client_ip6 = c.server.json(LATEST, &["get", "pod", "client"])["status"]["podIPs"][1]["ip"]
        .as_str()
        .expect("the client's IPv6 address")
        .to_string();
    wait_running(&c, "app=echo", 2);
    let svc = c.server.json(LATEST, &["get", "svc", "echo"]);
    let cluster_ip6 = svc["spec"]["clusterIP"].as_str().expect("clusterIP");
    assert!(cluster_ip6.starts_with("fd43::"), "{svc}");
    assert!(svc["spec"]["clusterIPs"][1].is_string(), "{svc}");
    let port = node_port(&c, "echo");

    // The IPv6 ClusterIP from node 0, endpoints on node 1, the client's address kept.
    let seen = eventually(
        Duration::from_secs(40),
        EVERY,
        "the IPv6 ClusterIP answering",
        || {
            let a = answers(&in_client(&c, &http_get(cluster_ip6, 80))?);
            (!a.is_empty()).then_some(a)
        },
    );
    assert_eq!(seen[0].0, client_ip6, "{seen:?}");
    // Its AAAA record through node 0's DNS.
    eventually(Duration::from_secs(30), EVERY, "the AAAA record", || {
        let out = in_client(&c, "nslookup -type=aaaa echo.default.svc.cluster.local")?;
        out.contains(&format!("Address: {cluster_ip6}\n"))
            .then_some(())
    });
    // The NodePort on node 0's IPv6 address, from the LAN.
    let node0 = format!("{}10", distro_testharness::cluster::LAN_PREFIX6);
    eventually(
        Duration::from_secs(40),
        EVERY,
        "the NodePort on node 0's IPv6 address answering the LAN",
        || (!from_lan(&c, &node0, port).is_empty()).then_some(()),
    );
    eprintln!("dual-stack services test took {:?}", began.elapsed());
}

//! End-to-end (root, real containerd and runc): the service proxy of `distro agent --runtime
//! containerd` programs its nftables table, and traffic really flows: a ClusterIP reaches both
//! ready endpoints at random (never a not-ready one, named targetPort resolved), NodePort on
//! the node's address from the host (also with `externalTrafficPolicy: Local`), an external
//! IP, ClientIP affinity sticks, a pod reaches itself through its
//! service (hairpin), UDP through a Service with a hand-made EndpointSlice, a service without
//! endpoints refuses at once, a Service change applies within a second, and scaling to zero
//! turns into refusals.
//!
//! The node uses its own bridge, so its CNI masquerade rule and its proxy tables
//! (`distro-proxy-<bridge>`) are its own; the harness removes them, and only them.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distro_testharness::node::{pod_pid, start_agent};
use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(50);

fn nft_ok(args: &[&str]) -> bool {
    Command::new("nft")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn nft_out(args: &[&str]) -> String {
    Command::new("nft")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// An external IP of the `ext` service (TEST-NET-3: nobody else's address).
const EXTERNAL_IP: &str = "203.0.113.7";

/// An httpd answering its pod's hostname on 8080.
const HTTPD: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

fn manifest() -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web, tier: d}}}}
  template:
    metadata: {{labels: {{app: web, tier: d}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: httpd
        image: distro.test/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "{HTTPD}"]
        ports: [{{name: http-web, containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: gated, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 0
  readinessGates: [{{conditionType: distro.test/never}}]
  containers:
  - name: httpd
    image: distro.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "{HTTPD}"]
    ports: [{{name: http-web, containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: self, labels: {{app: self}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: httpd
    image: distro.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "{HTTPD}"]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: sleep
    image: distro.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http-web}}]
---
apiVersion: v1
kind: Service
metadata: {{name: sticky}}
spec:
  selector: {{app: web}}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 300}}}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: self}}
spec:
  selector: {{app: self}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: local}}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {{app: self}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ext}}
spec:
  selector: {{app: self}}
  externalIPs: ["{EXTERNAL_IP}"]
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nobody}}
spec:
  selector: {{app: nobody}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

/// A selectorless UDP service with a hand-made EndpointSlice pointing at `ip:port`.
fn udp_manifest(ip: IpAddr, port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: udp}}
spec:
  ports: [{{port: 5353, protocol: UDP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: udp-1, labels: {{kubernetes.io/service-name: udp}}}}
addressType: IPv4
endpoints: [{{addresses: ["{ip}"]}}]
ports: [{{name: "", port: {port}, protocol: UDP}}]
"#
    )
}

fn cluster_ip(s: &Server, svc: &str) -> IpAddr {
    s.json(LATEST, &["get", "svc", svc])["spec"]["clusterIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .expect("clusterIP")
}

/// An HTTP GET of `http://ip:port/` inside the network namespace of process `pid`, with the
/// host's busybox `nc` (its static `wget` crashes resolving even numeric hosts); the body.
fn get_in(pid: &str, ip: IpAddr, port: u16) -> Option<String> {
    let mut child = Command::new("nsenter")
        .args(["-t", pid, "-n", "busybox", "nc", "-w", "2"])
        .arg(ip.to_string())
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nsenter");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let body = text.split("\r\n\r\n").nth(1)?.trim().to_string();
    (!body.is_empty()).then_some(body)
}

/// One HTTP GET from the host netns; the body, or the connect error kind.
fn get(addr: SocketAddr) -> Result<String, std::io::ErrorKind> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.kind())?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.kind())?;
    let mut body = String::new();
    c.read_to_string(&mut body).map_err(|e| e.kind())?;
    Ok(body
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// This machine's first global IPv4 address (not on a bridge of ours): the node's address a
/// client on the LAN would use.
fn host_ip() -> IpAddr {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(" cni") && !l.contains(" dp") && !l.contains(" dk"))
        .find_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .expect("a global IPv4 address")
}

#[test]
fn services_reach_ready_endpoints_through_nftables() {
    let began = Instant::now();
    let s = Server::start(bin());
    let node = format!("proxy-{}", std::process::id());
    let bridge = format!("dp{}", std::process::id() % 10_000_000);
    let table = format!("distro-proxy-{bridge}");
    // Declared after `a`, so dropped first (on a failed assertion too): it needs the agent's
    // data dir, which dropping `a` removes; `a`'s drop then removes the proxy tables.
    let (a, cleanup) = start_agent(
        bin(),
        &s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &node,
        &bridge,
        &[],
    );

    // The proxy programs its table once the node runs; the kubernetes Service is in it.
    let kubernetes = cluster_ip(&s, "kubernetes");
    let slice = s.json(LATEST, &["get", "endpointslice", "kubernetes"]);
    let url = s.server_url().expect("server URL");
    let api_port = url.rsplit(':').next().unwrap().to_string();
    assert_eq!(
        slice["endpoints"][0]["addresses"][0], "127.0.0.1",
        "{slice}"
    );
    assert_eq!(slice["ports"][0]["port"].to_string(), api_port, "{slice}");
    eventually(Duration::from_secs(60), EVERY, "proxy table", || {
        let map = nft_out(&["list", "map", "ip", &table, "service-ips"]);
        map.contains(&format!("{kubernetes} . tcp . 443"))
            .then_some(())
    });
    let ready_at = began.elapsed();

    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&manifest()));
    let udp_server = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
    let host = host_ip();
    let udp_port = udp_server.local_addr().unwrap().port();
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&udp_manifest(host, udp_port)),
    );
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp_server.recv_from(&mut buf) {
            let _ = udp_server.send_to(&buf[..n], from);
        }
    });

    let web_pods = eventually(Duration::from_secs(60), EVERY, "pods running", || {
        let pods = s.json(LATEST, &["get", "pods"]);
        let items = pods["items"].as_array()?;
        let running = |p: &&Value| p["status"]["phase"] == "Running";
        let web: Vec<String> = items
            .iter()
            .filter(|p| p["metadata"]["labels"]["tier"] == "d")
            .filter(running)
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let others = items.iter().filter(running).count();
        if web.len() != 2 || others != 5 {
            eprintln!("{}", s.ok(LATEST, &["get", "pods", "-o", "wide"]));
        }
        (web.len() == 2 && others == 5).then_some(web)
    });
    let socket = cleanup.socket().expect("containerd socket");
    let client = pod_pid(&socket, &s, "default", "client");
    let web_ip = cluster_ip(&s, "web");

    // Both ready endpoints answer (random choice), the not-ready one never does.
    let mut seen = std::collections::BTreeSet::new();
    let mut answers = 0;
    eventually(
        Duration::from_secs(20),
        EVERY,
        "both endpoints answer",
        || {
            if let Some(name) = get_in(&client, web_ip, 80) {
                answers += 1;
                seen.insert(name);
            }
            (seen.len() >= 2).then_some(())
        },
    );
    assert!(
        web_pods.iter().all(|p| seen.contains(p)) && !seen.contains("gated"),
        "answers {seen:?}, web pods {web_pods:?}"
    );
    for _ in 0..10 {
        let name = get_in(&client, web_ip, 80).expect("web answers");
        assert_ne!(name, "gated", "a not-ready endpoint got traffic");
    }
    eprintln!("random choice: {seen:?} after {answers} answers");

    // ClientIP affinity: one endpoint for every request of one client.
    let sticky = cluster_ip(&s, "sticky");
    let first = eventually(Duration::from_secs(10), EVERY, "sticky answers", || {
        get_in(&client, sticky, 80)
    });
    // 16 answers from one of 2 endpoints by chance: 1 in 32,768.
    for _ in 0..16 {
        assert_eq!(
            get_in(&client, sticky, 80).as_deref(),
            Some(first.as_str()),
            "affinity broke"
        );
    }

    // Hairpin: a pod reaches itself through its own service.
    let self_pid = pod_pid(&socket, &s, "default", "self");
    let self_ip = cluster_ip(&s, "self");
    let answer = eventually(Duration::from_secs(10), EVERY, "hairpin", || {
        get_in(&self_pid, self_ip, 80)
    });
    assert_eq!(answer, "self");

    // NodePort on the node's address, from the host.
    let node_port = s.json(LATEST, &["get", "svc", "web"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("nodePort") as u16;
    let body = eventually(Duration::from_secs(10), EVERY, "NodePort", || {
        get(SocketAddr::new(host, node_port)).ok()
    });
    assert!(web_pods.contains(&body), "NodePort answered {body:?}");

    // externalTrafficPolicy Local with an endpoint on this node, and an external IP.
    let local_port = s.json(LATEST, &["get", "svc", "local"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("nodePort") as u16;
    let body = eventually(Duration::from_secs(10), EVERY, "Local NodePort", || {
        get(SocketAddr::new(host, local_port)).ok()
    });
    assert_eq!(body, "self");
    let ext: IpAddr = EXTERNAL_IP.parse().unwrap();
    let body = eventually(Duration::from_secs(10), EVERY, "external IP", || {
        get(SocketAddr::new(ext, 80)).ok()
    });
    assert_eq!(body, "self");

    // UDP through a Service to a hand-made endpoint (this test's echo socket).
    let udp_ip = cluster_ip(&s, "udp");
    let client_sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    client_sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    eventually(Duration::from_secs(10), EVERY, "UDP echo", || {
        client_sock
            .send_to(b"ping", SocketAddr::new(udp_ip, 5353))
            .ok()?;
        let mut buf = [0u8; 16];
        let (n, _) = client_sock.recv_from(&mut buf).ok()?;
        (&buf[..n] == b"ping").then_some(())
    });

    // No endpoints: refused at once (ICMP reject), not a timeout.
    let nobody = cluster_ip(&s, "nobody");
    let t = Instant::now();
    let refused = get(SocketAddr::new(nobody, 80));
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    // A Service change takes effect within a second.
    s.ok(
        LATEST,
        &[
            "patch",
            "svc",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/ports/0/port","value":81}]"#,
        ],
    );
    let t = Instant::now();
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(10),
        "port 81",
        || get(SocketAddr::new(web_ip, 81)).ok(),
    );
    let change = t.elapsed();
    assert!(change < Duration::from_secs(1), "change took {change:?}");

    // Scale to zero: only the not-ready pod is left, so connections are refused.
    s.ok(LATEST, &["scale", "deployment", "web", "--replicas=0"]);
    let t = Instant::now();
    eventually(
        Duration::from_secs(30),
        EVERY,
        "refused after scale to 0",
        || {
            (get(SocketAddr::new(web_ip, 81)) == Err(std::io::ErrorKind::ConnectionRefused))
                .then_some(())
        },
    );
    eprintln!(
        "node+proxy ready {ready_at:?}; service change applied in {change:?}; refused {:?} after scale to 0; total {:?}",
        t.elapsed(),
        began.elapsed()
    );
    // The cleanup first: it reads the agent's data dir, which dropping `a` removes.
    drop(cleanup);
    drop(a);
    assert!(!nft_ok(&["list", "table", "ip", &table]), "table removed");
}

//! End-to-end (root, real containerd and runc): the node's cluster DNS server, asked by
//! busybox `nslookup` inside a pod with `dnsPolicy: ClusterFirst` — a service by its short
//! name (search path) and its FQDN, a named port's SRV, a service address's PTR, a headless
//! service's pod by hostname, an ExternalName, and an outside name forwarded to a scripted
//! upstream on loopback (named through `--resolv-conf`). The DNS address and its dummy link
//! are unique to the test, so a real node on this machine is not disturbed; the link is
//! removed when the agent stops.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_testharness::get::ready_node;
use distro_testharness::node::{start_agent, NodeCleanup, BUSYBOX};
use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(200);
/// What the scripted upstream answers for [`EXTERNAL_NAME`].
const EXTERNAL_IP: &str = "192.0.2.53";
const EXTERNAL_NAME: &str = "external.test";

/// A scripted upstream resolver on a loopback address of its own, port 53: A for
/// [`EXTERNAL_NAME`], NXDOMAIN for everything else. Stops when dropped.
struct Upstream {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start(tag: u32) -> Upstream {
        let addr = format!("127.53.{}.{}", (tag >> 8) % 256, tag % 250 + 2);
        let sock = UdpSocket::bind((addr.as_str(), 53)).expect("binding the upstream on :53");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = dns_reply(&buf[..n]) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Upstream {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one DNS query (RFC 1035 wire format, one question).
fn dns_reply(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(pos..pos + len)?).to_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*q.get(pos)?, *q.get(pos + 1)?]);
    let question = &q[12..pos + 4];
    let found = labels.join(".") == EXTERNAL_NAME;
    let answer = found && qtype == 1;
    // QR, opcode 0, RD copied, RA; rcode NXDOMAIN (3) unless the name exists.
    let flags: u16 = 0x8080 | (u16::from(q[2] & 1) << 8) | if found { 0 } else { 3 };
    let mut r = Vec::new();
    r.extend_from_slice(&q[0..2]);
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if answer {
        let ip: std::net::Ipv4Addr = EXTERNAL_IP.parse().unwrap();
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

/// Removes this test's DNS link, then (dropping `_node`) what the node left behind.
struct Cleanup {
    /// Held only for its drop, which runs after the link is removed.
    _node: NodeCleanup,
    dns_link: String,
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if link_exists(&self.dns_link) {
            let _ = Command::new("ip")
                .args(["link", "del", &self.dns_link])
                .status();
        }
    }
}

fn json(s: &Server, args: &[&str]) -> Option<Value> {
    let out = s.kubectl(LATEST, args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Services `front` (ClusterIP, named port), `db` (headless) with its pod `db-0`
/// (hostname + subdomain), and `ext` (ExternalName to the upstream's name).
fn workloads(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: front, namespace: default}}
spec:
  selector: {{app: front}}
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: default}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: pg, port: 5432, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ext, namespace: default}}
spec:
  type: ExternalName
  externalName: {EXTERNAL_NAME}
---
apiVersion: v1
kind: Pod
metadata: {{name: db-0, namespace: default, labels: {{app: db}}}}
spec:
  nodeName: {node}
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exec sleep 3600"]
"#
    )
}

/// A pod asking every name in a loop, one log line per answer (`Q <name> <output>`).
fn client(node: &str, front_ip: &str) -> String {
    let queries = [
        "front".to_string(),
        "front.default.svc.cluster.local".into(),
        "db-0.db.default.svc.cluster.local".into(),
        "db.default.svc.cluster.local".into(),
        "ext.default.svc.cluster.local".into(),
        EXTERNAL_NAME.into(),
        "nope.default.svc.cluster.local".into(),
        front_ip.into(),
        "-type=srv _http._tcp.front.default.svc.cluster.local".into(),
    ];
    let mut script = String::from("cat /etc/resolv.conf | sed 's/^/R /'; while true; do ");
    for q in queries {
        script.push_str(&format!(
            "echo \"Q {q} $(nslookup {q} 2>&1 | tr '\\n\\t' '  ')\"; "
        ));
    }
    script.push_str("sleep 1; done");
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {script:?}]
"#
    )
}

/// The latest answer line for `query` in the log.
fn answer<'a>(log: &'a str, query: &str) -> Option<&'a str> {
    let prefix = format!("Q {query} ");
    log.lines()
        .rev()
        .filter_map(|l| l.split_once(" stdout F ").map(|(_, t)| t))
        .find(|t| t.starts_with(&prefix))
}

#[test]
fn pods_resolve_cluster_and_outside_names() {
    let began = Instant::now();
    let tag = std::process::id();
    let upstream = Upstream::start(tag);
    let s = Server::start(bin());
    let node = format!("dns-{tag}");
    let bridge = format!("dd{}", tag % 10_000_000);
    let dns_link = format!("dn{}", tag % 10_000_000);
    let dns_ip = format!("10.253.{}.{}", (tag >> 8) % 256, tag % 250 + 2);
    let resolv = tempfile::tempdir().unwrap();
    let resolv_conf = resolv.path().join("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {}\n", upstream.addr)).unwrap();
    let (mut a, node_cleanup) = start_agent(
        bin(),
        &s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &node,
        &bridge,
        &[
            "--cluster-dns",
            &dns_ip,
            "--dns-interface",
            &dns_link,
            "--resolv-conf",
            &resolv_conf.to_string_lossy(),
        ],
    );
    let _cleanup = Cleanup {
        _node: node_cleanup,
        dns_link: dns_link.clone(),
    };

    // The server's kube-dns Service, as on k3s, skipped by service proxies.
    let kube_dns = json(
        &s,
        &["get", "svc", "-n", "kube-system", "kube-dns", "-o", "json"],
    )
    .expect("kube-system/kube-dns");
    assert_eq!(kube_dns["spec"]["clusterIP"], "10.43.0.10", "{kube_dns}");
    assert_eq!(
        kube_dns["metadata"]["labels"]["service.kubernetes.io/service-proxy-name"],
        "distro-dns"
    );

    ready_node(&s, &node);
    // The node holds the DNS address on its own dummy link.
    eventually(
        Duration::from_secs(20),
        EVERY,
        "DNS address on the link",
        || {
            let out = Command::new("ip")
                .args(["-o", "addr", "show", "dev", &dns_link])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("inet {dns_ip}/32"))
                .then_some(())
        },
    );

    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&workloads(&node)));
    let front_ip = json(&s, &["get", "svc", "front", "-o", "json"]).expect("front")["spec"]
        ["clusterIP"]
        .as_str()
        .expect("front's clusterIP")
        .to_string();
    let db_ip = eventually(Duration::from_secs(40), EVERY, "db-0 Running", || {
        let p = json(&s, &["get", "pod", "db-0", "-o", "json"])?;
        (p["status"]["phase"] == "Running").then_some(())?;
        p["status"]["podIP"].as_str().map(str::to_string)
    });
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&client(&node, &front_ip)),
    );
    let uid = eventually(Duration::from_secs(30), EVERY, "client's uid", || {
        json(&s, &["get", "pod", "client", "-o", "json"])?["metadata"]["uid"]
            .as_str()
            .map(str::to_string)
    });
    let log_path = a
        .data_dir()
        .join(format!("agent/logs/pods/default_client_{uid}/main/0.log"));

    let expect: Vec<(&str, String)> = vec![
        // Short name through the search path, and the FQDN.
        ("front", format!("Address: {front_ip}")),
        (
            "front.default.svc.cluster.local",
            format!("Address: {front_ip}"),
        ),
        // The headless service's pod by hostname.subdomain, and the service itself.
        (
            "db-0.db.default.svc.cluster.local",
            format!("Address: {db_ip}"),
        ),
        ("db.default.svc.cluster.local", format!("Address: {db_ip}")),
        // ExternalName: CNAME to the outside name, completed upstream.
        (
            "ext.default.svc.cluster.local",
            format!("Address: {EXTERNAL_IP}"),
        ),
        // Forwarded to the scripted upstream.
        (EXTERNAL_NAME, format!("Address: {EXTERNAL_IP}")),
        ("nope.default.svc.cluster.local", "NXDOMAIN".into()),
        // PTR of the service address.
        (front_ip.as_str(), "front.default.svc.cluster.local".into()),
        // SRV of the named port.
        (
            "-type=srv _http._tcp.front.default.svc.cluster.local",
            "0 100 80 front.default.svc.cluster.local".into(),
        ),
    ];
    // Every name answered as expected in one of the client's rounds (it retries each second).
    let deadline = Instant::now() + Duration::from_secs(40);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let missing = expect
            .iter()
            .find(|(q, want)| !answer(&log, q).is_some_and(|a| a.contains(want.as_str())));
        let Some((q, want)) = missing else { break log };
        assert!(
            Instant::now() < deadline,
            "no answer to {q:?} containing {want:?}; the client's log:\n{log}"
        );
        std::thread::sleep(EVERY);
    };
    // The pod's resolver points at the node's DNS with the cluster search path.
    assert!(log.contains(&format!("R nameserver {dns_ip}")), "{log}");
    assert!(
        log.contains("R search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{log}"
    );
    assert!(log.contains("R options ndots:5"), "{log}");
    // The forwarded answer came from the scripted upstream (nothing else knows that name).
    assert!(
        answer(&log, EXTERNAL_NAME).is_some_and(|a| !a.contains("NXDOMAIN")),
        "{log}"
    );

    // A clean stop removes the link and its address.
    let status = a.stop();
    assert!(status.success(), "agent stop: {status}\n{}", a.log());
    assert!(!link_exists(&dns_link), "{dns_link} left behind");
    eprintln!("dns test took {:?}", began.elapsed());
}

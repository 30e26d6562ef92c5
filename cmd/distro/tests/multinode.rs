//! End-to-end (root, real containerd, network namespaces): several nodes on one machine
//! through the harness's [`cluster`](distro_testharness::cluster). Nodes join, get distinct
//! pod ranges from the node IPAM controller and publish their VTEPs; a pod on one node
//! reaches a pod on another by pod IP through the VXLAN overlay (and through host-gw routes),
//! and the server sees the client pod's own address (no masquerade inside the cluster).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use distro_testharness::cluster::{Cluster, Options};
use distro_testharness::node::{install_images, BUSYBOX};
use distro_testharness::{eventually, Agent, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(200);

/// Puts the test images into the node's air-gap images dir.
fn install(data: &Path) {
    install_images(Path::new(env!("CARGO_TARGET_TMPDIR")), data);
}

/// An HTTP server on `node` whose CGI answers the caller's address, and a client on
/// `client_node` that asks it every half second (busybox's nc; its wget may crash here).
fn pods(server_node: &str, client_node: &str, server_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: default}}
spec:
  nodeName: {client_node}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "while true; do printf 'GET /cgi-bin/ip HTTP/1.0\r\n\r\n' | nc -w 2 {server_ip} 8080; sleep 0.5; done"]
"#
    ) + &web(server_node)
}

fn web(node: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho REMOTE=$REMOTE_ADDR\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www"]
"#
    )
}

fn pod_ip(c: &Cluster, name: &str) -> Option<String> {
    let out = c
        .server
        .kubectl(LATEST, &["get", "pod", name, "-o", "json"]);
    let p: Value = serde_json::from_slice(&out.stdout).ok()?;
    (p["status"]["phase"] == "Running")
        .then(|| p["status"]["podIP"].as_str().map(String::from))
        .flatten()
}

/// Everything the containers of pod `pod` on `data`'s node have logged so far.
fn container_log(data: &Path, pod: &str) -> String {
    let root = data.join("agent/logs/pods");
    let mut out = String::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(&format!("default_{pod}_")) {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// Runs a pod-to-pod check on `c`: `web` on node 1, `client` on node 0, until the client's
/// log shows the server saw the client's own pod IP.
fn pod_to_pod_keeps_source(c: &Cluster) {
    // The web pod first, to learn its IP.
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&web(&c.nodes[1].name)));
    let web_ip = eventually(Duration::from_secs(40), EVERY, "web pod Running", || {
        pod_ip(c, "web")
    });
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&pods(&c.nodes[1].name, &c.nodes[0].name, &web_ip)),
    );
    let client_ip = eventually(Duration::from_secs(40), EVERY, "client pod Running", || {
        pod_ip(c, "client")
    });
    let data = c.nodes[0].agent.data_dir();
    eventually(
        Duration::from_secs(20),
        EVERY,
        "the client reaching the web pod across nodes",
        || {
            let log = container_log(&data, "client");
            // httpd listens on a dual-stack socket: IPv4 peers come as mapped addresses.
            (log.contains(&format!("REMOTE={client_ip}\n"))
                || log.contains(&format!("REMOTE=[::ffff:{client_ip}]\n")))
            .then_some(())
        },
    );
    // Deleted through the kubelets, so their sandboxes (and network namespaces) go too.
    c.server.ok(
        LATEST,
        &[
            "delete",
            "pod",
            "web",
            "client",
            "--grace-period=1",
            "--timeout=30s",
        ],
    );
}

fn pod_cidr(c: &Cluster, node: &str) -> Value {
    c.server.json(LATEST, &["get", "node", node])
}

#[test]
fn vxlan_nodes_get_distinct_ranges_and_pods_reach_each_other() {
    let began = Instant::now();
    let c = Cluster::start(
        bin(),
        Options {
            nodes: 3,
            server_args: vec![],
            agent_args: vec![],
            ipv6: false,
            detect_node_ip: false,
        },
        install,
    );
    c.wait_ready(Duration::from_secs(60));

    // Distinct /24s of the default cluster CIDR, and flannel's annotations.
    let mut ranges = Vec::new();
    for n in &c.nodes {
        let node = eventually(Duration::from_secs(20), EVERY, "annotations", || {
            let node = pod_cidr(&c, &n.name);
            node["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"]
                .is_string()
                .then_some(node)
        });
        let cidr = node["spec"]["podCIDR"].as_str().unwrap().to_string();
        assert!(
            cidr.starts_with("10.42.") && cidr.ends_with(".0/24"),
            "{cidr}"
        );
        assert_eq!(node["spec"]["podCIDRs"][0], cidr.as_str());
        let a = &node["metadata"]["annotations"];
        assert_eq!(a["flannel.alpha.coreos.com/backend-type"], "vxlan");
        assert_eq!(a["flannel.alpha.coreos.com/public-ip"], n.ip.as_str());
        assert!(a["flannel.alpha.coreos.com/backend-data"]
            .as_str()
            .unwrap()
            .contains("\"VNI\":1"));
        ranges.push(cidr);
    }
    let mut unique = ranges.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ranges:?}");

    // The device and one route per remote node on node 0.
    let dev = c.nodes[0]
        .netns
        .exec(&["ip", "-d", "link", "show", "distro.1"]);
    let dev = String::from_utf8_lossy(&dev.stdout).to_string();
    assert!(
        dev.contains("vxlan id 1") && dev.contains("dstport 8472"),
        "{dev}"
    );
    assert!(dev.contains("mtu 1450"), "{dev}");
    eventually(
        Duration::from_secs(10),
        EVERY,
        "routes to both peers",
        || {
            let r = c.nodes[0]
                .netns
                .exec(&["ip", "route", "show", "dev", "distro.1"]);
            let r = String::from_utf8_lossy(&r.stdout).to_string();
            (r.contains(&format!("{} via", ranges[1])) && r.contains(&format!("{} via", ranges[2])))
                .then_some(())
        },
    );

    pod_to_pod_keeps_source(&c);

    // Traffic leaving the cluster CIDR is masqueraded: an HTTP server on the LAN (in the
    // server's namespace) sees node 0's address, not the pod's.
    let www = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(www.path().join("cgi-bin")).unwrap();
    let cgi = www.path().join("cgi-bin/ip");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho Content-Type: text/plain\necho\necho REMOTE=$REMOTE_ADDR\n",
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut lan_httpd = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", c.server_netns().name))
        .args(["busybox", "httpd", "-f", "-p", "10.77.0.1:18080", "-h"])
        .arg(www.path())
        .spawn()
        .expect("busybox httpd");
    let egress = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: egress, namespace: default}}
spec:
  nodeName: {}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "while true; do printf 'GET /cgi-bin/ip HTTP/1.0\r\n\r\n' | nc -w 2 10.77.0.1 18080; sleep 0.5; done"]
"#,
        c.nodes[0].name
    );
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&egress));
    let data = c.nodes[0].agent.data_dir();
    let seen = format!("REMOTE={}\n", c.nodes[0].ip);
    let masqueraded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(Duration::from_secs(40), EVERY, "egress masqueraded", || {
            container_log(&data, "egress").contains(&seen).then_some(())
        })
    }));
    let _ = lan_httpd.kill();
    let _ = lan_httpd.wait();
    if let Err(e) = masqueraded {
        std::panic::resume_unwind(e);
    }
    c.server.ok(
        LATEST,
        &[
            "delete",
            "pod",
            "egress",
            "--grace-period=1",
            "--timeout=30s",
        ],
    );

    // A node that leaves takes its route along on the others.
    c.server.ok(LATEST, &["delete", "node", &c.nodes[2].name]);
    eventually(
        Duration::from_secs(10),
        EVERY,
        "route of the removed node gone",
        || {
            let r = c.nodes[0]
                .netns
                .exec(&["ip", "route", "show", "dev", "distro.1"]);
            (!String::from_utf8_lossy(&r.stdout).contains(&ranges[2])).then_some(())
        },
    );
    eprintln!("vxlan test took {:?}", began.elapsed());
}

#[test]
fn host_gw_routes_pods_via_node_addresses() {
    let began = Instant::now();
    let c = Cluster::start(
        bin(),
        Options {
            nodes: 2,
            server_args: vec![],
            agent_args: vec!["--flannel-backend", "host-gw"],
            ipv6: false,
            detect_node_ip: false,
        },
        install,
    );
    c.wait_ready(Duration::from_secs(60));
    let peer = pod_cidr(&c, &c.nodes[1].name)["spec"]["podCIDR"]
        .as_str()
        .map(String::from);
    let peer = eventually(Duration::from_secs(10), EVERY, "podCIDR", || peer.clone());
    eventually(Duration::from_secs(20), EVERY, "host-gw route", || {
        let r = c.nodes[0].netns.exec(&["ip", "route", "show", &peer]);
        String::from_utf8_lossy(&r.stdout)
            .contains(&format!("via {}", c.nodes[1].ip))
            .then_some(())
    });
    let dev = c.nodes[0].netns.exec(&["ip", "link", "show", "distro.1"]);
    assert!(!dev.status.success(), "host-gw makes no VXLAN device");
    pod_to_pod_keeps_source(&c);

    // Joining across the LAN with a token pinning another CA, or with a wrong secret, is
    // refused with a message that says so.
    let url = c.server.server_url().expect("url");
    let token = c.server.token();
    let (hash, creds) = token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::"))
        .expect("K10 token");
    for (bad, says) in [
        (
            format!("K10{}::{creds}", "0".repeat(hash.len())),
            "the server's CA does not match the token's hash; check --token / --join",
        ),
        (
            format!("K10{hash}::server:not-the-secret"),
            "the server refused the join token",
        ),
    ] {
        let mut a = Agent::start_in_netns(
            bin(),
            &c.nodes[0].netns.name,
            &url,
            &bad,
            &["--runtime", "fake", "--node-name", "intruder"],
            |_| {},
        );
        assert!(!a.wait_exit(Duration::from_secs(20)).success());
        assert!(a.log().contains(says), "{}", a.log());
    }
    assert!(!c
        .server
        .kubectl(LATEST, &["get", "node", "intruder"])
        .status
        .success());
    eprintln!("host-gw test took {:?}", began.elapsed());
}

#[test]
fn dual_stack_pods_reach_each_other_over_ipv6() {
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
        install,
    );
    c.wait_ready(Duration::from_secs(60));
    let node = eventually(Duration::from_secs(20), EVERY, "annotations", || {
        let node = pod_cidr(&c, &c.nodes[1].name);
        node["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-v6-data"]
            .is_string()
            .then_some(node)
    });
    let v6 = node["spec"]["podCIDRs"][1].as_str().unwrap().to_string();
    assert!(v6.starts_with("fd42:") && v6.ends_with("/64"), "{node}");
    assert_eq!(
        node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ipv6"],
        "fd77::11"
    );
    let dev = c.nodes[0]
        .netns
        .exec(&["ip", "-d", "link", "show", "distro-v6.1"]);
    let dev = String::from_utf8_lossy(&dev.stdout).to_string();
    assert!(
        dev.contains("mtu 1430") && dev.contains("vxlan id 1"),
        "{dev}"
    );

    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&web(&c.nodes[1].name)));
    let web_ip6 = eventually(Duration::from_secs(40), EVERY, "web pod's IPv6", || {
        pod_ip(&c, "web")?;
        let p = c.server.json(LATEST, &["get", "pod", "web"]);
        p["status"]["podIPs"][1]["ip"].as_str().map(String::from)
    });
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&pods(&c.nodes[1].name, &c.nodes[0].name, &web_ip6)),
    );
    let client_ip6 = eventually(Duration::from_secs(40), EVERY, "client pod's IPv6", || {
        pod_ip(&c, "client")?;
        let p = c.server.json(LATEST, &["get", "pod", "client"]);
        p["status"]["podIPs"][1]["ip"].as_str().map(String::from)
    });
    let data = c.nodes[0].agent.data_dir();
    eventually(Duration::from_secs(20), EVERY, "IPv6 pod to pod", || {
        container_log(&data, "client")
            .contains(&format!("REMOTE=[{client_ip6}]\n"))
            .then_some(())
    });
    c.server.ok(
        LATEST,
        &[
            "delete",
            "pod",
            "web",
            "client",
            "--grace-period=1",
            "--timeout=30s",
        ],
    );
    eprintln!("dual-stack test took {:?}", began.elapsed());
}

#[test]
fn a_node_whose_address_changes_is_followed_by_its_peers() {
    let began = Instant::now();
    let c = Cluster::start(
        bin(),
        Options {
            nodes: 2,
            server_args: vec![],
            agent_args: vec![],
            ipv6: false,
            detect_node_ip: true,
        },
        install,
    );
    c.wait_ready(Duration::from_secs(60));
    let fdb_dst = |want: &str| {
        let out = c.nodes[0]
            .netns
            .exec(&["bridge", "fdb", "show", "dev", "distro.1"]);
        String::from_utf8_lossy(&out.stdout).contains(&format!("dst {want} "))
    };
    eventually(
        Duration::from_secs(20),
        EVERY,
        "FDB entry of node 1",
        || fdb_dst(&c.nodes[1].ip).then_some(()),
    );
    // DHCP hands node 1 another address.
    let ns = &c.nodes[1].netns.name;
    let new_ip = format!("{}.51", distro_testharness::cluster::LAN_PREFIX);
    // (The old one first: deleting a primary address takes its secondaries along.)
    let old_cidr = format!("{}/24", c.nodes[1].ip);
    let new_cidr = format!("{new_ip}/24");
    for args in [
        ["-n", ns, "addr", "del", &old_cidr, "dev", "eth0"],
        ["-n", ns, "addr", "add", &new_cidr, "dev", "eth0"],
    ] {
        assert!(Command::new("ip").args(args).status().unwrap().success());
    }
    eventually(
        Duration::from_secs(30),
        EVERY,
        "node 1's new address published",
        || {
            let n = pod_cidr(&c, &c.nodes[1].name);
            (n["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == new_ip.as_str())
                .then_some(())
        },
    );
    eventually(
        Duration::from_secs(20),
        EVERY,
        "node 0 following node 1",
        || (fdb_dst(&new_ip) && !fdb_dst(&c.nodes[1].ip)).then_some(()),
    );
    let dev = c.nodes[1]
        .netns
        .exec(&["ip", "-d", "link", "show", "distro.1"]);
    assert!(
        String::from_utf8_lossy(&dev.stdout).contains(&format!("local {new_ip} ")),
        "{}",
        String::from_utf8_lossy(&dev.stdout)
    );
    // The Node reports the new InternalIP, and its kubelet API answers there (the API
    // server reaches it through nodes/proxy, checking a serving certificate for it).
    eventually(
        Duration::from_secs(30),
        EVERY,
        "node 1's InternalIP updated",
        || {
            let n = pod_cidr(&c, &c.nodes[1].name);
            n["status"]["addresses"]
                .as_array()?
                .iter()
                .any(|a| a["type"] == "InternalIP" && a["address"] == new_ip.as_str())
                .then_some(())
        },
    );
    let healthz = format!("/api/v1/nodes/{}/proxy/healthz", c.nodes[1].name);
    eventually(
        Duration::from_secs(30),
        EVERY,
        "node 1's kubelet API at its new address",
        || {
            let out = c.server.kubectl(LATEST, &["get", "--raw", &healthz]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok")
                .then_some(())
        },
    );
    eprintln!("address change test took {:?}", began.elapsed());
}

/// The first file under `dir` whose name ends with `suffix`.
fn find_file(dir: &Path, suffix: &str) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn agents_take_the_cluster_ranges_and_dns_from_the_server() {
    let began = Instant::now();
    // No --cluster-cidr/--cluster-dns on the agents: they learn them from the server.
    let c = Cluster::start(
        bin(),
        Options {
            nodes: 2,
            server_args: vec![
                "--cluster-cidr",
                "10.60.0.0/16",
                "--service-cidr",
                "10.61.0.0/16",
            ],
            agent_args: vec![],
            ipv6: false,
            detect_node_ip: false,
        },
        install,
    );
    c.wait_ready(Duration::from_secs(60));
    let published = c.server.json(
        LATEST,
        &["-n", "kube-system", "get", "configmap", "distro-config"],
    );
    assert_eq!(
        published["data"]["cluster-cidr"], "10.60.0.0/16",
        "{published}"
    );
    assert_eq!(
        published["data"]["cluster-dns"], "10.61.0.10",
        "{published}"
    );
    let cidr = eventually(Duration::from_secs(20), EVERY, "podCIDR", || {
        pod_cidr(&c, &c.nodes[0].name)["spec"]["podCIDR"]
            .as_str()
            .map(String::from)
    });
    assert!(cidr.starts_with("10.60."), "{cidr}");

    // The CNI config and its masquerade rules name the server's range, not 10.42.0.0/16.
    let data = c.nodes[0].agent.data_dir();
    let conflist = eventually(Duration::from_secs(20), EVERY, "CNI config", || {
        find_file(&data, ".conflist")
    });
    let conflist = std::fs::read_to_string(conflist).unwrap();
    assert!(
        conflist.contains("\"clusterCIDR\": \"10.60.0.0/16\"")
            || conflist.contains("\"clusterCIDR\":\"10.60.0.0/16\""),
        "{conflist}"
    );
    let log = c.nodes[0].agent.log();
    assert!(!log.contains("differs from the server's"), "{log}");

    // Pod to pod across nodes is not masqueraded: the agents know 10.60.0.0/16 is the
    // cluster's (with 10.42.0.0/16 they masqueraded everything outside their own /24).
    pod_to_pod_keeps_source(&c);
    let nft = c.nodes[0]
        .netns
        .exec(&["nft", "list", "table", "inet", "distro-cni"]);
    let nft = String::from_utf8_lossy(&nft.stdout).to_string();
    assert!(
        nft.contains("10.60.0.0/16") && !nft.contains("10.42."),
        "{nft}"
    );

    // Pods resolve through the server's cluster DNS (the 10th address of its service range).
    let dns_pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: resolver, namespace: default}}
spec:
  nodeName: {}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "cat /etc/resolv.conf; while true; do nslookup kubernetes.default.svc.cluster.local 2>&1; sleep 1; done"]
"#,
        c.nodes[1].name
    );
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&dns_pod));
    let data1 = c.nodes[1].agent.data_dir();
    let resolved = std::panic::catch_unwind(|| {
        eventually(
            Duration::from_secs(60),
            EVERY,
            "the kubernetes Service resolved through 10.61.0.10",
            || {
                let log = container_log(&data1, "resolver");
                (log.contains("nameserver 10.61.0.10") && log.contains("Address: 10.61.0.1\n"))
                    .then_some(())
            },
        )
    });
    let log = container_log(&data1, "resolver");
    assert!(
        resolved.is_ok(),
        "the resolver pod's log: {log}\n{}",
        c.nodes[1].agent.log()
    );
    assert!(!log.contains("10.43.0.10"), "{log}");
    c.server.ok(
        LATEST,
        &[
            "delete",
            "pod",
            "resolver",
            "--grace-period=1",
            "--timeout=30s",
        ],
    );
    eprintln!("cluster config test took {:?}", began.elapsed());
}

#[test]
fn dual_stack_host_gw_routes_ipv6_pods_via_node_addresses() {
    let began = Instant::now();
    let c = Cluster::start(
        bin(),
        Options {
            nodes: 2,
            server_args: vec!["--cluster-cidr", "10.42.0.0/16,fd42::/56"],
            agent_args: vec!["--flannel-backend", "host-gw"],
            ipv6: true,
            detect_node_ip: false,
        },
        install,
    );
    c.wait_ready(Duration::from_secs(60));
    let node = eventually(
        Duration::from_secs(20),
        EVERY,
        "IPv6 range published",
        || {
            let node = pod_cidr(&c, &c.nodes[1].name);
            (node["spec"]["podCIDRs"][1].is_string()
                && node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ipv6"]
                    .is_string())
            .then_some(node)
        },
    );
    let peer6 = node["spec"]["podCIDRs"][1].as_str().unwrap().to_string();
    assert_eq!(
        node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ipv6"],
        "fd77::11"
    );
    // A plain IPv6 route to the peer's range via its LAN address, and no VXLAN device.
    eventually(Duration::from_secs(20), EVERY, "host-gw IPv6 route", || {
        let r = c.nodes[0]
            .netns
            .exec(&["ip", "-6", "route", "show", &peer6]);
        String::from_utf8_lossy(&r.stdout)
            .contains("via fd77::11")
            .then_some(())
    });
    let dev = c.nodes[0]
        .netns
        .exec(&["ip", "link", "show", "distro-v6.1"]);
    assert!(!dev.status.success(), "host-gw makes no VXLAN device");

    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&web(&c.nodes[1].name)));
    let web_ip6 = eventually(Duration::from_secs(40), EVERY, "web pod's IPv6", || {
        pod_ip(&c, "web")?;
        let p = c.server.json(LATEST, &["get", "pod", "web"]);
        p["status"]["podIPs"][1]["ip"].as_str().map(String::from)
    });
    c.server.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&pods(&c.nodes[1].name, &c.nodes[0].name, &web_ip6)),
    );
    let client_ip6 = eventually(Duration::from_secs(40), EVERY, "client pod's IPv6", || {
        pod_ip(&c, "client")?;
        let p = c.server.json(LATEST, &["get", "pod", "client"]);
        p["status"]["podIPs"][1]["ip"].as_str().map(String::from)
    });
    let data = c.nodes[0].agent.data_dir();
    eventually(
        Duration::from_secs(30),
        EVERY,
        "IPv6 pod to pod over host-gw",
        || {
            container_log(&data, "client")
                .contains(&format!("REMOTE=[{client_ip6}]\n"))
                .then_some(())
        },
    );
    c.server.ok(
        LATEST,
        &[
            "delete",
            "pod",
            "web",
            "client",
            "--grace-period=1",
            "--timeout=30s",
        ],
    );
    eprintln!("dual-stack host-gw test took {:?}", began.elapsed());
}

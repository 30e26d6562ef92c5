//! Integration tests (root): the distro binary run as a CNI plugin, as containerd runs it,
//! against real network namespaces, a real bridge and real nftables. Every namespace, bridge,
//! nft table and file is named uniquely per test and removed when the test ends.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// One test's network world: a temp data dir, a bridge, an nft table and namespaces, all
/// unique, all removed on drop.
struct World {
    tag: String,
    bridge: String,
    table: String,
    cidr: String,
    prefix: String,
    dir: tempfile::TempDir,
    netns: Vec<String>,
    links: Vec<String>,
}

impl World {
    fn new(prefix_len: u8) -> World {
        let r = random();
        let tag = format!("{:08x}", r as u32);
        // 10.240.0.0/12 is this test's private range; the third and second octets come from
        // the random tag so parallel tests do not share a subnet.
        // The counter keeps the tests of one run apart even if the random parts collide.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let idx = ((r >> 32) % 512) * 8 + COUNTER.fetch_add(1, Ordering::Relaxed) % 8;
        let prefix = format!("10.{}.{}", 240 + idx / 256, idx % 256);
        World {
            bridge: format!("dt{tag}"),
            table: format!("dt-{tag}"),
            cidr: format!("{prefix}.0/{prefix_len}"),
            prefix,
            dir: tempfile::tempdir().unwrap(),
            netns: Vec::new(),
            links: Vec::new(),
            tag,
        }
    }

    fn netns(&mut self, n: usize) -> String {
        let name = format!("dt-{}-{n}", self.tag);
        let out = run("ip", &["netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.netns.push(name.clone());
        name
    }

    fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": format!("dt-{}", self.tag),
            "type": "distro",
            "bridge": self.bridge,
            "podCIDR": self.cidr,
            "clusterCIDR": self.cidr,
            "mtu": 1400,
            "dataDir": self.dir.path(),
            "nftTable": self.table,
        })
    }

    fn ipam_dir(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join("ipam")
            .join(format!("dt-{}", self.tag))
    }

    /// Runs the plugin; returns the exit success and the parsed stdout (Null when empty).
    fn cni(&self, command: &str, id: &str, netns: Option<&str>, conf: &Value) -> (bool, Value) {
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = netns {
            cmd.env("CNI_NETNS", format!("/var/run/netns/{ns}"));
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("plugin printed non-JSON {stdout:?}: {e}"))
        };
        (out.status.success(), value)
    }

    fn add(&self, id: &str, netns: &str) -> Value {
        let (ok, v) = self.cni("ADD", id, Some(netns), &self.conf());
        assert!(ok, "ADD {id} failed: {v}");
        v
    }

    /// Pings until answered, for up to 5 s (the first packets may wait on ARP).
    fn ping(&self, netns: &str, ip: &str) -> bool {
        eventually(Duration::from_secs(5), || {
            run(
                "ip",
                &["netns", "exec", netns, "busybox", "ping", "-c1", "-W1", ip],
            )
            .status
            .success()
        })
    }

    fn link_exists(&self, name: &str) -> bool {
        run("ip", &["link", "show", name]).status.success()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = run("ip", &["netns", "del", ns]);
        }
        for link in self.links.iter().chain([&self.bridge]) {
            let _ = run("ip", &["link", "del", link]);
        }
        let _ = run("nft", &["delete", "table", "inet", &self.table]);
    }
}

fn address_of(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn add_connects_two_pods_idempotently_and_del_cleans_up() {
    let mut w = World::new(24);
    let (a, b) = (w.netns(1), w.netns(2));
    let id_a = format!("ctr-a-{}", w.tag);
    let id_b = format!("ctr-b-{}", w.tag);
    let ra = w.add(&id_a, &a);
    let rb = w.add(&id_b, &b);

    // The result is a spec 1.0.0 result: bridge, host veth, container interface in the sandbox.
    let gw = format!("{}.1", w.prefix);
    assert_eq!(ra["cniVersion"], "1.0.0");
    assert_eq!(ra["interfaces"][0]["name"], w.bridge.as_str());
    assert_eq!(ra["interfaces"][2]["name"], "eth0");
    assert_eq!(
        ra["interfaces"][2]["sandbox"],
        format!("/var/run/netns/{a}")
    );
    for i in ra["interfaces"].as_array().unwrap() {
        assert_eq!(i["mac"].as_str().unwrap().len(), 17, "{i}");
    }
    assert_eq!(ra["ips"][0]["gateway"], gw.as_str());
    assert_eq!(ra["ips"][0]["interface"], 2);
    assert!(
        ra["ips"][0].get("version").is_none(),
        "1.0.0 results carry no ip version"
    );
    assert_eq!(ra["routes"], json!([{ "dst": "0.0.0.0/0", "gw": gw }]));
    assert!(ra["ips"][0]["address"].as_str().unwrap().ends_with("/24"));
    let (ip_a, ip_b) = (address_of(&ra), address_of(&rb));
    assert_ne!(ip_a, ip_b);
    assert_ne!(ip_a, gw);

    // The pods reach each other and the gateway; MTU and lo are set in the namespace.
    assert!(w.ping(&a, &ip_b), "pod a cannot ping pod b");
    assert!(w.ping(&b, &ip_a), "pod b cannot ping pod a");
    assert!(w.ping(&a, &gw), "pod a cannot ping the gateway");
    let link = run(
        "ip",
        &["netns", "exec", &a, "ip", "-j", "link", "show", "eth0"],
    );
    let link: Value = serde_json::from_slice(&link.stdout).unwrap();
    assert_eq!(link[0]["mtu"], 1400);
    let lo = run(
        "ip",
        &["netns", "exec", &a, "ip", "-j", "link", "show", "lo"],
    );
    assert!(
        String::from_utf8_lossy(&lo.stdout).contains("\"UP\""),
        "lo is down"
    );
    let host_veth = ra["interfaces"][1]["name"].as_str().unwrap().to_string();
    let port = run("ip", &["-j", "-d", "link", "show", &host_veth]);
    let port: Value = serde_json::from_slice(&port.stdout).unwrap();
    assert_eq!(port[0]["master"], w.bridge.as_str());
    assert_eq!(port[0]["linkinfo"]["info_slave_data"]["hairpin"], true);
    // The bridge keeps the MAC it was created with while ports come and go.
    let bridge_mac = ra["interfaces"][0]["mac"].clone();
    assert_eq!(rb["interfaces"][0]["mac"], bridge_mac);

    // CHECK passes against the result it gave.
    let mut conf = w.conf();
    conf["prevResult"] = ra.clone();
    let (ok, out) = w.cni("CHECK", &id_a, Some(&a), &conf);
    assert!(ok, "CHECK failed: {out}");

    // A repeated ADD keeps the address and still works.
    let again = w.add(&id_a, &a);
    assert_eq!(address_of(&again), ip_a);
    assert!(
        w.ping(&a, &ip_b),
        "pod a lost connectivity after a repeated ADD"
    );

    // DEL releases the address and removes the veth; a second DEL succeeds too.
    assert!(w.ipam_dir().join(&ip_b).exists());
    let (ok, out) = w.cni("DEL", &id_b, Some(&b), &w.conf());
    assert!(ok && out.is_null(), "DEL printed {out}");
    let br = run("ip", &["-j", "link", "show", &w.bridge]);
    let br: Value = serde_json::from_slice(&br.stdout).unwrap();
    assert_eq!(br[0]["address"], bridge_mac, "the gateway MAC changed");
    assert!(
        !w.ipam_dir().join(&ip_b).exists(),
        "DEL kept the reservation"
    );
    assert!(!w.link_exists(rb["interfaces"][1]["name"].as_str().unwrap()));
    assert!(
        !run("ip", &["netns", "exec", &b, "ip", "link", "show", "eth0"])
            .status
            .success()
    );
    let (ok, out) = w.cni("DEL", &id_b, Some(&b), &w.conf());
    assert!(ok, "second DEL failed: {out}");
    // CHECK after the interface is gone fails with the spec's error JSON.
    let mut conf = w.conf();
    conf["prevResult"] = rb.clone();
    let (ok, out) = w.cni("CHECK", &id_b, Some(&b), &conf);
    assert!(
        !ok && out["code"].as_u64().is_some() && out["msg"].as_str().is_some(),
        "{out}"
    );

    // DEL of a container whose namespace is already gone succeeds and frees its address.
    let ns = w.netns.remove(0);
    run("ip", &["netns", "del", &ns]);
    let (ok, out) = w.cni("DEL", &id_a, Some(&a), &w.conf());
    assert!(ok, "DEL without a namespace failed: {out}");
    assert!(!w.ipam_dir().join(&ip_a).exists());
    assert!(!w.link_exists(&host_veth));
}

#[test]
fn released_addresses_are_reused_and_a_full_range_is_an_error() {
    // A /30 has exactly one pod address (.2): the gateway takes .1.
    let mut w = World::new(30);
    let (a, b) = (w.netns(1), w.netns(2));
    let ra = w.add("first", &a);
    assert_eq!(address_of(&ra), format!("{}.2", w.prefix));
    let (ok, err) = w.cni("ADD", "second", Some(&b), &w.conf());
    assert!(!ok);
    assert_eq!(err["code"], 999, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("no IP addresses available"),
        "{err}"
    );
    // The failed ADD left no interface behind in its namespace.
    assert!(
        !run("ip", &["netns", "exec", &b, "ip", "link", "show", "eth0"])
            .status
            .success()
    );
    let (ok, _) = w.cni("DEL", "first", Some(&a), &w.conf());
    assert!(ok);
    let rb = w.add("second", &b);
    assert_eq!(
        address_of(&rb),
        format!("{}.2", w.prefix),
        "the released address was not reused"
    );
    let (ok, _) = w.cni("DEL", "second", Some(&b), &w.conf());
    assert!(ok);
}

#[test]
fn version_and_errors_follow_the_spec() {
    let w = World::new(24);
    let (ok, v) = w.cni("VERSION", "", None, &json!({ "cniVersion": "1.0.0" }));
    assert!(ok, "{v}");
    assert_eq!(v["cniVersion"], "1.0.0");
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"1.0.0") && versions.contains(&"0.4.0"),
        "{v}"
    );

    // A podCIDR too small for any pod: invalid network config (7) with a clear message.
    let mut conf = w.conf();
    conf["podCIDR"] = json!("10.9.9.0/31");
    let (ok, err) = w.cni("ADD", "x", Some("nonexistent"), &conf);
    assert!(!ok);
    assert_eq!(err["code"], 7, "{err}");
    assert_eq!(err["cniVersion"], "1.0.0");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("podCIDR 10.9.9.0/31 is too small"),
        "{err}"
    );

    // Not JSON: failed to decode content (6).
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "x")
        .env("CNI_NETNS", "/var/run/netns/none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/x")
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 6, "{err}");

    // A version the plugin does not speak (1), a missing variable (4).
    let mut conf = w.conf();
    conf["cniVersion"] = json!("9.9.9");
    let (ok, err) = w.cni("ADD", "x", Some("none"), &conf);
    assert!(!ok);
    assert_eq!(err["code"], 1, "{err}");
    assert_eq!(
        err["msg"],
        r#"incompatible CNI versions; config is "9.9.9", plugin supports ["0.3.0" "0.3.1" "0.4.0" "1.0.0"]"#
    );
    let (ok, err) = w.cni("ADD", "x", None, &w.conf());
    assert!(!ok);
    assert_eq!(err["code"], 4, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("CNI_NETNS"), "{err}");

    // DEL of something never added succeeds.
    let (ok, out) = w.cni("DEL", "never-added", None, &w.conf());
    assert!(ok, "{out}");
}

/// A process this test started, killed by PID on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 100 ms until it returns true or `deadline` passes.
fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP GET with `busybox nc` from the host (`ns` None) or a namespace; the response
/// body on success. (busybox-static's wget crashes resolving names, nc does not resolve.)
fn fetch(ns: Option<&str>, host: &str, port: u16) -> Option<String> {
    let port = port.to_string();
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["netns", "exec", ns]);
    }
    args.extend(["busybox", "nc", "-w", "2", host, &port]);
    let mut cmd = if ns.is_some() {
        Command::new("ip")
    } else {
        Command::new(args.remove(0))
    };
    let mut child = cmd
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // nc exits at once when nothing listens yet; the caller polls, so a closed pipe is fine.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

#[test]
fn host_port_reaches_the_pod_and_traffic_leaving_the_cluster_is_masqueraded() {
    let mut w = World::new(24);
    let (a, b) = (w.netns(1), w.netns(2));
    let gw = format!("{}.1", w.prefix);
    let host_port = 20000 + (random() % 20000) as u16;
    let mut conf = w.conf();
    conf["runtimeConfig"] = json!({ "portMappings": [
        { "hostPort": host_port, "containerPort": 8080, "protocol": "tcp" },
    ]});
    let (ok, ra) = w.cni("ADD", "web", Some(&a), &conf);
    assert!(ok, "ADD with a hostPort failed: {ra}");
    w.add("client", &b);

    let www = w.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body = format!("pong-{}", w.tag);
    std::fs::write(www.join("index.html"), &body).unwrap();
    let _httpd = Started(
        Command::new("ip")
            .args([
                "netns", "exec", &a, "busybox", "httpd", "-f", "-p", "8080", "-h",
            ])
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    let pod_ip = address_of(&ra);
    let answered = eventually(Duration::from_secs(10), || {
        fetch(Some(&b), &pod_ip, 8080).as_deref() == Some(body.as_str())
    });
    assert!(
        answered,
        "httpd in the pod never answered on its own address"
    );

    // From the node via localhost and via the node's address, and from another pod via the
    // node's address: all DNAT to the pod.
    for (ns, host) in [
        (None, "127.0.0.1"),
        (None, gw.as_str()),
        (Some(b.as_str()), gw.as_str()),
    ] {
        let got = fetch(ns, host, host_port);
        assert_eq!(
            got.as_deref(),
            Some(body.as_str()),
            "hostPort via {host}:{host_port} from {ns:?}"
        );
    }

    // Traffic to outside the cluster CIDR leaves with the node's address: the "outside"
    // namespace has no route back to the pod CIDR, so only a masqueraded ping is answered.
    let outside = w.netns(3);
    let link = format!("do{}", w.tag);
    w.links.push(link.clone());
    let peer = format!("dp{}", w.tag);
    let r = (random() % 64) as u8 * 4;
    let (host_ip, out_ip) = (format!("100.127.{r}.1"), format!("100.127.{r}.2"));
    for args in [
        vec!["link", "add", &link, "type", "veth", "peer", "name", &peer],
        vec!["link", "set", &peer, "netns", &outside],
        vec!["addr", "add", &format!("{host_ip}/30"), "dev", &link],
        vec!["link", "set", &link, "up"],
        vec![
            "-n",
            &outside,
            "addr",
            "add",
            &format!("{out_ip}/30"),
            "dev",
            &peer,
        ],
        vec!["-n", &outside, "link", "set", &peer, "up"],
    ] {
        let out = run("ip", &args);
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        w.ping(&a, &out_ip),
        "pod cannot reach outside the cluster CIDR (masquerade)"
    );
    let table = run("nft", &["list", "table", "inet", &w.table]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains(&format!("tcp dport {host_port} dnat ip to")),
        "{table}"
    );

    // DEL removes the mapping (and only the container's rules).
    let (ok, out) = w.cni("DEL", "web", Some(&a), &w.conf());
    assert!(ok, "{out}");
    let table = run("nft", &["list", "table", "inet", &w.table]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        !table.contains(&format!("dport {host_port}")),
        "DEL left the hostPort rule: {table}"
    );
    assert!(
        table.contains("masquerade comment \"distro-cni masquerade"),
        "{table}"
    );
    assert_eq!(
        fetch(None, "127.0.0.1", host_port),
        None,
        "hostPort still answers after DEL"
    );
}

#[test]
fn dual_stack_pods_get_both_families_and_ipv6_host_ports() {
    let mut w = World::new(24);
    let (a, b) = (w.netns(1), w.netns(2));
    let r = random();
    // fd00::/8 unique local addresses, random /64 per test (the VM's own fd00::/64 is avoided).
    let v6 = format!(
        "fd{:02x}:{:x}:{:x}:1",
        1 + (r % 254),
        (r >> 8) & 0xffff,
        (r >> 24) & 0xffff
    );
    let gw6 = format!("{v6}::1");
    let host_port = 20000 + (random() % 20000) as u16;
    let mut conf = w.conf();
    conf["podCIDRv6"] = json!(format!("{v6}::/64"));
    conf["runtimeConfig"] = json!({ "portMappings": [
        { "hostPort": host_port, "containerPort": 8080, "protocol": "tcp" },
    ]});
    let (ok, ra) = w.cni("ADD", "web6", Some(&a), &conf);
    assert!(ok, "dual-stack ADD failed: {ra}");
    let mut plain = conf.clone();
    plain["runtimeConfig"] = json!({});
    let (ok, rb) = w.cni("ADD", "client6", Some(&b), &plain);
    assert!(ok, "dual-stack ADD failed: {rb}");

    let ips = ra["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{ra}");
    assert!(
        ips[1]["address"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{v6}::")),
        "{ra}"
    );
    assert!(ips[1]["address"].as_str().unwrap().ends_with("/64"));
    assert_eq!(ips[1]["gateway"], gw6.as_str());
    assert!(
        ra["routes"]
            .as_array()
            .unwrap()
            .contains(&json!({ "dst": "::/0", "gw": gw6 })),
        "{ra}"
    );
    let ip6_of = |r: &Value| {
        r["ips"][1]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let (a6, b6) = (ip6_of(&ra), ip6_of(&rb));
    assert_ne!(a6, b6);

    let ping6 = |ns: &str, ip: &str| {
        run(
            "ip",
            &["netns", "exec", ns, "busybox", "ping6", "-c1", "-W1", ip],
        )
        .status
        .success()
    };
    assert!(
        eventually(Duration::from_secs(5), || ping6(&b, &a6)),
        "pod b cannot ping pod a over IPv6"
    );
    assert!(
        eventually(Duration::from_secs(5), || ping6(&a, &gw6)),
        "pod a cannot ping its IPv6 gateway"
    );

    // CHECK verifies both addresses.
    let mut check = plain.clone();
    check["prevResult"] = ra.clone();
    let (ok, out) = w.cni("CHECK", "web6", Some(&a), &check);
    assert!(ok, "CHECK failed: {out}");

    // The hostPort DNATs over IPv6 too: pod b reaches pod a through the node's IPv6 gateway.
    let www = w.dir.path().join("www6");
    std::fs::create_dir_all(&www).unwrap();
    let body = format!("pong6-{}", w.tag);
    std::fs::write(www.join("index.html"), &body).unwrap();
    let _httpd = Started(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &a,
                "busybox",
                "httpd",
                "-f",
                "-p",
                "[::]:8080",
                "-h",
            ])
            .arg(&www)
            .spawn()
            .unwrap(),
    );
    let answered = eventually(Duration::from_secs(10), || {
        fetch(Some(&b), &a6, 8080).as_deref() == Some(body.as_str())
    });
    assert!(
        answered,
        "httpd in the pod never answered on its IPv6 address"
    );
    assert_eq!(
        fetch(Some(&b), &gw6, host_port).as_deref(),
        Some(body.as_str()),
        "IPv6 hostPort"
    );
    assert_eq!(
        fetch(Some(&b), &format!("{}.1", w.prefix), host_port).as_deref(),
        Some(body.as_str()),
        "IPv4 hostPort"
    );

    // DEL releases both families' addresses.
    for (id, ns) in [("web6", &a), ("client6", &b)] {
        let (ok, out) = w.cni("DEL", id, Some(ns), &plain);
        assert!(ok, "{out}");
    }
    let left: Vec<String> = std::fs::read_dir(w.ipam_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(left.is_empty(), "reservations left after DEL: {left:?}");
}

#[test]
fn concurrent_adds_on_a_fresh_node_all_succeed_with_distinct_addresses() {
    let mut w = World::new(24);
    let names: Vec<String> = (1..=6).map(|n| w.netns(n)).collect();
    // Six plugin processes at once race to create the bridge, the nft table and reservations.
    let results: Vec<(bool, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let w = &w;
                s.spawn(move || w.cni("ADD", &format!("par-{i}"), Some(ns), &w.conf()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<String> = results
        .iter()
        .map(|(ok, v)| {
            assert!(ok, "concurrent ADD failed: {v}");
            address_of(v)
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 6, "addresses handed out twice: {addrs:?}");
    let table = run("nft", &["list", "table", "inet", &w.table]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert_eq!(table.matches("jump hostports").count(), 2, "{table}");
    assert_eq!(table.matches("distro-cni masquerade").count(), 1, "{table}");
    let last = address_of(&results[5].1);
    assert!(
        w.ping(&names[0], &last),
        "pod 0 cannot reach pod 5 at {last}"
    );
    for (i, ns) in names.iter().enumerate() {
        let (ok, out) = w.cni("DEL", &format!("par-{i}"), Some(ns), &w.conf());
        assert!(ok, "{out}");
    }
}

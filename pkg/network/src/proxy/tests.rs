//! Rule generation tests: a small set of services and slices rendered to golden text, and the
//! same transactions applied by the kernel in a network namespace made for the test (root).

use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::model::{service_ports, Family, Protocol};
use super::render::{render, transaction, Settings};

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

/// web: ClusterIP+NodePort, named port resolved by the slice, one ready endpoint here, one
/// ready elsewhere, one not ready; dns: UDP with ClientIP affinity; empty: no endpoints;
/// local: externalTrafficPolicy Local with no local endpoint; ext: ExternalName (no rules).
fn fixtures() -> (Vec<Service>, Vec<EndpointSlice>) {
    let services = vec![
        svc(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP", "nodePort": 30080}]}})),
        svc(
            json!({"metadata": {"name": "dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.43.0.10", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
        ),
        svc(
            json!({"metadata": {"name": "empty", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.30", "ports": [{"port": 8080}]}}),
        ),
        svc(
            json!({"metadata": {"name": "local", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.40", "externalTrafficPolicy": "Local",
                "externalIPs": ["192.0.2.7"],
                "ports": [{"port": 81, "nodePort": 30081}]}}),
        ),
        svc(json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}})),
    ];
    let slices = vec![
        slice(json!({"metadata": {"name": "web-1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.42.1.6"], "conditions": {"ready": true}, "nodeName": "n2"},
                {"addresses": ["10.42.0.7"], "conditions": {"ready": false}, "nodeName": "n1"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})),
        slice(
            json!({"metadata": {"name": "dns-1", "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.9"]}],
            "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}]}),
        ),
        slice(
            json!({"metadata": {"name": "local-1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "local"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.1.8"], "conditions": {"ready": true}, "nodeName": "n2"}],
            "ports": [{"name": "", "port": 9000, "protocol": "TCP"}]}),
        ),
    ];
    (services, slices)
}

fn settings(table: &str) -> Settings {
    Settings {
        table: table.into(),
        cluster_cidrs: vec!["10.42.0.0/16".parse().unwrap()],
    }
}

#[test]
fn endpoints_are_chosen_as_upstream() {
    let (services, slices) = fixtures();
    let ports = service_ports(&services, &slices, "n1");
    let ids: Vec<String> = ports.iter().map(|p| p.id()).collect();
    assert_eq!(
        ids,
        [
            "default/empty/tcp/",
            "default/local/tcp/",
            "default/web/tcp/http",
            "kube-system/dns/udp/dns"
        ]
    );
    let web = &ports[2];
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(web.node_port, Some(30080));
    let ips: Vec<String> = web
        .cluster_endpoints
        .iter()
        .map(|e| format!("{}:{}", e.ip, e.port))
        .collect();
    assert_eq!(
        ips,
        ["10.42.0.5:8080", "10.42.1.6:8080"],
        "not-ready excluded"
    );
    assert_eq!(web.local_endpoints.len(), 1);
    assert_eq!(ports[3].affinity_timeout, Some(60));
    assert!(!ports[0].any_endpoints);
    assert!(ports[1].any_endpoints && ports[1].local_endpoints.is_empty());
}

#[test]
fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
    let (services, _) = fixtures();
    let slices = vec![slice(
        json!({"metadata": {"name": "web-1", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.42.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.42.0.6"], "conditions": {"ready": false, "serving": false, "terminating": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
    )];
    let ports = service_ports(&services, &slices, "n1");
    let web = ports.iter().find(|p| p.name == "web").unwrap();
    assert_eq!(web.cluster_endpoints.len(), 1);
    assert_eq!(web.cluster_endpoints[0].ip.to_string(), "10.42.0.5");
}

#[test]
fn golden_ipv4_table() {
    let (services, slices) = fixtures();
    let ports = service_ports(&services, &slices, "n1");
    let table = render(&settings("distro-proxy"), Family::V4, &ports);
    let text = transaction("distro-proxy", None, &table);
    let golden = include_str!("testdata/golden-v4.nft");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/proxy/testdata/golden-v4.nft"
            ),
            &text,
        )
        .unwrap();
    }
    assert_eq!(text, golden, "rendered rules differ from the golden file");
    let v6 = render(&settings("distro-proxy"), Family::V6, &ports);
    assert!(transaction("distro-proxy", None, &v6)
        .lines()
        .all(|l| !l.starts_with("add element")));
    // Nothing changed, nothing to do.
    assert_eq!(transaction("distro-proxy", Some(&table), &table), "");
}

#[test]
fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
    let services = vec![svc(
        json!({"metadata": {"name": "itp", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.60", "internalTrafficPolicy": "Local",
            "ports": [{"port": 80}]}}),
    )];
    let slices = vec![slice(
        json!({"metadata": {"name": "itp-1", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "itp"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.42.0.5"], "nodeName": "n1"},
                      {"addresses": ["10.42.1.5"], "nodeName": "n2"}],
        "ports": [{"port": 80, "protocol": "TCP"}]}),
    )];
    let ports = service_ports(&services, &slices, "n1");
    let text = transaction("t", None, &render(&settings("t"), Family::V4, &ports));
    assert!(
        text.contains("service-ips { 10.43.0.60 . tcp . 80 : goto local-"),
        "{text}"
    );
    let local = text
        .lines()
        .find(|l| l.starts_with("add rule ip t local-") && l.contains("numgen"))
        .expect("local chain");
    assert!(
        local.contains("mod 1 ") && local.contains("10.42.0.5"),
        "{local}"
    );
    // On a node without endpoints of its own: dropped (there are endpoints elsewhere).
    let ports = service_ports(&services, &slices, "n3");
    let text = transaction("t", None, &render(&settings("t"), Family::V4, &ports));
    assert!(
        text.contains("no-endpoint-services { 10.43.0.60 . tcp . 80 : drop }"),
        "{text}"
    );
}

#[test]
fn dual_stack_services_render_ipv6_rules() {
    let services = vec![svc(
        json!({"metadata": {"name": "ds", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.50", "clusterIPs": ["10.43.0.50", "fd43::50"],
            "ports": [{"port": 80}]}}),
    )];
    let slices = vec![slice(
        json!({"metadata": {"name": "ds-6", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "ds"}},
        "addressType": "IPv6",
        "endpoints": [{"addresses": ["fd42::5"]}],
        "ports": [{"port": 80, "protocol": "TCP"}]}),
    )];
    let ports = service_ports(&services, &slices, "n1");
    assert_eq!(ports.len(), 2, "{ports:?}");
    let mut s = settings("t");
    s.cluster_cidrs.push("fd42::/56".parse().unwrap());
    let v6 = transaction("t", None, &render(&s, Family::V6, &ports));
    assert!(
        v6.contains("add element ip6 t service-ips { fd43::50 . tcp . 80 : goto service-"),
        "{v6}"
    );
    assert!(v6.contains("meta l4proto tcp dnat to [fd42::5]:80"), "{v6}");
    assert!(
        v6.contains("ip6 saddr != fd42::/56 jump mark-for-masquerade"),
        "{v6}"
    );
    assert!(v6.contains("ip6 daddr != ::1 meta l4proto"), "{v6}");
    let v4 = transaction("t", None, &render(&s, Family::V4, &ports));
    assert!(
        v4.contains(
            "add element ip t no-endpoint-services { 10.43.0.50 . tcp . 80 : goto reject-chain }"
        ),
        "{v4}"
    );
}

#[test]
fn later_syncs_change_only_what_changed() {
    let (services, slices) = fixtures();
    let ports = service_ports(&services, &slices, "n1");
    let before = render(&settings("t"), Family::V4, &ports);
    let first = transaction("t", None, &before);
    assert!(first.starts_with("add table ip t\ndelete table ip t\nadd table ip t\n"));
    // The dns service goes away: its element, chains and affinity set go, nothing else.
    let fewer: Vec<_> = ports.iter().filter(|p| p.name != "dns").cloned().collect();
    let after = render(&settings("t"), Family::V4, &fewer);
    let next = transaction("t", Some(&before), &after);
    let lines: Vec<&str> = next.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| l.contains("dns") || l.contains("10.43.0.10")),
        "{lines:#?}"
    );
    assert!(
        lines[0].starts_with("delete element ip t cluster-ips { 10.43.0.10 }"),
        "{lines:#?}"
    );
    assert!(lines.contains(&"delete element ip t service-ips { 10.43.0.10 . udp . 53 }"));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("flush chain ip t endpoint-")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("delete set ip t affinity-")));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("delete chain"))
            .count(),
        2
    );

    // One endpoint of web becomes not ready: only web's service chain and one endpoint
    // chain change.
    let mut slices2 = slices.clone();
    slices2[0].endpoints[1].conditions.as_mut().unwrap().ready = Some(false);
    let changed = render(
        &settings("t"),
        Family::V4,
        &service_ports(&services, &slices2, "n1"),
    );
    let next = transaction("t", Some(&before), &changed);
    let lines: Vec<&str> = next.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("flush chain"))
            .count(),
        2,
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("numgen random mod 1 vmap")),
        "{lines:#?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("delete chain ip t endpoint-") && l.contains("10.42.1.6")));
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `nft` inside the test's namespace.
fn nft_in(ns: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec nft");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn the_kernel_accepts_first_and_later_transactions() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let ns = Netns(format!("dpx-unit-{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    let (services, slices) = fixtures();
    let ports = service_ports(&services, &slices, "n1");
    let mut s = settings("distro-proxy");
    s.cluster_cidrs.push("fd42::/56".parse().unwrap());
    let v4 = render(&s, Family::V4, &ports);
    let v6 = render(&s, Family::V6, &ports);
    let first = transaction("distro-proxy", None, &v4) + &transaction("distro-proxy", None, &v6);
    assert!(
        first.contains("add rule ip6 distro-proxy services"),
        "{first}"
    );
    let (ok, out) = nft_in(&ns.0, &["-f", "-"], &first);
    assert!(ok, "first sync refused: {out}");
    // Applying the same again (a restart) starts clean, too.
    let (ok, out) = nft_in(&ns.0, &["-f", "-"], &first);
    assert!(ok, "repeated first sync refused: {out}");
    let (_, listed) = nft_in(&ns.0, &["list", "table", "ip", "distro-proxy"], "");
    assert!(listed.contains("numgen random mod 2 vmap"), "{listed}");
    assert!(listed.contains("flags dynamic,timeout"), "{listed}");

    // A later sync without dns deletes its chains and set in the same transaction.
    let fewer: Vec<_> = ports.into_iter().filter(|p| p.name != "dns").collect();
    let next = render(&s, Family::V4, &fewer);
    let (ok, out) = nft_in(
        &ns.0,
        &["-f", "-"],
        &transaction("distro-proxy", Some(&v4), &next),
    );
    assert!(ok, "later sync refused: {out}");
    let (_, listed) = nft_in(&ns.0, &["list", "table", "ip", "distro-proxy"], "");
    assert!(!listed.contains("kube-system/dns"), "{listed}");
    assert!(listed.contains("default/web/tcp/http"), "{listed}");
}

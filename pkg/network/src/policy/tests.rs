use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use super::model::{compute, Access, Protocol, State};
use super::render::{render, Settings};

const NODE: &str = "n1";

fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"}
            ]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        }))
        .unwrap(),
    )
}

fn ns(name: &str, labels: Value) -> Arc<Namespace> {
    Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap())
}

fn policy(ns: &str, name: &str, spec: Value) -> Arc<NetworkPolicy> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap(),
    )
}

/// A small cluster: server (10.0.0.1, local), client-a (10.0.0.2, local), client-b
/// (10.0.1.3, other node), other/x (10.0.1.4) in namespace `other` labelled team=x.
fn cluster() -> (Vec<Arc<Pod>>, Vec<Arc<Namespace>>) {
    (
        vec![
            pod(
                "default",
                "server",
                NODE,
                "10.0.0.1",
                json!({"app": "server"}),
            ),
            pod(
                "default",
                "a",
                NODE,
                "10.0.0.2",
                json!({"role": "client-a"}),
            ),
            pod(
                "default",
                "b",
                "n2",
                "10.0.1.3",
                json!({"role": "client-b"}),
            ),
            pod("other", "x", "n2", "10.0.1.4", json!({"role": "client-a"})),
        ],
        vec![
            ns("default", json!({"kubernetes.io/metadata.name": "default"})),
            ns(
                "other",
                json!({"kubernetes.io/metadata.name": "other", "team": "x"}),
            ),
        ],
    )
}

fn run(policies: Vec<Arc<NetworkPolicy>>) -> BTreeMap<IpAddr, Access> {
    let (pods, namespaces) = cluster();
    compute(
        &State {
            pods: &pods,
            namespaces: &namespaces,
            policies: &policies,
        },
        NODE,
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Whether `from` may open a TCP connection to `to` on `port` under `access`, checking the
/// egress of `from` and the ingress of `to` (pods absent from `access` are unrestricted).
fn allowed(
    access: &BTreeMap<IpAddr, Access>,
    from: &str,
    to: &str,
    proto: Protocol,
    port: u16,
) -> bool {
    let (from, to) = (ip(from), ip(to));
    let egress = access.get(&from).and_then(|a| a.egress.as_deref());
    let ingress = access.get(&to).and_then(|a| a.ingress.as_deref());
    (access.get(&from).is_none() || Access::allows(egress, &to, proto, port))
        && (access.get(&to).is_none() || Access::allows(ingress, &from, proto, port))
}

const TCP: Protocol = Protocol::Tcp;

#[test]
fn no_policy_means_unrestricted() {
    assert!(run(vec![]).is_empty());
}

#[test]
fn default_deny_ingress_selects_only_its_namespace_and_node() {
    let a = run(vec![policy(
        "default",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )]);
    // Only local pods of `default`; client-b runs elsewhere and is enforced by its node.
    assert_eq!(
        a.keys().copied().collect::<Vec<_>>(),
        vec![ip("10.0.0.1"), ip("10.0.0.2")]
    );
    assert_eq!(a[&ip("10.0.0.1")].ingress, Some(vec![]));
    assert_eq!(a[&ip("10.0.0.1")].egress, None);
    assert!(!allowed(&a, "10.0.1.3", "10.0.0.1", TCP, 80));
    // Egress is not restricted: the server may still call out.
    assert!(allowed(&a, "10.0.0.1", "10.9.9.9", TCP, 443));
}

#[test]
fn pod_selector_and_port() {
    let a = run(vec![policy(
        "default",
        "allow-a",
        json!({"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"role": "client-a"}}}],
            "ports": [{"port": 80}]
        }]}),
    )]);
    assert!(allowed(&a, "10.0.0.2", "10.0.0.1", TCP, 80));
    assert!(!allowed(&a, "10.0.0.2", "10.0.0.1", TCP, 81));
    assert!(!allowed(&a, "10.0.0.2", "10.0.0.1", Protocol::Udp, 80));
    assert!(!allowed(&a, "10.0.1.3", "10.0.0.1", TCP, 80));
    // Same labels in another namespace: a bare podSelector means the policy's namespace.
    assert!(!allowed(&a, "10.0.1.4", "10.0.0.1", TCP, 80));
    // client-a is not selected, so it stays open.
    assert!(!a.contains_key(&ip("10.0.0.2")));
}

#[test]
fn namespace_selector_alone_and_combined() {
    let alone = run(vec![policy(
        "default",
        "ns",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}]}),
    )]);
    assert!(allowed(&alone, "10.0.1.4", "10.0.0.1", TCP, 1234));
    assert!(!allowed(&alone, "10.0.1.3", "10.0.0.1", TCP, 1234));
    let and = run(vec![policy(
        "default",
        "ns",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"role": "client-b"}}
        }]}]}),
    )]);
    assert!(allowed(&and, "10.0.1.3", "10.0.0.1", TCP, 1));
    assert!(!allowed(&and, "10.0.1.4", "10.0.0.1", TCP, 1));
    // Two separate peers are OR: either one.
    let or = run(vec![policy(
        "default",
        "ns",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["x"]}]}},
            {"podSelector": {"matchLabels": {"role": "client-b"}}}
        ]}]}),
    )]);
    assert!(allowed(&or, "10.0.1.3", "10.0.0.1", TCP, 1));
    assert!(allowed(&or, "10.0.1.4", "10.0.0.1", TCP, 1));
    assert!(!allowed(&or, "10.0.0.2", "10.0.0.1", TCP, 1));
}

#[test]
fn ip_block_with_except_and_end_port() {
    let a = run(vec![policy(
        "default",
        "cidr",
        json!({"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{
            "from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}],
            "ports": [{"protocol": "UDP", "port": 1000, "endPort": 2000}]
        }]}),
    )]);
    let u = Protocol::Udp;
    assert!(allowed(&a, "10.0.0.2", "10.0.0.1", u, 1000));
    assert!(allowed(&a, "10.0.0.2", "10.0.0.1", u, 2000));
    assert!(!allowed(&a, "10.0.0.2", "10.0.0.1", u, 2001));
    assert!(!allowed(&a, "10.0.1.3", "10.0.0.1", u, 1500));
    assert!(!allowed(&a, "10.0.0.2", "10.0.0.1", TCP, 1500));
}

#[test]
fn named_ports_resolve_on_the_target() {
    let a = run(vec![policy(
        "default",
        "named",
        json!({"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"ports": [{"port": "http"}]}]}),
    )]);
    assert!(allowed(&a, "10.0.1.3", "10.0.0.1", TCP, 8080));
    assert!(!allowed(&a, "10.0.1.3", "10.0.0.1", TCP, 80));
    // A name the pod does not declare (or with another protocol) matches nothing.
    let none = run(vec![policy(
        "default",
        "named",
        json!({"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"ports": [{"port": "dns"}]}]}),
    )]);
    assert_eq!(none[&ip("10.0.0.1")].ingress, Some(vec![]));
    // Egress: the name resolves on each destination pod.
    let e = run(vec![policy(
        "default",
        "egress",
        json!({"podSelector": {"matchLabels": {"role": "client-a"}}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]}),
    )]);
    assert!(allowed(&e, "10.0.0.2", "10.0.1.3", Protocol::Udp, 5353));
    assert!(!allowed(&e, "10.0.0.2", "10.0.1.3", Protocol::Udp, 53));
    assert!(!allowed(&e, "10.0.0.2", "10.9.9.9", Protocol::Udp, 5353));
}

#[test]
fn egress_and_policy_type_defaults() {
    // No policyTypes with egress rules: both directions (as the apiserver defaults).
    let a = run(vec![policy(
        "default",
        "dns",
        json!({"podSelector": {"matchLabels": {"role": "client-a"}},
               "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
    )]);
    let acc = &a[&ip("10.0.0.2")];
    assert_eq!(acc.ingress, Some(vec![]));
    assert!(allowed(&a, "10.0.0.2", "10.43.0.10", Protocol::Udp, 53));
    assert!(!allowed(&a, "10.0.0.2", "10.43.0.10", TCP, 53));
    assert!(!allowed(&a, "10.0.0.2", "10.0.0.1", TCP, 80));
    // Policies add up: a second one opening the server.
    let b = run(vec![
        policy(
            "default",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        ),
        policy(
            "default",
            "to-server",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}]}]}),
        ),
    ]);
    assert!(allowed(&b, "10.0.0.2", "10.0.0.1", TCP, 80));
    assert!(!allowed(&b, "10.0.0.2", "10.0.1.3", TCP, 80));
    assert_eq!(b[&ip("10.0.0.2")].ingress, None);
}

#[test]
fn finished_and_host_network_pods_are_not_peers() {
    let (mut pods, namespaces) = cluster();
    let mut done: Pod = (*pods[1]).clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    pods[1] = Arc::new(done);
    let policies = vec![policy(
        "default",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "server"}},
               "ingress": [{"from": [{"podSelector": {}}]}]}),
    )];
    let a = compute(
        &State {
            pods: &pods,
            namespaces: &namespaces,
            policies: &policies,
        },
        NODE,
    );
    assert!(!allowed(&a, "10.0.0.2", "10.0.0.1", TCP, 80));
    assert!(allowed(&a, "10.0.1.3", "10.0.0.1", TCP, 80));
}

#[test]
fn dual_stack_pods_get_both_families() {
    let mut p: Pod = (*pod("default", "s", NODE, "10.0.0.9", json!({}))).clone();
    p.status.as_mut().unwrap().pod_ips = Some(vec![
        serde_json::from_value(json!({"ip": "10.0.0.9"})).unwrap(),
        serde_json::from_value(json!({"ip": "fd00::9"})).unwrap(),
    ]);
    let pods = vec![Arc::new(p)];
    let policies = vec![policy(
        "default",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/64"}}]}]}),
    )];
    let a = compute(
        &State {
            pods: &pods,
            namespaces: &[],
            policies: &policies,
        },
        NODE,
    );
    assert_eq!(a.len(), 2);
    let script = render(
        &Settings {
            table: "t".into(),
            bridge: "br0".into(),
        },
        &a,
    );
    assert!(script.contains("ip6 saddr fd00::/64 accept"), "{script}");
    assert!(
        script.contains("add element inet t ingress-pods6 { fd00::9 : jump ingress-"),
        "{script}"
    );
    assert!(
        script.contains("add element inet t ingress-pods4 { 10.0.0.9 : jump ingress-"),
        "{script}"
    );
}

#[test]
fn render_shares_chains_and_drops_at_the_end() {
    let a = run(vec![policy(
        "default",
        "allow-a",
        json!({"podSelector": {}, "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"role": "client-a"}}},
                     {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
            "ports": [{"port": 80}, {"port": 8000, "endPort": 8080}, {"protocol": "UDP"}]
        }]}),
    )]);
    let script = render(
        &Settings {
            table: "distro-policy-x".into(),
            bridge: "brx".into(),
        },
        &a,
    );
    let chains: Vec<&str> = script
        .lines()
        .filter(|l| {
            l.starts_with("add chain inet distro-policy-x ingress-") && !l.contains("forward")
        })
        .collect();
    assert_eq!(chains.len(), 1, "both local pods share one chain: {script}");
    for want in [
        "ip saddr { 10.0.0.2 } meta l4proto tcp th dport { 80, 8000-8080 } accept",
        "ip saddr { 10.0.0.2 } meta l4proto udp accept",
        "ip saddr 192.168.0.0/16 ip saddr != { 192.168.1.0/24 } meta l4proto tcp th dport { 80, 8000-8080 } accept",
        "oifname \"brx\" ip daddr vmap @ingress-pods4",
        "iifname \"brx\" ct state established,related accept",
    ] {
        assert!(script.contains(want), "missing {want:?} in {script}");
    }
    // Every pod chain ends in drop.
    let chain = chains[0].rsplit(' ').next().unwrap();
    let last = script
        .lines()
        .rfind(|l| l.starts_with(&format!("add rule inet distro-policy-x {chain} ")))
        .unwrap();
    assert!(last.ends_with(" drop"), "{last}");
}

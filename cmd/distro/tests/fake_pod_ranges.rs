//! Integration test (simulated nodes): `--runtime fake` nodes give their pods addresses from
//! the range the node IPAM controller recorded on their Node (not from a hash of the node's
//! name), and a node the controller could not give a range (`CIDRNotAvailable`) keeps its
//! pods Pending until it gets one.

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::{eventually, Agent, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(100);

fn pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  nodeName: {node}\n  containers:\n  - {{name: main, image: busybox}}\n"
    )
}

/// The pod's phase and podIPs.
fn status(s: &Server, name: &str) -> (String, Vec<String>) {
    let p: Value = s.json(LATEST, &["get", "pod", name]);
    let ips = p["status"]["podIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(String::from))
        .collect();
    (
        p["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ips,
    )
}

fn pod_cidrs(s: &Server, node: &str) -> Option<Vec<String>> {
    let n: Value = s.json(LATEST, &["get", "node", node]);
    Some(
        n["spec"]["podCIDRs"]
            .as_array()?
            .iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect(),
    )
}

/// Whether `ip` is in the `/24` or `/64` `cidr` (the only node masks used here).
fn in_range(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    match len {
        "24" => ip.rsplit_once('.').map(|(p, _)| p) == net.rsplit_once('.').map(|(p, _)| p),
        "64" => ip.starts_with(net.trim_end_matches("::")),
        other => panic!("unexpected mask {other}"),
    }
}

#[test]
fn fake_pods_get_addresses_from_the_nodes_range_and_wait_for_one() {
    let began = Instant::now();
    // Two IPv4 /24s, so the third node waits (CIDRNotAvailable); dual-stack pods.
    let s = Server::start_with(
        bin(),
        &[
            "--cluster-cidr",
            "10.98.0.0/23,fd98::/56",
            "--node-cidr-mask-size-ipv6",
            "64",
        ],
    );
    let _a = Agent::start(bin(), &s, &["--node-name", "fr", "--fake-nodes", "3"]);
    let names = ["fr-0", "fr-1", "fr-2"];
    eventually(Duration::from_secs(30), EVERY, "three nodes", || {
        names
            .iter()
            .all(|n| s.kubectl(LATEST, &["get", "node", n]).status.success())
            .then_some(())
    });
    let ranged: Vec<(String, Vec<String>)> = eventually(
        Duration::from_secs(20),
        EVERY,
        "two nodes with ranges",
        || {
            let got: Vec<_> = names
                .iter()
                .filter_map(|n| Some((n.to_string(), pod_cidrs(&s, n)?)))
                .collect();
            (got.len() == 2).then_some(got)
        },
    );
    let waiting = names
        .iter()
        .find(|n| ranged.iter().all(|(r, _)| r != *n))
        .unwrap()
        .to_string();
    let manifests: Vec<String> = names.iter().map(|n| pod(&format!("p-{n}"), n)).collect();
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&manifests.join("---\n")),
    );
    for (node, cidrs) in &ranged {
        let ips = eventually(Duration::from_secs(20), EVERY, "pod Running", || {
            let (phase, ips) = status(&s, &format!("p-{node}"));
            (phase == "Running").then_some(ips)
        });
        assert_eq!(ips.len(), 2, "{ips:?}");
        for (ip, cidr) in ips.iter().zip(cidrs) {
            assert!(in_range(ip, cidr), "{node}: {ip} not in {cidr}");
        }
    }
    // The other pods run, this one has no network yet.
    let (phase, ips) = status(&s, &format!("p-{waiting}"));
    assert_eq!(phase, "Pending", "{waiting} has no range: {ips:?}");
    assert!(ips.is_empty(), "{ips:?}");

    // A deleted node's range goes to the waiting node, whose pod then starts in it.
    s.ok(LATEST, &["delete", "node", &ranged[0].0]);
    let got = eventually(Duration::from_secs(20), EVERY, "the freed range", || {
        pod_cidrs(&s, &waiting)
    });
    let ips = eventually(
        Duration::from_secs(20),
        EVERY,
        "the waiting pod Running",
        || {
            let (phase, ips) = status(&s, &format!("p-{waiting}"));
            (phase == "Running").then_some(ips)
        },
    );
    assert!(in_range(&ips[0], &got[0]), "{ips:?} not in {got:?}");
    eprintln!("fake pod ranges test took {:?}", began.elapsed());
}

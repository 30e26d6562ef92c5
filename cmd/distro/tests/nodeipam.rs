//! Integration test (simulated nodes): the node IPAM controller gives each Node a distinct pod
//! range from `--cluster-cidr`, reports `CIDRNotAvailable` when the range is exhausted, and
//! hands a deleted node's range to a waiting one.

use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Agent, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(100);

fn cidrs(s: &Server, node: &str) -> Option<Vec<String>> {
    let n: Value = s.json(LATEST, &["get", "node", node]);
    let list = n["spec"]["podCIDRs"].as_array()?;
    Some(
        list.iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect(),
    )
}

#[test]
fn ranges_are_distinct_exhaustion_is_reported_and_deleted_ranges_reused() {
    // Two IPv4 /24s and plenty of IPv6 /64s: the IPv4 family runs out at the third node.
    let s = Server::start_with(
        bin(),
        &[
            "--cluster-cidr",
            "10.99.0.0/23,fd99::/56",
            "--node-cidr-mask-size-ipv6",
            "64",
        ],
    );
    let _a = Agent::start(bin(), &s, &["--node-name", "ipam", "--fake-nodes", "3"]);
    let names = ["ipam-0", "ipam-1", "ipam-2"];
    eventually(Duration::from_secs(30), EVERY, "three nodes", || {
        names
            .iter()
            .all(|n| s.kubectl(LATEST, &["get", "node", n]).status.success())
            .then_some(())
    });
    let assigned = eventually(
        Duration::from_secs(10),
        EVERY,
        "two nodes with ranges",
        || {
            let got: Vec<(String, Vec<String>)> = names
                .iter()
                .filter_map(|n| Some((n.to_string(), cidrs(&s, n)?)))
                .collect();
            (got.len() == 2).then_some(got)
        },
    );
    for (node, c) in &assigned {
        assert_eq!(c.len(), 2, "{node}: {c:?}");
        assert!(
            c[0].starts_with("10.99.") && c[0].ends_with(".0/24"),
            "{c:?}"
        );
        assert!(c[1].starts_with("fd99:") && c[1].ends_with("/64"), "{c:?}");
        let n: Value = s.json(LATEST, &["get", "node", node]);
        assert_eq!(n["spec"]["podCIDR"], c[0].as_str());
    }
    assert_ne!(assigned[0].1[0], assigned[1].1[0]);
    let waiting = names
        .iter()
        .find(|n| assigned.iter().all(|(a, _)| a != *n))
        .unwrap()
        .to_string();
    eventually(
        Duration::from_secs(10),
        EVERY,
        "CIDRNotAvailable event",
        || {
            let events: Value = s.json(LATEST, &["get", "events"]);
            let found = events["items"].as_array()?.iter().any(|e| {
                e["reason"] == "CIDRNotAvailable"
                    && e["involvedObject"]["name"] == waiting.as_str()
                    && e["message"]
                        == format!("Node {waiting} status is now: CIDRNotAvailable").as_str()
            });
            found.then_some(())
        },
    );

    // A deleted node's range goes to the waiting one.
    let (gone, gone_cidrs) = &assigned[0];
    s.ok(LATEST, &["delete", "node", gone]);
    let got = eventually(Duration::from_secs(10), EVERY, "the freed range", || {
        cidrs(&s, &waiting)
    });
    assert_eq!(got[0], gone_cidrs[0], "the only free IPv4 range");
}

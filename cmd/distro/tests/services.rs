//! Integration tests for Service address allocation and the `kubernetes` Service.

use std::path::Path;

use distro_testharness::{Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

#[test]
fn services_get_cluster_ips_and_node_ports_from_their_ranges() {
    let mut s = Server::start(bin());
    let v = LATEST;
    let k = s.json(v, &["get", "svc", "kubernetes", "-n", "default"]);
    assert_eq!(k["spec"]["clusterIP"], "10.43.0.1");
    assert_eq!(k["spec"]["ports"][0]["port"], 443);
    let ep = s.json(v, &["get", "endpoints", "kubernetes"]);
    let port = ep["subsets"][0]["ports"][0]["port"].as_i64().expect("port");
    assert!(s.server_url().expect("url").ends_with(&format!(":{port}")));
    let slice = s.json(v, &["get", "endpointslice", "kubernetes"]);
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);

    s.ok(v, &["create", "service", "clusterip", "a", "--tcp=80"]);
    s.ok(
        v,
        &[
            "create",
            "service",
            "nodeport",
            "b",
            "--tcp=80",
            "--node-port=30080",
        ],
    );
    s.ok(
        v,
        &["create", "service", "clusterip", "h", "--clusterip=None"],
    );
    let a = s.json(v, &["get", "svc", "a"]);
    let ip = a["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    assert!(ip.starts_with("10.43."), "{ip}");
    assert_eq!(a["spec"]["clusterIPs"][0], ip.as_str());
    assert_eq!(s.json(v, &["get", "svc", "h"])["spec"]["clusterIP"], "None");
    let b = s.json(v, &["get", "svc", "b"]);
    assert_eq!(b["spec"]["ports"][0]["nodePort"], 30080);
    assert_ne!(b["spec"]["clusterIP"], a["spec"]["clusterIP"]);

    let err = s.fails(
        v,
        &[
            "create",
            "service",
            "nodeport",
            "c",
            "--tcp=80",
            "--node-port=30080",
        ],
    );
    assert!(
        err.contains(
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        ),
        "{err}"
    );
    let err = s.fails(
        v,
        &[
            "create",
            "service",
            "clusterip",
            "d",
            "--tcp=80",
            &format!("--clusterip={ip}"),
        ],
    );
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let err = s.fails(
        v,
        &[
            "create",
            "service",
            "clusterip",
            "e",
            "--tcp=80",
            "--clusterip=192.168.9.9",
        ],
    );
    assert!(
        err.contains("The range of valid IPs is 10.43.0.0/16"),
        "{err}"
    );
    let err = s.fails(
        v,
        &[
            "create",
            "service",
            "nodeport",
            "f",
            "--tcp=80",
            "--node-port=80",
        ],
    );
    assert!(
        err.contains("The range of valid ports is 30000-32767"),
        "{err}"
    );

    // A replace without clusterIP keeps the allocated address (upstream's PrepareForUpdate).
    s.ok(v, &["label", "svc", "a", "x=y"]);
    let manifest =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: 80\n";
    s.ok_stdin(v, &["replace", "-f", "-"], Some(manifest));
    assert_eq!(
        s.json(v, &["get", "svc", "a"])["spec"]["clusterIP"],
        ip.as_str()
    );

    // Deleting frees what the service held; the values survive a restart while held.
    s.ok(v, &["delete", "svc", "b"]);
    s.ok(
        v,
        &[
            "create",
            "service",
            "nodeport",
            "c",
            "--tcp=80",
            "--node-port=30080",
        ],
    );
    s.restart();
    let err = s.fails(
        v,
        &[
            "create",
            "service",
            "nodeport",
            "g",
            "--tcp=80",
            "--node-port=30080",
        ],
    );
    assert!(err.contains("already allocated"), "{err}");
    s.ok(
        v,
        &[
            "create",
            "service",
            "clusterip",
            "i",
            "--tcp=80",
            "--dry-run=server",
        ],
    );
    assert!(s.kubectl(v, &["get", "svc", "i"]).status.code() != Some(0));
    // Switching to ExternalName releases the address.
    s.ok(v, &["delete", "svc", "a"]);
    s.ok(
        v,
        &[
            "create",
            "service",
            "clusterip",
            "a2",
            "--tcp=80",
            &format!("--clusterip={ip}"),
        ],
    );
}

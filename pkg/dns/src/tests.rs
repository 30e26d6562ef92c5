//! Answers from in-memory objects, checked against what CoreDNS's kubernetes plugin answers.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::answer::{answer, Outcome, Response, TTL};
use crate::records::Snapshot;

fn ns(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn svc(namespace: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}),
    )
    .unwrap()
}

fn slice(namespace: &str, name: &str, service: &str, body: serde_json::Value) -> EndpointSlice {
    let mut v = json!({
        "metadata": {"name": name, "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
    });
    for (k, val) in body.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// A small cluster: a ClusterIP service with named ports, a dual-stack one, a headless one
/// with two ready pods (one with a hostname) and one not ready, an ExternalName, and the
/// namespaces `default`, `web` and `empty` (no services).
fn cluster() -> Snapshot {
    let namespaces = [ns("default"), ns("web"), ns("empty")];
    let services = [
        svc(
            "web",
            "front",
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
        svc(
            "web",
            "dual",
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.21",
                "clusterIPs": ["10.43.0.21", "fd43::21"],
                "ports": [{"port": 80, "protocol": "TCP"}]}),
        ),
        svc(
            "web",
            "db",
            json!({"type": "ClusterIP", "clusterIP": "None",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}),
        ),
        svc(
            "web",
            "ext",
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
        ),
        svc(
            "web",
            "alias",
            json!({"type": "ExternalName", "externalName": "front.web.svc.cluster.local"}),
        ),
        svc(
            "default",
            "kubernetes",
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.1",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}),
        ),
    ];
    let slices = [
        slice(
            "web",
            "db-abc",
            "db",
            json!({
                "endpoints": [
                    {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.6"], "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.7"], "hostname": "db-2", "conditions": {"ready": false}},
                ],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            }),
        ),
        slice(
            "web",
            "front-xyz",
            "front",
            json!({
                "endpoints": [{"addresses": ["10.42.0.9"], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }),
        ),
    ];
    Snapshot::build(
        Name::from_ascii("cluster.local.").unwrap(),
        vec!["10.43.0.10".parse().unwrap()],
        &namespaces,
        &services,
        &slices,
    )
}

fn ask(snap: &Snapshot, name: &str, qtype: RecordType) -> Response {
    match answer(snap, &Name::from_ascii(name).unwrap(), qtype) {
        Outcome::Answer { response, .. } => response,
        Outcome::Forward => panic!("{name} {qtype} was forwarded"),
    }
}

fn ips(records: &[Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A negative answer: the rcode, nothing in the answer section, the SOA as authority.
fn assert_negative(r: &Response, rcode: ResponseCode) {
    assert_eq!(r.rcode, rcode, "{r:?}");
    assert!(r.answers.is_empty(), "{r:?}");
    assert_eq!(r.authority.len(), 1, "{r:?}");
    match r.authority[0].data() {
        RData::SOA(soa) => {
            assert_eq!(r.authority[0].name().to_ascii(), "cluster.local.");
            assert_eq!(soa.mname().to_ascii(), "ns.dns.cluster.local.");
            assert_eq!(soa.rname().to_ascii(), "hostmaster.cluster.local.");
            assert_eq!(soa.minimum(), TTL);
        }
        other => panic!("authority is not an SOA: {other:?}"),
    }
}

#[test]
fn cluster_ip_a_and_aaaa() {
    let s = cluster();
    let r = ask(&s, "front.web.svc.cluster.local.", RecordType::A);
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert!(r.authoritative);
    assert_eq!(ips(&r.answers), [ip("10.43.0.20")]);
    assert_eq!(r.answers[0].ttl(), 5);
    // The name exists, but has no IPv6 address: NODATA.
    assert_negative(
        &ask(&s, "front.web.svc.cluster.local.", RecordType::AAAA),
        ResponseCode::NoError,
    );
    let r = ask(&s, "dual.web.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&r.answers), [ip("fd43::21")]);
    // Case is kept in the answer, ignored in the lookup.
    let r = ask(&s, "Front.WEB.svc.cluster.local.", RecordType::A);
    assert_eq!(
        r.answers[0].name().to_ascii(),
        "Front.WEB.svc.cluster.local."
    );
    assert_eq!(ips(&r.answers), [ip("10.43.0.20")]);
}

#[test]
fn nxdomain_versus_nodata() {
    let s = cluster();
    // Unknown service, unknown namespace, unknown kind, too many labels: NXDOMAIN.
    for name in [
        "nope.web.svc.cluster.local.",
        "front.nope.svc.cluster.local.",
        "front.web.foo.cluster.local.",
        "foo.cluster.local.",
        "a.b.c.front.web.svc.cluster.local.",
        // What a search path makes of an outside name.
        "example.com.web.svc.cluster.local.",
    ] {
        assert_negative(&ask(&s, name, RecordType::A), ResponseCode::NXDomain);
    }
    // Names that exist without records of the type: NODATA.
    for (name, qtype) in [
        ("cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("pod.cluster.local.", RecordType::A),
        ("web.svc.cluster.local.", RecordType::A),
        ("empty.svc.cluster.local.", RecordType::A),
        ("front.web.svc.cluster.local.", RecordType::MX),
        ("front.web.svc.cluster.local.", RecordType::PTR),
        ("front.web.svc.cluster.local.", RecordType::CNAME),
        ("nope.web.svc.cluster.local.", RecordType::SOA),
    ] {
        assert_negative(&ask(&s, name, qtype), ResponseCode::NoError);
    }
    // Other types of a missing name: NXDOMAIN too.
    assert_negative(
        &ask(&s, "nope.web.svc.cluster.local.", RecordType::MX),
        ResponseCode::NXDomain,
    );
    // TXT: only dns-version exists; existing names are NODATA.
    let r = ask(&s, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(r.answers.len(), 1);
    assert_negative(
        &ask(&s, "front.web.svc.cluster.local.", RecordType::TXT),
        ResponseCode::NoError,
    );
    assert_negative(
        &ask(&s, "nope.web.svc.cluster.local.", RecordType::TXT),
        ResponseCode::NXDomain,
    );
}

#[test]
fn unsynced_name_errors_are_servfail() {
    let s = Snapshot::empty(Name::from_ascii("cluster.local.").unwrap(), vec![]);
    assert_eq!(
        ask(&s, "front.web.svc.cluster.local.", RecordType::A).rcode,
        ResponseCode::ServFail
    );
}

#[test]
fn zone_apex_soa_and_ns() {
    let s = cluster();
    let r = ask(&s, "cluster.local.", RecordType::SOA);
    assert!(matches!(r.answers[0].data(), RData::SOA(_)));
    let r = ask(&s, "cluster.local.", RecordType::NS);
    match r.answers[0].data() {
        RData::NS(ns) => assert_eq!(ns.0.to_ascii(), "ns.dns.cluster.local."),
        other => panic!("{other:?}"),
    }
    assert_eq!(ips(&r.additionals), [ip("10.43.0.10")]);
    let r = ask(&s, "ns.dns.cluster.local.", RecordType::A);
    assert_eq!(ips(&r.answers), [ip("10.43.0.10")]);
    assert_eq!(
        ask(&s, "cluster.local.", RecordType::AXFR).rcode,
        ResponseCode::Refused
    );
}

#[test]
fn headless_endpoints_and_hostnames() {
    let s = cluster();
    // One record per ready endpoint; the not-ready one is left out.
    let r = ask(&s, "db.web.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&r.answers), [ip("10.42.0.5"), ip("10.42.0.6")]);
    // A pod with hostname + subdomain, and one named by its address.
    let r = ask(&s, "db-0.db.web.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&r.answers), [ip("10.42.0.5")]);
    let r = ask(&s, "10-42-0-6.db.web.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&r.answers), [ip("10.42.0.6")]);
    assert_negative(
        &ask(&s, "db-2.db.web.svc.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
    // Endpoint names of a ClusterIP service resolve to the endpoint.
    let r = ask(&s, "10-42-0-9.front.web.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&r.answers), [ip("10.42.0.9")]);
}

#[test]
fn srv_for_named_ports() {
    let s = cluster();
    let r = ask(
        &s,
        "_http._tcp.front.web.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(r.answers.len(), 1, "{r:?}");
    match r.answers[0].data() {
        RData::SRV(srv) => {
            assert_eq!((srv.priority(), srv.weight(), srv.port()), (0, 100, 80));
            assert_eq!(srv.target().to_ascii(), "front.web.svc.cluster.local.");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ips(&r.additionals), [ip("10.43.0.20")]);
    // Wrong protocol for the port: NXDOMAIN.
    assert_negative(
        &ask(
            &s,
            "_http._udp.front.web.svc.cluster.local.",
            RecordType::SRV,
        ),
        ResponseCode::NXDomain,
    );
    // The bare service name: one SRV per port, weights split.
    let r = ask(&s, "front.web.svc.cluster.local.", RecordType::SRV);
    let ports: Vec<(u16, u16)> = r
        .answers
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(s) => Some((s.port(), s.weight())),
            _ => None,
        })
        .collect();
    assert_eq!(ports, [(80, 50), (53, 50)]);
    // Headless: one SRV per ready endpoint, targets named after the endpoints.
    let r = ask(&s, "_pg._tcp.db.web.svc.cluster.local.", RecordType::SRV);
    let targets: Vec<String> = r
        .answers
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(s) => Some(format!("{}:{}", s.target(), s.port())),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        [
            "db-0.db.web.svc.cluster.local.:5432",
            "10-42-0-6.db.web.svc.cluster.local.:5432"
        ]
    );
    assert_eq!(ips(&r.additionals), [ip("10.42.0.5"), ip("10.42.0.6")]);
    // ExternalName has no SRV: NODATA.
    assert_negative(
        &ask(&s, "ext.web.svc.cluster.local.", RecordType::SRV),
        ResponseCode::NoError,
    );
}

#[test]
fn external_names_are_cnames() {
    let s = cluster();
    let q = Name::from_ascii("ext.web.svc.cluster.local.").unwrap();
    let Outcome::Answer { response, chase } = answer(&s, &q, RecordType::A) else {
        panic!("forwarded")
    };
    match response.answers[0].data() {
        RData::CNAME(c) => assert_eq!(c.0.to_ascii(), "db.example.com."),
        other => panic!("{other:?}"),
    }
    // The outside target is the caller's to resolve upstream.
    assert_eq!(chase.map(|n| n.to_ascii()), Some("db.example.com.".into()));
    let r = ask(&s, "ext.web.svc.cluster.local.", RecordType::CNAME);
    assert_eq!(r.answers.len(), 1);
    // Inside the zone the chain is followed here.
    let r = ask(&s, "alias.web.svc.cluster.local.", RecordType::A);
    assert_eq!(r.answers.len(), 2, "{r:?}");
    assert_eq!(ips(&r.answers), [ip("10.43.0.20")]);
    // Sub-names of an ExternalName do not exist.
    assert_negative(
        &ask(&s, "x.ext.web.svc.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn pods_insecure() {
    let s = cluster();
    let r = ask(&s, "10-42-0-99.web.pod.cluster.local.", RecordType::A);
    assert_eq!(ips(&r.answers), [ip("10.42.0.99")]);
    let r = ask(&s, "fd42--5.empty.pod.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&r.answers), [ip("fd42::5")]);
    assert_negative(
        &ask(&s, "not-an-ip.web.pod.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
    // The namespace must exist.
    assert_negative(
        &ask(&s, "10-42-0-99.nope.pod.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn ptr_for_service_and_endpoint_addresses() {
    let s = cluster();
    let ptr = |name: &str| -> Vec<String> {
        match answer(&s, &Name::from_ascii(name).unwrap(), RecordType::PTR) {
            Outcome::Answer { response, .. } => response
                .answers
                .iter()
                .filter_map(|r| match r.data() {
                    RData::PTR(p) => Some(p.0.to_ascii()),
                    _ => None,
                })
                .collect(),
            Outcome::Forward => vec!["forwarded".into()],
        }
    };
    assert_eq!(
        ptr("20.0.43.10.in-addr.arpa."),
        ["front.web.svc.cluster.local."]
    );
    assert_eq!(
        ptr("5.0.42.10.in-addr.arpa."),
        ["db-0.db.web.svc.cluster.local."]
    );
    assert_eq!(
        ptr("6.0.42.10.in-addr.arpa."),
        ["10-42-0-6.db.web.svc.cluster.local."]
    );
    let v6: Name = "fd43::21".parse::<IpAddr>().unwrap().into();
    assert_eq!(ptr(&v6.to_ascii()), ["dual.web.svc.cluster.local."]);
    // Unknown addresses fall through to the upstream resolvers.
    assert_eq!(ptr("8.8.8.8.in-addr.arpa."), ["forwarded"]);
}

#[test]
fn other_zones_are_forwarded() {
    let s = cluster();
    for (name, qtype) in [
        ("example.com.", RecordType::A),
        ("local.", RecordType::A),
        ("20.0.43.10.in-addr.arpa.", RecordType::A),
    ] {
        assert_eq!(
            answer(&s, &Name::from_ascii(name).unwrap(), qtype),
            Outcome::Forward,
            "{name}"
        );
    }
}

#[test]
fn search_path_queries() {
    // A pod in `web` asking for `front`, `front.web`, `kubernetes.default` with the search
    // path `web.svc.cluster.local svc.cluster.local cluster.local` and ndots:5.
    let s = cluster();
    let a = |n: &str| ask(&s, n, RecordType::A);
    assert_eq!(
        ips(&a("front.web.svc.cluster.local.").answers),
        [ip("10.43.0.20")]
    );
    assert_negative(
        &a("front.web.web.svc.cluster.local."),
        ResponseCode::NXDomain,
    );
    assert_eq!(
        ips(&a("front.web.svc.cluster.local.").answers),
        [ip("10.43.0.20")]
    );
    assert_negative(
        &a("kubernetes.default.web.svc.cluster.local."),
        ResponseCode::NXDomain,
    );
    assert_eq!(
        ips(&a("kubernetes.default.svc.cluster.local.").answers),
        [ip("10.43.0.1")]
    );
    // An outside name walks the whole list (all NXDOMAIN) before going out as is.
    for n in [
        "example.com.web.svc.cluster.local.",
        "example.com.svc.cluster.local.",
        "example.com.cluster.local.",
    ] {
        assert_negative(&a(n), ResponseCode::NXDomain);
    }
}

/// The handler behind real sockets: UDP and TCP on loopback, forwarding to a scripted
/// upstream on loopback.
mod wire {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use hickory_server::ServerFuture;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UdpSocket};

    use crate::forward::Forwarder;
    use crate::server::Handler;

    /// Answers A questions with 192.0.2.7 (TTL 300), `missing.*` with NXDOMAIN and an SOA,
    /// and counts the questions it got.
    async fn upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut r = Message::new();
                r.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(OpCode::Query)
                    .set_recursion_desired(true)
                    .set_recursion_available(true)
                    .add_queries(q.queries().to_vec());
                let query = &q.queries()[0];
                if query.name().to_ascii().starts_with("missing.") {
                    let zone = Name::from_ascii("example.").unwrap();
                    r.set_response_code(ResponseCode::NXDomain);
                    r.add_name_server(Record::from_rdata(
                        zone.clone(),
                        60,
                        RData::SOA(SOA::new(zone.clone(), zone, 1, 60, 60, 60, 60)),
                    ));
                } else if query.query_type() == RecordType::A {
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        300,
                        RData::A(A::new(192, 0, 2, 7)),
                    ));
                }
                let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
            }
        });
        (addr, count)
    }

    fn question(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(rand_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m
    }

    fn rand_id() -> u16 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(1);
        h.finish() as u16
    }

    async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = question(name, qtype);
        sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(r.id(), q.id());
        r
    }

    async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let mut s = TcpStream::connect(server).await.unwrap();
        let q = question(name, qtype).to_vec().unwrap();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend(q);
        s.write_all(&framed).await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; len as usize];
        s.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    }

    fn a_records(m: &Message) -> Vec<String> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn udp_and_tcp_answers_and_forwarding() {
        let (up, asked) = upstream().await;
        let snap = Arc::new(super::cluster());
        let (_tx, rx) = tokio::sync::watch::channel(snap);
        let forwarder = Forwarder::new(&[up.ip()], up.port());
        let mut server = ServerFuture::new(Handler::new(rx, forwarder));
        let udp_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp_sock.local_addr().unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        server.register_socket(udp_sock);
        server.register_listener(listener, Duration::from_secs(5));

        // Cluster names over UDP and TCP, authoritative, TTL 5.
        let r = udp(addr, "front.web.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.authoritative());
        assert_eq!(a_records(&r), ["10.43.0.20"]);
        assert_eq!(r.answers()[0].ttl(), 5);
        let r = tcp(addr, "db.web.svc.cluster.local.", RecordType::A).await;
        assert_eq!(a_records(&r), ["10.42.0.5", "10.42.0.6"]);
        // NXDOMAIN with the SOA in the authority section.
        let r = udp(addr, "nope.web.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Outside names go upstream, once: the second answer comes from the cache.
        let r = udp(addr, "www.example.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(!r.authoritative());
        assert_eq!(a_records(&r), ["192.0.2.7"]);
        assert!(r.answers()[0].ttl() <= 30, "{:?}", r.answers());
        let r = udp(addr, "www.example.", RecordType::A).await;
        assert_eq!(a_records(&r), ["192.0.2.7"]);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Upstream NXDOMAIN is relayed with its SOA.
        let r = udp(addr, "missing.example.", RecordType::A).await;
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert_eq!(r.name_servers().len(), 1);
        // An ExternalName: the CNAME, then the target's addresses from upstream.
        let r = udp(addr, "ext.web.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.answers()[0].record_type(), RecordType::CNAME);
        assert_eq!(a_records(&r), ["192.0.2.7"]);

        server.shutdown_gracefully().await.unwrap();
    }

    #[tokio::test]
    async fn no_upstream_is_servfail() {
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(super::cluster()));
        let handler = Handler::new(rx, Forwarder::new(&[], 53));
        let r = handler
            .respond(&Name::from_ascii("www.example.").unwrap(), RecordType::A)
            .await;
        assert_eq!(r.rcode, ResponseCode::ServFail);
        // The ExternalName's CNAME cannot be completed: dropped, NODATA.
        let r = handler
            .respond(
                &Name::from_ascii("ext.web.svc.cluster.local.").unwrap(),
                RecordType::A,
            )
            .await;
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answers.is_empty());
    }
}

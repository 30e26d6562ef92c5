//! The answers for the cluster zone and the reverse zones, as CoreDNS's `kubernetes` plugin
//! gives them with k3s's Corefile (`kubernetes cluster.local in-addr.arpa ip6.arpa { pods
//! insecure; fallthrough in-addr.arpa ip6.arpa }`): pure functions from a [`Snapshot`] and a
//! question to a response, so every rule is unit-tested without a network.
//!
//! Names (`parseRequest`): `<svc>.<ns>.svc.<zone>`, `<endpoint>.<svc>.<ns>.svc.<zone>`,
//! `_<port>._<proto>.<svc>.<ns>.svc.<zone>`, `<a-b-c-d>.<ns>.pod.<zone>`. A name that exists
//! with no record of the asked type is NOERROR with no answer (NODATA); one that does not
//! exist is NXDOMAIN; both carry the zone's SOA in the authority section. Reverse names
//! without a cluster record, and every name outside the zones, are not ours: they go to the
//! upstream resolvers.
//!
//! # Limits
//! - MX questions get NODATA/NXDOMAIN (CoreDNS answers MX with the service's own name).
//! - An ExternalName pointing inside the zone is followed one level per hop, up to CoreDNS's
//!   eight CNAMEs; one pointing outside is followed by the caller ([`Outcome::Answer::chase`]).

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::records::{Kind, Port, Snapshot};

/// CoreDNS's default TTL for the kubernetes plugin's records (`ttl 5`).
pub const TTL: u32 = 5;
/// CoreDNS's TTL for `dns-version.<zone>` TXT.
const VERSION_TTL: u32 = 28800;
/// The schema version of the Kubernetes DNS specification implemented.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// CoreDNS follows at most this many CNAMEs inside its zone.
const MAX_CNAMES: usize = 8;

/// A complete DNS response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// NOERROR, NXDOMAIN, SERVFAIL or REFUSED.
    pub rcode: ResponseCode,
    /// Whether the answer is ours (cluster zone) rather than forwarded.
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section (the SOA of negative answers, the NS of the apex).
    pub authority: Vec<Record>,
    /// Additional section (addresses of SRV and NS targets).
    pub additionals: Vec<Record>,
}

impl Response {
    /// An empty response with `rcode`.
    pub fn empty(rcode: ResponseCode) -> Response {
        Response {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ours: answer with this.
    Answer {
        /// The response.
        response: Response,
        /// An ExternalName target outside the zone whose records of the asked type the caller
        /// appends from upstream (after the CNAME already in the answers); when upstream
        /// cannot be reached the caller drops that CNAME, as CoreDNS does.
        chase: Option<Name>,
    },
    /// Not ours (another zone, or a reverse name without a cluster record): forward.
    Forward,
}

/// A CoreDNS `msg.Service`: where a name points (address or CNAME target) and on which port,
/// with the name its SRV records use as target.
#[derive(Debug, Clone)]
struct Entry {
    owner: Name,
    host: Host,
    port: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(Name),
}

/// The name does not exist (CoreDNS's `errNoItems`, `errInvalidRequest`, `errNsNotExposed`).
#[derive(Debug)]
struct NoSuchName;

/// The parts of a name in the cluster zone (CoreDNS's `recordRequest`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    port: String,
    protocol: String,
    endpoint: String,
    service: String,
    namespace: String,
    pod_or_svc: String,
}

/// Answers `qname`/`qtype` from the snapshot, or says it is not ours.
pub fn answer(snap: &Snapshot, qname: &Name, qtype: RecordType) -> Outcome {
    let lower = qname.to_lowercase();
    if snap.zone.zone_of(&lower) {
        return zone_answer(snap, qname, &lower, qtype);
    }
    if qtype == RecordType::PTR {
        if let Some(ip) = arpa_address(&lower) {
            let targets = snap.reverse(ip);
            if !targets.is_empty() {
                let answers = targets
                    .iter()
                    .map(|t| Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(t.clone()))))
                    .collect();
                return Outcome::Answer {
                    response: Response {
                        rcode: ResponseCode::NoError,
                        authoritative: true,
                        answers,
                        authority: Vec::new(),
                        additionals: Vec::new(),
                    },
                    chase: None,
                };
            }
        }
    }
    Outcome::Forward
}

/// The address a full `in-addr.arpa`/`ip6.arpa` name stands for.
fn arpa_address(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

fn zone_answer(snap: &Snapshot, qname: &Name, lower: &Name, qtype: RecordType) -> Outcome {
    let apex = lower == &snap.zone;
    let mut chase = None;
    let result: Result<(Vec<Record>, Vec<Record>), NoSuchName> = match qtype {
        RecordType::AXFR | RecordType::IXFR => {
            return local(Response::empty(ResponseCode::Refused), None);
        }
        RecordType::SOA if apex => Ok((vec![soa(snap)], Vec::new())),
        RecordType::SOA => Ok((Vec::new(), Vec::new())),
        RecordType::NS if apex => {
            let ns = ns_name(snap);
            let answers = vec![Record::from_rdata(
                qname.clone(),
                TTL,
                RData::NS(NS(ns.clone())),
            )];
            let extra = snap.dns_ips.iter().map(|ip| address(&ns, *ip)).collect();
            Ok((answers, extra))
        }
        RecordType::A | RecordType::AAAA => {
            address_records(snap, qname, lower, qtype, &mut Vec::new()).map(|(records, c)| {
                chase = c;
                (records, Vec::new())
            })
        }
        RecordType::CNAME => services(snap, lower, qtype).map(|entries| {
            let records = entries
                .into_iter()
                .filter_map(|e| match e.host {
                    Host::Name(target) => Some(Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::CNAME(CNAME(target)),
                    )),
                    Host::Ip(_) => None,
                })
                .collect();
            (records, Vec::new())
        }),
        RecordType::SRV => services(snap, lower, qtype).map(|e| srv_records(qname, e)),
        RecordType::TXT => txt(snap, qname, lower).map(|r| (r, Vec::new())),
        // PTR of a forward name, and every other type: a fake A lookup tells NODATA from
        // NXDOMAIN (CoreDNS's handler does exactly this).
        _ => services(snap, lower, RecordType::A).map(|_| (Vec::new(), Vec::new())),
    };
    match result {
        Err(NoSuchName) => {
            let rcode = if snap.synced {
                ResponseCode::NXDomain
            } else {
                ResponseCode::ServFail
            };
            local(negative(snap, rcode), None)
        }
        Ok((answers, _)) if answers.is_empty() => {
            local(negative(snap, ResponseCode::NoError), None)
        }
        Ok((answers, additionals)) => local(
            Response {
                rcode: ResponseCode::NoError,
                authoritative: true,
                answers,
                authority: Vec::new(),
                additionals,
            },
            chase,
        ),
    }
}

fn local(response: Response, chase: Option<Name>) -> Outcome {
    Outcome::Answer { response, chase }
}

/// A negative answer: `rcode` with the zone's SOA in the authority section.
pub fn negative(snap: &Snapshot, rcode: ResponseCode) -> Response {
    Response {
        rcode,
        authoritative: true,
        answers: Vec::new(),
        authority: vec![soa(snap)],
        additionals: Vec::new(),
    }
}

/// `ns.dns.<zone>`, the zone's name server.
fn ns_name(snap: &Snapshot) -> Name {
    Name::from_ascii("ns.dns")
        .and_then(|n| n.append_domain(&snap.zone))
        .unwrap_or_else(|_| snap.zone.clone())
}

/// The zone's SOA as CoreDNS writes it.
fn soa(snap: &Snapshot) -> Record {
    let mbox = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(&snap.zone))
        .unwrap_or_else(|_| snap.zone.clone());
    Record::from_rdata(
        snap.zone.clone(),
        TTL,
        RData::SOA(SOA::new(
            ns_name(snap),
            mbox,
            snap.serial,
            7200,
            1800,
            86400,
            TTL,
        )),
    )
}

fn address(name: &Name, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL, rdata)
}

fn family_matches(ip: &IpAddr, qtype: RecordType) -> bool {
    matches!(
        (ip, qtype),
        (IpAddr::V4(_), RecordType::A) | (IpAddr::V6(_), RecordType::AAAA)
    )
}

/// CoreDNS's `plugin.A`/`plugin.AAAA`: addresses of the right family, CNAMEs for external
/// names (followed inside the zone; returned as `chase` outside it).
fn address_records(
    snap: &Snapshot,
    qname: &Name,
    lower: &Name,
    qtype: RecordType,
    previous: &mut Vec<Name>,
) -> Result<(Vec<Record>, Option<Name>), NoSuchName> {
    let entries = services(snap, lower, qtype)?;
    let mut records = Vec::new();
    let mut chase = None;
    let mut seen = HashSet::new();
    for e in entries {
        match e.host {
            Host::Ip(ip) => {
                if family_matches(&ip, qtype) && seen.insert(ip) {
                    records.push(address(qname, ip));
                }
            }
            Host::Name(target) => {
                let target_lower = target.to_lowercase();
                if &target_lower == lower
                    || previous.len() >= MAX_CNAMES - 1
                    || previous.contains(&target_lower)
                {
                    continue;
                }
                let cname =
                    Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(target.clone())));
                if snap.zone.zone_of(&target_lower) {
                    previous.push(lower.clone());
                    if let Ok((next, c)) =
                        address_records(snap, &target, &target_lower, qtype, previous)
                    {
                        if !next.is_empty() {
                            records.push(cname);
                            records.extend(next);
                            chase = chase.or(c);
                        }
                    }
                    continue;
                }
                records.push(cname);
                chase = Some(target);
            }
        }
    }
    Ok((records, chase))
}

/// CoreDNS's `plugin.SRV`: one SRV per (target, port) with equal weights summing to about
/// 100, and the targets' addresses as additional records. Entries without ports (-1) count
/// for the weights but get no SRV, as upstream.
fn srv_records(qname: &Name, entries: Vec<Entry>) -> (Vec<Record>, Vec<Record>) {
    let count = entries.len().max(1) as f64;
    let weight = ((100.0 / count).floor() as u16).max(1);
    let (mut records, mut extra) = (Vec::new(), Vec::new());
    let mut seen_srv = HashSet::new();
    let mut seen_addr = HashSet::new();
    for e in entries {
        let Host::Ip(ip) = e.host else { continue };
        let Ok(port) = u16::try_from(e.port) else {
            continue;
        };
        if seen_srv.insert((e.owner.clone(), port)) {
            records.push(Record::from_rdata(
                qname.clone(),
                TTL,
                RData::SRV(SRV::new(0, weight, port, e.owner.clone())),
            ));
        }
        if seen_addr.insert((e.owner.clone(), ip)) {
            extra.push(address(&e.owner, ip));
        }
    }
    (records, extra)
}

/// TXT: only `dns-version.<zone>` has one; other existing names are NODATA and everything
/// else NXDOMAIN (CoreDNS's `Services` for TXT).
fn txt(snap: &Snapshot, qname: &Name, lower: &Name) -> Result<Vec<Record>, NoSuchName> {
    let labels = relative_labels(snap, lower);
    if labels.len() == 1 && labels[0] == "dns-version" {
        return Ok(vec![Record::from_rdata(
            qname.clone(),
            VERSION_TTL,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
        )]);
    }
    match services(snap, lower, RecordType::TXT) {
        Ok(e) if !e.is_empty() => Ok(Vec::new()),
        _ => Err(NoSuchName),
    }
}

/// The labels of `lower` below the zone, lowercase, outermost last.
fn relative_labels(snap: &Snapshot, lower: &Name) -> Vec<String> {
    let keep = usize::from(lower.num_labels()) - usize::from(snap.zone.num_labels());
    lower
        .iter()
        .take(keep)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// CoreDNS's `parseRequest`.
fn parse(labels: &[String]) -> Result<Request, NoSuchName> {
    let mut r = Request::default();
    if labels.is_empty() || (labels.len() == 1 && (labels[0] == "svc" || labels[0] == "pod")) {
        return Ok(r);
    }
    let mut rest = labels.to_vec();
    let Some(kind) = rest.pop() else {
        return Ok(r);
    };
    if kind != "svc" && kind != "pod" {
        return Err(NoSuchName);
    }
    r.pod_or_svc = kind;
    let Some(ns) = rest.pop() else { return Ok(r) };
    r.namespace = ns;
    let Some(svc) = rest.pop() else { return Ok(r) };
    r.service = svc;
    match rest.as_slice() {
        [] => {}
        [endpoint] => r.endpoint = endpoint.clone(),
        [port, protocol] => {
            r.port = port.strip_prefix('_').unwrap_or(port).to_string();
            r.protocol = protocol.strip_prefix('_').unwrap_or(protocol).to_string();
        }
        _ => return Err(NoSuchName),
    }
    Ok(r)
}

/// CoreDNS's `Services` + `Records`: what a name in the zone points to.
fn services(snap: &Snapshot, lower: &Name, qtype: RecordType) -> Result<Vec<Entry>, NoSuchName> {
    let labels = relative_labels(snap, lower);
    if labels.len() == 2 && labels[0] == "ns" && labels[1] == "dns" {
        return Ok(snap
            .dns_ips
            .iter()
            .filter(|ip| family_matches(ip, qtype))
            .map(|ip| Entry {
                owner: lower.clone(),
                host: Host::Ip(*ip),
                port: 0,
            })
            .collect());
    }
    let r = parse(&labels)?;
    if r.pod_or_svc.is_empty() {
        return Ok(Vec::new());
    }
    if !snap.namespace_exists(&r.namespace) {
        return Err(NoSuchName);
    }
    let entries = if r.pod_or_svc == "pod" {
        pods(&r, lower)?
    } else {
        find_services(snap, &r)?
    };
    if qtype == RecordType::SRV {
        // SRV for external names is not implemented upstream: they are dropped.
        return Ok(entries
            .into_iter()
            .filter(|e| matches!(e.host, Host::Ip(_)))
            .collect());
    }
    Ok(entries)
}

/// `pods insecure`: `<a-b-c-d>.<ns>.pod.<zone>` is the address it spells, in any existing
/// namespace.
fn pods(r: &Request, lower: &Name) -> Result<Vec<Entry>, NoSuchName> {
    if r.service.is_empty() {
        return Ok(Vec::new());
    }
    if !r.endpoint.is_empty() || !r.port.is_empty() {
        return Err(NoSuchName);
    }
    let name = &r.service;
    let text = if name.matches('-').count() == 3 && !name.contains("--") {
        name.replace('-', ".")
    } else {
        name.replace('-', ":")
    };
    let ip: IpAddr = text.parse().map_err(|_| NoSuchName)?;
    Ok(vec![Entry {
        owner: lower.clone(),
        host: Host::Ip(ip),
        port: 0,
    }])
}

fn port_matches(r: &Request, p: &Port) -> bool {
    (r.port.is_empty() || r.port.eq_ignore_ascii_case(&p.name))
        && (r.protocol.is_empty() || r.protocol.eq_ignore_ascii_case(&p.protocol))
}

/// CoreDNS's `findServices`.
fn find_services(snap: &Snapshot, r: &Request) -> Result<Vec<Entry>, NoSuchName> {
    if r.service.is_empty() {
        return Ok(Vec::new());
    }
    let svc = snap.service(&r.namespace, &r.service).ok_or(NoSuchName)?;
    let owner = snap
        .service_name(&svc.namespace, &svc.name)
        .ok_or(NoSuchName)?;
    let mut found = false;
    let mut out = Vec::new();
    match &svc.kind {
        Kind::ExternalName(target) => {
            if !r.endpoint.is_empty() || !r.port.is_empty() || !r.protocol.is_empty() {
                return Err(NoSuchName);
            }
            // An IP as externalName is not a CNAME target: CoreDNS skips it.
            if target.parse::<IpAddr>().is_ok() {
                return Err(NoSuchName);
            }
            let name = Name::from_ascii(target)
                .map(|mut n| {
                    n.set_fqdn(true);
                    n
                })
                .map_err(|_| NoSuchName)?;
            out.push(Entry {
                owner,
                host: Host::Name(name),
                port: 0,
            });
            found = true;
        }
        Kind::Headless => found |= endpoint_entries(snap, r, &owner, &mut out),
        Kind::ClusterIp { .. } if !r.endpoint.is_empty() => {
            found |= endpoint_entries(snap, r, &owner, &mut out)
        }
        Kind::ClusterIp { ips, ports } => {
            for p in ports.iter().filter(|p| port_matches(r, p)) {
                found = true;
                out.extend(ips.iter().map(|ip| Entry {
                    owner: owner.clone(),
                    host: Host::Ip(*ip),
                    port: p.port,
                }));
            }
        }
    }
    if found {
        Ok(out)
    } else {
        Err(NoSuchName)
    }
}

/// Entries for a service's ready endpoints (matching the asked endpoint label and port).
fn endpoint_entries(snap: &Snapshot, r: &Request, owner: &Name, out: &mut Vec<Entry>) -> bool {
    let mut found = false;
    for ep in snap.endpoints(&r.namespace, &r.service) {
        let label = ep.dns_label();
        if !r.endpoint.is_empty() && !r.endpoint.eq_ignore_ascii_case(&label) {
            continue;
        }
        let Ok(target) = owner.prepend_label(label.as_str()) else {
            continue;
        };
        for p in ep.ports.iter().filter(|p| port_matches(r, p)) {
            found = true;
            out.push(Entry {
                owner: target.clone(),
                host: Host::Ip(ep.ip),
                port: p.port,
            });
        }
    }
    found
}

//! `networking.k8s.io` (Ingress, IngressClass, NetworkPolicy) and `discovery.k8s.io`
//! (EndpointSlice).

use k8s_openapi::api::{discovery::v1 as discovery, networking::v1 as networking};
use serde_json::{json, Value};

use super::util::{self, arr, enum_check, enum_required, required, s, set_default};
use super::{Builtin, Entry, ALL_VERBS};
use crate::error::FieldError;
use crate::table::{self, Column};

/// Catalogue entries of `networking.k8s.io/v1` and `discovery.k8s.io/v1`.
pub fn entries() -> Vec<Entry> {
    vec![
        entry!(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            ns = true,
            short = ["ing"],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.networking.v1.Ingress",
            Builtin::of::<networking::Ingress>()
                .generation()
                .status()
                .validate(ingress_validate)
                .table(ingress_columns, ingress_cells)
        ),
        entry!(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            ns = false,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.networking.v1.IngressClass",
            Builtin::of::<networking::IngressClass>()
                .generation()
                .validate(ingressclass_validate)
                .validate_update(ingressclass_validate_update)
                .table(ingressclass_columns, ingressclass_cells)
        ),
        entry!(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            ns = true,
            short = ["netpol"],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.networking.v1.NetworkPolicy",
            Builtin::of::<networking::NetworkPolicy>()
                .generation()
                .defaults(netpol_defaults)
                .validate(netpol_validate)
                .table(netpol_columns, netpol_cells)
        ),
        entry!(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            ns = true,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.discovery.v1.EndpointSlice",
            Builtin::of::<discovery::EndpointSlice>()
                .generation()
                .defaults(slice_defaults)
                .validate(slice_validate)
                .validate_update(slice_validate_update)
                .table(slice_columns, slice_cells)
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Ingress

fn backend_check(errs: &mut Vec<FieldError>, path: &str, b: &Value) {
    let svc = &b["service"];
    let res = &b["resource"];
    if !svc.is_null() && !res.is_null() {
        errs.push(FieldError::invalid(
            path,
            &json!(""),
            "cannot set both service and resource backends",
        ));
    } else if svc.is_null() && res.is_null() {
        errs.push(FieldError::invalid(
            path,
            &json!(""),
            "resource or service backend is required",
        ));
    }
    if svc.is_object() {
        util::label_name(errs, &format!("{path}.service.name"), &svc["name"]);
        let port = &svc["port"];
        let name = s(&port["name"]);
        match port["number"].as_i64() {
            Some(n) if !name.is_empty() => {
                let _ = n;
                errs.push(FieldError::invalid(
                    format!("{path}.service.port"),
                    &port["name"],
                    "cannot set both port name & port number",
                ));
            }
            Some(n) if !util::valid_port(n) => {
                errs.push(FieldError::invalid(
                    format!("{path}.service.port.number"),
                    &port["number"],
                    util::PORT_RANGE,
                ));
            }
            Some(_) => {}
            None if name.is_empty() => {
                errs.push(FieldError::invalid(
                    format!("{path}.service.port.name"),
                    &json!(""),
                    "port name or number is required",
                ));
            }
            None => {
                for m in util::port_name_errors(name) {
                    errs.push(FieldError::invalid(
                        format!("{path}.service.port.name"),
                        &port["name"],
                        m,
                    ));
                }
            }
        }
    }
}

fn ingress_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    let rules = arr(&spec["rules"]);
    if spec["defaultBackend"].is_null() && rules.is_empty() {
        errs.push(FieldError::invalid(
            "spec",
            &json!(rules),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if !spec["defaultBackend"].is_null() {
        backend_check(&mut errs, "spec.defaultBackend", &spec["defaultBackend"]);
    }
    if let Some(class) = spec["ingressClassName"].as_str() {
        for m in distro_apimachinery::validation::is_dns1123_subdomain(class) {
            errs.push(FieldError::invalid(
                "spec.ingressClassName",
                &spec["ingressClassName"],
                m,
            ));
        }
    }
    for (i, r) in rules.iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        let host = s(&r["host"]);
        if !host.is_empty() {
            if host.parse::<std::net::IpAddr>().is_ok() {
                errs.push(FieldError::invalid(
                    format!("{rp}.host"),
                    &r["host"],
                    "must be a DNS name, not an IP address",
                ));
            }
            let check = host.strip_prefix("*.").unwrap_or(host);
            for m in distro_apimachinery::validation::is_dns1123_subdomain(check) {
                errs.push(FieldError::invalid(format!("{rp}.host"), &r["host"], m));
            }
        }
        if r["http"].is_null() {
            continue;
        }
        let paths = arr(&r["http"]["paths"]);
        if paths.is_empty() {
            errs.push(required(format!("{rp}.http.paths"), ""));
        }
        for (j, p) in paths.iter().enumerate() {
            let pp = format!("{rp}.http.paths[{j}]");
            let ty = s(&p["pathType"]);
            if ty.is_empty() {
                errs.push(required(
                    format!("{pp}.pathType"),
                    "pathType must be specified",
                ));
            } else {
                enum_check(
                    &mut errs,
                    &format!("{pp}.pathType"),
                    &p["pathType"],
                    &["Exact", "ImplementationSpecific", "Prefix"],
                );
            }
            let path = s(&p["path"]);
            if ty != "ImplementationSpecific" || !path.is_empty() {
                if !path.starts_with('/') {
                    errs.push(FieldError::invalid(
                        format!("{pp}.path"),
                        &p["path"],
                        "must be an absolute path",
                    ));
                } else if ty != "ImplementationSpecific"
                    && (path.contains("//") || path.contains("/./") || path.contains("/../"))
                {
                    errs.push(FieldError::invalid(
                        format!("{pp}.path"),
                        &p["path"],
                        "must not contain '//'",
                    ));
                }
            }
            backend_check(&mut errs, &format!("{pp}.backend"), &p["backend"]);
        }
    }
    for (i, t) in arr(&spec["tls"]).iter().enumerate() {
        for (j, h) in arr(&t["hosts"]).iter().enumerate() {
            let check = s(h).strip_prefix("*.").unwrap_or(s(h));
            for m in distro_apimachinery::validation::is_dns1123_subdomain(check) {
                errs.push(FieldError::invalid(
                    format!("spec.tls[{i}].hosts[{j}]"),
                    h,
                    m,
                ));
            }
        }
    }
    errs
}

fn ingress_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "Class",
            "The name of the IngressClass resource that should be used",
        ),
        Column::new(
            "Hosts",
            "Hosts that incoming requests are matched against before the ingress rule",
        ),
        Column::new(
            "Address",
            "Address is a list containing ingress points for the load-balancer",
        ),
        Column::new("Ports", "Ports of TLS configurations that open"),
        Column::age(),
    ]
}

/// Upstream's `formatHosts`: up to three hosts, `*` when none.
fn format_hosts(rules: &[Value]) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    for r in rules {
        if list.len() == max {
            more = true;
        }
        let h = s(&r["host"]);
        if !more && !h.is_empty() {
            list.push(h);
        }
    }
    if list.is_empty() {
        return "*".into();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len() - max)
    } else {
        ret
    }
}

fn ingress_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let ports = if arr(&spec["tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        json!(table::name(obj)),
        table::or_none(s(&spec["ingressClassName"])),
        json!(format_hosts(arr(&spec["rules"]))),
        json!(super::core::lb_ingress(&obj["status"]["loadBalancer"])),
        json!(ports),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// IngressClass

fn ingressclass_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let c = s(&obj["spec"]["controller"]);
    if c.is_empty() {
        errs.push(required("spec.controller", ""));
    } else if c.len() > 250 {
        errs.push(util::too_long("spec.controller", 250));
    }
    let params = &obj["spec"]["parameters"];
    if params.is_object() {
        if s(&params["kind"]).is_empty() {
            errs.push(required("spec.parameters.kind", ""));
        }
        if s(&params["name"]).is_empty() {
            errs.push(required("spec.parameters.name", ""));
        }
        enum_check(
            &mut errs,
            "spec.parameters.scope",
            &params["scope"],
            &["Cluster", "Namespace"],
        );
    }
    errs
}

fn ingressclass_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    util::immutable(
        &mut errs,
        "spec.controller",
        &obj["spec"]["controller"],
        &old["spec"]["controller"],
    );
    errs
}

fn ingressclass_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "Controller",
            "Controller that is responsible for handling this class",
        ),
        Column::new(
            "Parameters",
            "A reference to a resource with additional parameters",
        ),
        Column::age(),
    ]
}

fn ingressclass_cells(obj: &Value) -> Vec<Value> {
    let p = &obj["spec"]["parameters"];
    let params = if p.is_object() {
        let mut out = s(&p["kind"]).to_string();
        if let Some(g) = p["apiGroup"].as_str() {
            out = format!("{out}.{g}");
        }
        format!("{out}/{}", s(&p["name"]))
    } else {
        "<none>".into()
    };
    vec![
        json!(table::name(obj)),
        json!(s(&obj["spec"]["controller"])),
        json!(params),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// NetworkPolicy

fn netpol_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    for dir in ["ingress", "egress"] {
        for rule in util::items_mut(spec, dir) {
            for p in util::items_mut(rule, "ports") {
                util::set_default_str(p, "protocol", "TCP");
            }
        }
    }
    if util::is_empty(&spec["policyTypes"]) {
        let mut types = vec![json!("Ingress")];
        if !util::is_empty(&spec["egress"]) {
            types.push(json!("Egress"));
        }
        spec["policyTypes"] = json!(types);
    }
    set_default(spec, "podSelector", json!({}));
}

fn peer_check(errs: &mut Vec<FieldError>, path: &str, peer: &Value) {
    let n = ["podSelector", "namespaceSelector", "ipBlock"]
        .iter()
        .filter(|k| !peer[**k].is_null())
        .count();
    if n == 0 {
        errs.push(required(path, "must specify a peer"));
    } else if !peer["ipBlock"].is_null() && n > 1 {
        errs.push(FieldError::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
    util::label_selector(errs, &format!("{path}.podSelector"), &peer["podSelector"]);
    util::label_selector(
        errs,
        &format!("{path}.namespaceSelector"),
        &peer["namespaceSelector"],
    );
    if peer["ipBlock"].is_object() {
        ip_block_check(errs, &format!("{path}.ipBlock"), &peer["ipBlock"]);
    }
}

/// Upstream's message for a malformed CIDR (`IsValidCIDRForLegacyField`).
const CIDR_MESSAGE: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// A CIDR as `(address, prefix length, address bits)`; host bits may be set, as upstream's
/// `ParseCIDRSloppy` accepts.
fn parse_cidr(cidr: &str) -> Option<(std::net::IpAddr, u32, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let len: u32 = len.parse().ok().filter(|l| *l <= bits)?;
    Some((addr, len, bits))
}

/// The first `len` bits of `addr`, for prefix comparison.
fn prefix_bits(addr: std::net::IpAddr, len: u32) -> u128 {
    let (v, bits) = match addr {
        std::net::IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        std::net::IpAddr::V6(a) => (u128::from(a), 128),
    };
    if len == 0 {
        0
    } else {
        v >> (bits - len)
    }
}

/// `ipBlock`: a valid `cidr`, and each `except` a valid CIDR strictly inside it, as
/// upstream's `ValidateIPBlock`.
fn ip_block_check(errs: &mut Vec<FieldError>, path: &str, block: &Value) {
    let cidr = s(&block["cidr"]);
    if cidr.is_empty() {
        errs.push(required(format!("{path}.cidr"), ""));
        return;
    }
    let Some((net, len, bits)) = parse_cidr(cidr) else {
        errs.push(FieldError::invalid(
            format!("{path}.cidr"),
            &block["cidr"],
            CIDR_MESSAGE,
        ));
        return;
    };
    for (i, e) in arr(&block["except"]).iter().enumerate() {
        let ep = format!("{path}.except[{i}]");
        let Some((ex, ex_len, ex_bits)) = parse_cidr(s(e)) else {
            errs.push(FieldError::invalid(ep, e, CIDR_MESSAGE));
            continue;
        };
        let inside =
            ex_bits == bits && ex_len > len && prefix_bits(ex, len) == prefix_bits(net, len);
        if !inside {
            errs.push(FieldError::invalid(
                ep,
                e,
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

/// `endPort` as upstream's `ValidateNetworkPolicyPort`: only with a numeric `port`, not
/// below it, and itself a valid port.
fn end_port_check(errs: &mut Vec<FieldError>, pp: &str, p: &Value) {
    let end = &p["endPort"];
    if end.is_null() {
        return;
    }
    let path = format!("{pp}.endPort");
    match &p["port"] {
        Value::Number(n) => {
            if end
                .as_i64()
                .is_some_and(|e| n.as_i64().is_some_and(|n| e < n))
            {
                errs.push(FieldError::invalid(
                    path.clone(),
                    &p["port"],
                    "must be greater than or equal to `port`",
                ));
            }
            if !end.as_i64().is_some_and(util::valid_port) {
                errs.push(FieldError::invalid(path, end, util::PORT_RANGE));
            }
        }
        Value::String(_) => errs.push(FieldError::invalid(
            path,
            end,
            "may not be specified when `port` is non-numeric",
        )),
        _ => errs.push(FieldError::invalid(
            path,
            end,
            "may not be specified when `port` is not specified",
        )),
    }
}

fn netpol_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    util::label_selector(&mut errs, "spec.podSelector", &spec["podSelector"]);
    let types = arr(&spec["policyTypes"]);
    if types.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.policyTypes",
            &spec["policyTypes"],
            "may not specify more than two policyTypes",
        ));
    }
    for (i, t) in types.iter().enumerate() {
        enum_check(
            &mut errs,
            &format!("spec.policyTypes[{i}]"),
            t,
            &["Ingress", "Egress"],
        );
    }
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in arr(&spec[dir]).iter().enumerate() {
            for (j, p) in arr(&rule["ports"]).iter().enumerate() {
                let pp = format!("spec.{dir}[{i}].ports[{j}]");
                enum_check(
                    &mut errs,
                    &format!("{pp}.protocol"),
                    &p["protocol"],
                    &["SCTP", "TCP", "UDP"],
                );
                match &p["port"] {
                    Value::Number(n) if !n.as_i64().is_some_and(util::valid_port) => errs.push(
                        FieldError::invalid(format!("{pp}.port"), &p["port"], util::PORT_RANGE),
                    ),
                    Value::String(name) => {
                        for m in util::port_name_errors(name) {
                            errs.push(FieldError::invalid(format!("{pp}.port"), &p["port"], m));
                        }
                    }
                    _ => {}
                }
                end_port_check(&mut errs, &pp, p);
            }
            for (j, peer) in arr(&rule[peers]).iter().enumerate() {
                peer_check(&mut errs, &format!("spec.{dir}[{i}].{peers}[{j}]"), peer);
            }
        }
    }
    errs
}

fn netpol_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Pod-Selector", "podSelector selects the pods to which this NetworkPolicy object applies. The array of rules is applied to any pods selected by this field. An empty selector matches all pods in the policy's namespace. Multiple network policies can select the same set of pods. In this case, the ingress rules for each are combined additively. This field is optional. If it is not specified, it defaults to an empty selector."),
        Column::age(),
    ]
}

fn netpol_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        json!(util::format_label_selector(&obj["spec"]["podSelector"])),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// EndpointSlice

fn slice_defaults(obj: &mut Value) {
    for p in util::items_mut(obj, "ports") {
        set_default(p, "name", json!(""));
        set_default(p, "protocol", json!("TCP"));
    }
}

fn slice_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let at = s(&obj["addressType"]);
    enum_required(
        &mut errs,
        "addressType",
        &obj["addressType"],
        &["FQDN", "IPv4", "IPv6"],
    );
    for (i, e) in arr(&obj["endpoints"]).iter().enumerate() {
        let addrs = arr(&e["addresses"]);
        if addrs.is_empty() {
            errs.push(required(
                format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            ));
        } else if addrs.len() > 100 {
            errs.push(util::too_long(format!("endpoints[{i}].addresses"), 100));
        }
        for (j, a) in addrs.iter().enumerate() {
            let ok = match at {
                "IPv4" => s(a).parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => s(a).parse::<std::net::Ipv6Addr>().is_ok(),
                _ => distro_apimachinery::validation::is_dns1123_subdomain(s(a)).is_empty(),
            };
            if !ok {
                let msg = match at {
                    "IPv4" => "must be a valid IPv4 address",
                    "IPv6" => "must be a valid IPv6 address",
                    _ => "must be a valid DNS subdomain",
                };
                errs.push(FieldError::invalid(
                    format!("endpoints[{i}].addresses[{j}]"),
                    a,
                    msg,
                ));
            }
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in arr(&obj["ports"]).iter().enumerate() {
        let name = s(&p["name"]);
        if !name.is_empty() {
            for m in distro_apimachinery::validation::is_dns1123_label(name) {
                errs.push(FieldError::invalid(
                    format!("ports[{i}].name"),
                    &p["name"],
                    m,
                ));
            }
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(
                format!("ports[{i}].name"),
                &p["name"],
            ));
        }
        enum_required(
            &mut errs,
            &format!("ports[{i}].protocol"),
            &p["protocol"],
            &["SCTP", "TCP", "UDP"],
        );
    }
    errs
}

fn slice_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    util::immutable(
        &mut errs,
        "addressType",
        &obj["addressType"],
        &old["addressType"],
    );
    errs
}

fn slice_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "AddressType",
            "The type of address carried by this EndpointSlice.",
        ),
        Column::new("Ports", "Ports advertised by this EndpointSlice."),
        Column::new("Endpoints", "Endpoints represented by this EndpointSlice."),
        Column::age(),
    ]
}

fn list_with_more(list: Vec<String>, more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - max)
    } else if ret.is_empty() {
        "<unset>".into()
    } else {
        ret
    }
}

fn slice_cells(obj: &Value) -> Vec<Value> {
    let max = 3;
    let (mut ports, mut more, mut count) = (Vec::new(), false, 0);
    for p in arr(&obj["ports"]) {
        if ports.len() < max {
            let n = match p["port"].as_i64() {
                Some(n) => n.to_string(),
                None if p["name"].is_string() => s(&p["name"]).to_string(),
                None => "*".into(),
            };
            ports.push(n);
        } else if ports.len() == max {
            more = true;
        }
        count += 1;
    }
    let ports = list_with_more(ports, more, count, max);
    let (mut eps, mut more, mut count) = (Vec::new(), false, 0);
    for e in arr(&obj["endpoints"]) {
        for a in arr(&e["addresses"]) {
            if eps.len() < max {
                eps.push(s(a).to_string());
            } else if eps.len() == max {
                more = true;
            }
            count += 1;
        }
    }
    let eps = list_with_more(eps, more, count, max);
    vec![
        json!(table::name(obj)),
        json!(s(&obj["addressType"])),
        json!(ports),
        json!(eps),
        table::age(obj),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn ingress_checks_and_cells() {
        let ing = json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "traefik", "rules": [{"host": "a.example.com",
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
            "tls": [{"hosts": ["a.example.com"]}]}, "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
        assert!(
            ingress_validate(&ing).is_empty(),
            "{:?}",
            ingress_validate(&ing)
        );
        let cells = ingress_cells(&ing);
        assert_eq!(cells[1], "traefik");
        assert_eq!(cells[2], "a.example.com");
        assert_eq!(cells[3], "10.0.0.1");
        assert_eq!(cells[4], "80, 443");
        let bad = json!({"spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        assert_eq!(
            msgs(&ingress_validate(&bad)),
            vec![
                "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"
            ]
        );
        assert_eq!(format_hosts(&[]), "*");
    }

    #[test]
    fn netpol_defaults_policy_types() {
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        netpol_defaults(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        assert!(netpol_validate(&np).is_empty());
        assert_eq!(netpol_cells(&np)[1], "<none>");
    }

    #[test]
    fn netpol_end_ports_and_ip_blocks() {
        let np = json!({"spec": {"podSelector": {}, "ingress": [{
            "ports": [{"port": 80, "endPort": 79}, {"port": "http", "endPort": 90},
                      {"endPort": 90}, {"port": 1000, "endPort": 2000}],
            "from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24", "10.0.0.0/16", "192.168.0.0/24", "x"]}},
                     {"ipBlock": {"cidr": "10.0.0.0/33"}},
                     {"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::/80"]}}]
        }]}});
        let got = msgs(&netpol_validate(&np));
        let want = [
            "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
            "spec.ingress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
            "spec.ingress[0].ports[2].endPort: Invalid value: 90: may not be specified when `port` is not specified",
            "spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: \"10.0.0.0/16\": must be a strict subset of `cidr`",
            "spec.ingress[0].from[0].ipBlock.except[2]: Invalid value: \"192.168.0.0/24\": must be a strict subset of `cidr`",
            "spec.ingress[0].from[0].ipBlock.except[3]: Invalid value: \"x\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "spec.ingress[0].from[1].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn endpointslices() {
        let mut es = json!({"metadata": {"name": "e"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        slice_defaults(&mut es);
        assert_eq!(es["ports"][0]["protocol"], "TCP");
        assert!(slice_validate(&es).is_empty(), "{:?}", slice_validate(&es));
        let cells = slice_cells(&es);
        assert_eq!(cells[2], "80");
        assert_eq!(cells[3], "10.0.0.1,10.0.0.2");
        let bad = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["nope"]}]});
        assert_eq!(
            msgs(&slice_validate(&bad)),
            vec![
                "endpoints[0].addresses[0]: Invalid value: \"nope\": must be a valid IPv4 address"
            ]
        );
    }
}

//! Service ClusterIP and NodePort allocation, as upstream's service REST storage: a Service gets a
//! free address from the service CIDR and, for NodePort/LoadBalancer types, free node ports;
//! addresses and ports a user asks for are checked against the range and against other
//! services.
//!
//! # Design
//!
//! Each allocated value is a datastore key (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`) created with compare-and-swap, so concurrent
//! creates (and several API servers on one etcd) never hand out one value twice. The key's value
//! names the owning Service (namespace, name, uid). A reservation whose owner no longer holds
//! the value (the server died between reserving and writing the Service) is taken over once it is
//! older than [`STALE_AFTER`]: the repair upstream does with a periodic loop happens here on
//! collision.
//!
//! Dual-stack (a second range of the other family in `--service-cidr`): as upstream's
//! `initIPFamilyFields`, `ipFamilyPolicy: PreferDualStack`/`RequireDualStack` gives a Service
//! one cluster IP per family (`spec.ipFamilies` order, the first also in `spec.clusterIP`), a
//! family the cluster lacks is refused, and turning a dual-stack Service `SingleStack` keeps
//! only its first address.
//!
//! # Limits
//! - Service defaults run before allocation and fill `ipFamilies: [IPv4]` when the user left
//!   it out; on an IPv6-only cluster that default is read as "unset" (the primary family), but
//!   on a dual-stack cluster whose first range is IPv6 such a Service gets IPv4 first.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::Rng;
use serde_json::{json, Value};

use distro_store::Datastore;

use crate::admission::Admission;
use crate::error::{Error, FieldError, Result};
use crate::kinds::util::invalid_raw;
use crate::resources::ResourceDef;

/// A reservation left behind by an interrupted write is reclaimable after this many seconds.
const STALE_AFTER: u64 = 60;

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// An IPv4 or IPv6 CIDR, as offsets from its base address.
#[derive(Clone, Debug)]
struct Cidr {
    base: u128,
    v6: bool,
    /// Number of usable offsets: offsets `1..=last` (the network address and, for IPv4, the
    /// broadcast address are never handed out).
    last: u128,
    text: String,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = s.trim().split_once('/')?;
        let bits: u32 = bits.parse().ok()?;
        let (base, width, v6) = match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, false),
            IpAddr::V6(a) => (u128::from(a), 128, true),
        };
        if bits > width || width - bits < 2 {
            return None;
        }
        let host_bits = (width - bits).min(64);
        let size = 1u128 << host_bits;
        let mask = !(size - 1);
        Some(Cidr {
            base: base & mask,
            v6,
            last: if v6 { size - 1 } else { size - 2 },
            text: s.trim().to_string(),
        })
    }

    fn addr(&self, offset: u128) -> IpAddr {
        let n = self.base + offset;
        if self.v6 {
            IpAddr::V6(n.into())
        } else {
            IpAddr::V4((n as u32).into())
        }
    }

    fn offset(&self, ip: &IpAddr) -> Option<u128> {
        let n = match (ip, self.v6) {
            (IpAddr::V4(a), false) => u128::from(u32::from(*a)),
            (IpAddr::V6(a), true) => u128::from(*a),
            _ => return None,
        };
        let off = n.checked_sub(self.base)?;
        (off >= 1 && off <= self.last).then_some(off)
    }

    /// `IPv4` or `IPv6`, as `spec.ipFamilies` names it.
    fn family(&self) -> &'static str {
        if self.v6 {
            "IPv6"
        } else {
            "IPv4"
        }
    }

    /// Upstream keeps the low band of a range for addresses users pick themselves and gives out
    /// dynamic ones from above it first.
    fn static_band(&self) -> u128 {
        (self.last / 16).clamp(16, 256).min(self.last / 2)
    }
}

/// Who holds a reserved value.
#[derive(Clone, Debug, PartialEq)]
struct Owner {
    namespace: String,
    name: String,
    uid: String,
}

impl Owner {
    fn of(obj: &Value) -> Owner {
        let m = &obj["metadata"];
        Owner {
            namespace: m["namespace"].as_str().unwrap_or("").into(),
            name: m["name"].as_str().unwrap_or("").into(),
            uid: m["uid"].as_str().unwrap_or("").into(),
        }
    }

    fn encode(&self) -> Bytes {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Bytes::from(
            json!({"namespace": self.namespace, "name": self.name, "uid": self.uid, "at": at})
                .to_string(),
        )
    }
}

/// What a Service holds: its cluster IPs and node ports.
#[derive(Default, Debug, PartialEq)]
struct Holdings {
    ips: Vec<String>,
    ports: Vec<i64>,
}

fn holdings(obj: &Value) -> Holdings {
    let spec = &obj["spec"];
    let mut h = Holdings::default();
    if spec["type"] != "ExternalName" {
        let mut ips: Vec<String> = spec["clusterIPs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ip) = spec["clusterIP"].as_str() {
            if !ips.iter().any(|x| x == ip) {
                ips.push(ip.to_string());
            }
        }
        ips.retain(|ip| !ip.is_empty() && ip != "None");
        h.ips = ips;
    }
    for p in spec["ports"].as_array().into_iter().flatten() {
        if let Some(n) = p["nodePort"].as_i64().filter(|n| *n != 0) {
            h.ports.push(n);
        }
    }
    if let Some(n) = spec["healthCheckNodePort"].as_i64().filter(|n| *n != 0) {
        h.ports.push(n);
    }
    h.ports.sort_unstable();
    h.ports.dedup();
    h
}

fn needs_node_ports(spec: &Value) -> bool {
    match spec["type"].as_str() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec["allocateLoadBalancerNodePorts"] != false,
        _ => false,
    }
}

fn needs_health_port(spec: &Value) -> bool {
    spec["type"] == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local"
}

/// Allocates Service cluster IPs from the service CIDR and node ports from the node-port range.
pub struct ServiceAllocator {
    /// The service ranges, primary first: one, or one per family (dual-stack).
    cidrs: Vec<Cidr>,
    ports: (i64, i64),
}

impl ServiceAllocator {
    /// An allocator for `service_cidr` (one range, or one per family, primary first: e.g.
    /// `10.43.0.0/16,fd43::/112`) and node ports in `node_ports` (inclusive).
    ///
    /// # Errors
    /// A message if a CIDR cannot be parsed or is too small, or two are of one family.
    pub fn new(
        service_cidr: &str,
        node_ports: std::ops::RangeInclusive<u16>,
    ) -> std::result::Result<ServiceAllocator, String> {
        let cidrs = service_cidr
            .split(',')
            .map(|c| {
                Cidr::parse(c).ok_or_else(|| {
                    format!("invalid service CIDR {service_cidr:?}: want e.g. 10.43.0.0/16")
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let dual_ok = cidrs.len() == 1 || (cidrs.len() == 2 && cidrs[0].v6 != cidrs[1].v6);
        if !dual_ok {
            return Err(format!(
                "invalid service CIDR {service_cidr:?}: want one range, or one IPv4 and one IPv6"
            ));
        }
        Ok(ServiceAllocator {
            cidrs,
            ports: (i64::from(*node_ports.start()), i64::from(*node_ports.end())),
        })
    }

    fn invalid(def: &ResourceDef, obj: &Value, causes: Vec<FieldError>) -> Error {
        Error::Invalid {
            kind: def.kind.clone(),
            group: def.group.clone(),
            name: obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
            causes,
        }
    }

    /// Reserves `key` for `owner`; `false` if someone else holds it.
    async fn reserve(store: &Arc<dyn Datastore>, key: &str, owner: &Owner) -> Result<bool> {
        match store.create(key, owner.encode()).await {
            Ok(_) => return Ok(true),
            Err(distro_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(kv) = store.get(key).await? else {
            return Ok(store.create(key, owner.encode()).await.is_ok());
        };
        let held: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        if held["uid"] == owner.uid.as_str() {
            return Ok(true);
        }
        let age = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(held["at"].as_u64().unwrap_or(0));
        if age < STALE_AFTER || Self::still_held(store, key, &held).await? {
            return Ok(false);
        }
        tracing::info!(%key, "reclaiming a reservation its service no longer holds");
        Ok(store
            .update(key, owner.encode(), kv.mod_revision)
            .await
            .is_ok())
    }

    /// Reserves `key` for `owner`, or with `dry_run` only checks that it is free.
    async fn take(
        store: &Arc<dyn Datastore>,
        key: &str,
        owner: &Owner,
        dry_run: bool,
    ) -> Result<bool> {
        if dry_run {
            Ok(store.get(key).await?.is_none())
        } else {
            Self::reserve(store, key, owner).await
        }
    }

    /// Whether the Service named in a reservation still exists and holds the reserved value.
    async fn still_held(store: &Arc<dyn Datastore>, key: &str, held: &Value) -> Result<bool> {
        let (ns, name) = (
            held["namespace"].as_str().unwrap_or(""),
            held["name"].as_str().unwrap_or(""),
        );
        let Some(kv) = store
            .get(&format!("/registry/services/{ns}/{name}"))
            .await?
        else {
            return Ok(false);
        };
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            // Not readable here (transformed at rest): assume it is in use.
            return Ok(true);
        };
        if svc["metadata"]["uid"] != held["uid"] {
            return Ok(false);
        }
        let h = holdings(&svc);
        Ok(h.ips.iter().any(|ip| ip_reservation(ip) == key)
            || h.ports.iter().any(|p| port_reservation(*p) == key))
    }

    async fn release(store: &Arc<dyn Datastore>, key: &str, owner: &Owner) {
        let Ok(Some(kv)) = store.get(key).await else {
            return;
        };
        let held: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        if held["uid"] == owner.uid.as_str() {
            if let Err(e) = store.delete(key, Some(kv.mod_revision)).await {
                tracing::debug!(%key, error = %e, "releasing a reservation");
            }
        }
    }

    /// A free cluster IP of range `c`; reserved for `owner` unless `dry_run`.
    async fn allocate_ip(
        c: &Cidr,
        store: &Arc<dyn Datastore>,
        owner: &Owner,
        dry_run: bool,
    ) -> Result<Option<IpAddr>> {
        let band = c.static_band();
        // Dynamic addresses come from above the static band, then from anywhere.
        let (lo, hi) = if band < c.last {
            (band + 1, c.last)
        } else {
            (1, c.last)
        };
        let span = hi - lo + 1;
        let start = rand::thread_rng().gen_range(0..span);
        let tries = span.min(4096);
        for i in 0..tries {
            let ip = c.addr(lo + (start + i) % span);
            let key = ip_reservation(&ip.to_string());
            if Self::take(store, &key, owner, dry_run).await? {
                return Ok(Some(ip));
            }
        }
        if lo > 1 {
            for off in 1..lo {
                let ip = c.addr(off);
                let key = ip_reservation(&ip.to_string());
                if Self::take(store, &key, owner, dry_run).await? {
                    return Ok(Some(ip));
                }
            }
        }
        Ok(None)
    }

    async fn allocate_port(
        &self,
        store: &Arc<dyn Datastore>,
        owner: &Owner,
        taken: &[i64],
        dry_run: bool,
    ) -> Result<Option<i64>> {
        let (lo, hi) = self.ports;
        let span = hi - lo + 1;
        let start = rand::thread_rng().gen_range(0..span);
        for i in 0..span {
            let port = lo + (start + i) % span;
            if taken.contains(&port) {
                continue;
            }
            let key = port_reservation(port);
            if Self::take(store, &key, owner, dry_run).await? {
                return Ok(Some(port));
            }
        }
        Ok(None)
    }

    /// Fills in and reserves what `obj` needs beyond what `old` already holds.
    async fn allocate(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<()> {
        let owner = Owner::of(obj);
        let had = old.map(holdings).unwrap_or_default();
        let mut got = Holdings::default();
        let result = self
            .allocate_into(
                store,
                def,
                obj,
                &had,
                old.is_some(),
                &owner,
                &mut got,
                dry_run,
            )
            .await;
        if result.is_err() && !dry_run {
            Self::release_all(store, &got, &Holdings::default(), &owner).await;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn allocate_into(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        had: &Holdings,
        update: bool,
        owner: &Owner,
        got: &mut Holdings,
        dry_run: bool,
    ) -> Result<()> {
        let spec = obj["spec"].clone();
        if !spec.is_object() {
            return Ok(());
        }
        if spec["type"] != "ExternalName" {
            self.allocate_cluster_ips(store, def, obj, had, update, owner, got, dry_run)
                .await?;
        }
        if !needs_node_ports(&spec) && !needs_health_port(&spec) {
            return Ok(());
        }
        let mut taken: Vec<i64> = holdings(obj).ports;
        let n_ports = spec["ports"].as_array().map_or(0, Vec::len);
        let mut fields: Vec<(String, Option<usize>)> = Vec::new();
        if needs_node_ports(&spec) {
            fields.extend((0..n_ports).map(|i| (format!("spec.ports[{i}].nodePort"), Some(i))));
        }
        if needs_health_port(&spec) {
            fields.push(("spec.healthCheckNodePort".into(), None));
        }
        for (field, index) in fields {
            let slot = match index {
                Some(i) => &mut obj["spec"]["ports"][i]["nodePort"],
                None => &mut obj["spec"]["healthCheckNodePort"],
            };
            let asked = slot.as_i64().unwrap_or(0);
            if asked == 0 {
                let Some(port) = self.allocate_port(store, owner, &taken, dry_run).await? else {
                    return Err(Error::Internal(format!(
                        "failed to allocate a nodePort: range is full ({}-{})",
                        self.ports.0, self.ports.1
                    )));
                };
                let slot = match index {
                    Some(i) => &mut obj["spec"]["ports"][i]["nodePort"],
                    None => &mut obj["spec"]["healthCheckNodePort"],
                };
                *slot = json!(port);
                taken.push(port);
                got.ports.push(port);
                continue;
            }
            if had.ports.contains(&asked) || got.ports.contains(&asked) {
                continue;
            }
            if asked < self.ports.0 || asked > self.ports.1 {
                return Err(Self::invalid(
                    def,
                    obj,
                    vec![FieldError::invalid(
                        field,
                        &json!(asked),
                        format!(
                            "provided port is not in the valid range. The range of valid ports is {}-{}",
                            self.ports.0, self.ports.1
                        ),
                    )],
                ));
            }
            let key = port_reservation(asked);
            let free = Self::take(store, &key, owner, dry_run).await?;
            if !free {
                return Err(Self::invalid(
                    def,
                    obj,
                    vec![FieldError::invalid(
                        field,
                        &json!(asked),
                        "provided port is already allocated",
                    )],
                ));
            }
            got.ports.push(asked);
        }
        Ok(())
    }

    /// Settles `spec.ipFamilies`/`ipFamilyPolicy` ([`resolve_families`]) and gives the
    /// Service one cluster IP per family (none when headless): asked ones checked and
    /// reserved, missing ones allocated.
    #[allow(clippy::too_many_arguments)]
    async fn allocate_cluster_ips(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        had: &Holdings,
        update: bool,
        owner: &Owner,
        got: &mut Holdings,
        dry_run: bool,
    ) -> Result<()> {
        let configured: Vec<&str> = self.cidrs.iter().map(Cidr::family).collect();
        let r = resolve_families(&configured, &obj["spec"], update)
            .map_err(|causes| Self::invalid(def, obj, causes))?;
        obj["spec"]["ipFamilies"] = json!(r.families);
        obj["spec"]["ipFamilyPolicy"] = json!(r.policy);
        if r.headless {
            obj["spec"]["clusterIPs"] = json!(["None"]);
            return Ok(());
        }
        let mut ips = Vec::new();
        for (i, family) in r.families.iter().enumerate() {
            let Some(cidr) = self.cidrs.iter().find(|c| c.family() == *family) else {
                continue; // resolve_families refused it already
            };
            let Some(asked) = r.asked.get(i) else {
                let Some(ip) = Self::allocate_ip(cidr, store, owner, dry_run).await? else {
                    return Err(Error::Internal(format!(
                        "failed to allocate a serviceIP: range is full ({})",
                        cidr.text
                    )));
                };
                got.ips.push(ip.to_string());
                ips.push(ip.to_string());
                continue;
            };
            if had.ips.contains(asked) {
                ips.push(asked.clone());
                continue;
            }
            let field = format!("[]string{{{asked:?}}}");
            let in_range = asked
                .parse::<IpAddr>()
                .ok()
                .and_then(|ip| cidr.offset(&ip))
                .is_some();
            if !in_range {
                return Err(Self::invalid(
                    def,
                    obj,
                    vec![invalid_raw(
                        "spec.clusterIPs",
                        &field,
                        &format!(
                            "failed to allocate IP {asked}: the provided IP ({asked}) is not in the valid range. The range of valid IPs is {}",
                            cidr.text
                        ),
                    )],
                ));
            }
            let key = ip_reservation(asked);
            if !Self::take(store, &key, owner, dry_run).await? {
                return Err(Self::invalid(
                    def,
                    obj,
                    vec![invalid_raw(
                        "spec.clusterIPs",
                        &field,
                        &format!("failed to allocate IP {asked}: provided IP is already allocated"),
                    )],
                ));
            }
            got.ips.push(asked.clone());
            ips.push(asked.clone());
        }
        if let Some(first) = ips.first() {
            obj["spec"]["clusterIP"] = json!(first);
        }
        obj["spec"]["clusterIPs"] = json!(ips);
        Ok(())
    }

    /// Releases what `from` holds and `keep` does not.
    async fn release_diff(store: &Arc<dyn Datastore>, from: &Value, keep: Option<&Value>) {
        let owner = Owner::of(from);
        let a = holdings(from);
        let b = keep.map(holdings).unwrap_or_default();
        Self::release_all(store, &a, &b, &owner).await;
    }

    /// Releases what `held` has and `keep` has not.
    async fn release_all(
        store: &Arc<dyn Datastore>,
        held: &Holdings,
        keep: &Holdings,
        owner: &Owner,
    ) {
        for ip in held.ips.iter().filter(|ip| !keep.ips.contains(ip)) {
            Self::release(store, &ip_reservation(ip), owner).await;
        }
        for p in held.ports.iter().filter(|p| !keep.ports.contains(p)) {
            Self::release(store, &port_reservation(*p), owner).await;
        }
    }
}

/// A Service's IP families as allocation settles them.
#[derive(Debug, PartialEq)]
struct Families {
    /// `spec.ipFamilies`, primary first.
    families: Vec<&'static str>,
    /// `spec.ipFamilyPolicy`.
    policy: &'static str,
    /// The cluster IPs the Service asks for (or holds), one per family at most.
    asked: Vec<String>,
    /// `clusterIP: None`.
    headless: bool,
}

fn family_name(f: &str) -> Option<&'static str> {
    match f {
        "IPv4" => Some("IPv4"),
        "IPv6" => Some("IPv6"),
        _ => None,
    }
}

/// Upstream's `initIPFamilyFields` for a cluster with service ranges of the `configured`
/// families (primary first): the families follow the asked cluster IPs, then `ipFamilies`,
/// then the primary; `PreferDualStack`/`RequireDualStack` add the other configured family;
/// an update to `SingleStack` keeps the first (upstream's downgrade).
fn resolve_families(
    configured: &[&'static str],
    spec: &Value,
    update: bool,
) -> std::result::Result<Families, Vec<FieldError>> {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .filter(|x| !x.is_empty())
            .collect()
    };
    let headless = spec["clusterIP"] == "None"
        || spec["clusterIPs"].get(0).and_then(Value::as_str) == Some("None");
    let mut asked = strs(&spec["clusterIPs"]);
    if asked.is_empty() {
        asked.extend(
            spec["clusterIP"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    if headless {
        asked.clear();
    }
    let mut policy = match spec["ipFamilyPolicy"].as_str() {
        Some("PreferDualStack") => "PreferDualStack",
        Some("RequireDualStack") => "RequireDualStack",
        _ => "SingleStack",
    };
    let given = strs(&spec["ipFamilies"]);
    let mut errs = Vec::new();
    let mut families: Vec<&'static str> = Vec::new();
    for (i, f) in given.iter().enumerate() {
        match family_name(f) {
            Some(f) if families.contains(&f) => errs.push(FieldError::duplicate(
                format!("spec.ipFamilies[{i}]"),
                &json!(f),
            )),
            Some(f) => families.push(f),
            None => errs.push(FieldError::not_supported(
                format!("spec.ipFamilies[{i}]"),
                &json!(f),
                &["IPv4", "IPv6"],
            )),
        }
    }
    // The defaulted `[IPv4]` of a Service asking for nothing, on a cluster without IPv4.
    if asked.is_empty() && families == ["IPv4"] && !configured.contains(&"IPv4") {
        families.clear();
    }
    // Asked addresses decide their families.
    for (i, ip) in asked.iter().enumerate() {
        let Ok(addr) = ip.parse::<IpAddr>() else {
            continue; // validation reports it
        };
        let f = if addr.is_ipv6() { "IPv6" } else { "IPv4" };
        match families.get(i) {
            Some(g) if *g != f => errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                &json!(ip),
                format!("expected an {g} value as indicated by `ipFamilies[{i}]`"),
            )),
            Some(_) => {}
            None if families.contains(&f) => errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                &json!(ip),
                "may not have the same IP family as clusterIPs[0]",
            )),
            None => families.push(f),
        }
    }
    if families.len() > 1 && policy == "SingleStack" {
        if update {
            // Downgrade: the first address and family stay, the second is released.
            families.truncate(1);
            asked.truncate(1);
        } else if asked.len() > 1 && given.len() <= 1 {
            // Two addresses and no policy asked: upstream makes it RequireDualStack.
            policy = "RequireDualStack";
        } else {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                &json!(policy),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    if families.is_empty() {
        families.extend(configured.first());
    }
    if policy == "RequireDualStack" && configured.len() < 2 {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            &json!(policy),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, f) in families.iter().enumerate() {
        if !configured.contains(f) {
            errs.push(FieldError::invalid(
                format!("spec.ipFamilies[{i}]"),
                &json!(f),
                "not configured on this cluster",
            ));
        }
    }
    if policy != "SingleStack" && families.len() == 1 {
        families.extend(configured.iter().find(|f| !families.contains(f)));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Families {
        families,
        policy,
        asked,
        headless,
    })
}

/// The datastore key reserving a cluster IP. IPv6 addresses contain `:`; keep keys
/// path-friendly and canonical.
fn ip_reservation(ip: &str) -> String {
    let canonical = match ip.parse::<IpAddr>() {
        Ok(a) => a.to_string(),
        Err(_) => ip.to_string(),
    };
    format!("{IP_PREFIX}{}", canonical.replace(':', "-"))
}

/// The datastore key reserving a node port.
fn port_reservation(port: i64) -> String {
    format!("{PORT_PREFIX}{port}")
}

fn is_service(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "services"
}

#[async_trait::async_trait]
impl Admission for ServiceAllocator {
    async fn create(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<()> {
        if !is_service(def) {
            return Ok(());
        }
        self.allocate(store, def, obj, None, dry_run).await
    }

    async fn update(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        old: &Value,
        dry_run: bool,
    ) -> Result<()> {
        if !is_service(def) {
            return Ok(());
        }
        self.allocate(store, def, obj, Some(old), dry_run).await
    }

    async fn aborted(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &Value,
        old: Option<&Value>,
    ) {
        if is_service(def) {
            Self::release_diff(store, obj, old).await;
        }
    }

    async fn committed(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        old: &Value,
        new: Option<&Value>,
    ) {
        if is_service(def) {
            Self::release_diff(store, old, new).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_bounds() {
        let c = Cidr::parse("10.43.0.0/16").expect("cidr");
        assert_eq!(c.addr(1).to_string(), "10.43.0.1");
        assert_eq!(c.addr(c.last).to_string(), "10.43.255.254");
        assert_eq!(c.offset(&"10.43.0.0".parse().unwrap()), None);
        assert_eq!(c.offset(&"10.43.255.255".parse().unwrap()), None);
        assert_eq!(c.offset(&"10.44.0.1".parse().unwrap()), None);
        assert_eq!(c.static_band(), 256);
        let small = Cidr::parse("10.0.0.0/29").expect("cidr");
        assert_eq!(small.last, 6);
        assert!(small.static_band() <= 3);
        assert!(Cidr::parse("10.0.0.0/31").is_none());
        let v6 = Cidr::parse("fd00::/112").expect("v6");
        assert_eq!(v6.addr(1).to_string(), "fd00::1");
    }

    #[test]
    fn holdings_of_services() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9",
            "clusterIPs": ["10.43.0.9"], "ports": [{"nodePort": 30001}, {"nodePort": 0}]}});
        assert_eq!(
            holdings(&svc),
            Holdings {
                ips: vec!["10.43.0.9".into()],
                ports: vec![30001]
            }
        );
        let headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        assert_eq!(holdings(&headless), Holdings::default());
    }

    fn families(configured: &[&'static str], spec: Value, update: bool) -> Families {
        resolve_families(configured, &spec, update).expect("families")
    }

    fn refused(configured: &[&'static str], spec: Value) -> String {
        let errs = resolve_families(configured, &spec, false).expect_err("refused");
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn ip_families_as_upstream() {
        const V4: &[&str] = &["IPv4"];
        const DUAL: &[&str] = &["IPv4", "IPv6"];
        const V6_DUAL: &[&str] = &["IPv6", "IPv4"];
        // Defaults (`[IPv4]`, SingleStack) on every kind of cluster.
        let single = json!({"ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"});
        assert_eq!(families(DUAL, single.clone(), false).families, ["IPv4"]);
        assert_eq!(families(&["IPv6"], single, false).families, ["IPv6"]);
        // Dual-stack policies add the other family, in the asked order.
        let prefer = json!({"ipFamilies": ["IPv4"], "ipFamilyPolicy": "PreferDualStack"});
        assert_eq!(
            families(DUAL, prefer.clone(), false).families,
            ["IPv4", "IPv6"]
        );
        assert_eq!(families(V4, prefer, false).families, ["IPv4"]);
        let v6_first =
            json!({"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"});
        assert_eq!(families(DUAL, v6_first, false).families, ["IPv6", "IPv4"]);
        let v6_only = json!({"ipFamilies": ["IPv6"], "ipFamilyPolicy": "RequireDualStack"});
        assert_eq!(families(V6_DUAL, v6_only, false).families, ["IPv6", "IPv4"]);
        // Two asked addresses under the defaulted policy: RequireDualStack.
        let two = json!({"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5", "fd43::5"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"});
        let f = families(DUAL, two.clone(), false);
        assert_eq!(
            (f.families, f.policy, f.asked.len()),
            (vec!["IPv4", "IPv6"], "RequireDualStack", 2)
        );
        // Turned SingleStack on update: the first address stays.
        let f = families(DUAL, two, true);
        assert_eq!(
            (f.families, f.asked),
            (vec!["IPv4"], vec!["10.43.0.5".into()])
        );
        // Headless: families, no addresses.
        let headless = json!({"clusterIP": "None", "clusterIPs": ["None"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "PreferDualStack"});
        let f = families(DUAL, headless, false);
        assert!(f.headless && f.asked.is_empty());
        assert_eq!(f.families, ["IPv4", "IPv6"]);

        assert_eq!(
            refused(V4, json!({"ipFamilies": ["IPv4"], "ipFamilyPolicy": "RequireDualStack"})),
            "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"
        );
        assert_eq!(
            refused(
                V4,
                json!({"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"})
            ),
            "spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"
        );
        assert!(refused(
            DUAL,
            json!({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "SingleStack"})
        )
        .contains("must be 'RequireDualStack' or 'PreferDualStack'"));
        assert!(refused(
            DUAL,
            json!({"ipFamilies": ["IPv4", "IPv4"], "ipFamilyPolicy": "PreferDualStack"})
        )
        .starts_with("spec.ipFamilies[1]: Duplicate value"));
        assert!(refused(
            DUAL,
            json!({"clusterIPs": ["fd43::1"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"})
        )
        .contains("expected an IPv4 value"));
    }
}

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
    cidr: Cidr,
    ports: (i64, i64),
}

impl ServiceAllocator {
    /// An allocator for `service_cidr` (the first range, if several are given) and node ports in
    /// `node_ports` (inclusive).
    ///
    /// # Errors
    /// A message if the CIDR cannot be parsed or is too small.
    pub fn new(
        service_cidr: &str,
        node_ports: std::ops::RangeInclusive<u16>,
    ) -> std::result::Result<ServiceAllocator, String> {
        let first = service_cidr.split(',').next().unwrap_or("");
        let cidr = Cidr::parse(first).ok_or_else(|| {
            format!("invalid service CIDR {service_cidr:?}: want e.g. 10.43.0.0/16")
        })?;
        Ok(ServiceAllocator {
            cidr,
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

    /// A free cluster IP; reserved for `owner` unless `dry_run`.
    async fn allocate_ip(
        &self,
        store: &Arc<dyn Datastore>,
        owner: &Owner,
        dry_run: bool,
    ) -> Result<Option<IpAddr>> {
        let c = &self.cidr;
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
            .allocate_into(store, def, obj, &had, &owner, &mut got, dry_run)
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
        owner: &Owner,
        got: &mut Holdings,
        dry_run: bool,
    ) -> Result<()> {
        let spec = obj["spec"].clone();
        if !spec.is_object() {
            return Ok(());
        }
        if spec["type"] != "ExternalName" && spec["clusterIP"] != "None" {
            let asked = spec["clusterIP"].as_str().unwrap_or("").to_string();
            if asked.is_empty() {
                let Some(ip) = self.allocate_ip(store, owner, dry_run).await? else {
                    return Err(Error::Internal(format!(
                        "failed to allocate a serviceIP: range is full ({})",
                        self.cidr.text
                    )));
                };
                got.ips.push(ip.to_string());
                obj["spec"]["clusterIP"] = json!(ip.to_string());
                obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
            } else if !had.ips.contains(&asked) {
                let in_range = asked
                    .parse::<IpAddr>()
                    .ok()
                    .and_then(|ip| self.cidr.offset(&ip))
                    .is_some();
                if !in_range {
                    return Err(Self::invalid(
                        def,
                        obj,
                        vec![invalid_raw(
                            "spec.clusterIPs",
                            &format!("[]string{{{asked:?}}}"),
                            &format!(
                                "failed to allocate IP {asked}: the provided IP ({asked}) is not in the valid range. The range of valid IPs is {}",
                                self.cidr.text
                            ),
                        )],
                    ));
                }
                let key = ip_reservation(&asked);
                let free = Self::take(store, &key, owner, dry_run).await?;
                if !free {
                    return Err(Self::invalid(
                        def,
                        obj,
                        vec![invalid_raw(
                            "spec.clusterIPs",
                            &format!("[]string{{{asked:?}}}"),
                            &format!(
                                "failed to allocate IP {asked}: provided IP is already allocated"
                            ),
                        )],
                    ));
                }
                got.ips.push(asked.clone());
                if obj["spec"]["clusterIPs"]
                    .as_array()
                    .is_none_or(|a| a.is_empty())
                {
                    obj["spec"]["clusterIPs"] = json!([asked]);
                }
            }
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
}

//! Objects every cluster has from its first start, created through the same storage path as
//! any API write (so admission and validation apply) and left alone if they exist.

use distro_apiserver::resources::Registry;
use distro_apiserver::rest::{Storage, WriteOptions};
use distro_apiserver::Error;
use std::net::{IpAddr, SocketAddr};

use serde_json::{json, Value};

/// Namespaces upstream clusters start with.
const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The built-in PriorityClasses: name, value, description (upstream's words).
const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The bundled RBAC bootstrap policy (compiled into the binary).
const RBAC: &str = include_str!("../../../bundled/rbac.yaml");

/// Creates what is missing.
///
/// # Errors
/// Any storage error other than "already exists".
pub async fn ensure(storage: &Storage, registry: &Registry) -> Result<(), Error> {
    let ns = registry
        .get("", "v1", "namespaces")
        .ok_or(Error::NoSuchResource)?;
    for name in NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match storage
            .create(&ns, None, obj, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // Upstream's apiserver creates the two system PriorityClasses at startup.
    let pc = registry
        .get("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or(Error::NoSuchResource)?;
    for (name, value, description) in SYSTEM_PRIORITY_CLASSES {
        let obj = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description});
        match storage
            .create(&pc, None, obj, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for doc in serde_yaml::Deserializer::from_str(RBAC) {
        let obj: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Error::Internal(format!("bundled/rbac.yaml: {e}")))?;
        let kind = obj["kind"].as_str().unwrap_or_default();
        let def = registry
            .by_kind("rbac.authorization.k8s.io", kind)
            .ok_or(Error::NoSuchResource)?;
        // Roles and RoleBindings (e.g. kube-system's token cleaner) name their namespace.
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        match storage
            .create(&def, ns.as_deref(), obj, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `default/kubernetes` Service (the first address of the service range, port 443) and its
/// Endpoints and EndpointSlice pointing at this API server, as upstream's apiserver keeps them.
/// Existing objects are corrected when the advertised address or port changed.
///
/// # Errors
/// Storage errors.
pub async fn kubernetes_service(
    storage: &Storage,
    registry: &Registry,
    service_ip: IpAddr,
    advertise: SocketAddr,
) -> Result<(), Error> {
    let (ip, port) = (advertise.ip().to_string(), advertise.port());
    let family = if advertise.is_ipv6() { "IPv6" } else { "IPv4" };
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": service_ip.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None",
        },
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    // Only the fields we own are compared and corrected: a user's labels survive.
    upsert(
        storage,
        registry,
        ("", "services"),
        service,
        &["spec", "ports"],
    )
    .await?;
    upsert(
        storage,
        registry,
        ("", "endpoints"),
        endpoints,
        &["subsets"],
    )
    .await?;
    upsert(
        storage,
        registry,
        ("discovery.k8s.io", "endpointslices"),
        slice,
        &["endpoints"],
    )
    .await?;
    Ok(())
}

/// The label that tells service proxies a Service is someone else's to serve (upstream
/// kube-proxy skips such Services).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// `kube-system/kube-dns` with the cluster DNS address, as k3s's CoreDNS manifest has it, so
/// `kubectl get svc -n kube-system` shows where DNS is. Every node's own DNS server holds the
/// address (distro-dns), so the Service has no selector and is labelled for proxies to skip.
/// An existing Service is left alone.
///
/// # Errors
/// Storage errors (an address outside the service range is refused by validation).
pub async fn kube_dns_service(
    storage: &Storage,
    registry: &Registry,
    cluster_dns: IpAddr,
) -> Result<(), Error> {
    let def = registry
        .get("", "v1", "services")
        .ok_or(Error::NoSuchResource)?;
    let family = if cluster_dns.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    };
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "distro-dns", SERVICE_PROXY_NAME_LABEL: "distro-dns"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_dns.to_string(),
            "clusterIPs": [cluster_dns.to_string()],
            "ipFamilies": [family],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    });
    match storage
        .create(&def, Some("kube-system"), service, &WriteOptions::default())
        .await
    {
        Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `obj`, or sets `path` of the existing object to `obj`'s value there if it differs.
pub(crate) async fn upsert(
    storage: &Storage,
    registry: &Registry,
    (group, resource): (&str, &str),
    obj: Value,
    path: &[&str],
) -> Result<(), Error> {
    let def = registry
        .get(group, "v1", resource)
        .ok_or(Error::NoSuchResource)?;
    let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let want = path.iter().fold(&obj, |v, k| &v[*k]).clone();
    if storage.try_get(&def, ns.as_deref(), &name).await?.is_none() {
        match storage
            .create(&def, ns.as_deref(), obj, &WriteOptions::default())
            .await
        {
            Ok(_) => return Ok(()),
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    storage
        .guaranteed_update(
            &def,
            ns.as_deref(),
            &name,
            None,
            &WriteOptions::default(),
            |current| {
                let mut next = current.cloned().unwrap_or(Value::Null);
                let slot = path.iter().fold(&mut next, |v, k| &mut v[*k]);
                *slot = want.clone();
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                Ok((next, Vec::new()))
            },
        )
        .await?;
    Ok(())
}

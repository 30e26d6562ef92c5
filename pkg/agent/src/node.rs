//! The Node object and its heartbeat, as a kubelet registers and reports them: labels,
//! taints (at registration only, as `--register-with-taints`), capacity, conditions, and a
//! Lease in `kube-node-lease` renewed every [`LEASE_RENEW`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use distro_client::events::{EventType, Recorder};
use distro_client::Client;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeSpec, ObjectReference, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;

use crate::{Config, Error};

/// Label (and annotation) marking a node as simulated: no containers run on it.
pub const FAKE_LABEL: &str = "node.distro.io/fake";

/// How often a node's Lease is renewed (upstream: a quarter of the 40 s lease duration).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);

/// Failed Lease renewals in a row after which the node's connections are closed.
const HEARTBEAT_FAILURES: u32 = 2;

/// The Lease duration, as upstream's `nodeLeaseDurationSeconds`.
const LEASE_DURATION_SECONDS: i32 = 40;

/// How often node status is re-posted when nothing changed (upstream's
/// `nodeStatusReportFrequency`); the Lease is the frequent heartbeat.
const STATUS_REPORT: Duration = Duration::from_secs(300);

/// Namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The kubelet version simulated nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0-distro-fake";

/// A node this agent registered and serves.
pub struct Registered {
    /// Node name.
    pub name: String,
    /// The node's own client (`system:node:<name>`).
    pub client: Client,
    /// The client's connections, closed after repeated heartbeat failures.
    pub connections: distro_client::Connections,
    /// Events as this node's kubelet.
    pub events: Recorder,
    /// The node's UID (owner of its Lease).
    pub uid: String,
    /// The node's InternalIP, reported as pods' hostIP: the address its kubelet API listens
    /// on, so the server can reach it.
    pub host_ip: String,
}

/// What a node running real containers reports instead of the simulated values.
#[derive(Debug, Clone)]
pub struct RealNode {
    /// The machine's address (InternalIP).
    pub host_ip: String,
    /// CPUs, memory and pods of this machine.
    pub capacity: BTreeMap<String, Quantity>,
    /// `containerd://<version>`.
    pub runtime_version: String,
    /// `/etc/os-release`'s PRETTY_NAME.
    pub os_image: String,
}

/// The kubelet version real nodes report.
pub const REAL_KUBELET_VERSION: &str = "v1.33.0-distro";

/// FNV-1a: a stable spread of node names over address ranges.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn labels(config: &Config, name: &str, real: bool) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), go_arch().to_string()),
        (FAKE_LABEL.to_string(), "true".to_string()),
    ]);
    if real {
        l.remove(FAKE_LABEL);
    }
    l.extend(config.labels.clone());
    l
}

/// Go's name of this architecture, as node labels use it.
pub(crate) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The conditions of a healthy node, in upstream's words.
fn conditions(now: &str) -> serde_json::Value {
    let c = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

pub(crate) fn now_rfc3339() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn status(
    config: &Config,
    name: &str,
    kubelet: std::net::SocketAddr,
    node: &Node,
    real: Option<&RealNode>,
) -> serde_json::Value {
    let host_ip = kubelet.ip().to_string();
    let now = now_rfc3339();
    // Keep transition times of conditions that do not change (a restart is not a transition).
    let mut conds = conditions(&now);
    let old = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conds.as_array_mut().into_iter().flatten() {
        if let Some(prev) = old
            .into_iter()
            .flatten()
            .find(|o| c["type"] == o.type_.as_str())
        {
            if c["status"] == prev.status.as_str() {
                if let Some(t) = &prev.last_transition_time {
                    c["lastTransitionTime"] = json!(t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
                }
            }
        }
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let capacity = real.map_or(&config.fake_capacity, |r| &r.capacity);
    let (os_image, runtime, kubelet_version) = match real {
        Some(r) => (
            r.os_image.as_str(),
            r.runtime_version.as_str(),
            REAL_KUBELET_VERSION,
        ),
        None => (
            "distro simulated node (no containers run)",
            "fake://0.1.0",
            KUBELET_VERSION,
        ),
    };
    json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": conds,
        "addresses": [
            {"type": "InternalIP", "address": host_ip},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port()}},
        "nodeInfo": {
            "machineID": format!("{:032x}", fnv(name)),
            "systemUUID": format!("{:032x}", fnv(&format!("uuid-{name}"))),
            "bootID": format!("{:032x}", rand::random::<u128>()),
            "kernelVersion": kernel,
            "osImage": os_image,
            "containerRuntimeVersion": runtime,
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": go_arch(),
        },
    }})
}

/// The one Event recorder of node `name`'s kubelet (source `kubelet`, host = the node),
/// writing with the node's own `client`. A real node clones it into its registration,
/// eviction, pod workers and image GC, so the correlator's spam filter and aggregation see
/// all of the node's events, as upstream's kubelet has one recorder.
pub fn recorder(client: &Client, name: &str) -> Recorder {
    Recorder::new(client.clone(), "kubelet", Some(name))
}

/// Registers node `name` (or takes over its existing Node object, as a restarted kubelet
/// does), reports it Ready through `events` (the node's [`recorder`]) and returns it.
///
/// # Errors
/// [`Error::Api`] if the Node cannot be created, read or updated.
pub async fn register(
    (client, connections): (Client, distro_client::Connections),
    config: &Config,
    name: &str,
    kubelet: std::net::SocketAddr,
    real: Option<&RealNode>,
    events: Recorder,
) -> Result<Registered, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let host_ip = kubelet.ip().to_string();
    let annotations = match real {
        Some(_) => None,
        None => Some(BTreeMap::from([(
            FAKE_LABEL.to_string(),
            "simulated by distro agent --runtime fake: pods are reported Running without starting containers".to_string(),
        )])),
    };
    let wanted = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels(config, name, real.is_some())),
            annotations,
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..Default::default()
        }),
        status: None,
    };
    let node = match api.create(&PostParams::default(), &wanted).await {
        Ok(n) => {
            events.record(
                node_ref(name),
                EventType::Normal,
                "Starting",
                "Starting kubelet.".into(),
            );
            n
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Known already: keep its taints (someone may have cordoned or tainted it since),
            // reconcile our labels.
            let patch = json!({"metadata": {"labels": labels(config, name, real.is_some())}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api(format!("updating Node {name}")))?
        }
        Err(e) => return Err(Error::api(format!("registering Node {name}"))(e)),
    };
    let body = status(config, name, kubelet, &node, real);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(Error::api(format!("reporting the status of Node {name}")))?;
    events.record(
        node_ref(name),
        EventType::Normal,
        "NodeReady",
        format!("Node {name} status is now: NodeReady"),
    );
    Ok(Registered {
        name: name.to_string(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        host_ip,
        client,
        connections,
        events,
    })
}

/// How events name a node (upstream uses the name as UID for node references).
fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: Some(name.into()),
        ..Default::default()
    }
}

/// Renews every node's Lease every [`LEASE_RENEW`] (and re-posts its status every
/// [`STATUS_REPORT`]) until `shutdown` turns true. Nodes start at spread-out offsets so 100
/// nodes do not renew in one burst.
///
/// Each renewal is bounded by [`LEASE_RENEW`] and abandoned on shutdown. After
/// [`HEARTBEAT_FAILURES`] failures in a row the node's connections are closed, as the
/// kubelet's `onRepeatedHeartbeatFailure` does: a connection from an address the machine no
/// longer has never answers, and the next request must dial anew.
pub async fn renew_leases(nodes: Vec<Arc<Registered>>, shutdown: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    for node in nodes {
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            let offset = LEASE_RENEW.mul_f64(rand::random::<f64>());
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, LEASE_RENEW);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_status = tokio::time::Instant::now();
            let mut failures = 0u32;
            // The first renewal now, not after the offset: a new node is not left without one.
            loop {
                let renewed = tokio::select! {
                    r = tokio::time::timeout(LEASE_RENEW, renew(&node)) => r.unwrap_or_else(|_| {
                        tracing::warn!(node = %node.name, "renewing the node Lease timed out; retrying");
                        false
                    }),
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                failures = if renewed { 0 } else { failures + 1 };
                if failures >= HEARTBEAT_FAILURES {
                    let closed = node.connections.close_all();
                    tracing::warn!(node = %node.name, failures, closed, "heartbeats keep failing; closed the connections to the API server");
                    failures = 0;
                }
                if last_status.elapsed() >= STATUS_REPORT {
                    last_status = tokio::time::Instant::now();
                    tokio::select! {
                        _ = tokio::time::timeout(LEASE_RENEW, heartbeat(&node)) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Renews (or creates) the Lease of `node`; failures are logged and retried next tick.
/// Returns whether the API server took the renewal.
async fn renew(node: &Registered) -> bool {
    let api: Api<Lease> = Api::namespaced(node.client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let patch = json!({"spec": {
        "holderIdentity": node.name,
        "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "renewTime": now,
    }});
    match api
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease: Lease = match serde_json::from_value(json!({
                "metadata": {
                    "name": node.name,
                    "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid}],
                },
                "spec": patch["spec"],
            })) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "building the node Lease");
                    return false;
                }
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "creating the node Lease failed; retrying");
                    false
                }
            }
        }
        Err(e) => {
            tracing::warn!(node = %node.name, error = %e, "renewing the node Lease failed; retrying");
            false
        }
    }
}

/// Re-posts the Ready condition's heartbeat time.
async fn heartbeat(node: &Registered) {
    let api: Api<Node> = Api::all(node.client.clone());
    let now = now_rfc3339();
    // GET of the Node, not of nodes/status: the system:node role may only write the status
    // subresource, as upstream's, and the kubelet reads its Node the same way.
    let current = match api.get(&node.name).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(node = %node.name, error = %e, "reading node status failed");
            return;
        }
    };
    let mut conds: Vec<serde_json::Value> = current
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    for c in &mut conds {
        c["lastHeartbeatTime"] = json!(now);
    }
    let patch = json!({"status": {"conditions": conds}});
    if let Err(e) = api
        .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(node = %node.name, error = %e, "reporting node status failed");
    }
}

/// Parses `--node-label key=value`.
///
/// # Errors
/// A message naming what is wrong, for the CLI to print.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--node-label {s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("--node-label {s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Parses `--node-taint key=value:Effect` (or `key:Effect`).
///
/// # Errors
/// A message naming what is wrong, for the CLI to print.
pub fn parse_taint(s: &str) -> Result<Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("--node-taint {s:?} is not key=value:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "--node-taint {s:?}: effect {effect:?} is not one of NoSchedule, PreferNoSchedule, NoExecute"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(format!("--node-taint {s:?} has an empty key"));
    }
    Ok(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

/// Parses `--fake-capacity cpu=4,memory=8Gi,pods=110` (resources not named keep `defaults`).
///
/// # Errors
/// A message naming what is wrong, for the CLI to print.
pub fn parse_capacity(s: &str) -> Result<BTreeMap<String, Quantity>, String> {
    let mut out = BTreeMap::from([
        ("cpu".to_string(), Quantity("4".into())),
        ("memory".to_string(), Quantity("8Gi".into())),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--fake-capacity {part:?} is not resource=quantity"))?;
        let ok = !v.is_empty()
            && v.chars().next().is_some_and(|c| c.is_ascii_digit())
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
        if k.is_empty() || !ok {
            return Err(format!(
                "--fake-capacity {part:?} is not resource=quantity (e.g. cpu=4, memory=8Gi)"
            ));
        }
        out.insert(k.to_string(), Quantity(v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_k3s() {
        assert_eq!(parse_label("a=b").unwrap(), ("a".into(), "b".into()));
        assert!(parse_label("ab").is_err());
        let t = parse_taint("k=v:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("k", Some("v"), "NoSchedule")
        );
        let t = parse_taint("dedicated:NoExecute").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("dedicated", None, "NoExecute")
        );
        assert!(parse_taint("k=v:Sometimes").is_err());
        assert!(parse_taint("k=v").is_err());
        let c = parse_capacity("cpu=2,pods=30").unwrap();
        assert_eq!(c["cpu"].0, "2");
        assert_eq!(c["pods"].0, "30");
        assert_eq!(c["memory"].0, "8Gi", "unnamed resources keep defaults");
        assert!(parse_capacity("cpu").is_err());
        assert!(parse_capacity("cpu=lots").is_err());
    }
}

//! The real node's status, kept current as upstream's kubelet does: every
//! [`STATUS_UPDATE`] (`nodeStatusUpdateFrequency`) the status is computed afresh — the
//! Ready condition from containerd's health, the pressure conditions from the eviction
//! manager ([`crate::eviction`]), addresses, nodeInfo, capacity and allocatable (with
//! ephemeral storage), the images containerd holds — and posted when it differs from what
//! the API server has (heartbeat times aside), or every [`STATUS_REPORT`] regardless
//! (`nodeStatusReportFrequency`). A change in pressure is posted at once. The Lease stays the
//! frequent heartbeat ([`crate::node::renew_leases`]).
//!
//! The comparison is against the Node as read back each time (not a memory of what was
//! posted), so a status someone else changed — the node lifecycle controller marking it
//! Unknown while the agent was away — is corrected on the next tick.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use distro_client::Client;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::node::{go_arch, now_rfc3339, REAL_KUBELET_VERSION};

/// How often the status is computed and compared (upstream's `nodeStatusUpdateFrequency`).
pub const STATUS_UPDATE: Duration = Duration::from_secs(10);

/// How often the status is posted even if nothing changed (upstream's
/// `nodeStatusReportFrequency` with node leases on).
pub const STATUS_REPORT: Duration = Duration::from_secs(300);

/// At most this many images are listed in `status.images` (upstream's
/// `--node-status-max-images` default), the largest first.
pub const MAX_IMAGES: usize = 50;

/// At most this many names per image (upstream's `maxNamesPerImageInNodeStatus`).
const MAX_NAMES_PER_IMAGE: usize = 5;

/// Which resources the node is short of, as the eviction manager observes them (defined
/// with the kubelet's admission, which refuses pods under pressure).
pub use distro_kubelet::admission::Pressure;

/// What goes into a status beyond the pressure: observed each tick.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// `None` if containerd answered; else why the node is not ready.
    pub not_ready: Option<String>,
    /// Capacity of the machine.
    pub capacity: BTreeMap<String, Quantity>,
    /// Capacity less the hard eviction thresholds (no reservations are configured).
    pub allocatable: BTreeMap<String, Quantity>,
    /// `containerd://<version>`.
    pub runtime_version: String,
    /// `status.images` entries.
    pub images: Vec<Value>,
}

/// The machine's identity and addresses: read once.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The node's name (Hostname address).
    pub name: String,
    /// InternalIP.
    pub host_ip: String,
    /// Kubelet API port (`daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: u16,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/sys/class/dmi/id/product_uuid`, if readable.
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `/etc/os-release`'s PRETTY_NAME.
    pub os_image: String,
}

impl Machine {
    /// Reads this machine's identity (blocking: small files under /proc, /sys and /etc).
    pub fn read(name: &str, host_ip: &str, kubelet_port: u16) -> Machine {
        let first = |paths: &[&str]| {
            paths
                .iter()
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.trim().to_lowercase())
                .find(|s| !s.is_empty())
                .unwrap_or_default()
        };
        Machine {
            name: name.to_string(),
            host_ip: host_ip.to_string(),
            kubelet_port,
            machine_id: first(&["/etc/machine-id", "/var/lib/dbus/machine-id"]),
            system_uuid: first(&["/sys/class/dmi/id/product_uuid"]),
            boot_id: first(&["/proc/sys/kernel/random/boot_id"]),
            kernel: first(&["/proc/sys/kernel/osrelease"]),
            os_image: crate::containerd::os_image(),
        }
    }
}

/// One condition in upstream's words: `(type, status, reason, message)`.
fn condition(kind: &str, bad: bool) -> (&'static str, &'static str, &'static str) {
    match (kind, bad) {
        ("MemoryPressure", false) => (
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("MemoryPressure", true) => (
            "True",
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        ("DiskPressure", false) => (
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        ("DiskPressure", true) => (
            "True",
            "KubeletHasDiskPressure",
            "kubelet has disk pressure",
        ),
        ("PIDPressure", false) => (
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (_, true) => (
            "True",
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        (_, false) => ("False", "", ""),
    }
}

/// The four conditions for `pressure` and readiness, keeping each one's
/// `lastTransitionTime` from `previous` while its status is unchanged.
pub fn conditions(
    previous: &Value,
    pressure: Pressure,
    not_ready: Option<&str>,
    now: &str,
) -> Vec<Value> {
    let prev = |kind: &str| {
        previous
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind)
    };
    let make = |kind: &str, status: &str, reason: &str, message: &str| {
        let transition = prev(kind)
            .filter(|p| p["status"] == status)
            .and_then(|p| p["lastTransitionTime"].as_str())
            .unwrap_or(now)
            .to_string();
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": transition})
    };
    let mut out = Vec::new();
    for (kind, bad) in [
        ("MemoryPressure", pressure.memory),
        ("DiskPressure", pressure.disk),
        ("PIDPressure", pressure.pid),
    ] {
        let (status, reason, message) = condition(kind, bad);
        out.push(make(kind, status, reason, message));
    }
    out.push(match not_ready {
        None => make(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        Some(why) => make("Ready", "False", "KubeletNotReady", why),
    });
    out
}

/// `status.images` from containerd's images: names (digests, then tags; at most
/// [`MAX_NAMES_PER_IMAGE`]) and size, the largest [`MAX_IMAGES`] first.
pub fn images(list: &[distro_cri::api::Image]) -> Vec<Value> {
    let mut sorted: Vec<&distro_cri::api::Image> = list.iter().collect();
    sorted.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
    sorted
        .into_iter()
        .take(MAX_IMAGES)
        .map(|i| {
            let names: Vec<&String> = i
                .repo_digests
                .iter()
                .chain(&i.repo_tags)
                .take(MAX_NAMES_PER_IMAGE)
                .collect();
            json!({"names": names, "sizeBytes": i.size})
        })
        .collect()
}

/// The whole status patch body for `machine` and `observed`.
pub fn status(
    machine: &Machine,
    observed: &Observed,
    pressure: Pressure,
    previous_conditions: &Value,
    now: &str,
) -> Value {
    json!({
        "capacity": observed.capacity,
        "allocatable": observed.allocatable,
        "conditions": conditions(previous_conditions, pressure, observed.not_ready.as_deref(), now),
        "addresses": [
            {"type": "InternalIP", "address": machine.host_ip},
            {"type": "Hostname", "address": machine.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": machine.kubelet_port}},
        "nodeInfo": {
            "machineID": machine.machine_id,
            "systemUUID": machine.system_uuid,
            "bootID": machine.boot_id,
            "kernelVersion": machine.kernel,
            "osImage": machine.os_image,
            "containerRuntimeVersion": observed.runtime_version,
            "kubeletVersion": REAL_KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": go_arch(),
        },
        "images": observed.images,
    })
}

/// Whether `new` says something `current` (the Node's status as stored) does not: every
/// field `new` sets is compared, conditions without their heartbeat times.
pub fn differs(current: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        for c in v.as_array_mut().into_iter().flatten() {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastHeartbeatTime");
            }
        }
        v
    };
    new.as_object().into_iter().flatten().any(|(k, v)| {
        let old = &current[k.as_str()];
        if k == "conditions" {
            strip(old) != strip(v)
        } else if k == "images" && old.is_null() {
            // Stored without the key when empty.
            v.as_array().is_some_and(|a| !a.is_empty())
        } else {
            old != v
        }
    })
}

/// `path` or, until it is made, its nearest existing ancestor: the filesystem it will be on.
pub fn existing(path: &std::path::Path) -> &std::path::Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(std::path::Path::new("/"))
}

/// Bytes of the filesystem holding `path` (total, available), by statvfs.
pub fn filesystem(path: &std::path::Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(existing(path)).ok()?;
    let block = s.fragment_size() as u64;
    Some((
        s.blocks() as u64 * block,
        s.blocks_available() as u64 * block,
    ))
}

/// Keeps one node's status current until `shutdown`.
pub struct Reporter {
    /// The node's own client.
    pub client: Client,
    /// containerd.
    pub cri: distro_cri::Cri,
    /// Identity and addresses.
    pub machine: Machine,
    /// Base capacity (cpu, memory, pods); ephemeral storage is added from `root_dir`.
    pub capacity: BTreeMap<String, Quantity>,
    /// The kubelet's root dir: its filesystem is the node's ephemeral storage (nodefs).
    pub root_dir: PathBuf,
    /// Hard eviction thresholds taken off allocatable (memory bytes, nodefs share).
    pub reserved: crate::eviction::Thresholds,
    /// The eviction manager's view.
    pub pressure: watch::Receiver<Pressure>,
    /// The node's current address ([`crate::address::follow`]), reported as InternalIP.
    pub address: watch::Receiver<std::net::IpAddr>,
}

impl Reporter {
    async fn observe(&self) -> Observed {
        let (not_ready, runtime_version) = match self.cri.version().await {
            Ok(v) => (None, format!("{}://{}", v.runtime_name, v.runtime_version)),
            Err(e) => {
                tracing::warn!(error = %e, "container runtime check failed");
                (Some("container runtime is down".to_string()), String::new())
            }
        };
        let images = match self.cri.list_images().await {
            Ok(list) => images(&list),
            Err(_) => Vec::new(),
        };
        let root = self.root_dir.clone();
        let fs = tokio::task::spawn_blocking(move || filesystem(&root))
            .await
            .ok()
            .flatten();
        let mut capacity = self.capacity.clone();
        if let Some((total, _)) = fs {
            // Upstream builds it as a BinarySI quantity (`264212084Ki`, not bare bytes).
            let total = i64::try_from(total).unwrap_or(i64::MAX);
            capacity.insert(
                "ephemeral-storage".into(),
                Quantity(
                    distro_apimachinery::quantity::Quantity::from_units(
                        total,
                        distro_apimachinery::quantity::Format::BinarySI,
                    )
                    .to_string(),
                ),
            );
        }
        let allocatable = self.reserved.allocatable(&capacity);
        Observed {
            not_ready,
            capacity,
            allocatable,
            runtime_version,
            images,
        }
    }

    /// Computes, compares and posts the status every [`STATUS_UPDATE`] and on every change
    /// of pressure, until `shutdown` turns true. Failures are logged and retried next tick.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = self.machine.name.clone();
        let mut tick = tokio::time::interval(STATUS_UPDATE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_post = tokio::time::Instant::now();
        let mut pressure_open = true;
        let mut address_open = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = self.pressure.changed(), if pressure_open => {
                    pressure_open = changed.is_ok();
                }
                changed = self.address.changed(), if address_open => {
                    address_open = changed.is_ok();
                }
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            self.machine.host_ip = self.address.borrow_and_update().to_string();
            let observed = self.observe().await;
            let pressure = *self.pressure.borrow();
            // GET the Node, not nodes/status: the system:node role may only write the latter.
            let current = match api.get(&name).await {
                Ok(n) => serde_json::to_value(n.status.unwrap_or_default()).unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "reading the node's status failed");
                    continue;
                }
            };
            let now = now_rfc3339();
            let new = status(
                &self.machine,
                &observed,
                pressure,
                &current["conditions"],
                &now,
            );
            if !differs(&current, &new) && last_post.elapsed() < STATUS_REPORT {
                continue;
            }
            match api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": new})),
                )
                .await
            {
                Ok(_) => {
                    last_post = tokio::time::Instant::now();
                    tracing::debug!(node = %name, "node status posted");
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "posting the node's status failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_use_upstream_words_and_keep_transition_times() {
        let first = conditions(&Value::Null, Pressure::default(), None, "t1");
        let kinds: Vec<&str> = first.iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(first[3]["reason"], "KubeletReady");
        assert_eq!(first[3]["message"], "kubelet is posting ready status");
        assert_eq!(first[0]["reason"], "KubeletHasSufficientMemory");
        let prev = Value::Array(first);
        let disk = Pressure {
            disk: true,
            ..Default::default()
        };
        let second = conditions(&prev, disk, None, "t2");
        assert_eq!(second[1]["status"], "True");
        assert_eq!(second[1]["reason"], "KubeletHasDiskPressure");
        assert_eq!(second[1]["lastTransitionTime"], "t2");
        assert_eq!(
            second[0]["lastTransitionTime"], "t1",
            "unchanged keeps its time"
        );
        assert_eq!(second[0]["lastHeartbeatTime"], "t2");
        let down = conditions(
            &prev,
            Pressure::default(),
            Some("container runtime is down"),
            "t3",
        );
        assert_eq!(down[3]["status"], "False");
        assert_eq!(down[3]["reason"], "KubeletNotReady");
        assert_eq!(down[3]["message"], "container runtime is down");
    }

    #[test]
    fn only_real_changes_differ() {
        let machine = Machine {
            name: "n".into(),
            host_ip: "10.0.0.1".into(),
            kubelet_port: 10250,
            machine_id: "m".into(),
            system_uuid: String::new(),
            boot_id: "b".into(),
            kernel: "6".into(),
            os_image: "Debian".into(),
        };
        let observed = Observed {
            capacity: BTreeMap::from([("cpu".into(), Quantity("2".into()))]),
            ..Default::default()
        };
        let a = status(&machine, &observed, Pressure::default(), &Value::Null, "t1");
        let b = status(
            &machine,
            &observed,
            Pressure::default(),
            &a["conditions"],
            "t2",
        );
        assert!(!differs(&a, &b), "only heartbeats moved");
        let c = status(
            &machine,
            &observed,
            Pressure {
                memory: true,
                ..Default::default()
            },
            &a["conditions"],
            "t2",
        );
        assert!(differs(&a, &c));
        let mut more = observed.clone();
        more.capacity.insert("pods".into(), Quantity("110".into()));
        assert!(differs(
            &a,
            &status(&machine, &more, Pressure::default(), &a["conditions"], "t2")
        ));
    }

    #[test]
    fn images_largest_first_with_digests_then_tags() {
        let img = |id: &str, size: u64, tags: &[&str], digests: &[&str]| distro_cri::api::Image {
            id: id.into(),
            size,
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let out = images(&[
            img("a", 10, &["small:1"], &[]),
            img("b", 30, &["big:1"], &["big@sha256:x"]),
        ]);
        assert_eq!(out[0]["names"], json!(["big@sha256:x", "big:1"]));
        assert_eq!(out[0]["sizeBytes"], 30);
        assert_eq!(out[1]["names"], json!(["small:1"]));
    }
}

//! What containerd runs, read through CRI: one pod's full state for its sync, and the cheap
//! node-wide listing the PLEG compares every second to wake the pods whose containers changed.

use std::collections::{HashMap, HashSet};

use distro_cri::api;
use distro_cri::Cri;

use crate::pod::runtime::RuntimePod;
use crate::pod::sandbox::{LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> distro_cri::Error {
    move |source| distro_cri::Error::Rpc { op, source }
}

/// The labels selecting one pod's sandboxes and containers.
fn uid_selector(uid: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())])
}

/// Everything containerd has for the pod `uid`: full sandbox and container statuses (IPs,
/// exit codes, annotations), newest first.
///
/// # Errors
/// A CRI call failed. A sandbox or container removed between the list and its status call is
/// skipped, not an error.
pub async fn runtime_pod(cri: &Cri, uid: &str) -> Result<RuntimePod, distro_cri::Error> {
    let mut rs = cri.runtime();
    let sandboxes = rs
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                label_selector: uid_selector(uid),
                ..Default::default()
            }),
        })
        .await
        .map_err(rpc("ListPodSandbox"))?
        .into_inner()
        .items;
    let mut sandbox_statuses = Vec::with_capacity(sandboxes.len());
    for sb in sandboxes {
        match rs
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: sb.id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(r) => sandbox_statuses.extend(r.into_inner().status),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(rpc("PodSandboxStatus")(s)),
        }
    }
    let containers = rs
        .list_containers(api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                label_selector: uid_selector(uid),
                ..Default::default()
            }),
        })
        .await
        .map_err(rpc("ListContainers"))?
        .into_inner()
        .containers;
    let mut container_statuses = Vec::with_capacity(containers.len());
    for c in containers {
        match cri.container_status(&c.id).await {
            Ok(s) => container_statuses.push(s),
            Err(distro_cri::Error::Rpc { source, .. })
                if source.code() == tonic::Code::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(RuntimePod::new(sandbox_statuses, container_statuses))
}

/// A pod the runtime knows, identified by the labels the kubelet put on its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeIdentity {
    /// The pod's UID.
    pub uid: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// One node-wide listing: the state of every sandbox and container by ID, and which pod
/// each belongs to. Two of them compared tell which pods changed (upstream's generic PLEG).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `(pod uid, state)` per sandbox or container ID.
    pub states: HashMap<String, (String, i32)>,
    /// Every pod with a sandbox, by UID.
    pub pods: HashMap<String, RuntimeIdentity>,
}

impl Snapshot {
    /// Lists every sandbox and container (two calls, whatever the number of pods).
    ///
    /// # Errors
    /// A CRI call failed.
    pub async fn take(cri: &Cri) -> Result<Snapshot, distro_cri::Error> {
        let sandboxes = cri.list_pod_sandboxes().await?;
        let containers = cri.list_containers().await?;
        let mut snap = Snapshot::default();
        for sb in sandboxes {
            let Some(uid) = sb.labels.get(LABEL_POD_UID).cloned() else {
                continue; // not made by a kubelet
            };
            let label = |k: &str| sb.labels.get(k).cloned().unwrap_or_default();
            snap.pods.insert(
                uid.clone(),
                RuntimeIdentity {
                    uid: uid.clone(),
                    namespace: label(LABEL_POD_NAMESPACE),
                    name: label(LABEL_POD_NAME),
                },
            );
            snap.states
                .insert(format!("sandbox/{}", sb.id), (uid, sb.state));
        }
        for c in containers {
            if let Some(uid) = c.labels.get(LABEL_POD_UID) {
                snap.states.insert(c.id, (uid.clone(), c.state));
            }
        }
        Ok(snap)
    }

    /// The pods whose sandboxes or containers appeared, vanished or changed state since
    /// `before`.
    pub fn changed_since(&self, before: &Snapshot) -> HashSet<String> {
        let mut out = HashSet::new();
        for (id, (uid, state)) in &self.states {
            if before.states.get(id).map(|(_, s)| s) != Some(state) {
                out.insert(uid.clone());
            }
        }
        for (id, (uid, _)) in &before.states {
            if !self.states.contains_key(id) {
                out.insert(uid.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(entries: &[(&str, &str, i32)]) -> Snapshot {
        Snapshot {
            states: entries
                .iter()
                .map(|(id, uid, s)| (id.to_string(), (uid.to_string(), *s)))
                .collect(),
            pods: HashMap::new(),
        }
    }

    #[test]
    fn changes_name_the_pods_they_belong_to() {
        let a = snap(&[("c1", "u1", 1), ("c2", "u2", 1), ("c3", "u3", 1)]);
        let b = snap(&[("c1", "u1", 1), ("c2", "u2", 2), ("c4", "u4", 0)]);
        let mut changed: Vec<String> = b.changed_since(&a).into_iter().collect();
        changed.sort();
        assert_eq!(changed, ["u2", "u3", "u4"]);
        assert!(b.changed_since(&b).is_empty());
    }
}

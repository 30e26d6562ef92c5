//! Upstream's VolumeBinding plugin, the part that needs no provisioner: a pod's claims must
//! exist and be bound, and the bound PersistentVolumes' node affinity must admit the node.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};

use crate::fit::{self, Reason};

/// Claims by `namespace/name` and volumes by name, from the caches.
#[derive(Clone, Debug, Default)]
pub struct Volumes {
    /// PersistentVolumeClaims by `namespace/name`.
    pub claims: HashMap<String, PersistentVolumeClaim>,
    /// PersistentVolumes by name.
    pub volumes: HashMap<String, PersistentVolume>,
}

/// The bound volumes `pod` uses; `Err` is upstream's PreFilter message that rejects every node
/// (a missing claim, or one not bound yet).
pub fn bound_volumes<'a>(pod: &Pod, v: &'a Volumes) -> Result<Vec<&'a PersistentVolume>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    let mut unbound = false;
    let claims = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|vol| vol.persistent_volume_claim.as_ref());
    for c in claims {
        let Some(claim) = v.claims.get(&format!("{ns}/{}", c.claim_name)) else {
            return Err(format!(
                "persistentvolumeclaim \"{}\" not found",
                c.claim_name
            ));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!(
                "persistentvolumeclaim \"{}\" is being deleted",
                c.claim_name
            ));
        }
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|n| !n.is_empty());
        match volume.and_then(|n| v.volumes.get(n)) {
            Some(pv) => out.push(pv),
            None => unbound = true,
        }
    }
    if unbound {
        return Err("pod has unbound immediate PersistentVolumeClaims".into());
    }
    Ok(out)
}

/// Whether every volume's required node affinity admits `node`.
pub fn filter(volumes: &[&PersistentVolume], node: &Node) -> Result<(), Reason> {
    let admits = |pv: &&PersistentVolume| {
        let required = pv
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref());
        required.is_none_or(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|t| fit::term_matches(t, node))
        })
    };
    if volumes.iter().all(admits) {
        Ok(())
    } else {
        Err(Reason::VolumeNodeAffinity)
    }
}

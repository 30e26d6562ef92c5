//! One scheduling attempt over a snapshot: the node-local filters of [`crate::fit`], then the
//! plugins that look across nodes (VolumeBinding, PodTopologySpread, InterPodAffinity), in
//! upstream's order, and the weighted sum of every score plugin.

use k8s_openapi::api::core::v1::{PersistentVolume, Pod};

use crate::fit::{self, NodeInfo, Reason};
use crate::interpod::{self, NamespaceLabels};
use crate::volume::{self, Volumes};
use crate::{image, spread};

/// Cluster state besides nodes and pods that plugins read.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Namespace labels, for pod affinity `namespaceSelector`.
    pub namespaces: NamespaceLabels,
    /// Claims and volumes, for volume node affinity.
    pub volumes: Volumes,
}

/// Upstream's default score weights of the cross-node plugins.
const WEIGHT_INTERPOD: i64 = 2;
const WEIGHT_SPREAD: i64 = 2;
const WEIGHT_IMAGE: i64 = 1;

/// The per-attempt state of the cross-node plugins (upstream's PreFilter results).
pub struct Cycle<'a> {
    pod: &'a Pod,
    cluster: &'a Cluster,
    /// The pod's bound volumes, or the PreFilter message rejecting every node.
    volumes: Result<Vec<PersistentVolume>, String>,
    spread: spread::State,
    interpod: interpod::State,
}

impl<'a> Cycle<'a> {
    /// Prepares the filters for `pod` over `nodes`.
    pub fn new(pod: &'a Pod, nodes: &[NodeInfo], cluster: &'a Cluster) -> Cycle<'a> {
        Cycle {
            pod,
            cluster,
            volumes: volume::bound_volumes(pod, &cluster.volumes)
                .map(|v| v.into_iter().cloned().collect()),
            spread: spread::State::new(pod, nodes),
            interpod: interpod::State::new(pod, nodes, &cluster.namespaces),
        }
    }

    /// The PreFilter failure that makes every node infeasible, if any.
    pub fn prefilter_error(&self) -> Option<&str> {
        self.volumes.as_ref().err().map(String::as_str)
    }

    /// Runs every filter on `node`; `Err` holds the first rejecting plugin's reasons.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Vec<Reason>> {
        fit::filter(self.pod, node)?;
        let volumes: Vec<&PersistentVolume> = match &self.volumes {
            Ok(v) => v.iter().collect(),
            Err(_) => return Err(Vec::new()),
        };
        volume::filter(&volumes, &node.node).map_err(|r| vec![r])?;
        self.spread.filter(node).map_err(|r| vec![r])?;
        self.interpod.filter(node).map_err(|r| vec![r])
    }

    /// Scores the `feasible` nodes (higher is better); `all` is every node, for counting pods
    /// and images cluster-wide.
    pub fn score(&self, all: &[NodeInfo], feasible: &[&NodeInfo]) -> Vec<i64> {
        let base = fit::score(self.pod, feasible);
        let inter = interpod::score(self.pod, all, feasible, &self.cluster.namespaces);
        let spread = spread::score(self.pod, all, feasible);
        let image = image::score(self.pod, all, feasible);
        (0..feasible.len())
            .map(|i| {
                base[i]
                    + WEIGHT_INTERPOD * inter[i]
                    + WEIGHT_SPREAD * spread[i]
                    + WEIGHT_IMAGE * image[i]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

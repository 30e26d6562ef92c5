//! Upstream's DefaultPreemption as a pure function: when a pod fits nowhere, find the node
//! where evicting the fewest, least important lower-priority pods makes it fit.
//!
//! Per node where preemption may help (see [`Reason::preemption_may_help`]): remove every pod
//! of lower priority; if the pod still does not fit, the node is out. Otherwise put the
//! removed pods back, most important first, keeping each that still leaves room; the rest
//! are the victims. Among candidate nodes, pick the one whose most important victim is least
//! important, then the lowest sum of victim priorities, then the fewest victims.
//! PodDisruptionBudgets are not consulted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::cycle::{Cluster, Cycle};
use crate::fit::{Diagnosis, NodeInfo, Reason};

/// A node and the pods to evict there.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The node the preemptor is nominated to.
    pub node: String,
    /// Pods to evict, most important first.
    pub victims: Vec<Arc<Pod>>,
}

/// A pod's priority (admission sets it; absent counts as 0).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Upstream's "no victims" status text.
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Upstream's text for nodes whose failure eviction cannot fix.
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// Why `pod` may not preempt at all (upstream's `PodEligibleToPreemptOthers`), as the
/// PostFilter message; `None` if it may.
pub fn ineligible(pod: &Pod, nodes: &[NodeInfo]) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec.preemption_policy.as_deref() == Some("Never") {
        return Some("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())?;
    let me = priority(pod);
    let waiting = nodes
        .iter()
        .find(|n| n.node.name_any() == nominated)
        .is_some_and(|n| {
            n.placed
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < me)
        });
    waiting
        .then(|| "preemption: not eligible due to a terminating pod on the nominated node.".into())
}

/// Whether `pod` fits `nodes[i]` once `nodes[i]` is replaced by `info`.
fn fits(
    pod: &Pod,
    nodes: &mut [NodeInfo],
    i: usize,
    info: NodeInfo,
    cluster: &Cluster,
) -> Result<(), Vec<Reason>> {
    nodes[i] = info;
    Cycle::new(pod, nodes, cluster).filter(&nodes[i])
}

/// Upstream's `MoreImportantPod`: higher priority, then started earlier.
fn importance(p: &Pod) -> (std::cmp::Reverse<i32>, Option<String>) {
    let started = p
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.to_string());
    (std::cmp::Reverse(priority(p)), started)
}

/// Finds the node and victims for `pod`, given the `diagnosis` of its failed attempt.
///
/// # Errors
/// The PostFilter message (`preemption: 0/N nodes are available: …`) when no node works.
pub fn find(
    pod: &Pod,
    nodes: &[NodeInfo],
    cluster: &Cluster,
    diagnosis: &Diagnosis,
) -> Result<Candidate, String> {
    let me = priority(pod);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut candidates = Vec::new();
    let mut view = nodes.to_vec();
    for (i, node) in nodes.iter().enumerate() {
        let name = node.node.name_any();
        if !diagnosis.may_help.contains(&name) {
            *statuses.entry(NOT_HELPFUL.into()).or_default() += 1;
            continue;
        }
        let mut potential: Vec<Arc<Pod>> = node
            .placed
            .iter()
            .filter(|p| priority(p) < me)
            .cloned()
            .collect();
        if potential.is_empty() {
            *statuses.entry(NO_VICTIMS.into()).or_default() += 1;
            continue;
        }
        let stripped = node.retain(|p| priority(p) >= me);
        if let Err(reasons) = fits(pod, &mut view, i, stripped.clone(), cluster) {
            for r in reasons {
                *statuses.entry(r.to_string()).or_default() += 1;
            }
            view[i] = node.clone();
            continue;
        }
        potential.sort_by_key(|p| importance(p));
        let mut kept = stripped;
        let mut victims = Vec::new();
        for p in potential {
            let mut trial = kept.clone();
            trial.add_shared(p.clone());
            if fits(pod, &mut view, i, trial.clone(), cluster).is_ok() {
                kept = trial;
            } else {
                victims.push(p);
            }
        }
        view[i] = node.clone();
        candidates.push(Candidate {
            node: name,
            victims,
        });
    }
    candidates
        .into_iter()
        .min_by_key(|c| {
            let top = c
                .victims
                .iter()
                .map(|v| priority(v))
                .max()
                .unwrap_or(i32::MIN);
            let sum: i64 = c.victims.iter().map(|v| i64::from(priority(v))).sum();
            (top, sum, c.victims.len(), c.node.clone())
        })
        .ok_or_else(|| {
            let mut parts: Vec<String> = statuses
                .iter()
                .map(|(reason, count)| format!("{count} {reason}"))
                .collect();
            parts.sort();
            format!(
                "preemption: 0/{} nodes are available: {}.",
                nodes.len(),
                parts.join(", ")
            )
        })
}

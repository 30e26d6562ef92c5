//! Upstream's PodTopologySpread plugin: `DoNotSchedule` constraints filter nodes whose domain
//! would exceed `maxSkew`, `ScheduleAnyway` constraints score nodes by how few matching pods
//! their domain already holds.
//!
//! Only pods in the incoming pod's namespace count, and only on nodes the constraint's
//! inclusion policies admit (`nodeAffinityPolicy` Honor by default: nodes matching the pod's
//! nodeSelector/required node affinity; `nodeTaintsPolicy` Ignore by default). Cluster-level
//! default constraints are not applied.

use std::collections::HashMap;

use distro_client::labels::Selector;
use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};

use crate::fit::{self, NodeInfo, Reason, MAX_SCORE};
use crate::selector::{self, Labels};

#[derive(Debug)]
struct Constraint {
    max_skew: i64,
    key: String,
    min_domains: usize,
    selector: Selector,
    honor_affinity: bool,
    honor_taints: bool,
    /// Whether the incoming pod itself matches (it adds one to its domain).
    self_match: bool,
}

fn pod_labels(pod: &Pod) -> Labels {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn constraints(pod: &Pod, hard: bool) -> Vec<Constraint> {
    let own = pod_labels(pod);
    let want = if hard {
        "DoNotSchedule"
    } else {
        "ScheduleAnyway"
    };
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == want)
        .map(|c: &TopologySpreadConstraint| {
            let selector = selector::compile(
                selector::with_match_label_keys(
                    c.label_selector.as_ref(),
                    c.match_label_keys.as_ref(),
                    &own,
                ),
                pod,
            );
            Constraint {
                max_skew: i64::from(c.max_skew),
                key: c.topology_key.clone(),
                min_domains: c.min_domains.map_or(1, |m| m.max(1) as usize),
                self_match: selector.matches(&own),
                selector,
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

impl Constraint {
    /// Whether `node`'s pods count for this constraint (its inclusion policies).
    fn admits(&self, pod: &Pod, node: &NodeInfo) -> bool {
        if self.honor_affinity && !fit::matches_node_selector(pod, &node.node) {
            return false;
        }
        if self.honor_taints {
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default();
            let untolerated = fit::effective_taints(&node.node).iter().any(|t| {
                (t.effect == "NoSchedule" || t.effect == "NoExecute")
                    && !tolerations.iter().any(|tol| fit::tolerates(tol, t))
            });
            if untolerated {
                return false;
            }
        }
        true
    }

    /// Matching pods on `node`: same namespace as `pod`, not being deleted.
    fn matching(&self, pod: &Pod, node: &NodeInfo) -> i64 {
        let ns = pod.metadata.namespace.as_deref();
        node.placed
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == ns)
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| self.selector.matches(&p.metadata.labels))
            .count() as i64
    }
}

/// Matching pods per domain value, over nodes having every key of `cs` and admitted by each
/// constraint; one map per constraint.
fn count(pod: &Pod, cs: &[Constraint], nodes: &[NodeInfo]) -> Vec<HashMap<String, i64>> {
    let mut counts = vec![HashMap::new(); cs.len()];
    for node in nodes {
        let labels = node.labels();
        if !cs.iter().all(|c| labels.contains_key(&c.key)) {
            continue;
        }
        for (c, m) in cs.iter().zip(counts.iter_mut()) {
            if !c.admits(pod, node) {
                continue;
            }
            let value = labels.get(&c.key).cloned().unwrap_or_default();
            *m.entry(value).or_insert(0) += c.matching(pod, node);
        }
    }
    counts
}

/// The filter's view, computed once per attempt (upstream's PreFilter state).
#[derive(Debug, Default)]
pub struct State {
    hard: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
}

impl State {
    /// Counts the pods each `DoNotSchedule` constraint of `pod` selects, per domain.
    pub fn new(pod: &Pod, nodes: &[NodeInfo]) -> State {
        let hard = constraints(pod, true);
        let counts = if hard.is_empty() {
            Vec::new()
        } else {
            count(pod, &hard, nodes)
        };
        State { hard, counts }
    }

    /// Rejects a node lacking a topology key, or whose domain would exceed `maxSkew` over the
    /// least-loaded domain (taken as 0 while fewer than `minDomains` domains exist).
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Reason> {
        let labels = node.labels();
        for (c, counts) in self.hard.iter().zip(&self.counts) {
            let Some(value) = labels.get(&c.key) else {
                return Err(Reason::SpreadMissingLabel);
            };
            let min = if counts.len() < c.min_domains {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let here = counts.get(value).copied().unwrap_or(0);
            if here + i64::from(c.self_match) - min > c.max_skew {
                return Err(Reason::Spread);
            }
        }
        Ok(())
    }
}

/// Scores `feasible` (0..=100) by `ScheduleAnyway` constraints: fewer matching pods in the
/// node's domains scores higher; each constraint weighs log(number of domains + 2), as
/// upstream. Nodes lacking a key score 0; no soft constraints score 0 everywhere.
pub fn score(pod: &Pod, all: &[NodeInfo], feasible: &[&NodeInfo]) -> Vec<i64> {
    let soft = constraints(pod, false);
    if soft.is_empty() {
        return vec![0; feasible.len()];
    }
    let counts = count(pod, &soft, all);
    let weights: Vec<f64> = soft
        .iter()
        .map(|c| {
            let mut domains: Vec<&String> = feasible
                .iter()
                .filter_map(|n| n.labels().get(&c.key))
                .collect();
            domains.sort();
            domains.dedup();
            ((domains.len() + 2) as f64).ln()
        })
        .collect();
    let raw: Vec<Option<i64>> = feasible
        .iter()
        .map(|n| {
            let labels = n.labels();
            let mut sum = 0.0;
            for ((c, m), w) in soft.iter().zip(&counts).zip(&weights) {
                let value = labels.get(&c.key)?;
                let here = m.get(value).copied().unwrap_or(0) as f64;
                sum += here * w + (c.max_skew - 1) as f64;
            }
            Some(sum.round() as i64)
        })
        .collect();
    let scored = raw.iter().flatten().copied();
    let (min, max) = (scored.clone().min().unwrap_or(0), scored.max().unwrap_or(0));
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_SCORE,
            Some(s) => MAX_SCORE * (max + min - s) / max,
        })
        .collect()
}

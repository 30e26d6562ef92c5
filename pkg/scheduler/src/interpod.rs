//! Upstream's InterPodAffinity plugin: required pod affinity and anti-affinity as a filter
//! (including the anti-affinity of pods already placed), preferred terms as a score.
//!
//! A term selects pods by label in some namespaces (`namespaces`, `namespaceSelector`, or the
//! owner's namespace when both are empty) and relates nodes through `topologyKey`: two nodes
//! share a domain when they have the same value for that label.

use std::collections::{HashMap, HashSet};

use distro_client::labels::Selector;
use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use crate::fit::{NodeInfo, Reason, MAX_SCORE};
use crate::selector::{self, Labels};

/// Namespace name → its labels, for `namespaceSelector`.
pub type NamespaceLabels = HashMap<String, Labels>;

/// Upstream's `hardPodAffinityWeight`: an existing pod's required affinity also draws the
/// incoming pod it selects, with this weight.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// A topology domain: (topology key, value).
type Domain = (String, String);

/// A term resolved against the pod that declares it.
#[derive(Debug)]
struct Term {
    selector: Selector,
    namespaces: HashSet<String>,
    /// Nothing when the term has no `namespaceSelector`.
    namespace_selector: Selector,
    key: String,
    weight: i64,
}

fn labels(pod: &Pod) -> &Labels {
    static EMPTY: Labels = Labels::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

impl Term {
    fn new(t: &PodAffinityTerm, owner: &Pod, weight: i64) -> Term {
        let own = labels(owner);
        let mut selector = selector::with_match_label_keys(
            t.label_selector.as_ref(),
            t.match_label_keys.as_ref(),
            own,
        );
        // mismatchLabelKeys: only pods with a different value of each key count.
        for key in t.mismatch_label_keys.iter().flatten() {
            if let (Some(sel), Some(v)) = (selector.as_mut(), own.get(key)) {
                sel.match_expressions.get_or_insert_with(Vec::new).push(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: key.clone(),
                        operator: "NotIn".into(),
                        values: Some(vec![v.clone()]),
                    },
                );
            }
        }
        let mut namespaces: HashSet<String> = t.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(namespace(owner).to_string());
        }
        Term {
            selector: selector::compile(selector, owner),
            namespaces,
            namespace_selector: selector::compile(t.namespace_selector.clone(), owner),
            key: t.topology_key.clone(),
            weight,
        }
    }

    fn matches(&self, pod: &Pod, ns_labels: &NamespaceLabels) -> bool {
        let ns = namespace(pod);
        let in_namespace =
            self.namespaces.contains(ns) || self.namespace_selector.matches(&ns_labels.get(ns));
        in_namespace && self.selector.matches(labels(pod))
    }

    /// The domain of `node` for this term, if the node has the topology label.
    fn domain(&self, node: &Labels) -> Option<Domain> {
        node.get(&self.key).map(|v| (self.key.clone(), v.clone()))
    }
}

fn required(pod: &Pod, anti: bool) -> Vec<Term> {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    } else {
        a.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    };
    terms
        .into_iter()
        .flatten()
        .map(|t| Term::new(t, pod, 0))
        .collect()
}

fn preferred(pod: &Pod, anti: bool) -> Vec<Term> {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms: Option<&Vec<WeightedPodAffinityTerm>> = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
    } else {
        a.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
    };
    let sign = if anti { -1 } else { 1 };
    terms
        .into_iter()
        .flatten()
        .map(|t| Term::new(&t.pod_affinity_term, pod, sign * i64::from(t.weight)))
        .collect()
}

fn has_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

/// What the filter needs, computed once per scheduling attempt (upstream's PreFilter state).
#[derive(Debug, Default)]
pub struct State {
    affinity: Vec<Term>,
    anti: Vec<Term>,
    /// Pods matching all of the incoming pod's required affinity terms, per domain.
    affinity_counts: HashMap<Domain, i64>,
    /// Pods matching one of its required anti-affinity terms, per domain.
    anti_counts: HashMap<Domain, i64>,
    /// Placed pods whose required anti-affinity selects the incoming pod, per domain.
    existing_anti: HashMap<Domain, i64>,
    /// Whether the incoming pod matches all its own affinity terms (the first of a group).
    self_match: bool,
}

impl State {
    /// Scans the placed pods of `nodes` for what the incoming `pod` is related to.
    pub fn new(pod: &Pod, nodes: &[NodeInfo], ns: &NamespaceLabels) -> State {
        let affinity = required(pod, false);
        let anti = required(pod, true);
        let self_match = affinity.iter().all(|t| t.matches(pod, ns));
        let mut s = State {
            affinity,
            anti,
            self_match,
            ..Default::default()
        };
        for node in nodes {
            let node_labels = node.labels();
            for p in &node.placed {
                if has_affinity(p) {
                    for t in required(p, true) {
                        if let Some(d) = t.domain(node_labels).filter(|_| t.matches(pod, ns)) {
                            *s.existing_anti.entry(d).or_default() += 1;
                        }
                    }
                }
                if !s.affinity.is_empty() && s.affinity.iter().all(|t| t.matches(p, ns)) {
                    for t in &s.affinity {
                        if let Some(d) = t.domain(node_labels) {
                            *s.affinity_counts.entry(d).or_default() += 1;
                        }
                    }
                }
                for t in &s.anti {
                    if let Some(d) = t.domain(node_labels).filter(|_| t.matches(p, ns)) {
                        *s.anti_counts.entry(d).or_default() += 1;
                    }
                }
            }
        }
        s
    }

    /// Upstream's filter order: the pod's affinity, its anti-affinity, then the anti-affinity
    /// of pods already placed.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Reason> {
        let labels = node.labels();
        let count = |map: &HashMap<Domain, i64>, d: &Domain| map.get(d).copied().unwrap_or(0);
        if !self.affinity.is_empty() {
            let mut pods_exist = true;
            for t in &self.affinity {
                match t.domain(labels) {
                    Some(d) => pods_exist &= count(&self.affinity_counts, &d) > 0,
                    None => return Err(Reason::PodAffinity),
                }
            }
            // The first pod of a group with affinity to itself may go anywhere.
            let first_of_group = self.affinity_counts.is_empty() && self.self_match;
            if !(pods_exist || first_of_group) {
                return Err(Reason::PodAffinity);
            }
        }
        if self.anti.iter().any(|t| {
            t.domain(labels)
                .is_some_and(|d| count(&self.anti_counts, &d) > 0)
        }) {
            return Err(Reason::PodAntiAffinity);
        }
        if self
            .existing_anti
            .iter()
            .any(|((k, v), n)| *n > 0 && labels.get(k) == Some(v))
        {
            return Err(Reason::ExistingAntiAffinity);
        }
        Ok(())
    }
}

/// Scores `feasible` (0..=100): the incoming pod's preferred (anti-)affinity to placed pods,
/// placed pods' preferred (anti-)affinity to it, and their required affinity to it (weight 1),
/// summed per topology domain and normalised between the lowest and highest node.
pub fn score(
    pod: &Pod,
    all: &[NodeInfo],
    feasible: &[&NodeInfo],
    ns: &NamespaceLabels,
) -> Vec<i64> {
    let mut terms = preferred(pod, false);
    terms.extend(preferred(pod, true));
    let mut domains: HashMap<Domain, i64> = HashMap::new();
    for node in all {
        let node_labels = node.labels();
        for p in &node.placed {
            for t in &terms {
                if let Some(d) = t.domain(node_labels).filter(|_| t.matches(p, ns)) {
                    *domains.entry(d).or_default() += t.weight;
                }
            }
            if !has_affinity(p) {
                continue;
            }
            let mut theirs = preferred(p, false);
            theirs.extend(preferred(p, true));
            theirs.extend(required(p, false).into_iter().map(|mut t| {
                t.weight = HARD_POD_AFFINITY_WEIGHT;
                t
            }));
            for t in theirs {
                if let Some(d) = t.domain(node_labels).filter(|_| t.matches(pod, ns)) {
                    *domains.entry(d).or_default() += t.weight;
                }
            }
        }
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|n| {
            let labels = n.labels();
            domains
                .iter()
                .filter(|((k, v), _)| labels.get(k) == Some(v))
                .map(|(_, w)| *w)
                .sum()
        })
        .collect();
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.iter()
        .map(|s| {
            if max > min {
                MAX_SCORE * (s - min) / (max - min)
            } else {
                0
            }
        })
        .collect()
}

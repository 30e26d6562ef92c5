//! The scheduling decision as pure functions: which nodes a pod fits (filters), how well
//! (scores), and upstream's words when none fits.
//!
//! Filters run in upstream's plugin order (NodeUnschedulable, TaintToleration, NodeAffinity,
//! NodePorts, NodeResourcesFit) and a node reports the first that rejects it, as upstream's
//! framework does, so the `FailedScheduling` histogram counts what kubectl users expect.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use distro_client::labels::{self, Operator, Requirement};

use crate::resources::{self, Resources, CPU, MEMORY, PODS};

/// A node with what is already placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node.
    pub node: Node,
    /// Sum of the requests of the pods bound to it.
    pub requested: Resources,
    /// Sum of their scoring requests (CPU, memory with defaults for unset requests).
    pub non_zero: (i64, i64),
    /// How many pods are bound to it.
    pub pods: i64,
    /// Host ports in use: (protocol, host IP, port).
    pub ports: HashSet<(String, String, i32)>,
    /// The pods themselves, for the plugins that look at their labels, affinities and
    /// priorities (inter-pod affinity, topology spread, preemption).
    pub placed: Vec<Arc<Pod>>,
}

impl NodeInfo {
    /// A node with nothing on it yet.
    pub fn new(node: Node) -> Self {
        NodeInfo {
            node,
            requested: Resources::new(),
            non_zero: (0, 0),
            pods: 0,
            ports: HashSet::new(),
            placed: Vec::new(),
        }
    }

    /// Counts `pod` as running here.
    pub fn add_pod(&mut self, pod: &Pod) {
        self.add_shared(Arc::new(pod.clone()));
    }

    /// Counts `pod` as running here without copying it (pods from the cache are shared).
    pub fn add_shared(&mut self, pod: Arc<Pod>) {
        let r = resources::pod_requests(&pod);
        let (cpu, mem) = resources::non_zero(&r);
        for (k, v) in r {
            *self.requested.entry(k).or_default() += v;
        }
        self.non_zero.0 += cpu;
        self.non_zero.1 += mem;
        self.pods += 1;
        self.ports.extend(host_ports(&pod));
        self.placed.push(pod);
    }

    /// The same node holding only the pods `keep` accepts (preemption's "what if these were
    /// gone").
    pub fn retain(&self, mut keep: impl FnMut(&Pod) -> bool) -> NodeInfo {
        let mut out = NodeInfo::new(self.node.clone());
        for p in self.placed.iter().filter(|p| keep(p)) {
            out.add_shared(p.clone());
        }
        out
    }

    /// The node's labels (empty when it has none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    fn allocatable(&self) -> Resources {
        resources::list(
            self.node
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref()),
        )
    }
}

/// Why a node was rejected; `Display` gives upstream's reason text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// `spec.unschedulable` (cordoned).
    Unschedulable,
    /// A NoSchedule/NoExecute taint the pod does not tolerate.
    Taint {
        /// Taint key.
        key: String,
        /// Taint value (may be empty).
        value: String,
    },
    /// nodeSelector or required node affinity does not match.
    Affinity,
    /// A requested host port is taken.
    Ports,
    /// The node has no pod slot left.
    TooManyPods,
    /// Not enough of a resource.
    Insufficient(String),
    /// A bound PersistentVolume's node affinity excludes the node.
    VolumeNodeAffinity,
    /// The node lacks a topology key of a DoNotSchedule spread constraint.
    SpreadMissingLabel,
    /// Placing the pod here would exceed a DoNotSchedule constraint's maxSkew.
    Spread,
    /// A pod already placed has required anti-affinity against the incoming pod here.
    ExistingAntiAffinity,
    /// The incoming pod's required pod affinity is not met here.
    PodAffinity,
    /// The incoming pod's required pod anti-affinity is violated here.
    PodAntiAffinity,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::Taint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::Affinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::Ports => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::VolumeNodeAffinity => f.write_str("node(s) had volume node affinity conflict"),
            Reason::SpreadMissingLabel => f.write_str(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ),
            Reason::Spread => f.write_str("node(s) didn't match pod topology spread constraints"),
            Reason::ExistingAntiAffinity => {
                f.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
            Reason::PodAffinity => f.write_str("node(s) didn't match pod affinity rules"),
            Reason::PodAntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
        }
    }
}

impl Reason {
    /// Whether evicting lower-priority pods could help (upstream's `Unschedulable` versus
    /// `UnschedulableAndUnresolvable`): evicting pods frees resources and ports, and may lift
    /// anti-affinity and spread skew; it cannot change labels, taints or volumes.
    pub fn preemption_may_help(&self) -> bool {
        matches!(
            self,
            Reason::Ports
                | Reason::TooManyPods
                | Reason::Insufficient(_)
                | Reason::Spread
                | Reason::ExistingAntiAffinity
                | Reason::PodAntiAffinity
        )
    }
}

/// Runs the filters; `Err` holds the reasons of the first filter that rejects the node
/// (resources may give several).
pub fn filter(pod: &Pod, info: &NodeInfo) -> Result<(), Vec<Reason>> {
    let spec = pod.spec.clone().unwrap_or_default();
    let node_spec = info.node.spec.clone().unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if node_spec.unschedulable == Some(true) && !tolerates_unschedulable(tolerations) {
        return Err(vec![Reason::Unschedulable]);
    }
    if let Some(t) = effective_taints(&info.node)
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        return Err(vec![Reason::Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        }]);
    }
    if !matches_node_selector(pod, &info.node) {
        return Err(vec![Reason::Affinity]);
    }
    if host_ports(pod)
        .iter()
        .any(|p| info.ports.iter().any(|used| ports_conflict(p, used)))
    {
        return Err(vec![Reason::Ports]);
    }
    let insufficient = insufficient(pod, info);
    if insufficient.is_empty() {
        Ok(())
    } else {
        Err(insufficient)
    }
}

fn insufficient(pod: &Pod, info: &NodeInfo) -> Vec<Reason> {
    let alloc = info.allocatable();
    let mut out = Vec::new();
    if info.pods + 1 > alloc.get(PODS).copied().unwrap_or(0) {
        out.push(Reason::TooManyPods);
    }
    for (name, want) in resources::pod_requests(pod) {
        if want <= 0 || name == PODS {
            continue;
        }
        let used = info.requested.get(&name).copied().unwrap_or(0);
        if used + want > alloc.get(&name).copied().unwrap_or(0) {
            out.push(Reason::Insufficient(name));
        }
    }
    out
}

/// The taints the scheduler honours: the node's, plus `node.kubernetes.io/not-ready` (or
/// `unreachable` when the Ready status is Unknown) for a node that is not Ready and lacks it.
/// Upstream's node lifecycle controller adds these taints; adding them here keeps pods off
/// unready nodes with upstream's message, while pods tolerating them (DaemonSets) still fit.
pub fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let key = match ready {
        Some("True") => None,
        Some("Unknown") => Some("node.kubernetes.io/unreachable"),
        _ => Some("node.kubernetes.io/not-ready"),
    };
    if let Some(key) = key {
        if !taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
    }
    taints
}

/// Upstream's NodeUnschedulable plugin lets pods that tolerate the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint onto cordoned nodes.
fn tolerates_unschedulable(tolerations: &[Toleration]) -> bool {
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    tolerations.iter().any(|t| tolerates(t, &taint))
}

/// Whether `tol` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect = tol.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            !key.is_empty()
                && tol.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// nodeSelector and required node affinity (both must hold).
pub fn matches_node_selector(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else {
        return true;
    };
    if let Some(sel) = &spec.node_selector {
        if !labels::set_matches(sel, &node.metadata.labels) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        // Terms are ORed; no terms matches nothing.
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// A term matches when all its expressions and fields do; an empty term matches nothing, and
/// so does an invalid one, as upstream's `nodeaffinity` (which reports the parse error).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name = node.metadata.name.as_deref().unwrap_or_default();
    fields.iter().all(|f| field_matches(f, name))
        && exprs
            .iter()
            .all(|e| requirement(e).is_some_and(|r| r.matches(&node.metadata.labels)))
}

/// A `matchExpressions` item as a label requirement (upstream's
/// `nodeSelectorRequirementsAsSelector`: its six operators, then `NewRequirement`'s
/// validation); `None` when invalid.
fn requirement(e: &NodeSelectorRequirement) -> Option<Requirement> {
    let op = match e.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        _ => return None,
    };
    Requirement::new(&e.key, op, e.values.clone().unwrap_or_default()).ok()
}

/// A `matchFields` item (upstream's `nodeSelectorRequirementsAsFieldSelector`): `In` or
/// `NotIn` with exactly one value, on `metadata.name`, the one node field upstream supports.
fn field_matches(f: &NodeSelectorRequirement, name: &str) -> bool {
    let [value] = f.values.as_deref().unwrap_or_default() else {
        return false;
    };
    f.key == "metadata.name"
        && match f.operator.as_str() {
            "In" => name == value,
            "NotIn" => name != value,
            _ => false,
        }
}

/// The host ports a pod asks for: (protocol, host IP, port), with upstream's defaults
/// (TCP, 0.0.0.0).
pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            let ip = p.host_ip.clone().filter(|ip| !ip.is_empty());
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip.unwrap_or_else(|| "0.0.0.0".into()),
                port,
            ))
        })
        .collect()
}

fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

/// Upstream's default score weights: resources (least allocated) 1, balanced allocation 1,
/// node affinity 2, taint toleration 3.
const WEIGHT_LEAST: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_AFFINITY: i64 = 2;
const WEIGHT_TAINT: i64 = 3;
/// Plugin scores range over 0..=100 (upstream's `MaxNodeScore`).
pub(crate) const MAX_SCORE: i64 = 100;

/// Scores the feasible nodes (same order as `nodes`); higher is better.
pub fn score(pod: &Pod, nodes: &[&NodeInfo]) -> Vec<i64> {
    let (cpu, mem) = resources::non_zero(&resources::pod_requests(pod));
    let affinity: Vec<i64> = nodes
        .iter()
        .map(|n| preferred_affinity(pod, &n.node))
        .collect();
    let taints: Vec<i64> = nodes
        .iter()
        .map(|n| intolerable_prefer_no_schedule(pod, &n.node))
        .collect();
    let max_affinity = affinity.iter().copied().max().unwrap_or(0);
    let max_taints = taints.iter().copied().max().unwrap_or(0);
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let alloc = n.allocatable();
            let fractions = [
                (n.non_zero.0 + cpu, alloc.get(CPU).copied().unwrap_or(0)),
                (n.non_zero.1 + mem, alloc.get(MEMORY).copied().unwrap_or(0)),
            ];
            let affinity = if max_affinity > 0 {
                affinity[i] * MAX_SCORE / max_affinity
            } else {
                0
            };
            let taint = if max_taints > 0 {
                MAX_SCORE - taints[i] * MAX_SCORE / max_taints
            } else {
                MAX_SCORE
            };
            WEIGHT_LEAST * least_allocated(&fractions)
                + WEIGHT_BALANCED * balanced(&fractions)
                + WEIGHT_AFFINITY * affinity
                + WEIGHT_TAINT * taint
        })
        .collect()
}

/// Mean over resources of the free share after placing the pod (upstream's LeastAllocated).
fn least_allocated(used_and_alloc: &[(i64, i64)]) -> i64 {
    let each: Vec<i64> = used_and_alloc
        .iter()
        .map(|&(used, alloc)| {
            if alloc <= 0 || used > alloc {
                0
            } else {
                (alloc - used) * MAX_SCORE / alloc
            }
        })
        .collect();
    each.iter().sum::<i64>() / each.len().max(1) as i64
}

/// 100 × (1 − standard deviation of the used shares), favouring nodes whose resources are used
/// evenly (upstream's BalancedAllocation).
fn balanced(used_and_alloc: &[(i64, i64)]) -> i64 {
    let shares: Vec<f64> = used_and_alloc
        .iter()
        .map(|&(used, alloc)| {
            if alloc <= 0 {
                1.0
            } else {
                (used as f64 / alloc as f64).min(1.0)
            }
        })
        .collect();
    let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
    let var = shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / shares.len().max(1) as f64;
    ((1.0 - var.sqrt()) * MAX_SCORE as f64) as i64
}

/// Sum of the weights of the preferred node affinity terms the node matches.
fn preferred_affinity(pod: &Pod, node: &Node) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| term_matches(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// PreferNoSchedule taints the pod does not tolerate; upstream only considers tolerations
/// with an empty or PreferNoSchedule effect here.
fn intolerable_prefer_no_schedule(pod: &Pod, node: &Node) -> i64 {
    let tolerations: Vec<&Toleration> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

/// Why no node fits, counted per reason, for upstream's `FitError` message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// Nodes considered.
    pub nodes: usize,
    /// Reason → how many nodes gave it.
    pub reasons: BTreeMap<String, usize>,
    /// Nodes where evicting pods could make room.
    pub may_help: HashSet<String>,
    /// A PreFilter failure that rejected every node at once (e.g. a missing claim).
    pub prefilter: Option<String>,
}

impl Diagnosis {
    /// Records the rejection of node `name`.
    pub fn add(&mut self, name: &str, reasons: &[Reason]) {
        self.nodes += 1;
        for r in reasons {
            *self.reasons.entry(r.to_string()).or_default() += 1;
        }
        if reasons.iter().any(Reason::preemption_may_help) {
            self.may_help.insert(name.to_string());
        }
    }

    /// The message upstream puts in the `PodScheduled` condition and the `FailedScheduling`
    /// event: the reason histogram (or the PreFilter failure), then what preemption said
    /// (`postfilter`, empty when preemption nominated a node).
    pub fn message(&self, postfilter: &str) -> String {
        if self.nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let n = self.nodes;
        let detail = match &self.prefilter {
            Some(m) => m.clone(),
            None => {
                let mut histogram: Vec<String> = self
                    .reasons
                    .iter()
                    .map(|(reason, count)| format!("{count} {reason}"))
                    .collect();
                histogram.sort();
                histogram.join(", ")
            }
        };
        let mut msg = format!("0/{n} nodes are available: {detail}.");
        if !postfilter.is_empty() {
            msg.push(' ');
            msg.push_str(postfilter);
        }
        msg
    }
}

#[cfg(test)]
mod tests;

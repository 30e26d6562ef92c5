//! The DaemonSet controller, as upstream's (`pkg/controller/daemon`): one pod per eligible
//! node.
//!
//! A node is eligible when the pod, with the DaemonSet default tolerations added, fits it:
//! nodeSelector and required node affinity match and every NoSchedule/NoExecute taint is
//! tolerated ([`should_run`]). A pod may stay on a node whose new NoSchedule taint it does not
//! tolerate, but not under an untolerated NoExecute one. Pods are pinned with a node affinity
//! `matchFields metadata.name` term and bound by the scheduler, as upstream (not `nodeName`).
//!
//! Each pass snapshots the template as a ControllerRevision ([`crate::history`]); pods carry
//! its hash as `controller-revision-hash`. RollingUpdate replaces out-of-date pods within
//! `maxUnavailable`, or with `maxSurge` starts the new pod beside the old one and deletes the
//! old once the new is available ([`plan`], pure). Expectations remember our creates and
//! deletes until the cache shows them, so a lagging cache never doubles a node's pod.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distro_client::labels::{self, Selector};
use distro_scheduler::fit;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::deployment::rollout::scaled;
use crate::expectations::{Expect, PodExpectations};
use crate::history::{self, Ensured, Parent, HASH_LABEL, POD_REVISION_LABEL};
use crate::objects::{
    adopt_pod, api_message, controller_of, controller_ref, object_ref, owners_to_wake,
    workload_selector, EventType, Recorder,
};
use crate::replicaset::{is_available, slow_start_batches};
use crate::{Backoff, Clients, Error};

/// The identity this controller writes as (upstream's service account name).
pub const IDENTITY: &str = "daemon-set-controller";

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "daemonset-controller";

/// The (deprecated, still set by upstream) label with the DaemonSet generation a pod was
/// made from.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// Requeue delay while waiting for the pod cache to catch up with our own writes.
const EXPECTATIONS_REQUEUE: Duration = Duration::from_secs(1);

/// Upstream's cap on pods created or deleted in one pass (`BurstReplicas`).
const BURST_REPLICAS: usize = 250;

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    backoff: Backoff,
    expectations: PodExpectations,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let sets = clients.informers.get::<DaemonSet>();
    let pods = clients.informers.get::<Pod>();
    let nodes = clients.informers.get::<Node>();
    let revisions = clients.informers.get::<ControllerRevision>();
    let ctx = Arc::new(Ctx {
        client: clients.writer(IDENTITY),
        events: Recorder::new(clients.writer(IDENTITY).clone(), COMPONENT, None),
        pods: pods.store(),
        nodes: nodes.store(),
        revisions: revisions.store(),
        backoff: Backoff::default(),
        expectations: PodExpectations::default(),
    });
    let all = sets.store();
    let for_orphans = sets.store();
    let results = Controller::for_shared_stream(sets.subscribe(), sets.store())
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            owners_to_wake(&pod, &for_orphans, |ds: &DaemonSet, pod| {
                let selector = ds.spec.as_ref().map(|s| &s.selector);
                labels::selector(selector).is_ok_and(|sel| adoptable(ds, &sel, pod))
            })
        })
        .watches_shared_stream(revisions.subscribe(), |r: Arc<ControllerRevision>| {
            controller_of::<DaemonSet>(&r.metadata)
        })
        // A node change (labels, taints, a new node) may concern every DaemonSet.
        .watches_shared_stream(nodes.subscribe(), move |_: Arc<Node>| {
            all.state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

/// Whether `ds` may adopt orphan `pod`: the selector matches and neither is going away
/// (upstream's `PodControllerRefManager`).
fn adoptable(ds: &DaemonSet, selector: &Selector, pod: &Pod) -> bool {
    controller_ref(&pod.metadata).is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && ds.metadata.deletion_timestamp.is_none()
        && selector.matches(&pod.metadata.labels)
}

fn key(ds: &DaemonSet) -> String {
    format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any())
}

fn error_policy(ds: Arc<DaemonSet>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&ds)))
}

/// The tolerations upstream adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`), so
/// daemons survive node trouble that evicts or keeps off other pods.
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut t = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        t.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    t.into_iter()
        .map(|(key, effect)| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        })
        .collect()
}

/// Adds `tol` to `list`, replacing one with the same key, operator, value and effect (upstream's
/// `AddOrUpdateTolerationInPodSpec`).
fn add_or_update(list: &mut Vec<Toleration>, tol: Toleration) {
    let same = |a: &Toleration| {
        a.key == tol.key
            && a.effect == tol.effect
            && a.operator.as_deref().unwrap_or("Equal")
                == tol.operator.as_deref().unwrap_or("Equal")
            && a.value.as_deref().unwrap_or_default() == tol.value.as_deref().unwrap_or_default()
    };
    match list.iter_mut().find(|a| same(a)) {
        Some(existing) => *existing = tol,
        None => list.push(tol),
    }
}

/// The template daemon pods are made from: the DaemonSet's, with the default tolerations and
/// the revision labels (upstream's `CreatePodTemplate`).
pub fn daemon_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut t = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let spec = t.spec.get_or_insert_with(Default::default);
    let host_network = spec.host_network == Some(true);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for tol in default_tolerations(host_network) {
        add_or_update(tolerations, tol);
    }
    let meta = t.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    if !hash.is_empty() {
        labels.insert(POD_REVISION_LABEL.into(), hash.into());
    }
    if let Some(g) = ds.metadata.generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
    }
    t
}

/// The required node affinity of `affinity` replaced by one term selecting `node` by name
/// (upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`); preferred terms are kept.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    });
    a
}

/// The node a daemon pod is for: where it is bound, else the node its affinity pins it to
/// (upstream's `GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            let values = f.values.as_deref().unwrap_or_default();
            (f.key == "metadata.name" && f.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

/// Whether a daemon pod from `template` should be started on `node`, and whether one already
/// there may stay (upstream's `NodeShouldRunDaemonPod`).
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let spec = template.spec.clone().unwrap_or_default();
    if spec
        .node_name
        .as_ref()
        .is_some_and(|n| !n.is_empty() && *n != node_name)
    {
        return (false, false);
    }
    let pod = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: Some(spec),
        status: None,
    };
    if !fit::matches_node_selector(&pod, node) {
        return (false, false);
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let untolerated = |t: &Taint| !tolerations.iter().any(|tol| fit::tolerates(tol, t));
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let blocking = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .any(untolerated);
    if !blocking {
        return (true, true);
    }
    let evicting = taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .any(untolerated);
    (false, !evicting)
}

/// Whether a pod is of the current template: by revision hash, or by template generation
/// (upstream's `IsPodUpdated`).
pub fn is_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    (!hash.is_empty() && label(POD_REVISION_LABEL) == Some(hash))
        || generation.is_some_and(|g| label(TEMPLATE_GENERATION_LABEL) == Some(&g.to_string()))
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn by_age(pods: &mut [&Pod]) {
    pods.sort_by(|a, b| {
        let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// The work of one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Nodes to start a daemon pod on.
    pub create: Vec<String>,
    /// Pods to delete (name, uid, why: the event-worthy reason or empty).
    pub delete: Vec<(String, String)>,
    /// Failed pods found (name, node), reported as `FailedDaemonPod`.
    pub failed: Vec<(String, String)>,
}

/// What one pass should do, as upstream's `manage` then `rollingUpdate`: `pods` are the set's
/// live pods by target node, `hash` the current revision's.
pub fn plan(
    ds: &DaemonSet,
    nodes: &[&Node],
    pods: &BTreeMap<String, Vec<&Pod>>,
    hash: &str,
    now: Timestamp,
) -> Plan {
    let template = daemon_template(ds, hash);
    let spec = ds.spec.as_ref();
    let min_ready = i64::from(spec.and_then(|s| s.min_ready_seconds).unwrap_or(0));
    let generation = ds.metadata.generation;
    let (surge, unavailable) = budgets(ds, nodes, &template);
    let mut out = Plan::default();
    let known: HashSet<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let delete = |p: &Pod, out: &mut Plan| {
        out.delete.push((p.name_any(), p.uid().unwrap_or_default()));
    };
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (run, stay) = should_run(&template, node);
        let here: Vec<&Pod> = pods.get(&name).cloned().unwrap_or_default();
        if run && here.is_empty() {
            out.create.push(name);
            continue;
        }
        if !stay {
            for p in here {
                delete(p, &mut out);
            }
            continue;
        }
        let mut running: Vec<&Pod> = Vec::new();
        for p in here {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") {
                out.failed.push((p.name_any(), name.clone()));
                delete(p, &mut out);
            } else {
                running.push(p);
            }
        }
        if run && running.is_empty() {
            out.create.push(name);
            continue;
        }
        // More than one pod: keep the oldest (with surge, the oldest old and oldest new).
        by_age(&mut running);
        if surge > 0 {
            let (new, old): (Vec<&Pod>, Vec<&Pod>) = running
                .iter()
                .partition(|p| is_updated(p, hash, generation));
            for p in new.iter().skip(1).chain(old.iter().skip(1)) {
                delete(p, &mut out);
            }
            // An available new pod replaces the old one.
            if let (Some(n), Some(o)) = (new.first(), old.first()) {
                if is_available(n, min_ready, now) {
                    delete(o, &mut out);
                }
            }
        } else {
            for p in running.iter().skip(1) {
                delete(p, &mut out);
            }
        }
    }
    // Pods pinned to nodes that are gone can never run.
    for (node, here) in pods {
        if !known.contains(node) {
            for p in here {
                delete(p, &mut out);
            }
        }
    }
    if !is_rolling(ds) {
        return out;
    }
    // Rolling update over the nodes that keep a pod (upstream's `rollingUpdate`).
    let touched: HashSet<&str> = out.delete.iter().map(|(n, _)| n.as_str()).collect();
    let mut candidates: Vec<&Pod> = Vec::new();
    let mut replace_now: Vec<&Pod> = Vec::new();
    let mut new_nodes_now: Vec<String> = Vec::new();
    let mut new_node_candidates: Vec<String> = Vec::new();
    let (mut num_unavailable, mut num_surge) = (0usize, 0usize);
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (_, stay) = should_run(&template, node);
        if !stay {
            continue;
        }
        let mut here: Vec<&Pod> = pods
            .get(&name)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !touched.contains(p.name_any().as_str()))
            .collect();
        by_age(&mut here);
        let new = here
            .iter()
            .find(|p| is_updated(p, hash, generation))
            .copied();
        let old = here
            .iter()
            .find(|p| !is_updated(p, hash, generation))
            .copied();
        match (new, old) {
            (None, None) => num_unavailable += 1,
            (Some(n), None) => {
                if !is_available(n, min_ready, now) {
                    num_unavailable += 1;
                }
            }
            (None, Some(o)) if surge == 0 => {
                if !is_available(o, min_ready, now) {
                    replace_now.push(o);
                } else if num_unavailable < unavailable {
                    candidates.push(o);
                }
            }
            (None, Some(o)) => {
                if !is_available(o, min_ready, now) {
                    new_nodes_now.push(name);
                } else {
                    new_node_candidates.push(name);
                }
            }
            (Some(_), Some(_)) => {
                // A surge in progress; manage deletes the old once the new is available.
                num_surge += 1;
            }
        }
    }
    if surge == 0 {
        let room = unavailable
            .saturating_sub(num_unavailable)
            .min(candidates.len());
        for p in replace_now
            .into_iter()
            .chain(candidates.into_iter().take(room))
        {
            delete(p, &mut out);
        }
    } else {
        let room = surge
            .saturating_sub(num_surge)
            .min(new_node_candidates.len());
        out.create.extend(new_nodes_now);
        out.create
            .extend(new_node_candidates.into_iter().take(room));
    }
    out
}

fn is_rolling(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `(maxSurge, maxUnavailable)` scaled to the number of eligible nodes, rounding up; both
/// zero means one unavailable (upstream's `updatedDesiredNodeCount` handling).
fn budgets(ds: &DaemonSet, nodes: &[&Node], template: &PodTemplateSpec) -> (usize, usize) {
    let desired = nodes.iter().filter(|n| should_run(template, n).0).count() as i32;
    let ru = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref());
    let surge = ru
        .and_then(|r| r.max_surge.as_ref())
        .map(|v| scaled(v, desired, true))
        .unwrap_or(0)
        .max(0) as usize;
    let unavailable = scaled(
        ru.and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&IntOrString::Int(1)),
        desired,
        true,
    )
    .max(0) as usize;
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

/// The status of a pass (upstream's `updateDaemonSetStatus`).
pub fn compute_status(
    ds: &DaemonSet,
    nodes: &[&Node],
    pods: &BTreeMap<String, Vec<&Pod>>,
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let template = daemon_template(ds, hash);
    let min_ready = i64::from(
        ds.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    );
    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        ..Default::default()
    };
    let (mut ready_n, mut available, mut updated) = (0, 0, 0);
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (run, _) = should_run(&template, node);
        let mut here: Vec<&Pod> = pods.get(&name).cloned().unwrap_or_default();
        if run {
            st.desired_number_scheduled += 1;
            by_age(&mut here);
            if let Some(p) = here.first() {
                st.current_number_scheduled += 1;
                if ready(p) {
                    ready_n += 1;
                    if is_available(p, min_ready, now) {
                        available += 1;
                    }
                }
                if is_updated(p, hash, ds.metadata.generation) {
                    updated += 1;
                }
            }
        } else if !here.is_empty() {
            st.number_misscheduled += 1;
        }
    }
    st.number_ready = ready_n;
    st.number_available = Some(available);
    st.updated_number_scheduled = Some(updated);
    st.number_unavailable = Some(st.desired_number_scheduled - available);
    st
}

fn owner_ref(ds: &DaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: ds.name_any(),
        uid: ds.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The daemon pod for `node`.
pub fn pod_for(ds: &DaemonSet, template: &PodTemplateSpec, node: &str) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key(&ds);
    let ns = ds.namespace().unwrap_or_default();
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let Some(selector) = workload_selector(&spec.selector, &key) else {
        return Ok(Action::await_change());
    };
    let uid = ds.uid().unwrap_or_default();
    let all_pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let mut adopted: Vec<Pod> = Vec::new();
    for orphan in all_pods.iter().filter(|p| adoptable(&ds, &selector, p)) {
        adopted.extend(adopt_pod(&ctx.client, owner_ref(&ds), orphan).await?);
    }
    let owned: Vec<&Pod> = all_pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
        .chain(adopted.iter())
        .filter(|p| selector.matches(&p.metadata.labels))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &owned {
        if let Some(n) = target_node(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let node_list = ctx.nodes.state();
    let nodes: Vec<&Node> = node_list.iter().map(|n| n.as_ref()).collect();

    let parent = Parent {
        kind: "DaemonSet",
        name: ds.name_any(),
        namespace: ns.clone(),
        uid: uid.clone(),
        labels: spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        annotations: ds.metadata.annotations.clone().unwrap_or_default(),
    };
    let revs = history::owned(&ctx.revisions, &parent);
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let current = match history::ensure(
        &ctx.client,
        &parent,
        &revs,
        history::template_patch(&spec.template),
        collisions,
    )
    .await?
    {
        Ensured::Revision(r) => *r,
        Ensured::Collision => {
            let mut status = ds.status.clone().unwrap_or_default();
            status.collision_count = Some(collisions.unwrap_or(0) + 1);
            update_status(&ctx, &ds, status).await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
    };
    let hash = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL).cloned())
        .unwrap_or_default();

    let now = Timestamp::now();
    let satisfied = ctx.expectations.met(&key, &all_pods);
    let mut failure = None;
    let mut requeue = None;
    if !satisfied {
        requeue = Some(EXPECTATIONS_REQUEUE);
    } else if ds.metadata.deletion_timestamp.is_none() {
        let p = plan(&ds, &nodes, &by_node, &hash, now);
        failure = execute(&ctx, &ds, &hash, p).await;
    }

    let status = compute_status(&ds, &nodes, &by_node, &hash, now);
    if ds.status.as_ref() != Some(&status) {
        update_status(&ctx, &ds, status.clone()).await?;
    }
    let live: HashSet<String> = std::iter::once(current.name_any())
        .chain(revs.iter().filter_map(|r| {
            let h = r.metadata.labels.as_ref()?.get(HASH_LABEL)?;
            owned
                .iter()
                .any(|p| is_updated(p, h, None))
                .then(|| r.name_any())
        }))
        .collect();
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    history::truncate(&ctx.client, &parent, &revs, &live, limit).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    ctx.backoff.succeeded(&key);
    // Pods turn available without any event once minReadySeconds pass: look again then.
    if status.number_available != Some(status.number_ready) {
        requeue = Some(requeue.unwrap_or(Duration::from_secs(1)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Carries out a plan: deletes first, then creates in slow-start batches. Returns the first
/// failure.
async fn execute(ctx: &Ctx, ds: &DaemonSet, hash: &str, plan: Plan) -> Option<Error> {
    let key = key(ds);
    let ns = ds.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for (pod, node) in &plan.failed {
        ctx.events.record(
            object_ref(ds),
            EventType::Warning,
            "FailedDaemonPod",
            format!("Found failed daemon pod {ns}/{pod} on node {node}, will try to kill it"),
        );
    }
    let mut failure = None;
    let deletes: Vec<(String, String)> = plan.delete.into_iter().take(BURST_REPLICAS).collect();
    ctx.expectations
        .expect(&key, deletes.iter().map(|(_, u)| Expect::Delete(u.clone())));
    for (name, uid) in deletes {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => ctx.events.record(
                object_ref(ds),
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                ctx.events.record(
                    object_ref(ds),
                    EventType::Warning,
                    "FailedDelete",
                    format!("Error deleting: {}", api_message(&e)),
                );
                ctx.expectations.forget(&key);
                failure.get_or_insert(Error::api(format!("deleting pod {ns}/{name}"))(e));
            }
        }
    }
    if failure.is_some() {
        return failure;
    }
    let template = daemon_template(ds, hash);
    let mut nodes = plan.create.into_iter().take(BURST_REPLICAS);
    for batch in slow_start_batches(nodes.len()) {
        let pods: Vec<Pod> = nodes
            .by_ref()
            .take(batch)
            .map(|n| pod_for(ds, &template, &n))
            .collect();
        let pp = PostParams::default();
        let results = futures::future::join_all(pods.iter().map(|p| api.create(&pp, p))).await;
        let mut created = Vec::new();
        for r in results {
            match r {
                Ok(p) => {
                    let name = p.name_any();
                    ctx.events.record(
                        object_ref(ds),
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    );
                    created.push(name);
                }
                Err(e) if crate::namespace_closed(&e) => {}
                Err(e) => {
                    ctx.events.record(
                        object_ref(ds),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {}", api_message(&e)),
                    );
                    failure
                        .get_or_insert(Error::api(format!("creating pods for DaemonSet {key}"))(e));
                }
            }
        }
        ctx.expectations
            .expect(&key, created.into_iter().map(Expect::Create));
        if failure.is_some() {
            // Later batches would fail the same way.
            return failure;
        }
    }
    None
}

/// Writes the status with PUT (upstream's role grants only `update` on the subresource),
/// re-reading once on a conflict as the cache may be behind.
async fn update_status(ctx: &Ctx, ds: &DaemonSet, status: DaemonSetStatus) -> Result<(), Error> {
    let api: Api<DaemonSet> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    let name = ds.name_any();
    let what = || format!("updating the status of DaemonSet {}", key(ds));
    let mut current = ds.clone();
    for attempt in 0..2 {
        current.status = Some(status.clone());
        match api
            .replace_status(&name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt == 0 => {
                match api.get_opt(&name).await.map_err(Error::api(what()))? {
                    Some(fresh) if fresh.uid() == ds.uid() => current = fresh,
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(Error::api(what())(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ds(strategy: serde_json::Value) -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u1", "generation": 3},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "updateStrategy": strategy,
                "template": {"metadata": {"labels": {"app": "agent"}},
                             "spec": {"nodeSelector": {"role": "worker"},
                                      "containers": [{"name": "c", "image": "agent"}]}},
            }
        }))
        .unwrap()
    }

    fn node(name: &str, role: &str, taint: Option<&str>) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"role": role}},
            "spec": {"taints": taint.map(|e| vec![serde_json::json!({"key": "dedicated", "effect": e})])},
        }))
        .unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str, ready_at: Option<i64>) -> Pod {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(Timestamp::from_second(1).unwrap())),
                labels: Some(BTreeMap::from([(POD_REVISION_LABEL.into(), hash.into())])),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        };
        p.spec = Some(
            pod_for(
                &ds(serde_json::json!({})),
                &PodTemplateSpec::default(),
                node,
            )
            .spec
            .unwrap(),
        );
        p
    }

    fn by_node(pods: &[Pod]) -> BTreeMap<String, Vec<&Pod>> {
        let mut m: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for p in pods {
            m.entry(target_node(p).unwrap()).or_default().push(p);
        }
        m
    }

    #[test]
    fn eligibility_follows_selector_and_taints() {
        let d = ds(serde_json::json!({}));
        let t = daemon_template(&d, "h");
        assert_eq!(should_run(&t, &node("a", "worker", None)), (true, true));
        assert_eq!(should_run(&t, &node("b", "infra", None)), (false, false));
        assert_eq!(
            should_run(&t, &node("c", "worker", Some("NoSchedule"))),
            (false, true)
        );
        assert_eq!(
            should_run(&t, &node("d", "worker", Some("NoExecute"))),
            (false, false)
        );
        // The default tolerations let daemons onto cordoned and pressured nodes.
        let cordoned: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e", "labels": {"role": "worker"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                                {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]},
        }))
        .unwrap();
        assert_eq!(should_run(&t, &cordoned), (true, true));
    }

    #[test]
    fn pods_are_pinned_by_affinity_not_node_name() {
        let d = ds(serde_json::json!({}));
        let p = pod_for(&d, &daemon_template(&d, "h"), "n1");
        let spec = p.spec.as_ref().unwrap();
        assert!(spec.node_name.is_none());
        assert_eq!(target_node(&p).as_deref(), Some("n1"));
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_REVISION_LABEL], "h");
        assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "3");
        let tolerations = spec.tolerations.as_ref().unwrap();
        assert_eq!(
            tolerations.len(),
            6,
            "no network-unavailable without hostNetwork"
        );
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
    }

    #[test]
    fn user_tolerations_are_replaced_by_the_defaults_they_match() {
        let mut list = vec![Toleration {
            key: Some("node.kubernetes.io/not-ready".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(30),
            ..Default::default()
        }];
        for t in default_tolerations(true) {
            add_or_update(&mut list, t);
        }
        assert_eq!(list.len(), 7);
        assert_eq!(list[0].toleration_seconds, None);
    }

    #[test]
    fn manage_creates_on_eligible_nodes_and_removes_misscheduled() {
        let d = ds(serde_json::json!({"type": "OnDelete"}));
        let (a, b, c) = (
            node("a", "worker", None),
            node("b", "infra", None),
            node("c", "worker", None),
        );
        let pods = [
            pod("on-b", "b", "h", Some(0)),
            pod("on-gone", "z", "h", Some(0)),
        ];
        let p = plan(
            &d,
            &[&a, &b, &c],
            &by_node(&pods),
            "h",
            Timestamp::from_second(100).unwrap(),
        );
        assert_eq!(p.create, ["a", "c"]);
        let deleted: Vec<&str> = p.delete.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(deleted, ["on-b", "on-gone"]);
        let st = compute_status(
            &d,
            &[&a, &b, &c],
            &by_node(&pods),
            "h",
            Timestamp::from_second(100).unwrap(),
        );
        assert_eq!(
            (
                st.desired_number_scheduled,
                st.current_number_scheduled,
                st.number_misscheduled
            ),
            (2, 0, 1)
        );
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let d = ds(
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
        );
        let nodes = [
            node("a", "worker", None),
            node("b", "worker", None),
            node("c", "worker", None),
        ];
        let refs: Vec<&Node> = nodes.iter().collect();
        let now = Timestamp::from_second(100).unwrap();
        let old = [
            pod("pa", "a", "old", Some(0)),
            pod("pb", "b", "old", Some(0)),
            pod("pc", "c", "old", Some(0)),
        ];
        let p = plan(&d, &refs, &by_node(&old), "new", now);
        assert_eq!(p.delete.len(), 1, "one at a time: {p:?}");
        assert!(p.create.is_empty());
        // A new pod not yet available uses up the budget.
        let mid = [
            pod("pa", "a", "new", None),
            pod("pb", "b", "old", Some(0)),
            pod("pc", "c", "old", Some(0)),
        ];
        assert!(plan(&d, &refs, &by_node(&mid), "new", now)
            .delete
            .is_empty());
        let st = compute_status(&d, &refs, &by_node(&mid), "new", now);
        assert_eq!((st.updated_number_scheduled, st.number_ready), (Some(1), 2));
    }

    #[test]
    fn surge_starts_new_pods_beside_old_ones() {
        let d = ds(
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
        );
        let nodes = [node("a", "worker", None), node("b", "worker", None)];
        let refs: Vec<&Node> = nodes.iter().collect();
        let now = Timestamp::from_second(100).unwrap();
        let old = [
            pod("pa", "a", "old", Some(0)),
            pod("pb", "b", "old", Some(0)),
        ];
        let p = plan(&d, &refs, &by_node(&old), "new", now);
        assert_eq!((p.create.len(), p.delete.len()), (1, 0));
        // The new pod became available: the old one on its node goes.
        let both = [
            pod("pa", "a", "old", Some(0)),
            pod("na", "a", "new", Some(50)),
            pod("pb", "b", "old", Some(0)),
        ];
        let p = plan(&d, &refs, &by_node(&both), "new", now);
        let deleted: Vec<&str> = p.delete.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(deleted, ["pa"]);
    }
}

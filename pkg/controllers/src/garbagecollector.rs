//! The garbage collector, as upstream's (`pkg/controller/garbagecollector`): deletes objects
//! whose owners are gone and carries out `foregroundDeletion` and `orphan` propagation.
//!
//! # Design
//! Every resource that discovery lists as listable, watchable and deletable (custom resources
//! included; rediscovered periodically) is watched as `DynamicObject`; only metadata is kept,
//! in a graph of nodes by uid with an owner-uid → dependents index. Graph changes queue uids
//! for one dispatcher that runs a bounded number of checks at once, one per uid at a time,
//! and retries failures with per-uid backoff:
//! - an owned object whose owners are all gone (absent, or present under another uid — the
//!   live API is asked before trusting a cache miss) is deleted, in the foreground if an owner
//!   waits for its dependents; dangling references next to a live owner are removed;
//! - an object deleting with `orphan` has the reference to it removed from every dependent,
//!   then loses the finalizer;
//! - an object deleting with `foregroundDeletion` has its dependents deleted, and loses the
//!   finalizer once no dependent with `blockOwnerDeletion` remains.
//!
//! # Limits
//! Events are not watched (as upstream, they are never owners that matter). Whole objects
//! cross the wire, as the apiserver serves no metadata-only watch to kube-rs yet.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{Backoff, Clients, Error};

/// The finalizer asking for dependents to be deleted first.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer asking for dependents to be kept, without the reference.
pub const ORPHAN: &str = "orphan";

/// How often resources are rediscovered, so new custom resources are collected too.
const REDISCOVERY: Duration = Duration::from_secs(30);

/// Checks running at once: enough to empty a large set quickly, few enough to leave the
/// apiserver to others.
const WORKERS: usize = 8;

/// Queued uids in flight from the watches to the dispatcher. The watches wait when it is full
/// (backpressure); the dispatcher never waits on them, so this cannot deadlock.
const QUEUE_CAPACITY: usize = 1024;

/// Where an object lives in the API: what it takes to read, patch or delete it.
#[derive(Clone, Debug)]
struct Location {
    resource: Arc<ApiResource>,
    namespace: Option<String>,
    name: String,
}

#[derive(Clone, Debug)]
struct Node {
    at: Location,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

/// The ownership graph: what the watches saw, metadata only.
#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Records `uid`'s current metadata and returns the uids to check.
    fn upsert(&mut self, uid: &str, node: Node) -> Vec<String> {
        let mut check = Vec::new();
        if let Some(old) = self.nodes.get(uid) {
            let owners: Vec<String> = old.owners.iter().map(|o| o.uid.clone()).collect();
            self.unlink(uid, &owners);
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.to_string());
        }
        if !node.owners.is_empty() || (node.deleting && has_gc_finalizer(&node.finalizers)) {
            check.push(uid.to_string());
        }
        // An owner created after its dependents (or re-listed) settles their fate too.
        if let Some(deps) = self.dependents.get(uid) {
            if node.deleting {
                check.extend(deps.iter().cloned());
            }
        }
        self.nodes.insert(uid.to_string(), node);
        check
    }

    /// Forgets `uid` and returns the uids to check: its dependents (their owner is gone) and
    /// its owners (one may wait for it in the foreground).
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(old) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let owners: Vec<String> = old.owners.iter().map(|o| o.uid.clone()).collect();
        self.unlink(uid, &owners);
        let mut check = owners;
        check.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        check
    }

    fn unlink(&mut self, uid: &str, owners: &[String]) {
        for o in owners {
            if let Some(set) = self.dependents.get_mut(o) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(o);
                }
            }
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }
}

fn has_gc_finalizer(f: &[String]) -> bool {
    f.iter().any(|f| f == FOREGROUND || f == ORPHAN)
}

/// How an owner reference stands (upstream's `classifyReferences`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner is being deleted in the foreground.
    Waiting,
    /// The owner is gone, or a different object holds its name.
    Dangling,
}

/// What to do with an owned object given its owners' states (upstream's
/// `attemptToDeleteItem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it as it is.
    Keep,
    /// Keep it, but remove the references to these (gone or waiting) owners.
    Unlink(Vec<String>),
    /// Delete it, in the foreground if true.
    Delete {
        /// Whether its own dependents must go first.
        foreground: bool,
    },
}

/// Decides an owned object's fate from its owners' states, as upstream: a solid owner keeps
/// it (references to gone or waiting owners are dropped); otherwise it is deleted, in the
/// foreground when an owner waits and the object has dependents of its own.
pub fn verdict(states: &[(String, OwnerState)], has_dependents: bool) -> Verdict {
    let solid = states.iter().any(|(_, s)| *s == OwnerState::Solid);
    let others: Vec<String> = states
        .iter()
        .filter(|(_, s)| *s != OwnerState::Solid)
        .map(|(u, _)| u.clone())
        .collect();
    if states.is_empty() {
        Verdict::Keep
    } else if solid {
        if others.is_empty() {
            Verdict::Keep
        } else {
            Verdict::Unlink(others)
        }
    } else {
        let waiting = states.iter().any(|(_, s)| *s == OwnerState::Waiting);
        Verdict::Delete {
            foreground: waiting && has_dependents,
        }
    }
}

/// Maps (apiVersion, kind) to resources, for looking owners up.
type Kinds = HashMap<(String, String), (Arc<ApiResource>, bool)>;

struct Ctx {
    client: Client,
    graph: Mutex<Graph>,
    kinds: Mutex<Kinds>,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let ctx = Arc::new(Ctx {
        client: clients.writer("generic-garbage-collector"),
        graph: Mutex::default(),
        kinds: Mutex::default(),
    });
    let (tx, rx) = mpsc::channel::<String>(QUEUE_CAPACITY);
    let mut watches: JoinSet<()> = JoinSet::new();
    let dispatcher = dispatch(ctx.clone(), rx);
    let discover = async {
        let mut watched: HashSet<String> = HashSet::new();
        loop {
            match discover(&ctx.client).await {
                Ok((kinds, watchable)) => {
                    *ctx.kinds.lock().unwrap_or_else(|e| e.into_inner()) = kinds;
                    for ar in watchable {
                        let id = format!("{}/{}", ar.api_version, ar.plural);
                        if watched.insert(id) {
                            tracing::debug!(resource = %ar.plural, group = %ar.group, "garbage collector watching");
                            watches.spawn(watch(ctx.clone(), Arc::new(ar), tx.clone()));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "garbage collector discovery failed"),
            }
            tokio::time::sleep(REDISCOVERY).await;
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = dispatcher => {}
        _ = discover => {}
    }
    watches.abort_all();
    while watches.join_next().await.is_some() {}
}

/// Resources to watch: listable, watchable, deletable, preferred version of each, events
/// excluded (as upstream's ignored resources).
async fn discover(client: &Client) -> Result<(Kinds, Vec<ApiResource>), Error> {
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(d) => d,
        Err(_) => Discovery::new(client.clone())
            .run()
            .await
            .map_err(Error::Discovery)?,
    };
    let mut kinds = Kinds::new();
    let mut watchable = Vec::new();
    for group in discovery.groups() {
        for version in group.versions() {
            for (ar, caps) in group.versioned_resources(version) {
                kinds.insert(
                    (ar.api_version.clone(), ar.kind.clone()),
                    (Arc::new(ar), caps.scope == Scope::Namespaced),
                );
            }
        }
        for (ar, caps) in group.recommended_resources() {
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v));
            if usable && ar.plural != "events" {
                watchable.push(ar);
            }
        }
    }
    Ok((kinds, watchable))
}

fn node_of(obj: &DynamicObject, resource: &Arc<ApiResource>) -> Node {
    Node {
        at: Location {
            resource: resource.clone(),
            namespace: obj.namespace(),
            name: obj.name_any(),
        },
        owners: obj.owner_references().to_vec(),
        deleting: obj.metadata.deletion_timestamp.is_some(),
        finalizers: obj.finalizers().to_vec(),
    }
}

/// Keeps the graph current for one resource; resumes and relists as kube's watcher does.
async fn watch(ctx: Arc<Ctx>, resource: Arc<ApiResource>, tx: mpsc::Sender<String>) {
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), resource.as_ref());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: HashSet<String> = HashSet::new();
    let mut known: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(resource = %resource.plural, error = %e, "garbage collector watch failed; retrying");
                continue;
            }
        };
        let check = {
            let mut graph = ctx.graph.lock().unwrap_or_else(|e| e.into_inner());
            match event {
                watcher::Event::Init => {
                    listed.clear();
                    Vec::new()
                }
                watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                    let Some(uid) = obj.uid() else { continue };
                    listed.insert(uid.clone());
                    known.insert(uid.clone());
                    graph.upsert(&uid, node_of(&obj, &resource))
                }
                watcher::Event::Delete(obj) => {
                    let Some(uid) = obj.uid() else { continue };
                    known.remove(&uid);
                    graph.remove(&uid)
                }
                watcher::Event::InitDone => {
                    // Deleted while we were not watching: only a relist tells.
                    let gone: Vec<String> = known.difference(&listed).cloned().collect();
                    known = std::mem::take(&mut listed);
                    gone.iter().flat_map(|uid| graph.remove(uid)).collect()
                }
            }
        };
        for uid in check {
            if tx.send(uid).await.is_err() {
                return;
            }
        }
    }
}

/// Runs checks, at most [`WORKERS`] at once and one per uid at a time; a uid changed while
/// being checked is checked again; failures are retried with backoff.
async fn dispatch(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<String>) {
    let backoff = Backoff::default();
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut queued: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut retries: BTreeMap<Instant, Vec<String>> = BTreeMap::new();
    let mut inflight = FuturesUnordered::new();
    loop {
        while inflight.len() < WORKERS {
            let Some(uid) = pending.pop_front() else {
                break;
            };
            queued.remove(&uid);
            running.insert(uid.clone());
            let ctx = ctx.clone();
            inflight.push(async move {
                let r = check(&ctx, &uid).await;
                (uid, r)
            });
        }
        let next_retry = retries.keys().next().copied();
        tokio::select! {
            received = rx.recv() => {
                let Some(uid) = received else { return };
                if running.contains(&uid) {
                    dirty.insert(uid);
                } else if queued.insert(uid.clone()) {
                    pending.push_back(uid);
                }
            }
            Some((uid, result)) = inflight.next(), if !inflight.is_empty() => {
                running.remove(&uid);
                match result {
                    Ok(()) => backoff.succeeded(&uid),
                    Err(e) => {
                        tracing::warn!(%uid, error = %e, "garbage collection failed; retrying with backoff");
                        retries.entry(Instant::now() + backoff.failed(&uid)).or_default().push(uid.clone());
                    }
                }
                if dirty.remove(&uid) && queued.insert(uid.clone()) {
                    pending.push_back(uid);
                }
            }
            _ = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)), if next_retry.is_some() => {
                let now = Instant::now();
                let later = retries.split_off(&(now + Duration::from_nanos(1)));
                for uid in std::mem::replace(&mut retries, later).into_values().flatten() {
                    if running.contains(&uid) {
                        dirty.insert(uid);
                    } else if queued.insert(uid.clone()) {
                        pending.push_back(uid);
                    }
                }
            }
        }
    }
}

fn api_for(ctx: &Ctx, at: &Location) -> Api<DynamicObject> {
    match &at.namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, at.resource.as_ref()),
        None => Api::all_with(ctx.client.clone(), at.resource.as_ref()),
    }
}

fn describe(at: &Location) -> String {
    match &at.namespace {
        Some(ns) => format!("{} {ns}/{}", at.resource.kind, at.name),
        None => format!("{} {}", at.resource.kind, at.name),
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// One check of one object.
async fn check(ctx: &Ctx, uid: &str) -> Result<(), Error> {
    let node = {
        let graph = ctx.graph.lock().unwrap_or_else(|e| e.into_inner());
        graph.nodes.get(uid).cloned()
    };
    let Some(node) = node else { return Ok(()) };
    if node.deleting {
        if node.finalizers.iter().any(|f| f == ORPHAN) {
            return orphan_dependents(ctx, uid, &node).await;
        }
        if node.finalizers.iter().any(|f| f == FOREGROUND) {
            return delete_dependents(ctx, uid, &node).await;
        }
        // Already going; its dependents are checked once it is gone.
        return Ok(());
    }
    if node.owners.is_empty() {
        return Ok(());
    }
    let mut states = Vec::new();
    for owner in &node.owners {
        states.push((owner.uid.clone(), owner_state(ctx, &node, owner).await?));
    }
    let has_dependents = {
        let graph = ctx.graph.lock().unwrap_or_else(|e| e.into_inner());
        graph.dependents.contains_key(uid)
    };
    let api = api_for(ctx, &node.at);
    match verdict(&states, has_dependents) {
        Verdict::Keep => Ok(()),
        Verdict::Unlink(owners) => unlink(ctx, uid, &node, &owners).await,
        Verdict::Delete { foreground } => {
            let policy = if foreground {
                PropagationPolicy::Foreground
            } else if node.finalizers.iter().any(|f| f == ORPHAN) {
                PropagationPolicy::Orphan
            } else {
                PropagationPolicy::Background
            };
            let dp = DeleteParams {
                propagation_policy: Some(policy),
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            tracing::debug!(object = %describe(&node.at), ?states, "deleting object whose owners are gone");
            match api.delete(&node.at.name, &dp).await {
                Ok(_) => Ok(()),
                // Gone, or replaced by a namesake (uid precondition): nothing of ours to delete.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                Err(e) => Err(Error::api(format!("deleting {}", describe(&node.at)))(e)),
            }
        }
    }
}

/// Looks an owner up: in the graph first, then (a cache miss may just be lag) in the API.
async fn owner_state(ctx: &Ctx, node: &Node, owner: &OwnerReference) -> Result<OwnerState, Error> {
    let cached = {
        let graph = ctx.graph.lock().unwrap_or_else(|e| e.into_inner());
        graph.nodes.get(&owner.uid).cloned()
    };
    let from = |deleting: bool, finalizers: &[String]| {
        if deleting && finalizers.iter().any(|f| f == FOREGROUND) {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        }
    };
    if let Some(o) = cached {
        return Ok(from(o.deleting, &o.finalizers));
    }
    let kind = {
        let kinds = ctx.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds
            .get(&(owner.api_version.clone(), owner.kind.clone()))
            .cloned()
    };
    let Some((resource, namespaced)) = kind else {
        // An unknown kind may be a custom resource not yet discovered: never delete on that.
        return Err(Error::Content(format!(
            "owner {} {} of {}: unknown kind",
            owner.api_version,
            owner.kind,
            describe(&node.at)
        )));
    };
    let at = Location {
        resource,
        namespace: if namespaced {
            node.at.namespace.clone()
        } else {
            None
        },
        name: owner.name.clone(),
    };
    match api_for(ctx, &at).get_opt(&owner.name).await {
        Ok(Some(o)) if o.uid().as_deref() == Some(owner.uid.as_str()) => Ok(from(
            o.metadata.deletion_timestamp.is_some(),
            o.finalizers(),
        )),
        Ok(_) => Ok(OwnerState::Dangling),
        Err(e) if not_found(&e) => Ok(OwnerState::Dangling),
        Err(e) => Err(Error::api(format!("reading owner {}", describe(&at)))(e)),
    }
}

/// Removes the references to `owners` from the object `uid`.
async fn unlink(ctx: &Ctx, uid: &str, node: &Node, owners: &[String]) -> Result<(), Error> {
    let keep: Vec<&OwnerReference> = node
        .owners
        .iter()
        .filter(|o| !owners.contains(&o.uid))
        .collect();
    let refs = if keep.is_empty() {
        serde_json::Value::Null
    } else {
        json!(keep)
    };
    let patch = json!({"metadata": {"uid": uid, "ownerReferences": refs}});
    match api_for(ctx, &node.at)
        .patch(
            &node.at.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(Error::api(format!(
            "removing owner references from {}",
            describe(&node.at)
        ))(e)),
    }
}

/// `orphan`: every dependent loses its reference to `uid`, then `uid` loses the finalizer.
async fn orphan_dependents(ctx: &Ctx, uid: &str, node: &Node) -> Result<(), Error> {
    let dependents = {
        let graph = ctx.graph.lock().unwrap_or_else(|e| e.into_inner());
        graph.dependents_of(uid)
    };
    for (dep_uid, dep) in &dependents {
        unlink(ctx, dep_uid, dep, &[uid.to_string()]).await?;
    }
    tracing::debug!(object = %describe(&node.at), orphaned = dependents.len(), "orphaned dependents");
    remove_finalizer(ctx, uid, node, ORPHAN).await
}

/// `foregroundDeletion`: dependents are deleted; once none that blocks remains, `uid` loses
/// the finalizer (each dependent's removal from the graph checks `uid` again).
async fn delete_dependents(ctx: &Ctx, uid: &str, node: &Node) -> Result<(), Error> {
    let (dependents, grand) = {
        let graph = ctx.graph.lock().unwrap_or_else(|e| e.into_inner());
        let deps = graph.dependents_of(uid);
        let grand: HashSet<String> = deps
            .iter()
            .filter(|(d, _)| graph.dependents.contains_key(d))
            .map(|(d, _)| d.clone())
            .collect();
        (deps, grand)
    };
    let mut blocking = 0;
    for (dep_uid, dep) in &dependents {
        let blocks = dep
            .owners
            .iter()
            .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
        if blocks {
            blocking += 1;
        }
        if dep.deleting {
            continue;
        }
        // A dependent with another live owner stays; its check drops the reference to us.
        let mut states = Vec::new();
        for owner in &dep.owners {
            let state = if owner.uid == uid {
                OwnerState::Waiting
            } else {
                owner_state(ctx, dep, owner).await?
            };
            states.push((owner.uid.clone(), state));
        }
        match verdict(&states, grand.contains(dep_uid)) {
            Verdict::Unlink(owners) => unlink(ctx, dep_uid, dep, &owners).await?,
            Verdict::Keep => {}
            Verdict::Delete { foreground } => {
                let dp = DeleteParams {
                    propagation_policy: Some(if foreground {
                        PropagationPolicy::Foreground
                    } else {
                        PropagationPolicy::Background
                    }),
                    preconditions: Some(Preconditions {
                        uid: Some(dep_uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api_for(ctx, &dep.at).delete(&dep.at.name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(Error::api(format!("deleting {}", describe(&dep.at)))(e)),
                }
            }
        }
    }
    if blocking > 0 {
        tracing::debug!(object = %describe(&node.at), blocking, "waiting for dependents to be deleted");
        return Ok(());
    }
    remove_finalizer(ctx, uid, node, FOREGROUND).await
}

/// Removes `finalizer` from the live object, with a resourceVersion precondition so no
/// other writer's finalizer change is lost.
async fn remove_finalizer(ctx: &Ctx, uid: &str, node: &Node, finalizer: &str) -> Result<(), Error> {
    let api = api_for(ctx, &node.at);
    let what = || format!("removing finalizer {finalizer} from {}", describe(&node.at));
    // Other writers (the owner's own controller updating status) race with us: re-read and
    // retry a few times before falling back to the backoff.
    let mut attempts = 3;
    loop {
        attempts -= 1;
        let Some(live) = api
            .get_opt(&node.at.name)
            .await
            .map_err(Error::api(what()))?
        else {
            return Ok(());
        };
        if live.uid().as_deref() != Some(uid) || !live.finalizers().iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<&String> = live
            .finalizers()
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        let patch = json!({"metadata": {
            "uid": uid,
            "resourceVersion": live.resource_version(),
            "finalizers": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
        }});
        match api
            .patch(
                &node.at.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempts > 0 => {}
            Err(e) => return Err(Error::api(what())(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: uid.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn node(owners: Vec<OwnerReference>, deleting: bool, finalizers: &[&str]) -> Node {
        Node {
            at: Location {
                resource: Arc::new(ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&())),
                namespace: Some("ns".into()),
                name: "x".into(),
            },
            owners,
            deleting,
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn verdicts_follow_upstream() {
        use OwnerState::*;
        let s = |v: &[(&str, OwnerState)]| -> Vec<(String, OwnerState)> {
            v.iter().map(|(u, s)| (u.to_string(), *s)).collect()
        };
        assert_eq!(verdict(&s(&[]), false), Verdict::Keep);
        assert_eq!(verdict(&s(&[("a", Solid)]), false), Verdict::Keep);
        assert_eq!(
            verdict(&s(&[("a", Solid), ("b", Dangling)]), false),
            Verdict::Unlink(vec!["b".into()])
        );
        assert_eq!(
            verdict(&s(&[("a", Dangling)]), true),
            Verdict::Delete { foreground: false }
        );
        assert_eq!(
            verdict(&s(&[("a", Waiting), ("b", Dangling)]), true),
            Verdict::Delete { foreground: true }
        );
        assert_eq!(
            verdict(&s(&[("a", Waiting)]), false),
            Verdict::Delete { foreground: false }
        );
    }

    #[test]
    fn graph_indexes_dependents_and_reports_whom_to_check() {
        let mut g = Graph::default();
        assert!(g.upsert("rs", node(vec![], false, &[])).is_empty());
        assert_eq!(
            g.upsert("p1", node(vec![owner("rs", true)], false, &[])),
            ["p1"]
        );
        g.upsert("p2", node(vec![owner("rs", true)], false, &[]));
        assert_eq!(g.dependents_of("rs").len(), 2);
        // The owner starts a foreground deletion: it is checked itself.
        let check = g.upsert("rs", node(vec![], true, &[FOREGROUND]));
        assert!(check.contains(&"rs".to_string()));
        // A dependent goes: its owner is checked again.
        assert_eq!(g.remove("p1"), ["rs"]);
        assert_eq!(g.dependents_of("rs").len(), 1);
        // The owner goes: the remaining dependent is checked.
        assert_eq!(g.remove("rs"), ["p2"]);
        // Re-parenting moves the index entry.
        g.upsert("p2", node(vec![owner("other", false)], false, &[]));
        assert!(g.dependents_of("rs").is_empty());
        assert_eq!(g.dependents_of("other").len(), 1);
    }
}

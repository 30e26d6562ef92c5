//! The Job controller, as upstream's (`pkg/controller/job`): runs pods until enough succeed,
//! or fails the Job.
//!
//! Each pass looks at the Job's pods and:
//! - counts finished pods exactly once through the `batch.kubernetes.io/job-tracking`
//!   finalizer: a finished pod's uid goes to `status.uncountedTerminatedPods`, then its
//!   finalizer is removed, then (on a later pass, once the pod shows without it) the uid moves
//!   into `succeeded`/`failed`. A crash between any two steps neither loses nor double-counts;
//! - applies the pod failure policy (FailJob / Ignore / Count) to failed pods;
//! - decides the outcome as upstream 1.33: `FailureTarget` (BackoffLimitExceeded,
//!   DeadlineExceeded, PodFailurePolicy) or `SuccessCriteriaMet` first, then, once no pod is
//!   left running or terminating, `Failed` or `Complete` with the same reason and an Event;
//! - otherwise creates pods (NonIndexed, or Indexed with the completion index annotation,
//!   label, hostname and `JOB_COMPLETION_INDEX`), replacing failed pods only after upstream's
//!   pod-failure backoff (10 s doubling, 10 min cap), or deletes them while suspended.
//!
//! Expectations remember pods created, deleted and finalizers removed until the pod cache
//! shows them, so a lagging cache never makes it act twice; a Job read from a cache older than
//! our last status write is looked at again shortly instead.
//!
//! # Limits
//! No adoption of orphan pods, no `backoffLimitPerIndex`/`FailIndex`, no `successPolicy`
//! rules, no `podReplacementPolicy: Failed` wait, no `managedBy` hand-off.

pub mod policy;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::expectations::{Expect, PodExpectations};
use crate::objects::{self, api_message, controller_ref, object_ref, EventType, Recorder};
use crate::{Backoff, Clients, Error};
use policy::{reason, FailureAction, COMPLETION_INDEX, TRACKING_FINALIZER};

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "job-controller";

/// Upstream's cap on pods created or deleted in one pass.
const BURST: usize = 500;

/// Requeue delay while the caches catch up with our own writes.
const CACHE_REQUEUE: Duration = Duration::from_millis(500);

/// Consecutive pod failures of a Job since its last success (upstream's backoff record).
#[derive(Debug, Clone, Copy)]
struct FailureRecord {
    failures: u32,
    last: Timestamp,
}

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    pods: Store<Pod>,
    backoff: Backoff,
    expectations: PodExpectations,
    /// Resource version of our last status write per Job.
    written: Mutex<HashMap<String, u64>>,
    failures: Mutex<HashMap<String, FailureRecord>>,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let jobs = clients.informers.get::<Job>();
    let pods = clients.informers.get::<Pod>();
    let client = clients.writer(COMPONENT);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        events: Recorder::new(client.clone(), COMPONENT, None),
        pods: pods.store(),
        backoff: Backoff::default(),
        expectations: PodExpectations::with_finalizer(TRACKING_FINALIZER),
        written: Mutex::default(),
        failures: Mutex::default(),
    });
    let orphans = release_orphans(client, jobs.store(), pods.subscribe());
    let results = Controller::for_shared_stream(jobs.subscribe(), jobs.store())
        .watches_shared_stream(pods.subscribe(), |pod: Arc<Pod>| {
            owning_job(&pod)
                .map(|(ns, name, _)| ObjectRef::new(&name).within(&ns))
                .into_iter()
                .collect::<Vec<_>>()
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    tokio::select! {
        _ = crate::drive(COMPONENT, results) => {}
        _ = orphans => {}
    }
}

/// The Job controlling a pod: (namespace, name, uid).
fn owning_job(pod: &Pod) -> Option<(String, String, String)> {
    let r = controller_ref(&pod.metadata)?;
    (r.kind == "Job" && r.api_version.starts_with("batch/")).then(|| {
        (
            pod.namespace().unwrap_or_default(),
            r.name.clone(),
            r.uid.clone(),
        )
    })
}

fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

/// Removes the tracking finalizer from pods whose Job is gone (deleted, or replaced under the
/// same name), so the garbage collector's deletes can complete (upstream's orphan queue).
/// A Job missing from the cache is looked up live first: it may just be newer than the cache.
async fn release_orphans(
    client: Client,
    jobs: Store<Job>,
    pods: impl futures::Stream<Item = Arc<Pod>> + Send,
) {
    let mut pods = std::pin::pin!(pods);
    while let Some(pod) = pods.next().await {
        if !has_tracking_finalizer(&pod) {
            continue;
        }
        let orphaned = match owning_job(&pod) {
            None => true,
            Some((ns, name, uid)) => {
                let cached = jobs.get(&ObjectRef::new(&name).within(&ns));
                if cached.is_some_and(|j| j.uid().as_deref() == Some(uid.as_str())) {
                    continue;
                }
                let api: Api<Job> = Api::namespaced(client.clone(), &ns);
                match api.get_opt(&name).await {
                    Ok(live) => live.is_none_or(|j| j.uid().as_deref() != Some(uid.as_str())),
                    Err(e) => {
                        tracing::debug!(error = %e, "looking up the job of a tracked pod");
                        false
                    }
                }
            }
        };
        if orphaned {
            if let Err(e) = remove_finalizer(&client, &pod).await {
                tracing::debug!(error = %e, pod = %pod.name_any(), "releasing an orphan pod");
            }
        }
    }
}

/// Removes the tracking finalizer from `pod` with upstream's strategic-merge
/// `$deleteFromPrimitiveList` patch: it removes only that entry, so finalizers added meanwhile
/// stay, and it needs neither a resource version nor a read (the controller's role, as
/// upstream's, may not `get` pods).
async fn remove_finalizer(client: &Client, pod: &Pod) -> Result<(), Error> {
    if !has_tracking_finalizer(pod) {
        return Ok(());
    }
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"metadata": {
        "uid": pod.uid(),
        "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or replaced by a pod of the same name (the uid precondition failed).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::api(format!(
            "removing the tracking finalizer of pod {ns}/{name}"
        ))(e)),
    }
}

fn key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod counts as failed: phase Failed, or deleted before it finished (upstream's
/// `isPodFailed` with `podReplacementPolicy: TerminatingOrFailed`).
fn is_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
        || (pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded")
}

fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// When a pod finished: its containers' latest finish time, else now.
fn finished_at(pod: &Pod, now: Timestamp) -> Timestamp {
    pod.status
        .as_ref()
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .unwrap_or(now)
}

/// The pod the template describes, owned by `job`, with the tracking finalizer and, for an
/// Indexed Job, its completion index (upstream's `podGenerateNameWithIndex`,
/// `addCompletionIndexAnnotation`, `addCompletionIndexEnvVariables`).
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let spec = job.spec.clone().unwrap_or_default();
    let tmeta = spec.template.metadata.unwrap_or_default();
    let mut pod_spec = spec.template.spec;
    let mut labels = tmeta.labels.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut finalizers = tmeta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    let name = job.name_any();
    let generate_name = match index {
        Some(i) => {
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            if let Some(ps) = pod_spec.as_mut() {
                if ps.hostname.as_deref().unwrap_or_default().is_empty() {
                    ps.hostname = Some(format!("{name}-{i}"));
                }
                let env = EnvVar {
                    name: policy::COMPLETION_INDEX_ENV.into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                        }),
                        ..Default::default()
                    }),
                };
                let containers = ps
                    .containers
                    .iter_mut()
                    .chain(ps.init_containers.iter_mut().flatten());
                for c in containers {
                    let vars = c.env.get_or_insert_with(Vec::new);
                    if !vars.iter().any(|v| v.name == env.name) {
                        vars.push(env.clone());
                    }
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: job.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: pod_spec,
        status: None,
    }
}

/// The outcome a Job is heading to, once decided.
#[derive(Debug, Clone)]
struct Outcome {
    success: bool,
    reason: String,
    message: String,
}

/// What one pass found among a Job's pods.
struct Tally {
    status: JobStatus,
    /// Pods whose tracking finalizer must go once the status is written.
    release: Vec<Pod>,
    /// A FailJob rule matched.
    fail_job: Option<String>,
    active: Vec<Pod>,
    terminating: i32,
    /// Whether any pod still carries the finalizer (so the terminal condition must wait).
    tracked_left: bool,
}

/// Counts finished pods through `uncountedTerminatedPods` (upstream's
/// `trackJobStatusAndRemoveFinalizers`, split across passes).
fn tally(job: &Job, pods: &[&Pod], failures: &mut Option<FailureRecord>, now: Timestamp) -> Tally {
    let spec = job.spec.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let mut status = job.status.clone().unwrap_or_default();
    let uncounted = status.uncounted_terminated_pods.take().unwrap_or_default();
    let mut unc_ok: BTreeSet<String> = uncounted
        .succeeded
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut unc_fail: BTreeSet<String> = uncounted.failed.unwrap_or_default().into_iter().collect();
    let by_uid: HashMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, *p)))
        .collect();
    let tracked = |uid: &str| by_uid.get(uid).is_some_and(|p| has_tracking_finalizer(p));
    // Uids whose finalizer is gone are counted for good.
    let mut succeeded = status.succeeded.unwrap_or(0);
    let mut failed = status.failed.unwrap_or(0);
    unc_ok.retain(|uid| {
        let keep = tracked(uid);
        if !keep {
            succeeded += 1;
        }
        keep
    });
    unc_fail.retain(|uid| {
        let keep = tracked(uid);
        if !keep {
            failed += 1;
        }
        keep
    });
    let mut completed = policy::parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    let mut release = Vec::new();
    let mut fail_job = None;
    let success_decided = policy::has_condition(job, "SuccessCriteriaMet");
    for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let done = phase(pod) == "Succeeded" || is_failed(pod);
        if !done {
            continue;
        }
        release.push((*pod).clone());
        if unc_ok.contains(&uid) || unc_fail.contains(&uid) {
            continue;
        }
        if phase(pod) == "Succeeded" {
            // Indexed Jobs count succeeded indexes, not pods: the index set alone prevents
            // recounting (upstream tracks no uids for them).
            if indexed {
                if let Some(i) =
                    policy::pod_index(pod).filter(|i| completions.is_none_or(|c| *i < c))
                {
                    completed.insert(i);
                }
                *failures = None;
                continue;
            }
            unc_ok.insert(uid);
            *failures = None;
            continue;
        }
        // Pods removed because the Job already succeeded are not failures.
        if success_decided {
            continue;
        }
        let action = match (&spec.pod_failure_policy, phase(pod)) {
            (Some(p), "Failed") => policy::evaluate_failure_policy(p, pod),
            _ => FailureAction::Count,
        };
        match action {
            FailureAction::Ignore => continue,
            FailureAction::FailJob(message) => {
                fail_job.get_or_insert(message);
            }
            FailureAction::Count => {}
        }
        unc_fail.insert(uid);
        let at = finished_at(pod, now);
        let rec = failures.get_or_insert(FailureRecord {
            failures: 0,
            last: at,
        });
        rec.failures += 1;
        rec.last = rec.last.max(at);
    }
    let active: Vec<Pod> = pods
        .iter()
        .filter(|p| is_active(p))
        .map(|p| (*p).clone())
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .count() as i32;
    let tracked_left = pods.iter().any(|p| has_tracking_finalizer(p));
    if indexed {
        succeeded = completed.len() as i32;
    }
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    status.active = Some(active.len() as i32);
    status.ready = Some(active.iter().filter(|p| is_ready(p)).count() as i32);
    status.terminating = Some(terminating);
    if indexed {
        status.completed_indexes = Some(policy::format_indexes(&completed));
    }
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(unc_ok.into_iter().collect()),
        failed: Some(unc_fail.into_iter().collect()),
    });
    Tally {
        status,
        release,
        fail_job,
        active,
        terminating,
        tracked_left,
    }
}

fn uncounted_len(status: &JobStatus) -> usize {
    status
        .uncounted_terminated_pods
        .as_ref()
        .map(|u| u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len))
        .unwrap_or(0)
}

/// The outcome already recorded in the Job's conditions, if any.
fn recorded_outcome(job: &Job) -> Option<Outcome> {
    if let Some(c) = policy::condition(job, "FailureTarget") {
        return Some(Outcome {
            success: false,
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    policy::condition(job, "SuccessCriteriaMet").map(|c| Outcome {
        success: true,
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
    })
}

/// Decides a new outcome from this pass's tally (upstream's order: pod failure policy,
/// backoff limit, deadline, then success).
fn decide(job: &Job, t: &Tally, now: Timestamp) -> Option<Outcome> {
    let spec = job.spec.clone().unwrap_or_default();
    let status = &t.status;
    let unc = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let failed = status.failed.unwrap_or(0) + unc.failed.as_ref().map_or(0, Vec::len) as i32;
    let succeeded =
        status.succeeded.unwrap_or(0) + unc.succeeded.as_ref().map_or(0, Vec::len) as i32;
    let fail = |reason: &str, message: &str| Outcome {
        success: false,
        reason: reason.into(),
        message: message.into(),
    };
    if let Some(message) = &t.fail_job {
        return Some(fail(reason::POD_FAILURE_POLICY, message));
    }
    if failed > spec.backoff_limit.unwrap_or(6) {
        return Some(fail(
            reason::BACKOFF_LIMIT_EXCEEDED,
            reason::BACKOFF_LIMIT_MESSAGE,
        ));
    }
    if deadline_left(job, now).is_some_and(|d| d.is_zero()) {
        return Some(fail(reason::DEADLINE_EXCEEDED, reason::DEADLINE_MESSAGE));
    }
    let complete = if spec.completion_mode.as_deref() == Some("Indexed") {
        let done = policy::parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
        spec.completions.is_some_and(|c| done.len() as i32 >= c)
    } else {
        match spec.completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && t.active.is_empty(),
        }
    };
    complete.then(|| Outcome {
        success: true,
        reason: reason::COMPLETIONS_REACHED.into(),
        message: reason::COMPLETIONS_MESSAGE.into(),
    })
}

/// Time left before `activeDeadlineSeconds` passes (zero once passed); None without a
/// deadline, a start time, or while suspended.
fn deadline_left(job: &Job, now: Timestamp) -> Option<Duration> {
    let ads = job.spec.as_ref()?.active_deadline_seconds?;
    if job.spec.as_ref()?.suspend == Some(true) {
        return None;
    }
    let start = job.status.as_ref()?.start_time.as_ref()?.0;
    let end = start.as_second().saturating_add(ads);
    Some(Duration::from_secs(
        end.saturating_sub(now.as_second()).max(0) as u64,
    ))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key(&job);
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    if job.spec.is_none() {
        return Ok(Action::await_change());
    }
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    if !ctx.expectations.met(&key, &pods) || !cache_current(&ctx, &key, &job) {
        return Ok(Action::requeue(CACHE_REQUEUE));
    }
    let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    if policy::is_finished(&job) || job.metadata.deletion_timestamp.is_some() {
        // A finished Job's leftover pods need no counting, only releasing; so do those of a
        // Job being deleted in the foreground, which waits for its pods to go.
        for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
            remove_finalizer(&ctx.client, pod).await?;
            ctx.expectations
                .expect(&key, [Expect::Finalizer(pod.uid().unwrap_or_default())]);
        }
        // Nothing will be created for it again: forget its failure record.
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        ctx.backoff.succeeded(&key);
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let mut failures = ctx
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied();
    let mut t = tally(&job, &pods, &mut failures, now);
    {
        let mut all = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures {
            Some(f) => all.insert(key.clone(), f),
            None => all.remove(&key),
        };
    }
    let spec = job.spec.clone().unwrap_or_default();
    let suspended = spec.suspend == Some(true);
    let mut conditions: Vec<JobCondition> = t.status.conditions.clone().unwrap_or_default();
    let mut events: Vec<(EventType, String, String)> = Vec::new();

    // Start time: set when the Job first runs, and again on resume (upstream restarts the
    // active deadline then).
    if suspended {
        if set_suspended(&mut conditions, true, now) {
            events.push((
                EventType::Normal,
                "Suspended".into(),
                "Job suspended".into(),
            ));
        }
    } else {
        if set_suspended(&mut conditions, false, now) {
            events.push((EventType::Normal, "Resumed".into(), "Job resumed".into()));
            t.status.start_time = Some(Time(now));
        }
        if t.status.start_time.is_none() {
            t.status.start_time = Some(Time(now));
        }
    }
    let mut probe = job.as_ref().clone();
    probe.status = Some(t.status.clone());
    let outcome = match recorded_outcome(&job) {
        Some(o) => Some(o),
        None => decide(&probe, &t, now).inspect(|o| {
            let type_ = if o.success {
                "SuccessCriteriaMet"
            } else {
                "FailureTarget"
            };
            policy::set_condition(&mut conditions, type_, "True", &o.reason, &o.message, now);
        }),
    };

    let mut manage_err = None;
    let mut requeue: Option<Duration> = None;
    if let Some(o) = &outcome {
        // Stop whatever still runs; the terminal condition waits until nothing does.
        if let Err(e) = delete_pods(&ctx, &job, &t.active.iter().collect::<Vec<_>>()).await {
            manage_err = Some(e);
        }
        let removed = t.active.len() as i32;
        t.status.active = Some(0);
        t.status.ready = Some(0);
        t.status.terminating = Some(t.terminating + removed);
        let settled = t.active.is_empty()
            && t.terminating == 0
            && !t.tracked_left
            && uncounted_len(&t.status) == 0;
        if settled {
            let type_ = if o.success { "Complete" } else { "Failed" };
            policy::set_condition(&mut conditions, type_, "True", &o.reason, &o.message, now);
            if o.success {
                t.status.completion_time = Some(Time(now));
                events.push((
                    EventType::Normal,
                    "Completed".into(),
                    "Job completed".into(),
                ));
            } else {
                events.push((EventType::Warning, o.reason.clone(), o.message.clone()));
            }
        }
    } else if suspended {
        if let Err(e) = delete_pods(&ctx, &job, &t.active.iter().collect::<Vec<_>>()).await {
            manage_err = Some(e);
        }
        t.status.active = Some(0);
        t.status.ready = Some(0);
    } else {
        match manage(&ctx, &job, &t, failures, now).await {
            Ok((created, wait)) => {
                t.status.active = Some(t.status.active.unwrap_or(0) + created);
                requeue = wait;
            }
            Err(e) => manage_err = Some(e),
        }
        if let Some(left) = deadline_left(&probe, now) {
            let d = left + Duration::from_millis(100);
            requeue = Some(requeue.map_or(d, |r| r.min(d)));
        }
    }
    t.status.conditions = (!conditions.is_empty()).then_some(conditions);
    let status = normalize(t.status);
    if job.status.as_ref().map(|s| normalize(s.clone())) != Some(status.clone())
        && !update_status(&ctx, &job, status).await?
    {
        return Ok(Action::await_change());
    }
    for (kind, reason, message) in events {
        ctx.events.record(object_ref(&*job), kind, &reason, message);
    }
    // Only counted pods are released: their uids are in the status now.
    for pod in &t.release {
        remove_finalizer(&ctx.client, pod).await?;
        ctx.expectations
            .expect(&key, [Expect::Finalizer(pod.uid().unwrap_or_default())]);
    }
    if let Some(e) = manage_err {
        return Err(e);
    }
    ctx.backoff.succeeded(&key);
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Sets the `Suspended` condition; true when it changed status (so an Event is due). A Job
/// never suspended gets no `Suspended=False` condition.
fn set_suspended(conditions: &mut Vec<JobCondition>, suspend: bool, now: Timestamp) -> bool {
    let current = conditions.iter().find(|c| c.type_ == "Suspended");
    match (suspend, current.map(|c| c.status == "True")) {
        (true, Some(true)) | (false, None) | (false, Some(false)) => false,
        (true, _) => policy::set_condition(
            conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now,
        ),
        (false, Some(true)) => policy::set_condition(
            conditions,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        ),
    }
}

/// Upstream omits empty optional fields: compare and write statuses in that form.
fn normalize(mut s: JobStatus) -> JobStatus {
    let zero_none = |v: Option<i32>| v.filter(|n| *n != 0);
    s.active = zero_none(s.active);
    s.succeeded = zero_none(s.succeeded);
    s.failed = zero_none(s.failed);
    s.ready = s.ready.or(Some(0));
    s.terminating = s.terminating.or(Some(0));
    if s.completed_indexes.as_deref() == Some("") {
        s.completed_indexes = None;
    }
    if let Some(u) = &mut s.uncounted_terminated_pods {
        if u.succeeded.as_ref().is_some_and(Vec::is_empty) {
            u.succeeded = None;
        }
        if u.failed.as_ref().is_some_and(Vec::is_empty) {
            u.failed = None;
        }
    }
    let terminal = s
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    if terminal && s.uncounted_terminated_pods == Some(UncountedTerminatedPods::default()) {
        s.uncounted_terminated_pods = None;
    } else if s.uncounted_terminated_pods.is_none() {
        s.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    }
    s
}

/// Creates missing pods; returns how many and, when the failure backoff holds them back, when
/// to look again.
async fn manage(
    ctx: &Ctx,
    job: &Job,
    t: &Tally,
    failures: Option<FailureRecord>,
    now: Timestamp,
) -> Result<(i32, Option<Duration>), Error> {
    let spec = job.spec.clone().unwrap_or_default();
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let active = t.active.len() as i32;
    let unc = t
        .status
        .uncounted_terminated_pods
        .clone()
        .unwrap_or_default();
    let succeeded =
        t.status.succeeded.unwrap_or(0) + unc.succeeded.as_ref().map_or(0, Vec::len) as i32;
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let to_create: Vec<Option<i32>> = if indexed {
        let completed = policy::parse_indexes(t.status.completed_indexes.as_deref().unwrap_or(""));
        let running: BTreeSet<i32> = t.active.iter().filter_map(policy::pod_index).collect();
        let room = (parallelism - active).max(0) as usize;
        policy::indexes_to_start(spec.completions.unwrap_or(0), &completed, &running, room)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        let want = policy::want_active(spec.completions, parallelism, succeeded, active);
        if active > want {
            let mut surplus: Vec<&Pod> = t.active.iter().collect();
            // Upstream deletes not-ready and newer pods first.
            surplus.sort_by_key(|p| (is_ready(p), std::cmp::Reverse(p.creation_timestamp())));
            surplus.truncate((active - want) as usize);
            delete_pods(ctx, job, &surplus).await?;
            return Ok((want - active, None));
        }
        vec![None; (want - active).max(0) as usize]
    };
    if to_create.is_empty() {
        return Ok((0, None));
    }
    if let Some(f) = failures {
        let ready_at =
            f.last.as_second() as f64 + policy::failure_backoff(f.failures).as_secs_f64();
        let left = ready_at - now.as_second() as f64;
        if left > 0.0 {
            return Ok((0, Some(Duration::from_secs_f64(left))));
        }
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let pp = PostParams::default();
    let key = key(job);
    let mut created_total = 0;
    let mut queue = to_create.into_iter().take(BURST);
    for batch in crate::replicaset::slow_start_batches(queue.len()) {
        let items: Vec<Option<i32>> = queue.by_ref().take(batch).collect();
        let results = futures::future::join_all(items.iter().map(|i| {
            let pod = pod_from_template(job, *i);
            let api = api.clone();
            let pp = pp.clone();
            async move { api.create(&pp, &pod).await }
        }))
        .await;
        let mut failure = None;
        for r in results {
            match r {
                Ok(pod) => {
                    let name = pod.name_any();
                    ctx.events.record(
                        object_ref(job),
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    );
                    ctx.expectations.expect(&key, [Expect::Create(name)]);
                    created_total += 1;
                }
                Err(e) if crate::namespace_closed(&e) => {}
                Err(e) => {
                    ctx.events.record(
                        object_ref(job),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {}", api_message(&e)),
                    );
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(Error::api(format!("creating pods for Job {key}"))(e));
        }
    }
    Ok((created_total, None))
}

async fn delete_pods(ctx: &Ctx, job: &Job, pods: &[&Pod]) -> Result<(), Error> {
    if pods.is_empty() {
        return Ok(());
    }
    let key = key(job);
    for p in pods {
        ctx.expectations
            .expect(&key, [Expect::Delete(p.uid().unwrap_or_default())]);
    }
    if let Err(e) = objects::delete_pods(&ctx.client, &ctx.events, &object_ref(job), pods).await {
        ctx.expectations.forget(&key);
        return Err(Error::api(format!("deleting pods of Job {key}"))(e));
    }
    Ok(())
}

/// Writes the status with PUT on the cached object: a stale cache conflicts and the pass is
/// retried, so counts are always based on the latest status. False if the Job is gone.
async fn update_status(ctx: &Ctx, job: &Job, status: JobStatus) -> Result<bool, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let mut current = job.clone();
    current.status = Some(status);
    match api
        .replace_status(&job.name_any(), &PostParams::default(), &current)
        .await
    {
        Ok(written) => {
            if let Some(rv) = written
                .resource_version()
                .and_then(|v| v.parse::<u64>().ok())
            {
                ctx.written
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key(job), rv);
            }
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::api(format!(
            "updating the status of Job {}",
            key(job)
        ))(e)),
    }
}

/// Whether the cached Job is at least as new as our last status write.
fn cache_current(ctx: &Ctx, key: &str, job: &Job) -> bool {
    let written = ctx.written.lock().unwrap_or_else(|e| e.into_inner());
    match (
        written.get(key),
        job.resource_version().and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(w), Some(seen)) => seen >= *w,
        _ => true,
    }
}

fn error_policy(job: Arc<Job>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&job)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus, PodTemplateSpec};

    fn job(completions: Option<i32>, indexed: bool) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("work".into()),
                namespace: Some("ns".into()),
                uid: Some("job-uid".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(2),
                backoff_limit: Some(1),
                completion_mode: Some(if indexed { "Indexed" } else { "NonIndexed" }.into()),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "main".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(uid: &str, phase: &str, index: Option<i32>, tracked: bool) -> Pod {
        let mut p = pod_from_template(&job(Some(3), index.is_some()), index);
        p.metadata.uid = Some(uid.into());
        p.metadata.name = Some(format!("work-{uid}"));
        if !tracked {
            p.metadata.finalizers = None;
        }
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let p = pod_from_template(&job(Some(3), true), Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("work-2-"));
        assert_eq!(
            p.annotations().get(COMPLETION_INDEX).map(String::as_str),
            Some("2")
        );
        assert_eq!(
            p.labels().get(COMPLETION_INDEX).map(String::as_str),
            Some("2")
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        assert!(p
            .metadata
            .finalizers
            .unwrap()
            .contains(&TRACKING_FINALIZER.to_string()));
    }

    #[test]
    fn finished_pods_are_counted_once_through_uncounted() {
        let now = Timestamp::from_second(1000).unwrap();
        let mut j = job(Some(3), false);
        let a = pod("a", "Succeeded", None, true);
        let b = pod("b", "Failed", None, true);
        let c = pod("c", "Running", None, true);
        let mut rec = None;
        let t = tally(&j, &[&a, &b, &c], &mut rec, now);
        let unc = t.status.uncounted_terminated_pods.clone().unwrap();
        assert_eq!(unc.succeeded.unwrap(), vec!["a"]);
        assert_eq!(unc.failed.unwrap(), vec!["b"]);
        assert_eq!(
            (t.status.succeeded, t.status.failed, t.status.active),
            (Some(0), Some(0), Some(1))
        );
        assert_eq!(t.release.len(), 2);
        assert_eq!(rec.map(|r| r.failures), Some(1));
        // Finalizers removed: the uids move into the counters, exactly once.
        j.status = Some(t.status);
        let a2 = pod("a", "Succeeded", None, false);
        let b2 = pod("b", "Failed", None, false);
        let t2 = tally(&j, &[&a2, &b2, &c], &mut rec, now);
        assert_eq!((t2.status.succeeded, t2.status.failed), (Some(1), Some(1)));
        assert_eq!(uncounted_len(&t2.status), 0);
        j.status = Some(t2.status);
        let t3 = tally(&j, &[&a2, &b2, &c], &mut rec, now);
        assert_eq!((t3.status.succeeded, t3.status.failed), (Some(1), Some(1)));
    }

    #[test]
    fn backoff_limit_and_completions_decide_the_outcome() {
        let now = Timestamp::from_second(1000).unwrap();
        let j = job(Some(1), false);
        let f1 = pod("f1", "Failed", None, true);
        let f2 = pod("f2", "Failed", None, true);
        let t = tally(&j, &[&f1, &f2], &mut None, now);
        let o = decide(&j, &t, now).expect("failed");
        assert_eq!(
            (o.success, o.reason.as_str()),
            (false, "BackoffLimitExceeded")
        );
        let ok = pod("ok", "Succeeded", None, true);
        let t = tally(&j, &[&f1, &ok], &mut None, now);
        let o = decide(&j, &t, now).expect("complete");
        assert_eq!((o.success, o.reason.as_str()), (true, "CompletionsReached"));
    }

    #[test]
    fn indexed_jobs_complete_on_distinct_indexes() {
        let now = Timestamp::from_second(1000).unwrap();
        let j = job(Some(2), true);
        let a = pod("a", "Succeeded", Some(0), true);
        let b = pod("b", "Succeeded", Some(0), true);
        let t = tally(&j, &[&a, &b], &mut None, now);
        assert_eq!(t.status.completed_indexes.as_deref(), Some("0"));
        assert!(decide(&j, &t, now).is_none());
        let c = pod("c", "Succeeded", Some(1), true);
        let t = tally(&j, &[&a, &c], &mut None, now);
        assert_eq!(t.status.completed_indexes.as_deref(), Some("0-1"));
        assert!(decide(&j, &t, now).is_some_and(|o| o.success));
    }

    #[test]
    fn deadline_counts_from_start_time() {
        let mut j = job(Some(1), false);
        j.spec.as_mut().unwrap().active_deadline_seconds = Some(5);
        j.status = Some(JobStatus {
            start_time: Some(Time(Timestamp::from_second(100).unwrap())),
            ..Default::default()
        });
        assert_eq!(
            deadline_left(&j, Timestamp::from_second(102).unwrap()),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            deadline_left(&j, Timestamp::from_second(200).unwrap()),
            Some(Duration::ZERO)
        );
    }
}

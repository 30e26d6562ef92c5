//! The CronJob controller, as upstream's (`pkg/controller/cronjob`, v2): creates a Job for
//! each scheduled time, in the CronJob's time zone.
//!
//! Each pass:
//! - reconciles `status.active` with the Jobs it owns (finished ones leave it with a
//!   `SawCompletedJob` Event and move `lastSuccessfulTime`; vanished ones with `MissingJob`;
//!   owned running Jobs it did not create, e.g. `kubectl create job --from=cronjob/x`, are
//!   reported as `UnexpectedJob`, as upstream);
//! - unless suspended, finds the most recent missed scheduled time since `lastScheduleTime`
//!   (or creation), bounded by `startingDeadlineSeconds` (`MissSchedule` when it passed);
//! - applies `concurrencyPolicy` (Forbid waits with `JobAlreadyActive`, Replace deletes the
//!   running Jobs), creates the Job `<name>-<minutes since epoch>` (deterministic, so a stale
//!   cache cannot create it twice) and records `lastScheduleTime`;
//! - deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit` /
//!   `failedJobsHistoryLimit`;
//! - requeues itself for the next scheduled time.

pub mod schedule;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{DeleteParams, ObjectMeta, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::job::policy;
use crate::objects::{api_message, controller_ref, object_ref, EventType, Recorder};
use crate::{Backoff, Clients, Error};

/// The controller's identity and the component its Events name.
pub const COMPONENT: &str = "cronjob-controller";

/// Annotation with the scheduled time a Job was created for (upstream 1.32+).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Upstream's bound on missed start times before it complains (`TooManyMissedTimes`).
const TOO_MANY_MISSED: u32 = 100;

/// Extra delay after the next scheduled time, so the pass sees it as due.
const AFTER_SCHEDULE: Duration = Duration::from_millis(100);

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    jobs: Store<Job>,
    backoff: Backoff,
    /// Per CronJob, the running Jobs already reported as `UnexpectedJob`: upstream's event
    /// recorder folds repeats into one Event with a count; we report each Job once.
    unexpected: Mutex<HashMap<String, HashSet<String>>>,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let cronjobs = clients.informers.get::<CronJob>();
    let jobs = clients.informers.get::<Job>();
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        events: Recorder::new(clients.writer(COMPONENT).clone(), COMPONENT, None),
        jobs: jobs.store(),
        backoff: Backoff::default(),
        unexpected: Mutex::default(),
    });
    let results = Controller::for_shared_stream(cronjobs.subscribe(), cronjobs.store())
        .watches_shared_stream(jobs.subscribe(), |job: Arc<Job>| {
            controller_ref(&job.metadata)
                .filter(|r| r.kind == "CronJob" && r.api_version.starts_with("batch/"))
                .map(|r| ObjectRef::new(&r.name).within(&job.namespace().unwrap_or_default()))
                .into_iter()
                .collect::<Vec<_>>()
        })
        .with_config(Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

fn key(cj: &CronJob) -> String {
    format!("{}/{}", cj.namespace().unwrap_or_default(), cj.name_any())
}

/// The Job name for a scheduled time: the CronJob's name and the time in minutes since the
/// epoch (upstream's `getJobName`).
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The Job for `scheduled`, from the CronJob's template (upstream's `getJobFromTemplate2`).
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cj.name_any(),
                uid: cj.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// How a finished Job ended: `Complete` or `Failed`.
fn finished_as(job: &Job) -> Option<&'static str> {
    ["Complete", "Failed"]
        .into_iter()
        .find(|t| policy::has_condition(job, t))
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key(&cj);
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.uid().unwrap_or_default();
    let Some(spec) = cj.spec.clone() else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .filter(|j| controller_ref(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let mut status = cj.status.clone().unwrap_or_default();
    let mut active: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
    let mut events: Vec<(EventType, &str, String)> = Vec::new();
    let in_active =
        |active: &[ObjectReference], u: &str| active.iter().any(|r| r.uid.as_deref() == Some(u));

    let reported = ctx
        .unexpected
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key)
        .unwrap_or_default();
    let mut unexpected = HashSet::new();
    for job in &jobs {
        let juid = job.uid().unwrap_or_default();
        let found = in_active(&active, &juid);
        match finished_as(job) {
            None if !found => {
                if !reported.contains(&juid) {
                    events.push((
                        EventType::Warning,
                        "UnexpectedJob",
                        format!(
                            "Saw a job that the controller did not create or forgot: {}",
                            job.name_any()
                        ),
                    ));
                }
                unexpected.insert(juid);
            }
            None => {}
            Some(how) => {
                if found {
                    active.retain(|r| r.uid.as_deref() != Some(juid.as_str()));
                    events.push((
                        EventType::Normal,
                        "SawCompletedJob",
                        format!("Saw completed job: {}, condition: {how}", job.name_any()),
                    ));
                }
                if how == "Complete" {
                    let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
                    if let Some(t) = done {
                        if status
                            .last_successful_time
                            .as_ref()
                            .is_none_or(|l| l.0 < t.0)
                        {
                            status.last_successful_time = Some(t);
                        }
                    }
                }
            }
        }
    }
    if !unexpected.is_empty() {
        ctx.unexpected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), unexpected);
    }
    // Active entries whose Job is neither cached nor in the API went missing.
    let cached: HashSet<String> = jobs.iter().filter_map(|j| j.uid()).collect();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut kept = Vec::new();
    for r in active {
        if r.uid.as_ref().is_some_and(|u| cached.contains(u)) {
            kept.push(r);
            continue;
        }
        let name = r.name.clone().unwrap_or_default();
        let live = jobs_api
            .get_opt(&name)
            .await
            .map_err(Error::api(format!("looking up Job {ns}/{name}")))?;
        if live.is_some_and(|j| j.uid() == r.uid) {
            kept.push(r);
        } else {
            events.push((
                EventType::Normal,
                "MissingJob",
                format!("Active job went missing: {name}"),
            ));
        }
    }
    active = kept;

    let mut requeue = None;
    if cj.metadata.deletion_timestamp.is_none() && spec.suspend != Some(true) {
        requeue = schedule_pass(&ctx, &cj, &mut status, &mut active, &mut events, now).await?;
    }
    status.active = (!active.is_empty()).then_some(active);
    if cj.status.as_ref() != Some(&status) && !update_status(&ctx, &cj, status).await? {
        return Ok(Action::await_change());
    }
    for (kind, reason, message) in events {
        ctx.events.record(object_ref(&*cj), kind, reason, message);
    }
    cleanup_history(&ctx, &cj, &jobs).await?;
    ctx.backoff.succeeded(&key);
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The scheduling half of a pass; returns when to look again.
async fn schedule_pass(
    ctx: &Ctx,
    cj: &CronJob,
    status: &mut CronJobStatus,
    active: &mut Vec<ObjectReference>,
    events: &mut Vec<(EventType, &'static str, String)>,
    now: Timestamp,
) -> Result<Option<Duration>, Error> {
    let spec = cj.spec.clone().unwrap_or_default();
    let parsed = match schedule::parse(&spec.schedule) {
        Ok(p) => p,
        Err(e) => {
            events.push((
                EventType::Warning,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            ));
            return Ok(None);
        }
    };
    let tz = match schedule::zone(spec.time_zone.as_deref(), &parsed) {
        Ok(tz) => tz,
        Err(e) => {
            events.push((
                EventType::Warning,
                "UnknownTimeZone",
                format!("invalid timeZone: {:?}: {e}", e.0),
            ));
            return Ok(None);
        }
    };
    let sched = &parsed.schedule;
    let next_wait = |from: Timestamp| {
        sched.next_after(from, &tz).map(|n| {
            Duration::from_millis(
                n.as_millisecond()
                    .saturating_sub(from.as_millisecond())
                    .max(0) as u64,
            ) + AFTER_SCHEDULE
        })
    };
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(created);
    if let Some(sds) = spec.starting_deadline_seconds {
        if let Ok(bound) = now.checked_sub(jiff::SignedDuration::from_secs(sds)) {
            earliest = earliest.max(bound);
        }
    }
    let (most_recent, missed) = sched.most_recent(earliest, now, &tz);
    let Some(scheduled) = most_recent else {
        return Ok(next_wait(now));
    };
    if missed > TOO_MANY_MISSED {
        events.push((
            EventType::Warning,
            "TooManyMissedTimes",
            format!(
                "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
            ),
        ));
    }
    if let Some(sds) = spec.starting_deadline_seconds {
        if scheduled.as_second().saturating_add(sds) < now.as_second() {
            events.push((
                EventType::Warning,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled
                        .to_zoned(tz.clone())
                        .strftime("%a, %d %b %Y %H:%M:%S %z")
                ),
            ));
            return Ok(next_wait(now));
        }
    }
    let name = job_name(&cj.name_any(), scheduled);
    let already = active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || status
            .last_schedule_time
            .as_ref()
            .is_some_and(|t| t.0 == scheduled);
    if already {
        return Ok(next_wait(now));
    }
    let ns = cj.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match concurrency(spec.concurrency_policy.as_deref(), active.len()) {
        Concurrency::Skip => {
            events.push((
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return Ok(next_wait(now));
        }
        Concurrency::ReplaceThenStart => {
            for r in std::mem::take(active) {
                let jname = r.name.clone().unwrap_or_default();
                if delete_job(&api, &jname, r.uid.clone()).await? {
                    events.push((
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("Deleted job {jname}"),
                    ));
                }
            }
        }
        Concurrency::Start => {}
    }
    let job = job_from_template(cj, scheduled, &tz);
    let created = match api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            events.push((
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created job {name}"),
            ));
            j
        }
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            // Made by an earlier pass whose status write was lost: take it if it is ours.
            match api
                .get_opt(&name)
                .await
                .map_err(Error::api(format!("reading Job {ns}/{name}")))?
            {
                Some(j)
                    if controller_ref(&j.metadata)
                        .is_some_and(|r| Some(&r.uid) == cj.uid().as_ref()) =>
                {
                    j
                }
                _ => return Ok(next_wait(now)),
            }
        }
        Err(e) if crate::namespace_closed(&e) => return Ok(None),
        Err(e) => {
            ctx.events.record(
                object_ref(cj),
                EventType::Warning,
                "FailedCreate",
                format!("Error creating job: {}", api_message(&e)),
            );
            return Err(Error::api(format!("creating Job {ns}/{name}"))(e));
        }
    };
    if finished_as(&created).is_none() && !active.iter().any(|r| r.uid == created.uid()) {
        active.push(object_ref(&created));
    }
    status.last_schedule_time = Some(Time(scheduled));
    Ok(next_wait(now))
}

/// What `concurrencyPolicy` says about a due run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Start it (Allow, or nothing running).
    Start,
    /// Skip it: Forbid with a run still going.
    Skip,
    /// Delete the running Jobs, then start it (Replace).
    ReplaceThenStart,
}

/// Applies `concurrencyPolicy` (default Allow) with `active` Jobs running.
pub fn concurrency(policy: Option<&str>, active: usize) -> Concurrency {
    match policy {
        _ if active == 0 => Concurrency::Start,
        Some("Forbid") => Concurrency::Skip,
        Some("Replace") => Concurrency::ReplaceThenStart,
        _ => Concurrency::Start,
    }
}

/// Deletes a Job with background propagation; false if it was already gone.
async fn delete_job(api: &Api<Job>, name: &str, uid: Option<String>) -> Result<bool, Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: uid.map(|u| kube::api::Preconditions {
            uid: Some(u),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(Error::api(format!("deleting Job {name}"))(e)),
    }
}

/// Deletes the oldest finished Jobs beyond the history limits (upstream's
/// `cleanupFinishedJobs`, oldest by start time).
async fn cleanup_history(ctx: &Ctx, cj: &CronJob, jobs: &[Arc<Job>]) -> Result<(), Error> {
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(());
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &cj.namespace().unwrap_or_default());
    let mut by_outcome: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for j in jobs
        .iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
    {
        if let Some(how) = finished_as(j) {
            by_outcome.entry(how).or_default().push(j);
        }
    }
    for (how, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let (Some(limit), Some(list)) = (limit, by_outcome.get_mut(how)) else {
            continue;
        };
        let limit = limit.max(0) as usize;
        if list.len() <= limit {
            continue;
        }
        // Upstream's `byJobStartTime`: start time, then name.
        list.sort_by_key(|j| {
            let started = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .or(j.metadata.creation_timestamp.as_ref())
                .map(|t| t.0);
            (started, j.name_any())
        });
        let excess = list.len() - limit;
        for j in list.iter().take(excess) {
            let name = j.name_any();
            if delete_job(&api, &name, j.uid()).await? {
                ctx.events.record(
                    object_ref(cj),
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted job {name}"),
                );
            }
        }
    }
    Ok(())
}

/// Writes the status with PUT on the cached object; a stale cache conflicts and the pass is
/// retried. False if the CronJob is gone.
async fn update_status(ctx: &Ctx, cj: &CronJob, status: CronJobStatus) -> Result<bool, Error> {
    let api: Api<CronJob> =
        Api::namespaced(ctx.client.clone(), &cj.namespace().unwrap_or_default());
    let mut current = cj.clone();
    current.status = Some(status);
    match api
        .replace_status(&cj.name_any(), &PostParams::default(), &current)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::api(format!(
            "updating the status of CronJob {}",
            key(cj)
        ))(e)),
    }
}

fn error_policy(cj: Arc<CronJob>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&cj)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobTemplateSpec};

    #[test]
    fn concurrency_policies() {
        assert_eq!(concurrency(None, 3), Concurrency::Start);
        assert_eq!(concurrency(Some("Allow"), 3), Concurrency::Start);
        assert_eq!(concurrency(Some("Forbid"), 0), Concurrency::Start);
        assert_eq!(concurrency(Some("Forbid"), 1), Concurrency::Skip);
        assert_eq!(concurrency(Some("Replace"), 0), Concurrency::Start);
        assert_eq!(
            concurrency(Some("Replace"), 2),
            Concurrency::ReplaceThenStart
        );
    }

    #[test]
    fn jobs_are_named_by_scheduled_minute_and_owned() {
        let cj = CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                namespace: Some("ns".into()),
                uid: Some("cj-uid".into()),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: "*/1 * * * *".into(),
                job_template: JobTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "tick".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: None,
                },
                ..Default::default()
            }),
            status: None,
        };
        let at: Timestamp = "2024-01-01T10:01:00Z".parse().unwrap();
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let job = job_from_template(&cj, at, &tz);
        assert_eq!(job.metadata.name.as_deref(), Some("tick-28401721"));
        assert_eq!(
            job.annotations()
                .get(SCHEDULED_TIMESTAMP)
                .map(String::as_str),
            Some("2024-01-01T11:01:00+01:00")
        );
        assert_eq!(job.labels().get("app").map(String::as_str), Some("tick"));
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("CronJob", "cj-uid", Some(true))
        );
    }
}

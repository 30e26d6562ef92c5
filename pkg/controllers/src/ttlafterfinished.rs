//! The TTL-after-finished controller, as upstream's (`pkg/controller/ttlafterfinished`):
//! deletes a finished Job `ttlSecondsAfterFinished` seconds after it finished, with background
//! propagation so the garbage collector removes its pods afterwards.
//!
//! The finish time is the transition time of the Job's `Complete` or `Failed` condition.
//! Before deleting, the Job is read again from the API (the cache may be stale, and the TTL
//! may have been changed or removed meanwhile), and the delete is conditioned on the uid and
//! resource version of what was checked, as upstream does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Config, Controller};
use kube::{Api, Client, ResourceExt};

use crate::job::policy;
use crate::{Backoff, Clients, Error};

/// The controller's identity and log name.
pub const COMPONENT: &str = "ttl-after-finished-controller";

struct Ctx {
    client: Client,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let jobs = clients.informers.get::<Job>();
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        backoff: Backoff::default(),
    });
    let results = Controller::for_shared_stream(jobs.subscribe(), jobs.store())
        .with_config(Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

/// Time left before `job` expires: None if it has no TTL or is not finished (or is already
/// being deleted), zero once expired.
pub fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = policy::finish_time(job)?;
    let expires_ms = finished
        .as_millisecond()
        .saturating_add(i64::from(ttl).saturating_mul(1000));
    let left = expires_ms.saturating_sub(now.as_millisecond()).max(0);
    Some(Duration::from_millis(left as u64))
}

fn key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(left) = time_left(&job, Timestamp::now()) else {
        return Ok(Action::await_change());
    };
    if !left.is_zero() {
        return Ok(Action::requeue(left + Duration::from_millis(50)));
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let what = || format!("deleting expired Job {ns}/{name}");
    // The cache may be stale: decide on the live object.
    let Some(fresh) = api.get_opt(&name).await.map_err(Error::api(what()))? else {
        return Ok(Action::await_change());
    };
    if fresh.uid() != job.uid() {
        return Ok(Action::await_change());
    }
    match time_left(&fresh, Timestamp::now()) {
        None => return Ok(Action::await_change()),
        Some(d) if !d.is_zero() => return Ok(Action::requeue(d + Duration::from_millis(50))),
        Some(_) => {}
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: fresh.uid(),
            resource_version: fresh.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(job = %key(&job), "deleted finished Job after its TTL"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        // Changed since we looked: the next event brings the new version.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(Error::api(what())(e)),
    }
    ctx.backoff.succeeded(&key(&job));
    Ok(Action::await_change())
}

fn error_policy(job: Arc<Job>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&job)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn job(ttl: Option<i32>, finished_at: Option<i64>) -> Job {
        Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: ttl,
                ..Default::default()
            }),
            status: Some(JobStatus {
                conditions: finished_at.map(|t| {
                    vec![JobCondition {
                        type_: "Complete".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_counts_from_the_terminal_condition() {
        let now = Timestamp::from_second(1000).unwrap();
        assert_eq!(time_left(&job(None, Some(900)), now), None);
        assert_eq!(time_left(&job(Some(10), None), now), None);
        assert_eq!(
            time_left(&job(Some(10), Some(995)), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            time_left(&job(Some(0), Some(995)), now),
            Some(Duration::ZERO)
        );
    }
}

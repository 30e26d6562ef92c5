//! Leader election on a `coordination.k8s.io/v1` Lease, as upstream's client-go
//! `leaderelection`: several servers may run the controllers and the scheduler, but only the
//! holder of the Lease does, so two never act on the same objects.
//!
//! A candidate takes the Lease when it is absent, released (no holder) or expired (not renewed
//! for `leaseDurationSeconds`), renews it every retry period while leading, and gives up
//! leading when it could not renew for the renew deadline. On shutdown it releases the Lease
//! (upstream's `ReleaseOnCancel`), so a successor need not wait for expiry. A fresh single
//! server finds no Lease and leads at once.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

/// Upstream's defaults (kube-controller-manager and kube-scheduler `--leader-elect-*`).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader keeps trying to renew before it stops leading.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often candidates try to acquire and leaders renew.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One Lease to lead by.
#[derive(Clone, Debug)]
pub struct Election {
    /// The Lease's namespace (`kube-system` upstream).
    pub namespace: String,
    /// The Lease's name, e.g. `kube-scheduler`.
    pub name: String,
    /// This candidate, as upstream: `<hostname>_<uuid>`.
    pub identity: String,
    /// See [`LEASE_DURATION`].
    pub lease_duration: Duration,
    /// See [`RENEW_DEADLINE`].
    pub renew_deadline: Duration,
    /// See [`RETRY_PERIOD`].
    pub retry_period: Duration,
}

impl Election {
    /// An election for Lease `kube-system/<name>` with upstream's timings and a fresh identity
    /// on `host`.
    pub fn new(name: &str, host: &str) -> Self {
        Election {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: format!("{host}_{}", uuid::Uuid::new_v4()),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }
}

/// What one acquire-or-renew attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease now.
    Leading,
    /// Someone else holds it.
    Held(String),
}

/// Whether `lease` lets `identity` take or keep it at `now`: ours, no holder, or expired.
fn available(lease: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return true;
    }
    let duration = SignedDuration::from_secs(i64::from(lease.lease_duration_seconds.unwrap_or(0)));
    match &lease.renew_time {
        Some(renewed) => renewed.0 + duration < now,
        None => true,
    }
}

/// The Lease spec after `identity` takes or renews `current` at `now`.
fn claimed(current: Option<&LeaseSpec>, e: &Election, now: Timestamp) -> LeaseSpec {
    let mut spec = current.cloned().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(e.identity.as_str());
    if !ours {
        spec.acquire_time = Some(MicroTime(now));
        if current.is_some() {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        } else {
            spec.lease_transitions = Some(0);
        }
    }
    spec.holder_identity = Some(e.identity.clone());
    spec.lease_duration_seconds = Some(e.lease_duration.as_secs() as i32);
    spec.renew_time = Some(MicroTime(now));
    spec
}

async fn try_acquire_or_renew(api: &Api<Lease>, e: &Election) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    match api.get_opt(&e.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(e.name.clone()),
                    namespace: Some(e.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(claimed(None, e, now)),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(Attempt::Leading)
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if !available(&spec, &e.identity, now) {
                return Ok(Attempt::Held(spec.holder_identity.unwrap_or_default()));
            }
            lease.spec = Some(claimed(Some(&spec), e, now));
            // The resourceVersion makes this a compare-and-swap: a racing candidate gets 409.
            api.replace(&e.name, &PostParams::default(), &lease).await?;
            Ok(Attempt::Leading)
        }
    }
}

/// Gives the Lease up if we hold it: no holder, 1 s duration, as upstream's release.
async fn release(api: &Api<Lease>, e: &Election) {
    let result = async {
        let Some(mut lease) = api.get_opt(&e.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        api.replace(&e.name, &PostParams::default(), &lease).await?;
        Ok::<_, kube::Error>(())
    }
    .await;
    if let Err(err) = result {
        tracing::warn!(lease = %e.name, error = %err, "releasing the lease failed; it expires on its own");
    }
}

/// Resolves once `rx` turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Runs `lead` only while holding the Lease, until `shutdown` turns true. `lead` gets a stop
/// signal that turns true when leadership is lost or on shutdown, and should then wind down;
/// after a loss the candidate campaigns again and calls `lead` anew once it leads.
///
/// # Cancel safety
/// Dropping the future drops the work in progress and leaves the Lease to expire; prefer
/// signalling `shutdown`, which releases it.
pub async fn run<F, Fut>(client: Client, e: Election, shutdown: watch::Receiver<bool>, mut lead: F)
where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        // Campaign.
        let mut last_holder = String::new();
        loop {
            match try_acquire_or_renew(&api, &e).await {
                Ok(Attempt::Leading) => break,
                Ok(Attempt::Held(holder)) => {
                    if holder != last_holder {
                        tracing::info!(lease = %e.name, %holder, "lease held by another; waiting");
                        last_holder = holder;
                    }
                }
                Err(err) => {
                    tracing::debug!(lease = %e.name, error = %err, "acquiring the lease failed")
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(e.retry_period) => {}
            }
        }
        tracing::info!(lease = %e.name, identity = %e.identity, "acquired lease; leading");
        let (stop_tx, stop_rx) = watch::channel(false);
        let work = lead(stop_rx);
        tokio::pin!(work);
        let mut renewed = Instant::now();
        let lost = loop {
            tokio::select! {
                _ = &mut work => break false,
                _ = &mut stop => break false,
                _ = tokio::time::sleep(e.retry_period) => {
                    match try_acquire_or_renew(&api, &e).await {
                        Ok(Attempt::Leading) => renewed = Instant::now(),
                        Ok(Attempt::Held(holder)) => {
                            tracing::warn!(lease = %e.name, %holder, "lease taken over");
                            break true;
                        }
                        Err(err) => {
                            tracing::debug!(lease = %e.name, error = %err, "renewing the lease failed");
                            if renewed.elapsed() > e.renew_deadline {
                                break true;
                            }
                        }
                    }
                }
            }
        };
        let _ = stop_tx.send(true);
        work.await;
        if !lost {
            release(&api, &e).await;
            return;
        }
        tracing::warn!(lease = %e.name, "leader election lost; stopped leading");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(id: &str) -> Election {
        Election {
            identity: id.into(),
            ..Election::new("kube-scheduler", "h")
        }
    }

    #[test]
    fn leases_are_taken_when_free_ours_or_expired() {
        let now = Timestamp::now();
        let held = |holder: &str, ago: i64| LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(ago))),
            ..Default::default()
        };
        assert!(available(&LeaseSpec::default(), "me", now));
        assert!(available(&held("me", 1), "me", now));
        assert!(!available(&held("other", 1), "me", now));
        assert!(available(&held("other", 16), "me", now));
        assert!(available(&held("", 1), "me", now), "released");
    }

    #[test]
    fn taking_over_counts_a_transition_renewing_does_not() {
        let now = Timestamp::now();
        let me = election("me");
        let fresh = claimed(None, &me, now);
        assert_eq!(fresh.holder_identity.as_deref(), Some("me"));
        assert_eq!(fresh.lease_transitions, Some(0));
        assert_eq!(fresh.lease_duration_seconds, Some(15));
        let renewed = claimed(Some(&fresh), &me, now);
        assert_eq!(renewed.lease_transitions, Some(0));
        assert_eq!(renewed.acquire_time, fresh.acquire_time);
        let taken = claimed(Some(&renewed), &election("you"), now);
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.holder_identity.as_deref(), Some("you"));
    }
}

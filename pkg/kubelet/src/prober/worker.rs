//! One probe of one container: upstream's probe `worker`, split into a pure state machine
//! ([`Tracker`], unit-tested under chosen clocks) and the task that ticks it (`Worker`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};

use super::probe::{self, Outcome, Target};
use super::{ProbeResult, ProbeType, Results};
use crate::worker::events::{Part, Recorder, WARNING};

/// A probe's timing fields with the API's defaults (the apiserver defaults them too; a pod
/// object from elsewhere may not be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `initialDelaySeconds`: no probe until the container has run this long.
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10, at least 1).
    pub period: Duration,
    /// `timeoutSeconds` (default 1, at least 1).
    pub timeout: Duration,
    /// `successThreshold` (default 1).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
}

impl Timing {
    /// The timing of `probe`.
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// What the pod worker last saw of one container (its newest attempt).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerView {
    /// CRI container ID.
    pub id: String,
    /// When it started running; `None` unless it runs now.
    pub running_since: Option<Timestamp>,
    /// It has exited.
    pub terminated: bool,
}

/// What the pod worker last saw of a pod, shared with its probe workers.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// The pod object (spec, deletion timestamp, phase).
    pub pod: Arc<Pod>,
    /// The pod's primary IP, once its sandbox has one.
    pub pod_ip: Option<String>,
    /// Containers (and init containers) by name.
    pub containers: HashMap<String, ContainerView>,
}

impl PodView {
    fn flags(&self) -> PodFlags {
        let phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        PodFlags {
            deleting: self.pod.metadata.deletion_timestamp.is_some(),
            terminal: matches!(phase, Some("Succeeded" | "Failed")),
            restart_never: crate::pod::runtime::restart_policy(&self.pod) == "Never",
        }
    }
}

/// The pod-level facts a probe step depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodFlags {
    /// The pod has a deletion timestamp.
    pub deleting: bool,
    /// The pod's phase is Succeeded or Failed.
    pub terminal: bool,
    /// `restartPolicy: Never`.
    pub restart_never: bool,
}

/// What a worker does at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing now (no container yet, initial delay, on hold, gated by the startup probe).
    Wait,
    /// Run the probe and [`Tracker::record`] its verdict.
    Probe,
    /// The worker is done for good (pod terminal, container will not run again, pod
    /// deleting for liveness/startup).
    Stop,
}

/// Upstream's per-worker probe state: the container being probed, the current run of equal
/// verdicts, and the hold after a failed liveness/startup probe.
#[derive(Debug, Clone)]
pub struct Tracker {
    kind: ProbeType,
    timing: Timing,
    container_id: Option<String>,
    last: Option<ProbeResult>,
    run: u32,
    on_hold: bool,
}

impl Tracker {
    /// A tracker for a probe of this type and timing.
    pub fn new(kind: ProbeType, timing: Timing) -> Tracker {
        Tracker {
            kind,
            timing,
            container_id: None,
            last: None,
            run: 0,
            on_hold: false,
        }
    }

    /// The verdict a new container starts with: not ready, alive, not yet started.
    pub fn initial(kind: ProbeType) -> ProbeResult {
        match kind {
            ProbeType::Readiness => ProbeResult::Failure,
            ProbeType::Liveness => ProbeResult::Success,
            ProbeType::Startup => ProbeResult::Unknown,
        }
    }

    /// The container this tracker follows.
    pub fn container_id(&self) -> Option<&str> {
        self.container_id.as_deref()
    }

    /// Upstream `doProbe` up to the probe itself: follows container replacement, sets the
    /// verdicts that need no probe, and says whether to probe now. `started` is whether the
    /// container's startup probe (if any) has succeeded. Returns the step and whether a
    /// verdict in `results` changed.
    pub fn step(
        &mut self,
        container: Option<&ContainerView>,
        pod: PodFlags,
        started: bool,
        now: Timestamp,
        results: &Results,
    ) -> (Step, bool) {
        if pod.terminal {
            return (Step::Stop, false);
        }
        let Some(c) = container.filter(|c| !c.id.is_empty()) else {
            return (Step::Wait, false);
        };
        let mut changed = false;
        if self.container_id.as_deref() != Some(c.id.as_str()) {
            if let Some(old) = self.container_id.take() {
                results.remove(self.kind, &old);
            }
            changed |= results.set(self.kind, &c.id, Self::initial(self.kind));
            self.container_id = Some(c.id.clone());
            self.on_hold = false;
        }
        if self.on_hold {
            return (Step::Wait, changed);
        }
        let Some(since) = c.running_since else {
            changed |= results.set(self.kind, &c.id, ProbeResult::Failure);
            let step = if c.terminated && pod.restart_never {
                Step::Stop
            } else {
                Step::Wait
            };
            return (step, changed);
        };
        if pod.deleting && self.kind != ProbeType::Readiness {
            // A terminating pod is not restarted by its probes.
            changed |= results.set(self.kind, &c.id, ProbeResult::Success);
            return (Step::Stop, changed);
        }
        let ran = now.duration_since(since);
        if ran.as_secs() < i64::try_from(self.timing.initial_delay.as_secs()).unwrap_or(i64::MAX) {
            return (Step::Wait, changed);
        }
        // The startup probe stops once the container started; the others wait for it.
        if started == (self.kind == ProbeType::Startup) {
            return (Step::Wait, changed);
        }
        (Step::Probe, changed)
    }

    /// Counts a probe's verdict (`None`: the probe errored, the result is thrown away) and
    /// publishes it once its threshold is met. Returns whether a verdict changed.
    pub fn record(&mut self, result: Option<ProbeResult>, results: &Results) -> bool {
        let (Some(result), Some(id)) = (result, self.container_id.clone()) else {
            return false;
        };
        if self.last == Some(result) {
            self.run += 1;
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let below = match result {
            ProbeResult::Failure => self.run < self.timing.failure_threshold,
            ProbeResult::Success => self.run < self.timing.success_threshold,
            ProbeResult::Unknown => false,
        };
        if below {
            return false;
        }
        let changed = results.set(self.kind, &id, result);
        if self.kind != ProbeType::Readiness && result == ProbeResult::Failure {
            // The container will be restarted: probe again only once it is replaced.
            self.on_hold = true;
            self.run = 0;
        }
        changed
    }
}

/// The task behind one probe of one container.
pub(super) struct Worker {
    pub(super) kind: ProbeType,
    pub(super) container: Container,
    /// The probe spec (one of the container's three).
    pub(super) spec: Probe,
    /// The container is an init container (a sidecar): Events name it so.
    pub(super) init: bool,
    pub(super) results: Arc<Results>,
    pub(super) view: watch::Receiver<PodView>,
    pub(super) wake: Arc<Notify>,
    pub(super) cri: distro_cri::Cri,
    pub(super) events: Recorder,
    /// The kubelet started this recently: spread the first probes over a period.
    pub(super) jitter: bool,
}

impl Worker {
    /// Whether the container has started (no startup probe, or it has succeeded).
    fn started(&self, id: Option<&str>) -> bool {
        if self.container.startup_probe.is_none() {
            return true;
        }
        id.is_some_and(|id| self.results.get(ProbeType::Startup, id) == Some(ProbeResult::Success))
    }

    /// Probes every period until the pod no longer needs it (or the task is aborted).
    pub(super) async fn run(mut self) {
        let timing = Timing::of(&self.spec);
        let mut tracker = Tracker::new(self.kind, timing);
        if self.jitter {
            let part = rand::random::<f64>();
            tokio::time::sleep(timing.period.mul_f64(part)).await;
        }
        let mut ticker = tokio::time::interval_at(Instant::now() + timing.period, timing.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first evaluation counts as a tick, as upstream probes once before its ticker.
        let mut ticked = true;
        loop {
            let view = self.view.borrow_and_update().clone();
            let container = view.containers.get(&self.container.name);
            let started = self.started(container.map(|c| c.id.as_str()));
            let now = crate::backoff::wall_clock_now();
            let (step, mut changed) =
                tracker.step(container, view.flags(), started, now, &self.results);
            // Between ticks only readiness probes run early: a container that just started
            // becomes ready without waiting a whole period (upstream's manual trigger).
            let due = ticked
                || (self.kind == ProbeType::Readiness
                    && tracker.container_id().is_some_and(|id| {
                        self.results.get(ProbeType::Readiness, id) != Some(ProbeResult::Success)
                    }));
            match step {
                Step::Stop => {
                    if changed {
                        self.wake.notify_one();
                    }
                    break;
                }
                Step::Probe if due => {
                    let result = self
                        .probe(&view, tracker.container_id().unwrap_or_default(), timing)
                        .await;
                    changed |= tracker.record(result, &self.results);
                }
                Step::Probe | Step::Wait => {}
            }
            if changed {
                self.wake.notify_one();
            }
            tokio::select! {
                _ = ticker.tick() => ticked = true,
                r = self.view.changed() => {
                    if r.is_err() {
                        break;
                    }
                    ticked = false;
                }
            }
        }
        // The last verdict stays until the pod leaves the node (`Manager::remove_pod`): a
        // deleting pod's containers stay alive and started while they stop.
        tracing::debug!(container = %self.container.name, kind = %self.kind, "probe worker stopped");
    }

    /// Runs the probe once and records its Event; `None` when it errored.
    async fn probe(&mut self, view: &PodView, id: &str, timing: Timing) -> Option<ProbeResult> {
        let target = Target {
            pod: &view.pod,
            container: &self.container,
            container_id: id,
            pod_ip: view.pod_ip.as_deref(),
            timeout: timing.timeout,
        };
        let outcome = probe::run(&self.spec, &target, &self.cri).await;
        let part = if self.init {
            Part::InitContainer(&self.container.name)
        } else {
            Part::Container(&self.container.name)
        };
        let kind = self.kind;
        let (result, event) = match outcome {
            Outcome::Success(_) => (Some(ProbeResult::Success), None),
            Outcome::Warning(out) => (
                Some(ProbeResult::Success),
                Some(("ProbeWarning", format!("{kind} probe warning: {out}"))),
            ),
            Outcome::Failure(out) => (
                Some(ProbeResult::Failure),
                Some(("Unhealthy", format!("{kind} probe failed: {out}"))),
            ),
            Outcome::Error(e) => (
                None,
                Some(("Unhealthy", format!("{kind} probe errored: {e}"))),
            ),
        };
        if let Some((reason, message)) = event {
            tracing::debug!(pod = %crate::pod::format_pod(&view.pod), container = %self.container.name, %message, "probe");
            self.events
                .record(&view.pod, part, WARNING, reason, message)
                .await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(delay: u64, success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::from_secs(delay),
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn running(id: &str, since: i64) -> ContainerView {
        ContainerView {
            id: id.into(),
            running_since: Some(at(since)),
            terminated: false,
        }
    }

    const POD: PodFlags = PodFlags {
        deleting: false,
        terminal: false,
        restart_never: false,
    };

    use ProbeResult::{Failure, Success, Unknown};
    use ProbeType::{Liveness, Readiness, Startup};

    #[test]
    fn defaults_follow_the_api() {
        let t = Timing::of(&Probe::default());
        assert_eq!(
            t,
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let t = Timing::of(&Probe {
            period_seconds: Some(0),
            failure_threshold: Some(0),
            initial_delay_seconds: Some(5),
            ..Default::default()
        });
        assert_eq!(
            (t.period, t.failure_threshold, t.initial_delay),
            (Duration::from_secs(1), 1, Duration::from_secs(5))
        );
    }

    #[test]
    fn new_containers_get_initial_verdicts_and_no_container_waits() {
        let r = Results::default();
        for (kind, want) in [
            (Readiness, Failure),
            (Liveness, Success),
            (Startup, Unknown),
        ] {
            let mut t = Tracker::new(kind, timing(0, 1, 3));
            assert_eq!(t.step(None, POD, true, at(0), &r), (Step::Wait, false));
            let started = kind != Startup;
            let (step, changed) = t.step(Some(&running("c1", 0)), POD, started, at(0), &r);
            assert_eq!((step, changed), (Step::Probe, true), "{kind}");
            assert_eq!(r.get(kind, "c1"), Some(want), "{kind}");
        }
    }

    #[test]
    fn initial_delay_holds_probes_back() {
        let r = Results::default();
        let mut t = Tracker::new(Liveness, timing(5, 1, 3));
        let c = running("c1", 10);
        assert_eq!(t.step(Some(&c), POD, true, at(14), &r).0, Step::Wait);
        assert_eq!(t.step(Some(&c), POD, true, at(15), &r).0, Step::Probe);
    }

    #[test]
    fn failure_threshold_then_hold_until_replaced() {
        let r = Results::default();
        let mut t = Tracker::new(Liveness, timing(0, 1, 3));
        let c = running("c1", 0);
        t.step(Some(&c), POD, true, at(1), &r);
        assert!(!t.record(Some(Failure), &r));
        assert!(!t.record(Some(Failure), &r));
        assert_eq!(r.get(Liveness, "c1"), Some(Success), "below the threshold");
        // A success in between resets the run.
        assert!(!t.record(Some(Success), &r));
        assert!(!t.record(Some(Failure), &r));
        assert!(!t.record(Some(Failure), &r));
        // An errored probe is thrown away without breaking the run.
        assert!(!t.record(None, &r));
        assert!(t.record(Some(Failure), &r), "third failure in a row");
        assert_eq!(r.get(Liveness, "c1"), Some(Failure));
        // On hold: no more probes of this container.
        assert_eq!(t.step(Some(&c), POD, true, at(5), &r), (Step::Wait, false));
        // Replaced: the old verdict goes, the new container starts alive and is probed.
        let (step, _) = t.step(Some(&running("c2", 6)), POD, true, at(7), &r);
        assert_eq!(step, Step::Probe);
        assert_eq!(r.get(Liveness, "c1"), None);
        assert_eq!(r.get(Liveness, "c2"), Some(Success));
    }

    #[test]
    fn readiness_needs_success_threshold_and_keeps_probing_after_failure() {
        let r = Results::default();
        let mut t = Tracker::new(Readiness, timing(0, 2, 1));
        let c = running("c1", 0);
        t.step(Some(&c), POD, true, at(1), &r);
        assert!(!t.record(Some(Success), &r));
        assert_eq!(r.get(Readiness, "c1"), Some(Failure));
        assert!(t.record(Some(Success), &r), "second success in a row");
        assert_eq!(r.get(Readiness, "c1"), Some(Success));
        assert!(t.record(Some(Failure), &r), "failureThreshold 1");
        assert_eq!(
            t.step(Some(&c), POD, true, at(2), &r).0,
            Step::Probe,
            "readiness is never on hold"
        );
    }

    #[test]
    fn startup_gates_the_other_probes() {
        let r = Results::default();
        let c = running("c1", 0);
        let mut startup = Tracker::new(Startup, timing(0, 1, 3));
        let mut live = Tracker::new(Liveness, timing(0, 1, 3));
        assert_eq!(startup.step(Some(&c), POD, false, at(1), &r).0, Step::Probe);
        assert_eq!(live.step(Some(&c), POD, false, at(1), &r).0, Step::Wait);
        assert!(startup.record(Some(Success), &r));
        assert_eq!(startup.step(Some(&c), POD, true, at(2), &r).0, Step::Wait);
        assert_eq!(live.step(Some(&c), POD, true, at(2), &r).0, Step::Probe);
    }

    #[test]
    fn stopped_containers_and_pods() {
        let r = Results::default();
        let exited = ContainerView {
            id: "c1".into(),
            running_since: None,
            terminated: true,
        };
        let mut t = Tracker::new(Readiness, timing(0, 1, 1));
        t.step(Some(&running("c1", 0)), POD, true, at(1), &r);
        t.record(Some(Success), &r);
        assert_eq!(
            t.step(Some(&exited), POD, true, at(2), &r),
            (Step::Wait, true)
        );
        assert_eq!(
            r.get(Readiness, "c1"),
            Some(Failure),
            "not running is not ready"
        );
        let never = PodFlags {
            restart_never: true,
            ..POD
        };
        assert_eq!(t.step(Some(&exited), never, true, at(2), &r).0, Step::Stop);
        let terminal = PodFlags {
            terminal: true,
            ..POD
        };
        assert_eq!(
            t.step(Some(&running("c1", 0)), terminal, true, at(2), &r).0,
            Step::Stop
        );
        // A deleting pod: liveness says alive and stops; readiness goes on.
        let deleting = PodFlags {
            deleting: true,
            ..POD
        };
        let mut live = Tracker::new(Liveness, timing(0, 1, 1));
        live.step(Some(&running("c1", 0)), POD, true, at(1), &r);
        live.record(Some(Failure), &r);
        let mut live = Tracker::new(Liveness, timing(0, 1, 1));
        assert_eq!(
            live.step(Some(&running("c9", 0)), deleting, true, at(3), &r)
                .0,
            Step::Stop
        );
        assert_eq!(r.get(Liveness, "c9"), Some(Success));
        let mut ready = Tracker::new(Readiness, timing(0, 1, 1));
        assert_eq!(
            ready
                .step(Some(&running("c9", 0)), deleting, true, at(3), &r)
                .0,
            Step::Probe
        );
    }
}

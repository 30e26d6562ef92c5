//! The probe manager: starts and stops the probe workers of each pod and answers the pod
//! worker's questions (which containers are ready, started, to be killed).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distro_cri::api::ContainerState;
use distro_cri::Cri;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::worker::{ContainerView, PodView, Worker};
use super::{ProbeResult, ProbeType, Results};
use crate::pod::actions::ProbeFailures;
use crate::pod::runtime::{self, container_name, cri_time, RuntimePod};
use crate::worker::events::Recorder;

/// The probe workers of one pod.
struct PodProbes {
    view: watch::Sender<PodView>,
    /// Dropping the set aborts the workers.
    _tasks: JoinSet<()>,
}

/// Runs the probes of the pods on this node and holds their verdicts.
///
/// # Guarantees
/// Workers are owned here (one `JoinSet` per pod) and aborted when their pod is removed or
/// the manager is dropped; no lock is held across an await.
pub struct Manager {
    results: Arc<Results>,
    cri: Cri,
    events: Recorder,
    started: Instant,
    pods: Mutex<HashMap<String, PodProbes>>,
}

fn probes_of(c: &Container) -> [(ProbeType, Option<&Probe>); 3] {
    [
        (ProbeType::Startup, c.startup_probe.as_ref()),
        (ProbeType::Liveness, c.liveness_probe.as_ref()),
        (ProbeType::Readiness, c.readiness_probe.as_ref()),
    ]
}

/// The containers that can have probes: regular ones and sidecars (restartable init
/// containers), with whether each is an init container.
fn probed_containers(pod: &Pod) -> Vec<(&Container, bool)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .map(|c| (c, false))
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| runtime::is_sidecar(c))
                .map(|c| (c, true)),
        )
        .filter(|(c, _)| probes_of(c).iter().any(|(_, p)| p.is_some()))
        .collect()
}

/// What the probe workers need of the runtime's state.
fn view_of(pod: &Pod, rt: &RuntimePod, pod_ip: Option<String>, prev: Option<&PodView>) -> PodView {
    let mut containers = HashMap::new();
    for (c, _) in probed_containers(pod) {
        let Some(s) = rt.latest(&c.name) else {
            continue;
        };
        let state = runtime::state(s);
        containers.insert(
            container_name(s).to_string(),
            ContainerView {
                id: s.id.clone(),
                running_since: (state == ContainerState::ContainerRunning)
                    .then(|| cri_time(s.started_at))
                    .flatten(),
                terminated: state == ContainerState::ContainerExited,
            },
        );
    }
    // Keep the same pod allocation when nothing changed, so comparing views stays cheap.
    let pod = match prev {
        Some(v) if *v.pod == *pod => v.pod.clone(),
        _ => Arc::new(pod.clone()),
    };
    PodView {
        pod,
        pod_ip,
        containers,
    }
}

/// [`Manager::failures`] over a results cache.
fn failures(results: &Results, pod: &Pod, rt: &RuntimePod) -> ProbeFailures {
    let mut f = ProbeFailures::default();
    for (c, _) in probed_containers(pod) {
        let Some(s) = rt
            .latest(&c.name)
            .filter(|s| runtime::state(s) == ContainerState::ContainerRunning)
        else {
            continue;
        };
        let get = |kind| results.get(kind, &s.id);
        if c.liveness_probe.is_some() && get(ProbeType::Liveness) == Some(ProbeResult::Failure) {
            f.liveness.insert(s.id.clone());
        }
        if c.startup_probe.is_some() {
            match get(ProbeType::Startup) {
                Some(ProbeResult::Failure) => {
                    f.startup.insert(s.id.clone());
                    f.not_started.insert(s.id.clone());
                }
                Some(ProbeResult::Success) => {}
                _ => {
                    f.not_started.insert(s.id.clone());
                }
            }
        }
    }
    f
}

impl Manager {
    /// A manager probing through `cri`, recording Events with the kubelet's `events`.
    pub fn new(events: Recorder, cri: Cri) -> Manager {
        Manager {
            results: Arc::new(Results::default()),
            cri,
            events,
            started: Instant::now(),
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// The verdicts (shared with the workers).
    pub fn results(&self) -> &Results {
        &self.results
    }

    /// Tells the pod's probe workers what the pod worker just saw, starting them the first
    /// time. `pod_ip` is the pod's primary IP (the node's for hostNetwork pods). `wake` is
    /// the pod worker's: a worker whose verdict changes notifies it.
    pub fn observe(&self, pod: &Pod, rt: &RuntimePod, pod_ip: Option<String>, wake: &Arc<Notify>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pods.get(&uid) {
            let view = view_of(pod, rt, pod_ip, Some(&p.view.borrow()));
            p.view.send_if_modified(|old| {
                if *old == view {
                    return false;
                }
                *old = view;
                true
            });
            return;
        }
        let containers = probed_containers(pod);
        if containers.is_empty() {
            return;
        }
        let view = view_of(pod, rt, pod_ip, None);
        let (tx, _) = watch::channel(view);
        let mut tasks = JoinSet::new();
        for (c, init) in containers {
            for (kind, spec) in probes_of(c) {
                let Some(spec) = spec else { continue };
                let period = Duration::from_secs(
                    u64::try_from(spec.period_seconds.unwrap_or(10).max(1)).unwrap_or(10),
                );
                let worker = Worker {
                    kind,
                    container: c.clone(),
                    spec: spec.clone(),
                    init,
                    results: self.results.clone(),
                    view: tx.subscribe(),
                    wake: wake.clone(),
                    cri: self.cri.clone(),
                    events: self.events.clone(),
                    jitter: self.started.elapsed() < period,
                };
                tasks.spawn(worker.run());
            }
        }
        pods.insert(
            uid,
            PodProbes {
                view: tx,
                _tasks: tasks,
            },
        );
    }

    /// Stops the pod's probe workers and forgets their verdicts (the pod left the node).
    pub fn remove_pod(&self, pod: &Pod, rt: &RuntimePod) {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let removed = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        drop(removed);
        for c in &rt.containers {
            for kind in [
                ProbeType::Liveness,
                ProbeType::Readiness,
                ProbeType::Startup,
            ] {
                self.results.remove(kind, &c.id);
            }
        }
    }

    /// The failed liveness/startup probes of the pod's running containers, and the running
    /// ones not started yet, for `compute_pod_actions`.
    pub fn failures(&self, pod: &Pod, rt: &RuntimePod) -> ProbeFailures {
        failures(&self.results, pod, rt)
    }

    /// Readiness and startup verdicts of the pod's containers, by container ID, as
    /// `StatusInputs` takes them.
    pub fn status_inputs(&self, rt: &RuntimePod) -> (HashMap<String, bool>, HashMap<String, bool>) {
        let ids: HashSet<&str> = rt.containers.iter().map(|c| c.id.as_str()).collect();
        (
            self.results
                .known(ProbeType::Readiness, ids.iter().copied()),
            self.results.known(ProbeType::Startup, ids.iter().copied()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distro_cri::api::{ContainerMetadata, ContainerStatus};
    use k8s_openapi::api::core::v1::PodSpec;

    fn ctr(name: &str, id: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            state: state as i32,
            started_at: 1_700_000_000_000_000_000,
            ..Default::default()
        }
    }

    fn pod() -> Pod {
        let probe = || Some(Probe::default());
        Pod {
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "live".into(),
                        liveness_probe: probe(),
                        ..Default::default()
                    },
                    Container {
                        name: "boot".into(),
                        startup_probe: probe(),
                        ..Default::default()
                    },
                    Container {
                        name: "plain".into(),
                        ..Default::default()
                    },
                ],
                init_containers: Some(vec![
                    Container {
                        name: "side".into(),
                        restart_policy: Some("Always".into()),
                        readiness_probe: probe(),
                        ..Default::default()
                    },
                    Container {
                        name: "init".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn probed_containers_are_regular_ones_and_sidecars_with_probes() {
        let p = pod();
        let names: Vec<(&str, bool)> = probed_containers(&p)
            .iter()
            .map(|(c, init)| (c.name.as_str(), *init))
            .collect();
        assert_eq!(names, [("live", false), ("boot", false), ("side", true)]);
    }

    #[test]
    fn views_follow_the_newest_attempt() {
        use ContainerState::{ContainerExited as Exited, ContainerRunning as Running};
        let p = pod();
        let rt = RuntimePod::new(
            vec![],
            vec![
                ctr("live", "l1", Exited),
                ctr("boot", "b1", Running),
                ctr("plain", "p1", Running),
            ],
        );
        let v = view_of(&p, &rt, Some("10.42.0.9".into()), None);
        assert_eq!(v.pod_ip.as_deref(), Some("10.42.0.9"));
        assert_eq!(v.containers.len(), 2, "only probed containers: {v:?}");
        assert!(v.containers["live"].terminated && v.containers["live"].running_since.is_none());
        assert!(v.containers["boot"].running_since.is_some());
        let again = view_of(&p, &rt, Some("10.42.0.9".into()), Some(&v));
        assert!(
            Arc::ptr_eq(&again.pod, &v.pod),
            "an unchanged pod is shared"
        );
        assert_eq!(again, v);
    }

    #[test]
    fn failures_name_running_containers_by_verdict() {
        use ContainerState::{ContainerExited as Exited, ContainerRunning as Running};
        let p = pod();
        let rt = RuntimePod::new(
            vec![],
            vec![
                ctr("live", "l1", Running),
                ctr("boot", "b1", Running),
                ctr("side", "s1", Exited),
            ],
        );
        let r = Results::default();
        let f = failures(&r, &p, &rt);
        assert!(f.liveness.is_empty() && f.startup.is_empty());
        assert_eq!(
            f.not_started,
            ["b1".to_string()].into(),
            "no startup verdict yet"
        );
        r.set(ProbeType::Liveness, "l1", ProbeResult::Failure);
        r.set(ProbeType::Startup, "b1", ProbeResult::Failure);
        let f = failures(&r, &p, &rt);
        assert_eq!(f.liveness, ["l1".to_string()].into());
        assert_eq!(f.startup, ["b1".to_string()].into());
        r.set(ProbeType::Startup, "b1", ProbeResult::Success);
        r.set(ProbeType::Liveness, "l1", ProbeResult::Success);
        let f = failures(&r, &p, &rt);
        assert!(f.liveness.is_empty() && f.startup.is_empty() && f.not_started.is_empty());
    }
}

//! Liveness, readiness and startup probes, as upstream's `pkg/kubelet/prober`.
//!
//! # Design
//! One worker task per (pod, container, probe type) ([`worker`]), started the first time the
//! pod worker reports the pod ([`Manager::observe`]) and stopped when the pod leaves the node
//! ([`Manager::remove_pod`]). Each worker keeps upstream's per-probe state machine
//! ([`worker::Tracker`]: initial delay, success/failure thresholds, hold after a failed
//! liveness or startup probe until the container is replaced) and writes its verdicts into a
//! shared [`Results`] cache keyed by CRI container ID. The pod worker reads that cache on
//! each sync: readiness and startup feed the containers' `ready`/`started` flags (and so the
//! pod's Ready condition and its Endpoints), liveness and startup failures become kills in
//! `compute_pod_actions`. A worker whose verdict changes wakes its pod worker, so a flip shows
//! in the API within one sync rather than at the next periodic resync.
//!
//! Probes run from the kubelet, as upstream's do: httpGet and tcpSocket to the pod IP (or
//! `host`), grpc with the standard health protocol (`grpc.health.v1.Health/Check`), exec
//! through CRI `ExecSync` ([`probe`]). Each failed probe records an `Unhealthy` Event with
//! upstream's message (`Liveness probe failed: ...`).
//!
//! # Limits
//! - Probe workers learn about container restarts from the pod worker's syncs (PLEG relist
//!   plus sync, about a second), not from a dedicated status manager.
//! - No prober metrics (`prober_probe_total`).

pub mod http;
mod manager;
pub mod probe;
pub mod worker;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

pub use manager::Manager;

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeType {
    /// `livenessProbe`: a failure restarts the container.
    Liveness,
    /// `readinessProbe`: the container's `ready` flag.
    Readiness,
    /// `startupProbe`: gates the other two and the `started` flag.
    Startup,
}

impl fmt::Display for ProbeType {
    /// Upstream's spelling, as Events show it (`Readiness probe failed: ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeType::Liveness => "Liveness",
            ProbeType::Readiness => "Readiness",
            ProbeType::Startup => "Startup",
        })
    }
}

/// A probe verdict as the rest of the kubelet sees it (upstream `results.Result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Not known yet (a startup probe before its first verdict).
    Unknown,
    /// The probe passed (enough times in a row).
    Success,
    /// The probe failed (enough times in a row).
    Failure,
}

/// The verdicts of every probe worker, by probe type and CRI container ID.
///
/// # Guarantees
/// A plain mutex held only for map operations (never across an await).
#[derive(Debug, Default)]
pub struct Results {
    inner: Mutex<HashMap<(ProbeType, String), ProbeResult>>,
}

impl Results {
    /// Records a verdict; returns whether it differs from the one held before.
    pub fn set(&self, kind: ProbeType, id: &str, result: ProbeResult) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.insert((kind, id.to_string()), result) != Some(result)
    }

    /// The verdict for a container, if a worker has given one.
    pub fn get(&self, kind: ProbeType, id: &str) -> Option<ProbeResult> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(kind, id.to_string())).copied()
    }

    /// Forgets a container's verdict (it was replaced, or its worker stopped).
    pub fn remove(&self, kind: ProbeType, id: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&(kind, id.to_string()));
    }

    /// Success/failure verdicts of one probe type for these container IDs, as pod status
    /// wants them (an unknown verdict is left out).
    pub fn known<'a>(
        &self,
        kind: ProbeType,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, bool> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ids.into_iter()
            .filter_map(|id| match m.get(&(kind, id.to_string()))? {
                ProbeResult::Success => Some((id.to_string(), true)),
                ProbeResult::Failure => Some((id.to_string(), false)),
                ProbeResult::Unknown => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_report_changes_and_known_verdicts() {
        let r = Results::default();
        assert!(r.set(ProbeType::Readiness, "a", ProbeResult::Failure));
        assert!(!r.set(ProbeType::Readiness, "a", ProbeResult::Failure));
        assert!(r.set(ProbeType::Readiness, "a", ProbeResult::Success));
        assert!(r.set(ProbeType::Startup, "a", ProbeResult::Unknown));
        assert_eq!(r.get(ProbeType::Liveness, "a"), None);
        let ready = r.known(ProbeType::Readiness, ["a", "b"]);
        assert_eq!(ready, HashMap::from([("a".to_string(), true)]));
        assert!(r.known(ProbeType::Startup, ["a"]).is_empty());
        r.remove(ProbeType::Readiness, "a");
        assert_eq!(r.get(ProbeType::Readiness, "a"), None);
        assert_eq!(ProbeType::Liveness.to_string(), "Liveness");
    }
}

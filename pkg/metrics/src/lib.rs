//! Resource metrics, as k3s' bundled metrics-server provides them: a scraper that fetches
//! every Ready node's kubelet `/metrics/resource` each `--metrics-resolution`, computes CPU
//! rates from the last two samples, and keeps the latest points in memory; and the
//! `metrics.k8s.io/v1beta1` API (PodMetrics, NodeMetrics) the API server serves from them,
//! for `kubectl top` and the HorizontalPodAutoscaler.
//!
//! # Design
//! - [`scrape`]: the scraper, an API client like any controller (nodes and pods through one
//!   shared cache), reaching kubelets with the API server's kubelet client certificate and
//!   verifying their serving certificates against the cluster CA.
//! - [`api`]: the API route and its resource definitions, served in the API server process
//!   (no aggregation layer and no extra hop, where upstream proxies to metrics-server).
//! - [`prom`]: the Prometheus text reader for kubelet samples.
//!
//! # Limits
//! - No Table output for `kubectl get podmetrics`; `kubectl top` and `-o json` work.
//! - Points live in memory: a restarted server reports nothing until two scrapes passed.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

pub mod api;
pub mod prom;
pub mod scrape;

/// The API group served.
pub const GROUP: &str = "metrics.k8s.io";
/// The version served.
pub const VERSION: &str = "v1beta1";

/// Errors of the metrics pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kubelet could not be reached or answered badly.
    #[error("scraping the kubelet of node {node} at {addr}: {reason}")]
    Scrape {
        /// Node name.
        node: String,
        /// Address scraped.
        addr: String,
        /// What went wrong.
        reason: String,
    },
}

/// CPU and memory usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU, nanocores (average over the window).
    pub cpu_nanocores: u64,
    /// Memory working set, bytes.
    pub memory_bytes: u64,
}

/// One node's latest point.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePoint {
    /// The node's labels (for label selectors).
    pub labels: BTreeMap<String, String>,
    /// End of the window, ms since the epoch.
    pub timestamp_ms: i64,
    /// Window length, ms.
    pub window_ms: i64,
    /// Usage.
    pub usage: Usage,
}

/// One pod's latest point.
#[derive(Clone, Debug, PartialEq)]
pub struct PodPoint {
    /// The pod's labels (for label selectors).
    pub labels: BTreeMap<String, String>,
    /// End of the window, ms since the epoch.
    pub timestamp_ms: i64,
    /// Window length, ms.
    pub window_ms: i64,
    /// Per container, in the pod's order.
    pub containers: Vec<(String, Usage)>,
}

/// The latest points of every node and pod, shared by the scraper (writer) and the API.
#[derive(Debug, Default)]
pub struct Points {
    inner: RwLock<Snapshot>,
}

/// All points of one scrape round.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// By node name.
    pub nodes: BTreeMap<String, NodePoint>,
    /// By (namespace, name).
    pub pods: BTreeMap<(String, String), PodPoint>,
}

impl Points {
    /// Replaces all points with a new round's.
    pub fn replace(&self, snapshot: Snapshot) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// A copy of the current points, filtered by `keep_node` / `keep_pod`.
    pub fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.inner.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Go's `time.Duration.String()` for whole milliseconds (`15s`, `1.002s`, `1m0.5s`, `500ms`),
/// as metrics-server prints `window`.
pub fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms.abs() < 1000 {
        return format!("{ms}ms");
    }
    let neg = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut secs = s.to_string();
    if frac > 0 {
        let f = format!("{frac:03}");
        secs = format!("{s}.{}", f.trim_end_matches('0'));
    }
    match (h, m) {
        (0, 0) => format!("{neg}{secs}s"),
        (0, m) => format!("{neg}{m}m{secs}s"),
        (h, m) => format!("{neg}{h}h{m}m{secs}s"),
    }
}

/// Counters as kept between rounds: the previous scrape of each node.
pub(crate) type Previous = HashMap<String, prom::Scrape>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(15_000), "15s");
        assert_eq!(go_duration(1_002), "1.002s");
        assert_eq!(go_duration(60_500), "1m0.5s");
        assert_eq!(go_duration(500), "500ms");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
    }
}

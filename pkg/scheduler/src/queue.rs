//! The scheduling queue: pods waiting for a first attempt, backing off after a failure, or
//! parked as unschedulable until the cluster changes (upstream's active, backoff and
//! unschedulable queues, in one map). Among pods due, the highest `spec.priority` goes first,
//! then the one waiting longest, as upstream's default `PrioritySort`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// First retry delay after a failure (upstream's `podInitialBackoffSeconds`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Cap of the doubling retry delay (upstream's `podMaxBackoffSeconds`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits without a cluster change before it is tried again
/// anyway. Upstream waits 5 minutes; this scheduler ignores updates of a pending pod itself
/// (its own condition writes would otherwise retrigger it), so it retries sooner.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Entry {
    attempts: u32,
    not_before: Instant,
    /// Parked until a cluster change (or the flush interval).
    parked: bool,
    /// The pod's priority.
    priority: i32,
}

/// Pods to schedule, by `namespace/name`.
#[derive(Debug, Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
}

fn backoff(attempts: u32) -> Duration {
    INITIAL_BACKOFF
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
}

impl Queue {
    /// Adds a pod of `priority` to be tried now; a pod already queued keeps its state.
    pub fn add(&mut self, key: &str, priority: i32, now: Instant) {
        self.entries.entry(key.to_string()).or_insert(Entry {
            attempts: 0,
            not_before: now,
            parked: false,
            priority,
        });
    }

    /// Forgets a pod (bound, deleted, or no longer ours).
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Whether `key` is queued.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// No node fits: park the pod until the cluster changes, then retry after its backoff.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        self.retry(key, now, true);
    }

    /// An API call failed: retry after the backoff, whatever the cluster does.
    pub fn failed(&mut self, key: &str, now: Instant) {
        self.retry(key, now, false);
    }

    fn retry(&mut self, key: &str, now: Instant, parked: bool) {
        let e = self.entries.entry(key.to_string()).or_insert(Entry {
            attempts: 0,
            not_before: now,
            parked,
            priority: 0,
        });
        e.attempts = e.attempts.saturating_add(1);
        e.not_before = now + backoff(e.attempts);
        e.parked = parked;
    }

    /// A node or a bound pod changed: every parked pod may fit now.
    pub fn cluster_changed(&mut self) {
        for e in self.entries.values_mut() {
            e.parked = false;
        }
    }

    fn due(e: &Entry) -> Instant {
        if e.parked {
            e.not_before + UNSCHEDULABLE_FLUSH
        } else {
            e.not_before
        }
    }

    /// Takes the most important pod among those due at `now` (highest priority, then waiting
    /// longest); it stays queued (an attempt ends with [`Queue::remove`],
    /// [`Queue::unschedulable`] or [`Queue::failed`]).
    pub fn pop(&mut self, now: Instant) -> Option<String> {
        let (key, e) = self
            .entries
            .iter_mut()
            .filter(|(_, e)| Self::due(e) <= now)
            .min_by_key(|(_, e)| (std::cmp::Reverse(e.priority), Self::due(e)))?;
        // Not due again until the attempt reports back.
        e.not_before = now + UNSCHEDULABLE_FLUSH * 10;
        e.parked = false;
        Some(key.clone())
    }

    /// When the next pod becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(Self::due).min()
    }

    /// How many pods are queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn parked_pods_wait_for_a_cluster_change_then_their_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.add("ns/a", 0, t0);
        q.add("ns/b", 0, t0 + Duration::from_millis(1));
        assert_eq!(q.pop(t0).as_deref(), Some("ns/a"));
        assert_eq!(q.pop(t0), None, "b is not due yet, a is in flight");
        q.unschedulable("ns/a", t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(q.pop(later).as_deref(), Some("ns/b"));
        q.remove("ns/b");
        assert_eq!(q.pop(later), None, "a is parked");
        assert_eq!(
            q.next_due(),
            Some(t0 + INITIAL_BACKOFF + UNSCHEDULABLE_FLUSH)
        );
        q.cluster_changed();
        assert_eq!(q.next_due(), Some(t0 + INITIAL_BACKOFF));
        assert_eq!(q.pop(later).as_deref(), Some("ns/a"));
        q.failed("ns/a", later);
        assert_eq!(q.next_due(), Some(later + Duration::from_secs(2)));
        q.add("ns/a", 0, later);
        assert_eq!(q.len(), 1, "re-adding keeps the backoff");
        assert_eq!(q.pop(later), None);
    }

    #[test]
    fn higher_priority_pods_go_first() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.add("ns/old-low", 0, t0);
        q.add("ns/new-high", 1000, t0 + Duration::from_millis(5));
        q.add("ns/new-low", 0, t0 + Duration::from_millis(5));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(q.pop(later).as_deref(), Some("ns/new-high"));
        assert_eq!(q.pop(later).as_deref(), Some("ns/old-low"));
        assert_eq!(q.pop(later).as_deref(), Some("ns/new-low"));
    }
}

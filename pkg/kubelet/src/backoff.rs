//! Per-key exponential backoff for container restarts (CrashLoopBackOff) and image pulls
//! (ImagePullBackOff), with upstream's `flowcontrol.Backoff` semantics and no jitter.
//!
//! # Design
//! Upstream measures backoff from an *event time* (the finish time of the last exited
//! container, or the time of the failed pull) and resets a key once the event is more than
//! twice the maximum delay after the last backoff step: with a 5 min cap, a container that
//! ran for 10 min starts again at 10 s. Every method takes the current time explicitly, so
//! the kubelet passes the wall clock and tests pass whatever they like; times are the wall
//! clock because containerd reports finish times in wall-clock nanoseconds.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Upstream's initial container and image backoff (`backOffPeriod`).
pub const INITIAL: Duration = Duration::from_secs(10);
/// Upstream's `MaxContainerBackOff`, also used for image pulls.
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Timestamp,
}

/// Exponential backoff per key: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    /// The kubelet's container and image backoff: 10 s doubling to 5 min.
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl Backoff {
    /// A backoff starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    /// The current delay for `key` (zero when the key has none).
    pub fn get(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(Duration::ZERO, |e| e.backoff)
    }

    /// Records a failure of `key` that happened at `event_time`: starts the key at the
    /// initial delay, or doubles it (up to the cap) when the previous step is recent.
    pub fn next(&mut self, key: &str, event_time: Timestamp, now: Timestamp) {
        let (initial, max) = (self.initial, self.max);
        let entry = self.entries.entry(key.to_string()).or_insert(Entry {
            backoff: Duration::ZERO,
            last_update: now,
        });
        if entry.backoff.is_zero() || expired(event_time, entry.last_update, max) {
            entry.backoff = initial;
        } else {
            entry.backoff = (entry.backoff * 2).min(max);
        }
        entry.last_update = now;
    }

    /// Whether `key` must still wait at `now` after an event at `event_time`.
    pub fn is_in_backoff_since(&self, key: &str, event_time: Timestamp, now: Timestamp) -> bool {
        let Some(entry) = self.entries.get(key) else {
            return false;
        };
        if expired(event_time, entry.last_update, self.max) {
            return false;
        }
        since(event_time, now) < entry.backoff
    }

    /// Whether `key` must still wait at `now`, measured from its last step (upstream's
    /// `IsInBackOffSinceUpdate`, used for image pulls, which have no event time of their own).
    pub fn is_in_backoff_since_update(&self, key: &str, now: Timestamp) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| since(e.last_update, now) < e.backoff)
    }

    /// How long `key` must still wait at `now` after an event at `event_time`: zero exactly
    /// when [`Self::is_in_backoff_since`] is false; when to look again, rather than polling.
    pub fn remaining_since(&self, key: &str, event_time: Timestamp, now: Timestamp) -> Duration {
        match self.entries.get(key) {
            Some(e) if !expired(event_time, e.last_update, self.max) => {
                e.backoff.saturating_sub(since(event_time, now))
            }
            _ => Duration::ZERO,
        }
    }

    /// How long `key` must still wait at `now`, measured from its last step (zero when it
    /// need not).
    pub fn remaining_since_update(&self, key: &str, now: Timestamp) -> Duration {
        self.entries.get(key).map_or(Duration::ZERO, |e| {
            e.backoff.saturating_sub(since(e.last_update, now))
        })
    }

    /// Drops keys whose last step is older than twice the cap, so deleted pods do not leak
    /// entries (upstream's periodic `GC`).
    pub fn gc(&mut self, now: Timestamp) {
        let max = self.max;
        self.entries
            .retain(|_, e| !expired(now, e.last_update, max));
    }

    /// Forgets `key` (a pod was deleted or an image pulled successfully).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// Upstream considers a key stable once the event is more than `2 * max` after the last step.
fn expired(event_time: Timestamp, last_update: Timestamp, max: Duration) -> bool {
    since(last_update, event_time) > max * 2
}

/// `to - from`, clamped at zero (a clock step backwards never counts as elapsed time).
fn since(from: Timestamp, to: Timestamp) -> Duration {
    let d: SignedDuration = to.duration_since(from);
    d.try_into().unwrap_or(Duration::ZERO)
}

/// The wall clock as a timestamp, the time base of CRI's reported times and of these
/// backoffs. (k8s-openapi's jiff is built without `std`, so `Timestamp::now` is absent.)
pub fn wall_clock_now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_nanosecond(since_epoch.as_nanos() as i128).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A duration as Go's `time.Duration.String()` prints it (`10s`, `1m20s`, `5m0s`), which is
/// what upstream's CrashLoopBackOff message shows.
pub fn go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    let frac = d.subsec_millis();
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if total == 0 && frac == 0 {
        "0s".to_string()
    } else if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn doubles_to_the_cap() {
        let mut b = Backoff::default();
        let mut seen = vec![];
        for now in 0..8 {
            b.next("k", t(now), t(now));
            seen.push(b.get("k").as_secs());
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.get("other"), Duration::ZERO);
    }

    #[test]
    fn in_backoff_until_the_delay_passes_since_the_event() {
        let mut b = Backoff::default();
        assert!(
            !b.is_in_backoff_since("k", t(0), t(0)),
            "unknown key never waits"
        );
        b.next("k", t(0), t(0));
        assert!(b.is_in_backoff_since("k", t(0), t(9)));
        assert!(!b.is_in_backoff_since("k", t(0), t(10)));
        // The second crash (finished at 12 s) waits 20 s from its own finish time.
        b.next("k", t(12), t(12));
        assert!(b.is_in_backoff_since("k", t(12), t(31)));
        assert!(!b.is_in_backoff_since("k", t(12), t(32)));
        assert!(!b.is_in_backoff_since("other", t(12), t(13)));
        assert!(b.is_in_backoff_since_update("k", t(31)));
        assert!(!b.is_in_backoff_since_update("k", t(32)));
        assert!(!b.is_in_backoff_since_update("other", t(0)));
    }

    #[test]
    fn remaining_wait_counts_down_to_zero() {
        let mut b = Backoff::default();
        assert_eq!(b.remaining_since("k", t(0), t(1)), Duration::ZERO);
        b.next("k", t(0), t(0));
        assert_eq!(b.remaining_since("k", t(2), t(5)), Duration::from_secs(7));
        assert_eq!(b.remaining_since("k", t(2), t(20)), Duration::ZERO);
        assert_eq!(b.remaining_since_update("k", t(4)), Duration::from_secs(6));
        assert_eq!(b.remaining_since_update("k", t(40)), Duration::ZERO);
    }

    #[test]
    fn resets_after_ten_minutes_of_running() {
        let mut b = Backoff::default();
        for i in 0..6 {
            b.next("k", t(i), t(i));
        }
        assert_eq!(b.get("k"), MAX);
        // Exited after running exactly 10 min since the last step: not yet stable.
        b.next("k", t(5 + 600), t(5 + 600));
        assert_eq!(b.get("k"), MAX);
        // Exited after running just over 10 min: back to 10 s, and no wait is owed.
        let finished = t(605 + 601);
        assert!(!b.is_in_backoff_since("k", finished, finished));
        b.next("k", finished, finished);
        assert_eq!(b.get("k"), INITIAL);
    }

    #[test]
    fn gc_and_reset_forget_keys() {
        let mut b = Backoff::default();
        b.next("old", t(0), t(0));
        b.next("new", t(500), t(500));
        b.gc(t(601));
        assert_eq!(b.get("old"), Duration::ZERO);
        assert_eq!(b.get("new"), INITIAL);
        b.reset("new");
        assert_eq!(b.get("new"), Duration::ZERO);
    }

    #[test]
    fn wall_clock_is_now() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let now = wall_clock_now().as_second();
        assert!((before..=before + 5).contains(&now), "{now} vs {before}");
    }

    #[test]
    fn go_duration_strings() {
        let cases = [
            (0, "0s"),
            (10, "10s"),
            (80, "1m20s"),
            (160, "2m40s"),
            (300, "5m0s"),
            (3600, "1h0m0s"),
        ];
        for (s, want) in cases {
            assert_eq!(go_duration(Duration::from_secs(s)), want);
        }
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }
}

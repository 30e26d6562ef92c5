//! What to write for an Event, decided without IO: upstream's event correlator (client-go
//! `tools/record/events_cache.go`) for core/v1 Events, and the series cache of its
//! events.k8s.io/v1 broadcaster (`tools/events`).
//!
//! core/v1, in upstream's order:
//! 1. **Aggregation**: events that differ only by message (same source, object, type,
//!    reason) seen with ten distinct messages within ten minutes become one Event whose
//!    message starts `(combined from similar events): `.
//! 2. **Deduplication**: the same event again (same source, object incl. `fieldPath`, type,
//!    reason, message) bumps `count` and `lastTimestamp` of the first one by a PATCH, which
//!    is how `kubectl get events` shows `(x12 over 3m)`.
//! 3. **Spam filter**: a source may write 25 events about one object, then one every five
//!    minutes (a token bucket per source and object); repeats are counted but not written.
//!
//! events.k8s.io/v1: a repeat of the same action, reason and note about the same object
//! within six minutes updates the first Event's `series` (count, lastObservedTime).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::api::events::v1::Event as SeriesEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

/// Entries each cache keeps, as upstream's LRU caches (`maxLruCacheEntries`).
pub(crate) const CACHE_ENTRIES: usize = 4096;
/// Distinct messages of similar events before they are combined (`defaultAggregateMaxEvents`).
const AGGREGATE_MAX_EVENTS: usize = 10;
/// The window in which similar events count towards aggregation.
const AGGREGATE_INTERVAL: SignedDuration = SignedDuration::from_secs(600);
/// Events one source may write about one object at once (`defaultSpamBurst`).
const SPAM_BURST: f64 = 25.0;
/// Refill of that budget: one event every five minutes (`defaultSpamQPS`).
const SPAM_QPS: f64 = 1.0 / 300.0;
/// How long an events.k8s.io/v1 series stays open without a repeat (upstream `finishTime`).
const SERIES_OPEN_FOR: SignedDuration = SignedDuration::from_secs(6 * 60);
/// The prefix upstream gives a combined event's message.
pub(crate) const COMBINED: &str = "(combined from similar events): ";

/// One write the sender performs: create the event, or (with `patch`) merge-patch the
/// existing one of the same name, creating it if it has gone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Write {
    /// A core/v1 Event.
    Core {
        /// The full event (created as is when there is no patch or the patch finds nothing).
        event: Event,
        /// `{count, lastTimestamp, message}` for a repeat.
        patch: Option<Value>,
    },
    /// An events.k8s.io/v1 Event.
    Series {
        /// The full event.
        event: SeriesEvent,
        /// `{series: {count, lastObservedTime}}` for a repeat.
        patch: Option<Value>,
    },
}

/// A small least-recently-used map: upstream bounds every correlator cache, so a long-lived
/// component writing about ever new objects does not grow without end.
struct Lru<V> {
    map: HashMap<String, (V, u64)>,
    order: BTreeMap<u64, String>,
    tick: u64,
    cap: usize,
}

impl<V> Lru<V> {
    fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            cap: cap.max(1),
        }
    }

    /// The entry of `key`, inserting `init()` if absent (evicting the least recently used
    /// entry when full); either way it becomes the most recently used.
    fn entry(&mut self, key: String, init: impl FnOnce() -> V) -> &mut V {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, t)) = self.map.get_mut(&key) {
            self.order.remove(t);
            *t = tick;
        } else {
            if self.map.len() >= self.cap {
                if let Some((_, oldest)) = self.order.pop_first() {
                    self.map.remove(&oldest);
                }
            }
            self.map.insert(key.clone(), (init(), tick));
        }
        self.order.insert(tick, key.clone());
        &mut self.map.get_mut(&key).expect("inserted above").0
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

fn object_fields(o: &ObjectReference, field_path: bool) -> [&str; 6] {
    [
        o.kind.as_deref().unwrap_or_default(),
        o.namespace.as_deref().unwrap_or_default(),
        o.name.as_deref().unwrap_or_default(),
        if field_path {
            o.field_path.as_deref().unwrap_or_default()
        } else {
            ""
        },
        o.uid.as_deref().unwrap_or_default(),
        o.api_version.as_deref().unwrap_or_default(),
    ]
}

fn source(e: &Event) -> [&str; 2] {
    let s = e.source.as_ref();
    [
        s.and_then(|s| s.component.as_deref()).unwrap_or_default(),
        s.and_then(|s| s.host.as_deref()).unwrap_or_default(),
    ]
}

/// Joins key parts with a separator no field contains (upstream joins with "", which can
/// make two different events collide).
fn join<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    parts.into_iter().collect::<Vec<_>>().join("\u{0}")
}

/// Upstream `getEventKey`: what makes two events "the same" for deduplication.
pub(crate) fn event_key(e: &Event) -> String {
    join(
        source(e)
            .into_iter()
            .chain(object_fields(&e.involved_object, true))
            .chain([
                e.type_.as_deref().unwrap_or_default(),
                e.reason.as_deref().unwrap_or_default(),
                e.message.as_deref().unwrap_or_default(),
            ]),
    )
}

/// Upstream `getSpamKey`: the source and the object, whatever the event says.
pub(crate) fn spam_key(e: &Event) -> String {
    join(
        source(e)
            .into_iter()
            .chain(object_fields(&e.involved_object, false)),
    )
}

/// Upstream `EventAggregatorByReasonFunc`: everything but the message.
pub(crate) fn aggregate_key(e: &Event) -> String {
    join(
        source(e)
            .into_iter()
            .chain(object_fields(&e.involved_object, false))
            .chain([
                e.type_.as_deref().unwrap_or_default(),
                e.reason.as_deref().unwrap_or_default(),
                e.reporting_component.as_deref().unwrap_or_default(),
                e.reporting_instance.as_deref().unwrap_or_default(),
            ]),
    )
}

/// The events.k8s.io/v1 series key (upstream `getKey`): action, reason, note, reporter,
/// regarding and related.
pub(crate) fn series_key(e: &SeriesEvent) -> String {
    let none = ObjectReference::default();
    join(
        [
            e.action.as_deref().unwrap_or_default(),
            e.reason.as_deref().unwrap_or_default(),
            e.note.as_deref().unwrap_or_default(),
            e.type_.as_deref().unwrap_or_default(),
            e.reporting_controller.as_deref().unwrap_or_default(),
            e.reporting_instance.as_deref().unwrap_or_default(),
        ]
        .into_iter()
        .chain(object_fields(e.regarding.as_ref().unwrap_or(&none), true))
        .chain(object_fields(e.related.as_ref().unwrap_or(&none), true)),
    )
}

struct Aggregate {
    messages: HashSet<String>,
    last: Timestamp,
}

struct Logged {
    name: String,
    count: i32,
    first: Option<Time>,
}

struct Bucket {
    tokens: f64,
    at: Timestamp,
}

struct Open {
    name: String,
    count: i32,
    last: Timestamp,
}

/// The correlator's state: one per recorder, owned by its sending task.
pub(crate) struct Correlator {
    aggregates: Lru<Aggregate>,
    logged: Lru<Logged>,
    spam: Lru<Bucket>,
    series: Lru<Open>,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator {
            aggregates: Lru::new(CACHE_ENTRIES),
            logged: Lru::new(CACHE_ENTRIES),
            spam: Lru::new(CACHE_ENTRIES),
            series: Lru::new(CACHE_ENTRIES),
        }
    }
}

impl Correlator {
    /// What to write for core/v1 `event` seen at `now`; `None` when the spam filter drops it.
    pub(crate) fn core(&mut self, event: Event, now: Timestamp) -> Option<Write> {
        let (event, key) = self.aggregate(event, now);
        let (event, patch) = self.observe(event, key);
        if self.spammy(&event, now) {
            return None;
        }
        Some(Write::Core { event, patch })
    }

    /// What to write for events.k8s.io/v1 `event` seen at `now`.
    pub(crate) fn series(&mut self, mut event: SeriesEvent, now: Timestamp) -> Write {
        let key = series_key(&event);
        let name = event.metadata.name.clone().unwrap_or_default();
        let open = self.series.entry(key, || Open {
            name,
            count: 0,
            last: now,
        });
        let repeat = open.count > 0 && now.duration_since(open.last) <= SERIES_OPEN_FOR;
        if !repeat {
            open.name = event.metadata.name.clone().unwrap_or_default();
            open.count = 1;
            open.last = now;
            return Write::Series { event, patch: None };
        }
        open.count += 1;
        open.last = now;
        let series = json!({"count": open.count, "lastObservedTime": MicroTime(now)});
        event.metadata.name = Some(open.name.clone());
        event.series = serde_json::from_value(series.clone()).ok();
        Write::Series {
            event,
            patch: Some(json!({ "series": series })),
        }
    }

    /// Upstream `EventAggregate`: the event (or a combined one) and its deduplication key.
    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let message = event.message.clone().unwrap_or_default();
        let agg_key = aggregate_key(&event);
        let record = self.aggregates.entry(agg_key.clone(), || Aggregate {
            messages: HashSet::new(),
            last: Timestamp::UNIX_EPOCH,
        });
        if now.duration_since(record.last) > AGGREGATE_INTERVAL {
            record.messages.clear();
        }
        record.messages.insert(message.clone());
        record.last = now;
        if record.messages.len() < AGGREGATE_MAX_EVENTS {
            let key = event_key(&event);
            return (event, key);
        }
        // Keep the set at its bound, as upstream's `PopAny`.
        if let Some(any) = record.messages.iter().next().cloned() {
            record.messages.remove(&any);
        }
        let combined = Event {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    event.involved_object.name.as_deref().unwrap_or_default(),
                    now.as_nanosecond()
                )),
                namespace: event.metadata.namespace.clone(),
                ..Default::default()
            },
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            message: Some(format!("{COMBINED}{message}")),
            ..event
        };
        (combined, agg_key)
    }

    /// Upstream `eventObserve`: a repeat takes the first event's name, first time and next
    /// count, and gets the patch that moves them.
    fn observe(&mut self, mut event: Event, key: String) -> (Event, Option<Value>) {
        let name = event.metadata.name.clone().unwrap_or_default();
        let first = event.first_timestamp.clone();
        let logged = self.logged.entry(key, || Logged {
            name,
            count: 0,
            first,
        });
        let mut patch = None;
        if logged.count > 0 {
            event.metadata.name = Some(logged.name.clone());
            event.first_timestamp = logged.first.clone();
            event.count = Some(logged.count + 1);
            patch = Some(json!({
                "count": event.count,
                "lastTimestamp": event.last_timestamp,
                "message": event.message,
            }));
        }
        logged.count = event.count.unwrap_or(1);
        (event, patch)
    }

    /// Upstream `EventSourceObjectSpamFilter`: whether this event is over its object's budget.
    fn spammy(&mut self, event: &Event, now: Timestamp) -> bool {
        let bucket = self.spam.entry(spam_key(event), || Bucket {
            tokens: SPAM_BURST,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64().max(0.0);
        bucket.tokens = (bucket.tokens + elapsed * SPAM_QPS).min(SPAM_BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            false
        } else {
            true
        }
    }

    /// How many objects' spam budgets are tracked (for tests of the bound).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.spam.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EventSource;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn ev(object: &str, reason: &str, message: &str, now: Timestamp) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("default".into()),
                name: Some(object.into()),
                uid: Some(format!("uid-{object}")),
                api_version: Some("v1".into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("n1".into()),
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            ..Default::default()
        }
    }

    fn core(w: Option<Write>) -> (Event, Option<Value>) {
        match w {
            Some(Write::Core { event, patch }) => (event, patch),
            other => panic!("expected a core write, got {other:?}"),
        }
    }

    #[test]
    fn keys_tell_apart_what_upstream_does() {
        let a = ev("web", "Pulled", "pulled", t(0));
        let mut other_message = a.clone();
        other_message.message = Some("other".into());
        let mut other_container = a.clone();
        other_container.involved_object.field_path = Some("spec.containers{c}".into());
        let mut other_host = a.clone();
        other_host.source.as_mut().unwrap().host = Some("n2".into());
        let mut later = a.clone();
        later.last_timestamp = Some(Time(t(5)));

        assert_eq!(event_key(&a), event_key(&later), "times are not part of it");
        assert_ne!(event_key(&a), event_key(&other_message));
        assert_ne!(event_key(&a), event_key(&other_container));
        assert_ne!(event_key(&a), event_key(&other_host));
        assert_eq!(aggregate_key(&a), aggregate_key(&other_message));
        assert_eq!(spam_key(&a), spam_key(&other_container), "fieldPath is not");
        assert_ne!(spam_key(&a), spam_key(&other_host));
        // No separator-free collisions: "ab"+"c" vs "a"+"bc".
        let mut x = a.clone();
        x.reason = Some("ab".into());
        x.message = Some("c".into());
        let mut y = a.clone();
        y.reason = Some("a".into());
        y.message = Some("bc".into());
        assert_ne!(event_key(&x), event_key(&y));
    }

    #[test]
    fn repeats_patch_count_and_last_timestamp_of_the_first() {
        let mut c = Correlator::default();
        let (first, patch) = core(c.core(ev("web", "BackOff", "back-off", t(0)), t(0)));
        assert!(patch.is_none());
        let (again, patch) = core(c.core(ev("web", "BackOff", "back-off", t(30)), t(30)));
        assert_eq!(again.metadata.name, first.metadata.name);
        assert_eq!(again.count, Some(2));
        assert_eq!(again.first_timestamp, Some(Time(t(0))));
        assert_eq!(
            patch,
            Some(json!({"count": 2, "lastTimestamp": Time(t(30)), "message": "back-off"}))
        );
        let (third, _) = core(c.core(ev("web", "BackOff", "back-off", t(60)), t(60)));
        assert_eq!(third.count, Some(3));
        // Another message is another event.
        let (other, patch) = core(c.core(ev("web", "BackOff", "other", t(61)), t(61)));
        assert!(patch.is_none());
        assert_ne!(other.metadata.name, first.metadata.name);
    }

    #[test]
    fn ten_similar_messages_combine() {
        let mut c = Correlator::default();
        for i in 0..9 {
            let (e, patch) = core(c.core(ev("web", "Scaled", &format!("to {i}"), t(i)), t(i)));
            assert_eq!(e.message.as_deref(), Some(format!("to {i}").as_str()));
            assert!(patch.is_none());
        }
        let (tenth, patch) = core(c.core(ev("web", "Scaled", "to 9", t(9)), t(9)));
        assert_eq!(
            tenth.message.as_deref(),
            Some("(combined from similar events): to 9")
        );
        assert!(patch.is_none());
        let (eleventh, patch) = core(c.core(ev("web", "Scaled", "to 10", t(10)), t(10)));
        assert_eq!(eleventh.metadata.name, tenth.metadata.name);
        assert_eq!(eleventh.count, Some(2));
        assert_eq!(
            patch.unwrap()["message"],
            "(combined from similar events): to 10"
        );
        // After ten quiet minutes the window starts over.
        let (fresh, _) = core(c.core(ev("web", "Scaled", "to 11", t(700)), t(700)));
        assert_eq!(fresh.message.as_deref(), Some("to 11"));
    }

    #[test]
    fn spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let written = (0..30)
            .filter(|i| {
                c.core(ev("web", &format!("R{i}"), "m", t(0)), t(0))
                    .is_some()
            })
            .count();
        assert_eq!(written, 25);
        // Another object has its own budget.
        assert!(c.core(ev("db", "R", "m", t(0)), t(0)).is_some());
        assert!(c.core(ev("web", "R30", "m", t(299)), t(299)).is_none());
        assert!(c.core(ev("web", "R31", "m", t(301)), t(301)).is_some());
        assert_eq!(c.tracked(), 2);
    }

    #[test]
    fn caches_are_bounded() {
        let mut lru = Lru::new(2);
        *lru.entry("a".into(), || 1) += 0;
        *lru.entry("b".into(), || 2) += 0;
        *lru.entry("a".into(), || 0) += 10; // a is now the most recent
        *lru.entry("c".into(), || 3) += 0; // evicts b
        assert_eq!(lru.len(), 2);
        assert_eq!(*lru.entry("a".into(), || 0), 11);
        assert_eq!(*lru.entry("b".into(), || 0), 0, "b was evicted");
    }

    fn series_ev(note: &str, now: Timestamp) -> SeriesEvent {
        SeriesEvent {
            metadata: ObjectMeta {
                name: Some(format!("p.{:x}", now.as_nanosecond())),
                namespace: Some("default".into()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Scheduling".into()),
            reason: Some("FailedScheduling".into()),
            note: Some(note.into()),
            reporting_controller: Some("default-scheduler".into()),
            regarding: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some("p".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn series_count_repeats_within_six_minutes() {
        let mut c = Correlator::default();
        let Write::Series { event, patch: None } = c.series(series_ev("no", t(0)), t(0)) else {
            panic!("first is a create")
        };
        let first = event.metadata.name;
        let Write::Series {
            event,
            patch: Some(p),
        } = c.series(series_ev("no", t(10)), t(10))
        else {
            panic!("repeat is a patch")
        };
        assert_eq!(event.metadata.name, first);
        assert_eq!(p["series"]["count"], 2);
        let Write::Series { patch: Some(p), .. } = c.series(series_ev("no", t(20)), t(20)) else {
            panic!("repeat is a patch")
        };
        assert_eq!(p["series"]["count"], 3);
        let Write::Series { patch: None, .. } = c.series(series_ev("other", t(21)), t(21)) else {
            panic!("another note is another event")
        };
        let Write::Series { event, patch: None } = c.series(series_ev("no", t(400)), t(400)) else {
            panic!("a closed series starts a new event")
        };
        assert_ne!(event.metadata.name, first);
    }
}

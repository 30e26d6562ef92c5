//! The in-memory backend: the same semantics as SQLite without a disk, for tests.
//!
//! State is a `BTreeMap` of live keys plus a revision-ordered log kept until compaction, both
//! behind one mutex. Every operation is a few map operations, so the lock is never held for long
//! and never across an `.await`. Events are published while the lock is held, which keeps them in
//! revision order.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::watch::{History, HistoryPage, WatchHub, WatchOptions};
use crate::{
    Datastore, Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision,
    WatchStream,
};

/// How many revisions one history page covers when catching a watcher up.
const HISTORY_WINDOW: Revision = 5_000;

/// One write in the log.
#[derive(Clone, Debug)]
struct LogRow {
    key: String,
    /// Empty for a delete (the deleted value is the previous row's).
    value: Bytes,
    create_revision: Revision,
    /// The row this one replaced; `None` for a create.
    prev: Option<Revision>,
    deleted: bool,
}

#[derive(Default)]
struct State {
    revision: Revision,
    compact: Revision,
    kv: BTreeMap<String, KeyValue>,
    log: BTreeMap<Revision, LogRow>,
}

/// A [`Datastore`] in memory, for tests of the apiserver and of this crate.
///
/// # Guarantees
/// Same as every backend (it passes the same conformance suite), except durability: everything
/// is lost when it is dropped.
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    pub(crate) hub: Arc<WatchHub>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::with_watch_options(WatchOptions::default())
    }

    /// An empty store with a tuned watch hub (tests use a tiny ring to exercise catch-up).
    pub fn with_watch_options(watch: WatchOptions) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            hub: Arc::new(WatchHub::new(watch, 0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Apply one write under the lock and publish its event before releasing it.
    fn write(
        &self,
        f: impl FnOnce(&mut State) -> Result<(KeyValue, Event), Error>,
    ) -> Result<KeyValue, Error> {
        let mut st = self.lock();
        let (kv, event) = f(&mut st)?;
        self.hub.publish(vec![event]);
        Ok(kv)
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.hub.close();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `[start, end)` with an empty `end` meaning no upper bound, or `None` when empty.
fn key_bounds<'a>(start: &'a str, end: &'a str) -> Option<(Bound<&'a str>, Bound<&'a str>)> {
    if end.is_empty() {
        Some((Bound::Included(start), Bound::Unbounded))
    } else if start < end {
        Some((Bound::Included(start), Bound::Excluded(end)))
    } else {
        // BTreeMap::range panics on an inverted range.
        None
    }
}

fn in_range(key: &str, start: &str, end: &str) -> bool {
    key >= start && (end.is_empty() || key < end)
}

impl State {
    fn row_kv(&self, revision: Revision) -> Option<KeyValue> {
        self.log.get(&revision).map(|row| KeyValue {
            key: row.key.clone(),
            value: row.value.clone(),
            create_revision: row.create_revision,
            mod_revision: revision,
        })
    }

    fn event_at(&self, revision: Revision, row: &LogRow) -> Event {
        let prev_kv = row.prev.and_then(|p| self.row_kv(p));
        if row.deleted {
            let value = prev_kv
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_default();
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: row.key.clone(),
                    value,
                    create_revision: row.create_revision,
                    mod_revision: revision,
                },
                prev_kv,
            }
        } else {
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: row.key.clone(),
                    value: row.value.clone(),
                    create_revision: row.create_revision,
                    mod_revision: revision,
                },
                prev_kv,
            }
        }
    }

    fn check_revision(&self, requested: Revision) -> Result<(), Error> {
        if requested > self.revision {
            return Err(Error::FutureRevision {
                requested,
                current: self.revision,
            });
        }
        if requested < self.compact {
            return Err(Error::Compacted {
                requested,
                compact_revision: self.compact,
            });
        }
        Ok(())
    }

    /// Live keys in range at `at`, rebuilt from the log.
    fn keys_at(&self, start: &str, end: &str, at: Revision) -> BTreeMap<String, KeyValue> {
        let mut latest: HashMap<&str, (Revision, &LogRow)> = HashMap::new();
        for (rev, row) in self.log.range(..=at) {
            if in_range(&row.key, start, end) {
                latest.insert(&row.key, (*rev, row));
            }
        }
        latest
            .into_iter()
            .filter(|(_, (_, row))| !row.deleted)
            .map(|(key, (rev, row))| {
                (
                    key.to_owned(),
                    KeyValue {
                        key: key.to_owned(),
                        value: row.value.clone(),
                        create_revision: row.create_revision,
                        mod_revision: rev,
                    },
                )
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Datastore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        Ok(self.lock().kv.get(key).cloned())
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        let st = self.lock();
        let at = match req.revision {
            Some(r) if r > 0 && r != st.revision => {
                st.check_revision(r)?;
                r
            }
            _ => st.revision,
        };
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit
        };
        let (kvs, count) = if at == st.revision {
            let Some(bounds) = key_bounds(&req.start, &req.end) else {
                return Ok(RangeResponse {
                    revision: at,
                    ..RangeResponse::default()
                });
            };
            let matching = st.kv.range::<str, _>(bounds);
            let mut count = 0;
            let mut kvs = Vec::new();
            for (_, kv) in matching {
                count += 1;
                if kvs.len() < limit {
                    kvs.push(kv.clone());
                }
            }
            (kvs, count)
        } else {
            let all = st.keys_at(&req.start, &req.end, at);
            let count = all.len();
            (all.into_values().take(limit).collect::<Vec<_>>(), count)
        };
        Ok(RangeResponse {
            more: kvs.len() < count,
            count: i64::try_from(count).unwrap_or(i64::MAX),
            kvs,
            revision: at,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, Error> {
        self.write(|st| {
            if st.kv.contains_key(key) {
                return Err(Error::AlreadyExists {
                    key: key.to_owned(),
                });
            }
            st.revision += 1;
            let rev = st.revision;
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
            };
            st.log.insert(
                rev,
                LogRow {
                    key: key.to_owned(),
                    value,
                    create_revision: rev,
                    prev: None,
                    deleted: false,
                },
            );
            st.kv.insert(key.to_owned(), kv.clone());
            let event = Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev_kv: None,
            };
            Ok((kv, event))
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, Error> {
        self.write(|st| {
            let Some(current) = st.kv.get(key).cloned() else {
                return Err(Error::NotFound {
                    key: key.to_owned(),
                });
            };
            if current.mod_revision != expected {
                return Err(Error::Conflict {
                    key: key.to_owned(),
                    expected,
                    current: Some(current),
                });
            }
            st.revision += 1;
            let rev = st.revision;
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: current.create_revision,
                mod_revision: rev,
            };
            st.log.insert(
                rev,
                LogRow {
                    key: key.to_owned(),
                    value,
                    create_revision: current.create_revision,
                    prev: Some(current.mod_revision),
                    deleted: false,
                },
            );
            st.kv.insert(key.to_owned(), kv.clone());
            let event = Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev_kv: Some(current),
            };
            Ok((kv, event))
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, Error> {
        self.write(|st| {
            let Some(current) = st.kv.get(key).cloned() else {
                return Err(Error::NotFound {
                    key: key.to_owned(),
                });
            };
            if let Some(expected) = expected {
                if current.mod_revision != expected {
                    return Err(Error::Conflict {
                        key: key.to_owned(),
                        expected,
                        current: Some(current),
                    });
                }
            }
            st.revision += 1;
            let rev = st.revision;
            st.log.insert(
                rev,
                LogRow {
                    key: key.to_owned(),
                    value: Bytes::new(),
                    create_revision: current.create_revision,
                    prev: Some(current.mod_revision),
                    deleted: true,
                },
            );
            st.kv.remove(key);
            let kv = KeyValue {
                mod_revision: rev,
                ..current.clone()
            };
            let event = Event {
                kind: EventKind::Delete,
                kv: kv.clone(),
                prev_kv: Some(current),
            };
            Ok((kv, event))
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, Error> {
        let compact = self.lock().compact;
        if after < compact {
            return Err(Error::Compacted {
                requested: after,
                compact_revision: compact,
            });
        }
        let history = Arc::new(MemoryHistory(Arc::clone(&self.state)));
        self.hub.watch(prefix, after, history)
    }

    async fn current_revision(&self) -> Result<Revision, Error> {
        Ok(self.lock().revision)
    }

    async fn compact(&self, revision: Revision) -> Result<(), Error> {
        let mut st = self.lock();
        if revision > st.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: st.revision,
            });
        }
        if revision <= st.compact {
            return Ok(());
        }
        // A row is garbage once a later row of its key is at or before the compaction point
        // (that later row names it as `prev`), and so is a delete's tombstone.
        let mut doomed = Vec::new();
        for (rev, row) in st.log.range(st.compact + 1..=revision) {
            doomed.extend(row.prev);
            if row.deleted {
                doomed.push(*rev);
            }
        }
        for rev in doomed {
            st.log.remove(&rev);
        }
        st.compact = revision;
        Ok(())
    }

    async fn compact_revision(&self) -> Result<Revision, Error> {
        Ok(self.lock().compact)
    }
}

/// Catch-up reads for watchers that start before the hub's ring.
struct MemoryHistory(Arc<Mutex<State>>);

#[async_trait::async_trait]
impl History for MemoryHistory {
    async fn page(&self, prefix: &str, after: Revision) -> Result<HistoryPage, Error> {
        let st = lock(&self.0);
        if after < st.compact {
            return Err(Error::Compacted {
                requested: after,
                compact_revision: st.compact,
            });
        }
        let scanned_to = after
            .saturating_add(HISTORY_WINDOW)
            .min(st.revision)
            .max(after);
        if scanned_to == after {
            // Nothing newer; BTreeMap::range would panic on the inverted range.
            return Ok(HistoryPage {
                events: Vec::new(),
                scanned_to,
            });
        }
        let events = st
            .log
            .range(after + 1..=scanned_to)
            .filter(|(_, row)| row.key.starts_with(prefix))
            .map(|(rev, row)| st.event_at(*rev, row))
            .collect();
        Ok(HistoryPage { events, scanned_to })
    }
}

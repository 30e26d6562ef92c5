//! The datastore: the only place cluster state lives, and only the apiserver touches it.
//!
//! One interface ([`Datastore`]) with a global, monotonic revision that the apiserver exposes as
//! `resourceVersion`. Keys follow `/registry/<resource>/<namespace>/<name>` so etcd tools work on
//! an etcd-backed cluster as on any other. Implementations: SQLite ([`SqliteStore`], the embedded
//! default) and memory ([`MemoryStore`], tests); an etcd one can be added behind the same trait
//! without touching callers. Both pass one conformance suite (`src/conformance.rs`).
//!
//! # Design
//! - **Writes** (SQLite) go to one owning writer thread over a bounded channel; it applies every
//!   queued write in one transaction, each with its own revision, and commits once (WAL,
//!   `synchronous=FULL`): one fsync per batch, and a write is acknowledged only once durable.
//! - **Reads** (SQLite) run on tokio's blocking pool over a few read connections; the latest state
//!   is a `kv` table, older revisions are rebuilt from the `log` table.
//! - **Watches** are served from memory by a hub shared by the backends: the writer publishes
//!   each commit's events; a ring of recent events catches up watches that start a little in the
//!   past, the log catches up older ones, and each watcher has a bounded buffer. A watcher that
//!   falls behind ends with [`Error::WatcherTooSlow`] (the apiserver then ends the HTTP watch and
//!   the client re-watches), so no watcher can slow the writer down.
//! - **Compaction** forgets history at and before a revision; [`spawn_compactor`] does it
//!   periodically, like the kube-apiserver.
//!
//! # Limits
//! - One process owns a SQLite datastore; nothing else may write to the file.
//! - Keys are UTF-8 strings compared byte-wise (as etcd does).
//! - No multi-key transactions: each write is a compare-and-swap on one key.
//! - A watch whose consumer is slower than the write rate for more than its buffer (4,096 events
//!   by default) is stopped, and re-watches cost a catch-up from the ring or the log.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

mod memory;
mod sqlite;
mod watch;

#[cfg(test)]
mod conformance;

pub use memory::MemoryStore;
pub use sqlite::{SqliteOptions, SqliteStore};
pub use watch::WatchOptions;

/// A datastore revision. Revisions are global and strictly increasing; every write gets a new one.
pub type Revision = i64;

/// One stored key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key, e.g. `/registry/configmaps/default/foo`.
    pub key: String,
    /// Opaque value bytes (the apiserver stores JSON, possibly encrypted).
    pub value: Bytes,
    /// Revision at which this key was created (last created, if deleted and re-created).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// A range read over `[start, end)`.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// First key, inclusive.
    pub start: String,
    /// End key, exclusive; empty means no upper bound. Use [`prefix_end`] to range over a prefix.
    pub end: String,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read the state as of this revision; `None` (or, as in etcd, a revision of 0 or less)
    /// means the latest.
    pub revision: Option<Revision>,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    /// Keys in ascending order.
    pub kvs: Vec<KeyValue>,
    /// More keys remain after the last one returned (the limit cut the answer).
    pub more: bool,
    /// How many keys the whole range holds at that revision (not only the returned ones).
    pub count: i64,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the new value. For a delete, the last value with `mod_revision` set to the
    /// revision of the delete (so watchers can resume from it).
    pub kv: KeyValue,
    /// The value before this change, if any.
    pub prev_kv: Option<KeyValue>,
}

/// Stream of events for one watch, in revision order, never skipping one.
///
/// It ends with an error (for example [`Error::WatcherTooSlow`]) when the server stops it; the
/// caller then watches again from the last revision it saw.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>;

/// Errors from a datastore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key does not exist (update or delete of a missing key).
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Compare-and-swap failed: the key's mod revision was not the expected one.
    #[error("key {key} was modified: expected revision {expected}, found {}", current.as_ref().map(|c| c.mod_revision).unwrap_or(0))]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The current value, if the key exists.
        current: Option<KeyValue>,
    },
    /// The revision asked for has been compacted away.
    #[error("revision {requested} has been compacted (oldest available is {compact_revision})")]
    Compacted {
        /// The revision the caller asked for.
        requested: Revision,
        /// The compaction point: reads and watches after it are still possible.
        compact_revision: Revision,
    },
    /// The revision asked for is in the future.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// Asked for.
        requested: Revision,
        /// Current.
        current: Revision,
    },
    /// The watcher fell behind and was dropped; watch again from the last seen revision.
    #[error("watcher fell too far behind and was stopped")]
    WatcherTooSlow,
    /// SQLite failed.
    #[error("sqlite: {context}")]
    Sqlite {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// Filesystem IO failed.
    #[error("{context}")]
    Io {
        /// What we were doing (names the path).
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The datastore is shut down.
    #[error("datastore is closed")]
    Closed,
}

/// The storage interface: everything the apiserver needs, nothing more.
///
/// # Guarantees
/// - A write returns only once durable.
/// - Revisions are global, strictly increasing, and every write gets exactly one.
/// - A watch from revision `r` yields every event with revision `> r` matching its prefix, in
///   order, with no gaps, or ends with an error.
#[async_trait::async_trait]
pub trait Datastore: Send + Sync + 'static {
    /// The latest value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, Error>;

    /// Keys in `[start, end)`, at the latest or a given revision.
    ///
    /// # Errors
    /// [`Error::Compacted`] or [`Error::FutureRevision`] when `revision` can't be served.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error>;

    /// Create `key`; fails with [`Error::AlreadyExists`] if present. Returns the stored value.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, Error>;

    /// Replace `key` if its mod revision is `expected` (compare-and-swap).
    ///
    /// # Errors
    /// [`Error::NotFound`] if missing, [`Error::Conflict`] (with the current value) if changed.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, Error>;

    /// Delete `key`, if `expected` is given only when its mod revision matches.
    /// Returns the deleted value with `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, Error>;

    /// Events under `prefix` with revision greater than `after`.
    ///
    /// # Errors
    /// [`Error::Compacted`] if `after` is older than the compaction point.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, Error>;

    /// The latest revision.
    async fn current_revision(&self) -> Result<Revision, Error>;

    /// Forget history at and before `revision` (the latest value of every live key is kept).
    async fn compact(&self, revision: Revision) -> Result<(), Error>;

    /// The compaction point: the oldest revision a watch may start after.
    async fn compact_revision(&self) -> Result<Revision, Error>;
}

/// The end key that ranges over every key starting with `prefix` (as etcd's `WithPrefix`).
///
/// Returns the empty string (no upper bound, see [`RangeRequest::end`]) when no key bounds the
/// prefix from above (an empty prefix, or one made only of `char::MAX`).
pub fn prefix_end(prefix: &str) -> String {
    // Keys compare byte-wise and UTF-8 preserves code point order, so bumping the last code point
    // that can be bumped gives the smallest string above every key with the prefix. (Bumping the
    // last byte instead could produce invalid UTF-8.)
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    String::new()
}

/// How often [`spawn_compactor`] runs by default: the kube-apiserver's compaction interval.
pub const DEFAULT_COMPACT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// How many revisions of history [`spawn_compactor`] keeps at least, by default.
///
/// Together with the interval, a client that lost its watch for up to five minutes, or for
/// 10,000 writes, can resume it without a relist.
pub const DEFAULT_KEEP_REVISIONS: i64 = 10_000;

/// Compact `store` every `every`, keeping at least `keep_revisions` revisions and at least one
/// interval of history.
///
/// Like the kube-apiserver, each run compacts up to the revision seen at the previous run (so
/// history written during the last interval survives), and never past `current - keep_revisions`.
/// Works with any backend.
///
/// # Guarantees
/// The task ends when the store reports [`Error::Closed`]; its owner may also abort it. Other
/// errors are logged and retried at the next tick.
///
/// # Cancel safety
/// Aborting it mid-compaction is harmless: the backend finishes or resumes the compaction.
pub fn spawn_compactor(
    store: Arc<dyn Datastore>,
    every: Duration,
    keep_revisions: i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<Revision> = None;
        loop {
            ticker.tick().await;
            let current = match store.current_revision().await {
                Ok(current) => current,
                Err(Error::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "compactor: reading the current revision failed");
                    continue;
                }
            };
            if let Some(previous) = previous {
                let target = previous.min(current.saturating_sub(keep_revisions));
                let compacted = match store.compact_revision().await {
                    Ok(compacted) => compacted,
                    Err(Error::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "compactor: reading the compaction point failed");
                        continue;
                    }
                };
                if target > compacted {
                    match store.compact(target).await {
                        Ok(()) => tracing::debug!(revision = target, "compacted the datastore"),
                        Err(Error::Closed) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, revision = target, "compaction failed")
                        }
                    }
                }
            }
            previous = Some(current);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_the_last_code_point() {
        let cases = [
            ("/registry/pods/", "/registry/pods0"),
            ("a", "b"),
            ("", ""),
            ("a\u{7f}", "a\u{80}"),
            ("x\u{bf}", "x\u{c0}"),
            ("x\u{d7ff}", "x\u{e000}"),
            ("x\u{10ffff}", "y"),
            ("\u{10ffff}", ""),
        ];
        for (prefix, want) in cases {
            assert_eq!(prefix_end(prefix), want, "prefix {prefix:?}");
        }
    }

    #[test]
    fn prefix_end_bounds_exactly_the_prefixed_keys() {
        let prefix = "/r/\u{bf}";
        let end = prefix_end(prefix);
        for key in ["/r/\u{bf}", "/r/\u{bf}\u{10ffff}", "/r/\u{bf}zzz"] {
            assert!(key >= prefix && key < end.as_str(), "{key:?} in range");
        }
        for key in ["/r/\u{c0}", "/r/\u{be}\u{10ffff}", "/r0"] {
            assert!(
                !(key >= prefix && key < end.as_str()),
                "{key:?} out of range"
            );
        }
    }
}

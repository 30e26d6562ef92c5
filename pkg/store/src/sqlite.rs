//! The SQLite backend: the embedded default datastore.
//!
//! # Schema
//! - `log(revision PK, key, value, create_revision, prev_revision, deleted)`: one row per write,
//!   for reads at old revisions and watch catch-up. A delete's row (tombstone) has an empty value
//!   and points at the row it deleted through `prev_revision`; a create has no `prev_revision`.
//! - `kv(key UNIQUE, value, create_revision, mod_revision)`: the current state, so the common
//!   reads (latest GET and LIST) never touch history.
//! - `meta(name PK, value)`: `revision` (the latest revision, written with every commit so
//!   revisions never repeat even when the newest log rows are compacted), `compact_revision`
//!   and `compact_cursor` (how far the garbage collection of that compaction got).
//!
//! # Writes: group commit
//! One std thread owns the only write connection. Callers send requests over a bounded channel
//! and await a oneshot reply. The thread takes everything queued (up to [`SqliteOptions::max_batch`]),
//! applies it in one transaction (each write gets its own revision; compare-and-swap checks see
//! the earlier writes of the batch), commits with one fsync (WAL, `synchronous=FULL`), then
//! publishes the events to the watch hub and answers each caller. If the transaction fails as a
//! whole, each write is retried alone so every caller gets its own answer.
//!
//! # Reads
//! Reads run on tokio's blocking pool with a small pool of read connections (WAL readers never
//! wait for the writer); a semaphore bounds them to the pool size.
//!
//! # Compaction
//! `compact(r)` moves the compaction point first, then deletes garbage in chunks of revisions,
//! one chunk per writer-loop turn, folded into the next write batch's transaction, so writes are
//! delayed by at most one chunk. Progress is persisted, so a restart resumes it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::watch::{History, HistoryPage, WatchHub, WatchOptions};
use crate::{
    Datastore, Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision,
    WatchStream,
};

/// How many revisions one compaction chunk covers (at most twice as many row deletes).
const COMPACT_CHUNK: Revision = 2_000;
/// How many revisions one history page covers when catching a watcher up.
const HISTORY_WINDOW: Revision = 5_000;
/// How long a connection waits for a lock (only checkpoints and other processes contend).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER,
    deleted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision, deleted);
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES
    ('schema_version', 1), ('revision', 0), ('compact_revision', 0), ('compact_cursor', 0);
";

/// Tuning of a [`SqliteStore`]; the defaults suit a small control plane on two cores.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// The watch hub's ring and per-watcher buffer.
    pub watch: WatchOptions,
    /// Read connections (and concurrent reads). More than a few per core buys nothing.
    pub readers: usize,
    /// Most writes applied in one transaction. Bigger batches amortise the fsync further but
    /// delay every caller in the batch; must stay below [`WatchOptions::watcher_buffer`].
    pub max_batch: usize,
    /// Writes waiting for the writer thread before callers wait to enqueue (backpressure).
    /// Twice `max_batch`, so the next batch is ready while one commits.
    pub queue: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            watch: WatchOptions::default(),
            readers: 4,
            max_batch: 512,
            queue: 1_024,
        }
    }
}

/// A write as sent to the writer thread.
enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

type WriteReply = oneshot::Sender<Result<KeyValue, Error>>;

enum Request {
    Write(Op, WriteReply),
    Compact(Revision, oneshot::Sender<Result<(), Error>>),
    Close(oneshot::Sender<()>),
}

/// Revisions the writer publishes for lock-free reads of `current_revision`/`compact_revision`.
struct Shared {
    revision: AtomicI64,
    compact: AtomicI64,
}

/// The SQLite [`Datastore`]: durable, group-committed writes, pooled reads, watches from memory.
///
/// # Guarantees
/// A write is answered only after its transaction is committed with `synchronous=FULL` in WAL
/// mode: a killed process (or a power cut) loses no acknowledged write.
///
/// # Cancel safety
/// Dropping a write future after it was queued does not cancel the write; it may still commit.
pub struct SqliteStore {
    writer: mpsc::Sender<Request>,
    readers: Arc<Readers>,
    hub: Arc<WatchHub>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn sqlite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
    let context = context.into();
    move |source| Error::Sqlite { context, source }
}

impl SqliteStore {
    /// Open (or create) the datastore at `path`, creating its parent directory.
    ///
    /// This does blocking file IO: call it at startup, or through `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory or writer thread can't be created, [`Error::Sqlite`] if the
    /// database can't be opened or set up.
    pub fn open(path: &Path) -> Result<SqliteStore, Error> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with tuning.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub fn open_with(path: &Path, opts: SqliteOptions) -> Result<SqliteStore, Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                context: format!("creating datastore directory {}", parent.display()),
                source,
            })?;
        }
        let what = format!("opening datastore {}", path.display());
        let conn = Connection::open(path).map_err(sqlite(what.clone()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sqlite(what.clone()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Sqlite {
                context: what,
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("journal_mode is {mode}, WAL is required")),
                ),
            });
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .and_then(|()| conn.busy_timeout(BUSY_TIMEOUT))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(sqlite(format!("{what}: setting up the schema")))?;
        let read_meta = |name: &str| -> Result<Revision, Error> {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .map_err(sqlite(format!("{what}: reading {name}")))
        };
        let revision = read_meta("revision")?;
        let compact = read_meta("compact_revision")?;
        let cursor = read_meta("compact_cursor")?;

        let hub = Arc::new(WatchHub::new(opts.watch.clone(), revision));
        let shared = Arc::new(Shared {
            revision: AtomicI64::new(revision),
            compact: AtomicI64::new(compact),
        });
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let writer = Writer {
            conn,
            rx,
            hub: Arc::clone(&hub),
            shared: Arc::clone(&shared),
            revision,
            compact,
            cursor,
            jobs: VecDeque::new(),
            max_batch: opts.max_batch.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| Error::Io {
                context: "starting the datastore writer thread".into(),
                source,
            })?;
        tracing::info!(path = %path.display(), revision, compact, "datastore opened");
        let readers = opts.readers.max(1);
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(Readers {
                path: path.to_owned(),
                idle: Mutex::new(Vec::with_capacity(readers)),
                slots: Arc::new(Semaphore::new(readers)),
            }),
            hub,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Finish the queued writes, stop the writer thread and end every watch with
    /// [`Error::Closed`]. Later writes fail with [`Error::Closed`]; reads still work.
    ///
    /// Dropping the store does the same without waiting.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.writer.send(Request::Close(reply)).await.is_ok() {
            let _ = done.await;
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The thread has answered and only returns now; joining can't block for long, but
            // it is still a blocking call.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn write(&self, op: Op) -> Result<KeyValue, Error> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Request::Write(op, reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

#[async_trait::async_trait]
impl Datastore for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        let key = key.to_owned();
        self.readers.run(move |conn| get(conn, &key)).await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        self.readers.run(move |conn| range(conn, &req)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, Error> {
        self.write(Op::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, Error> {
        self.write(Op::Update {
            key: key.to_owned(),
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, Error> {
        self.write(Op::Delete {
            key: key.to_owned(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, Error> {
        let compact = self.shared.compact.load(Ordering::Acquire);
        if after < compact {
            return Err(Error::Compacted {
                requested: after,
                compact_revision: compact,
            });
        }
        let history = Arc::new(SqliteHistory(Arc::clone(&self.readers)));
        self.hub.watch(prefix, after, history)
    }

    async fn current_revision(&self) -> Result<Revision, Error> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Request::Compact(revision, reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn compact_revision(&self) -> Result<Revision, Error> {
        Ok(self.shared.compact.load(Ordering::Acquire))
    }
}

// ---------------------------------------------------------------------------------------------
// Writer thread

struct CompactJob {
    target: Revision,
    reply: oneshot::Sender<Result<(), Error>>,
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Request>,
    hub: Arc<WatchHub>,
    shared: Arc<Shared>,
    revision: Revision,
    compact: Revision,
    /// Compaction garbage is collected up to here.
    cursor: Revision,
    jobs: VecDeque<CompactJob>,
    max_batch: usize,
}

/// What one committed transaction did.
struct Applied {
    results: Vec<Result<KeyValue, Error>>,
    events: Vec<Event>,
    revision: Revision,
    compact: Revision,
    cursor: Revision,
}

/// Closes the hub when the writer thread ends, even by panic, so watchers never hang.
struct CloseHub(Arc<WatchHub>);

impl Drop for CloseHub {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Writer {
    fn run(mut self) {
        let close_hub = CloseHub(Arc::clone(&self.hub));
        let mut closing = None;
        loop {
            let busy = self.compaction_target().is_some();
            let first = if busy {
                match self.rx.try_recv() {
                    Ok(req) => Some(req),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.blocking_recv() {
                    Some(req) => Some(req),
                    None => break,
                }
            };
            let mut batch = Vec::new();
            let mut next = first;
            while let Some(req) = next {
                match req {
                    Request::Write(op, reply) => batch.push((op, reply)),
                    Request::Compact(target, reply) => self.enqueue_compaction(target, reply),
                    Request::Close(reply) => {
                        closing = Some(reply);
                        break;
                    }
                }
                if batch.len() >= self.max_batch {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            self.commit(batch);
            if closing.is_some() {
                break;
            }
        }
        // Writes queued behind a close are refused; a compaction in progress resumes on reopen.
        self.rx.close();
        while let Ok(req) = self.rx.try_recv() {
            match req {
                Request::Write(_, reply) => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Request::Compact(_, reply) => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Request::Close(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        for job in self.jobs.drain(..) {
            let _ = job.reply.send(Err(Error::Closed));
        }
        let revision = self.revision;
        drop(self);
        tracing::info!(revision, "datastore writer stopped");
        drop(close_hub);
        if let Some(reply) = closing {
            let _ = reply.send(());
        }
    }

    fn enqueue_compaction(&mut self, target: Revision, reply: oneshot::Sender<Result<(), Error>>) {
        if target > self.revision {
            let _ = reply.send(Err(Error::FutureRevision {
                requested: target,
                current: self.revision,
            }));
        } else if target <= self.cursor && self.jobs.is_empty() {
            let _ = reply.send(Ok(()));
        } else {
            self.jobs.push_back(CompactJob { target, reply });
        }
    }

    /// Where garbage collection must get to, if it is not there yet.
    fn compaction_target(&self) -> Option<Revision> {
        let want = self
            .jobs
            .front()
            .map_or(self.compact, |j| j.target.max(self.compact));
        (want > self.cursor).then_some(want)
    }

    fn commit(&mut self, batch: Vec<(Op, WriteReply)>) {
        let target = self.compaction_target();
        if batch.is_empty() && target.is_none() {
            self.finish_jobs();
            return;
        }
        let (ops, replies): (Vec<Op>, Vec<WriteReply>) = batch.into_iter().unzip();
        match self.apply(&ops, target) {
            Ok(applied) => self.committed(applied, replies),
            Err(e) => {
                tracing::warn!(error = %e, writes = ops.len(), "group commit failed; retrying each write alone");
                for (op, reply) in ops.iter().zip(replies) {
                    match self.apply(std::slice::from_ref(op), None) {
                        Ok(applied) => self.committed(applied, vec![reply]),
                        Err(source) => {
                            let _ = reply.send(Err(Error::Sqlite {
                                context: format!("writing {}", op.key()),
                                source,
                            }));
                        }
                    }
                }
                if let Some(target) = target {
                    match self.apply(&[], Some(target)) {
                        Ok(applied) => self.committed(applied, Vec::new()),
                        Err(source) => self.compaction_failed(source),
                    }
                }
            }
        }
        self.finish_jobs();
    }

    fn compaction_failed(&mut self, source: rusqlite::Error) {
        tracing::warn!(error = %source, compact = self.compact, "compaction failed");
        match self.jobs.pop_front() {
            Some(job) => {
                let _ = job.reply.send(Err(Error::Sqlite {
                    context: format!("compacting to revision {}", job.target),
                    source,
                }));
            }
            // A compaction resumed from an earlier run: leave its garbage (it is harmless, reads
            // after the compaction point ignore it) rather than retry forever.
            None => self.cursor = self.compact,
        }
    }

    /// Answer the compactions that are done.
    fn finish_jobs(&mut self) {
        while self.jobs.front().is_some_and(|j| j.target <= self.cursor) {
            if let Some(job) = self.jobs.pop_front() {
                let _ = job.reply.send(Ok(()));
            }
        }
    }

    fn committed(&mut self, applied: Applied, replies: Vec<WriteReply>) {
        self.revision = applied.revision;
        self.compact = applied.compact;
        self.cursor = applied.cursor;
        self.shared
            .compact
            .store(applied.compact, Ordering::Release);
        self.shared
            .revision
            .store(applied.revision, Ordering::Release);
        // Publish before answering: once a write is acknowledged, its event is in the hub.
        self.hub.publish(applied.events);
        for (reply, result) in replies.into_iter().zip(applied.results) {
            let _ = reply.send(result);
        }
    }

    /// Apply `ops` and one chunk of compaction (towards `target`) in one transaction.
    fn apply(&mut self, ops: &[Op], target: Option<Revision>) -> rusqlite::Result<Applied> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut applied = Applied {
            results: Vec::with_capacity(ops.len()),
            events: Vec::with_capacity(ops.len()),
            revision: self.revision,
            compact: self.compact,
            cursor: self.cursor,
        };
        for op in ops {
            let result = apply_op(&tx, op, &mut applied.revision, &mut applied.events)?;
            applied.results.push(result);
        }
        if applied.revision != self.revision {
            set_meta(&tx, "revision", applied.revision)?;
        }
        if let Some(target) = target {
            if target > applied.compact {
                // Move the compaction point before deleting anything, so no read at an older
                // revision can see a half-collected history.
                set_meta(&tx, "compact_revision", target)?;
                applied.compact = target;
            }
            applied.cursor = compact_chunk(&tx, applied.cursor, target)?;
        }
        tx.commit()?;
        Ok(applied)
    }
}

fn set_meta(tx: &Transaction<'_>, name: &str, value: Revision) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")?
        .execute(params![name, value])?;
    Ok(())
}

fn current_kv(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.prepare_cached("SELECT value, create_revision, mod_revision FROM kv WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(KeyValue {
                key: key.to_owned(),
                value: Bytes::from(r.get::<_, Vec<u8>>(0)?),
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        })
        .optional()
}

fn insert_log(
    tx: &Transaction<'_>,
    revision: Revision,
    kv: (&str, &[u8]),
    create_revision: Revision,
    prev_revision: Option<Revision>,
    deleted: bool,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO log (revision, key, value, create_revision, prev_revision, deleted) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        revision,
        kv.0,
        kv.1,
        create_revision,
        prev_revision,
        deleted
    ])?;
    Ok(())
}

/// One write inside the batch transaction. The outer `Result` is SQLite failing (the batch is
/// rolled back); the inner one is the caller's answer (nothing was written).
fn apply_op(
    tx: &Transaction<'_>,
    op: &Op,
    revision: &mut Revision,
    events: &mut Vec<Event>,
) -> rusqlite::Result<Result<KeyValue, Error>> {
    let current = current_kv(tx, op.key())?;
    match op {
        Op::Create { key, value } => {
            if current.is_some() {
                return Ok(Err(Error::AlreadyExists { key: key.clone() }));
            }
            let rev = *revision + 1;
            insert_log(tx, rev, (key.as_str(), value.as_ref()), rev, None, false)?;
            tx.prepare_cached(
                "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![key, value.as_ref(), rev])?;
            *revision = rev;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev_kv: None,
            });
            Ok(Ok(kv))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let Some(current) = current else {
                return Ok(Err(Error::NotFound { key: key.clone() }));
            };
            if current.mod_revision != *expected {
                return Ok(Err(Error::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    current: Some(current),
                }));
            }
            let rev = *revision + 1;
            insert_log(
                tx,
                rev,
                (key.as_str(), value.as_ref()),
                current.create_revision,
                Some(current.mod_revision),
                false,
            )?;
            tx.prepare_cached("UPDATE kv SET value = ?2, mod_revision = ?3 WHERE key = ?1")?
                .execute(params![key, value.as_ref(), rev])?;
            *revision = rev;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: current.create_revision,
                mod_revision: rev,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev_kv: Some(current),
            });
            Ok(Ok(kv))
        }
        Op::Delete { key, expected } => {
            let Some(current) = current else {
                return Ok(Err(Error::NotFound { key: key.clone() }));
            };
            if let Some(expected) = *expected {
                if current.mod_revision != expected {
                    return Ok(Err(Error::Conflict {
                        key: key.clone(),
                        expected,
                        current: Some(current),
                    }));
                }
            }
            let rev = *revision + 1;
            insert_log(
                tx,
                rev,
                (key.as_str(), &[][..]),
                current.create_revision,
                Some(current.mod_revision),
                true,
            )?;
            tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                .execute([key])?;
            *revision = rev;
            let kv = KeyValue {
                mod_revision: rev,
                ..current.clone()
            };
            events.push(Event {
                kind: EventKind::Delete,
                kv: kv.clone(),
                prev_kv: Some(current),
            });
            Ok(Ok(kv))
        }
    }
}

/// Collect the garbage of revisions `(cursor, min(cursor + COMPACT_CHUNK, target)]`; returns the
/// new cursor.
///
/// A row is garbage once a later row of its key is at or before the compaction point: that later
/// row names it as `prev_revision`. A delete's tombstone is garbage too (reads at or after the
/// compaction point don't need it, and a later create doesn't point at it). Every row a read or
/// watch after the compaction point needs is kept, including the `prev` of every later event.
fn compact_chunk(
    tx: &Transaction<'_>,
    cursor: Revision,
    target: Revision,
) -> rusqlite::Result<Revision> {
    let end = cursor.saturating_add(COMPACT_CHUNK).min(target);
    let mut doomed = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT revision, prev_revision, deleted FROM log \
             WHERE revision > ?1 AND revision <= ?2",
        )?;
        let mut rows = stmt.query(params![cursor, end])?;
        while let Some(row) = rows.next()? {
            let revision: Revision = row.get(0)?;
            let prev: Option<Revision> = row.get(1)?;
            let deleted: bool = row.get(2)?;
            doomed.extend(prev);
            if deleted {
                doomed.push(revision);
            }
        }
    }
    let mut delete = tx.prepare_cached("DELETE FROM log WHERE revision = ?1")?;
    for revision in doomed {
        delete.execute([revision])?;
    }
    set_meta(tx, "compact_cursor", end)?;
    Ok(end)
}

// ---------------------------------------------------------------------------------------------
// Reads

/// Read connections, used on tokio's blocking pool.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: bounds concurrent reads and keeps connections from churning.
    slots: Arc<Semaphore>,
}

impl Readers {
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        let me = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            me.with(f)
        });
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(Error::Closed),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, Error>) -> Result<T, Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&mut conn);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        result
    }

    fn open(&self) -> Result<Connection, Error> {
        let what = format!("opening read connection to {}", self.path.display());
        let conn = Connection::open(&self.path).map_err(sqlite(what.clone()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .and_then(|()| conn.execute_batch("PRAGMA query_only = ON;"))
            .map_err(sqlite(what))?;
        Ok(conn)
    }
}

fn get(conn: &mut Connection, key: &str) -> Result<Option<KeyValue>, Error> {
    current_kv(conn, key).map_err(sqlite(format!("reading {key}")))
}

fn meta(conn: &Connection, name: &str) -> rusqlite::Result<Revision> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
}

/// The `WHERE` condition for `[?1, ?2)` on `column`; an empty end means no upper bound.
fn key_condition(column: &str, end: &str) -> String {
    if end.is_empty() {
        format!("{column} >= ?1 AND ?2 = ''")
    } else {
        format!("{column} >= ?1 AND {column} < ?2")
    }
}

fn range(conn: &mut Connection, req: &RangeRequest) -> Result<RangeResponse, Error> {
    let what = || format!("reading range [{}, {})", req.start, req.end);
    // One read transaction: the revision and the rows come from the same snapshot.
    let tx = conn.transaction().map_err(sqlite(what()))?;
    let current = meta(&tx, "revision").map_err(sqlite(what()))?;
    let at = match req.revision {
        Some(r) if r > 0 && r != current => {
            if r > current {
                return Err(Error::FutureRevision {
                    requested: r,
                    current,
                });
            }
            let compact = meta(&tx, "compact_revision").map_err(sqlite(what()))?;
            if r < compact {
                return Err(Error::Compacted {
                    requested: r,
                    compact_revision: compact,
                });
            }
            r
        }
        _ => current,
    };
    let mut resp = if at == current {
        range_latest(&tx, req)
    } else {
        range_at(&tx, req, at)
    }
    .map_err(sqlite(what()))?;
    resp.revision = at;
    Ok(resp)
}

fn sql_limit(limit: usize) -> i64 {
    if limit == 0 {
        -1
    } else {
        // One more than asked tells whether more remain.
        i64::try_from(limit).map_or(-1, |l| l.saturating_add(1))
    }
}

fn range_latest(tx: &Transaction<'_>, req: &RangeRequest) -> rusqlite::Result<RangeResponse> {
    let cond = key_condition("key", &req.end);
    let mut kvs = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT key, value, create_revision, mod_revision FROM kv WHERE {cond} \
             ORDER BY key LIMIT ?3"
        ))?;
        let mut rows = stmt.query(params![req.start, req.end, sql_limit(req.limit)])?;
        while let Some(row) = rows.next()? {
            kvs.push(KeyValue {
                key: row.get(0)?,
                value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
                create_revision: row.get(2)?,
                mod_revision: row.get(3)?,
            });
        }
    }
    let more = req.limit != 0 && kvs.len() > req.limit;
    let count = if more {
        kvs.truncate(req.limit);
        tx.prepare_cached(&format!("SELECT COUNT(*) FROM kv WHERE {cond}"))?
            .query_row(params![req.start, req.end], |r| r.get(0))?
    } else {
        i64::try_from(kvs.len()).unwrap_or(i64::MAX)
    };
    Ok(RangeResponse {
        kvs,
        more,
        count,
        revision: 0,
    })
}

/// The range as of an older revision `at`, rebuilt from the log: for each key its latest row at
/// or before `at`, unless that row is a delete. The key scan is index-only; values are fetched
/// only for the rows returned.
fn range_at(
    tx: &Transaction<'_>,
    req: &RangeRequest,
    at: Revision,
) -> rusqlite::Result<RangeResponse> {
    let cond = key_condition("key", &req.end);
    let mut wanted = Vec::new();
    let mut count: i64 = 0;
    {
        // SQLite takes the bare column `deleted` from the row holding MAX(revision).
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT MAX(revision), deleted FROM log WHERE {cond} AND revision <= ?3 \
             GROUP BY key ORDER BY key"
        ))?;
        let mut rows = stmt.query(params![req.start, req.end, at])?;
        while let Some(row) = rows.next()? {
            let deleted: bool = row.get(1)?;
            if deleted {
                continue;
            }
            count += 1;
            if req.limit == 0 || wanted.len() < req.limit {
                wanted.push(row.get::<_, Revision>(0)?);
            }
        }
    }
    let mut fetch =
        tx.prepare_cached("SELECT key, value, create_revision FROM log WHERE revision = ?1")?;
    let mut kvs = Vec::with_capacity(wanted.len());
    for revision in wanted {
        kvs.push(fetch.query_row([revision], |r| {
            Ok(KeyValue {
                key: r.get(0)?,
                value: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                create_revision: r.get(2)?,
                mod_revision: revision,
            })
        })?);
    }
    Ok(RangeResponse {
        more: i64::try_from(kvs.len()).unwrap_or(i64::MAX) < count,
        kvs,
        count,
        revision: 0,
    })
}

/// Catch-up reads for watchers that start before the hub's ring.
struct SqliteHistory(Arc<Readers>);

#[async_trait::async_trait]
impl History for SqliteHistory {
    async fn page(&self, prefix: &str, after: Revision) -> Result<HistoryPage, Error> {
        let prefix = prefix.to_owned();
        self.0
            .run(move |conn| history_page(conn, &prefix, after))
            .await
    }
}

fn history_page(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
) -> Result<HistoryPage, Error> {
    let what = || format!("reading history of {prefix} after revision {after}");
    let tx = conn.transaction().map_err(sqlite(what()))?;
    let compact = meta(&tx, "compact_revision").map_err(sqlite(what()))?;
    if after < compact {
        return Err(Error::Compacted {
            requested: after,
            compact_revision: compact,
        });
    }
    let current = meta(&tx, "revision").map_err(sqlite(what()))?;
    let scanned_to = after.saturating_add(HISTORY_WINDOW).min(current).max(after);
    let end = crate::prefix_end(prefix);
    let cond = key_condition("l.key", &end);
    let mut events = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT l.revision, l.key, l.value, l.create_revision, l.deleted, \
                        p.revision, p.value, p.create_revision \
                 FROM log l LEFT JOIN log p ON p.revision = l.prev_revision \
                 WHERE l.revision > ?3 AND l.revision <= ?4 AND {cond} \
                 ORDER BY l.revision"
            ))
            .map_err(sqlite(what()))?;
        let mut rows = stmt
            .query(params![prefix, end, after, scanned_to])
            .map_err(sqlite(what()))?;
        while let Some(row) = rows.next().map_err(sqlite(what()))? {
            events.push(history_event(row).map_err(sqlite(what()))?);
        }
    }
    Ok(HistoryPage { events, scanned_to })
}

fn history_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let revision: Revision = row.get(0)?;
    let key: String = row.get(1)?;
    let value = Bytes::from(row.get::<_, Vec<u8>>(2)?);
    let create_revision: Revision = row.get(3)?;
    let deleted: bool = row.get(4)?;
    let prev_kv = match row.get::<_, Option<Revision>>(5)? {
        Some(prev) => Some(KeyValue {
            key: key.clone(),
            value: Bytes::from(row.get::<_, Option<Vec<u8>>>(6)?.unwrap_or_default()),
            create_revision: row.get::<_, Option<Revision>>(7)?.unwrap_or_default(),
            mod_revision: prev,
        }),
        None => None,
    };
    Ok(if deleted {
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                // The tombstone stores nothing: the deleted value is the previous row's.
                value: prev_kv
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
                create_revision,
                mod_revision: revision,
            },
            prev_kv,
        }
    } else {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
            },
            prev_kv,
        }
    })
}

//! The watch hub shared by every backend: committed events fan out to watchers from memory.
//!
//! The backend's single writer calls [`WatchHub::publish`] after each commit, in revision order.
//! The hub keeps a ring of recent events so a watch that starts a little in the past is caught up
//! from memory; one that starts further back reads pages from the backend's history
//! ([`History`]) until the ring covers the rest, then switches to live events.
//!
//! # Catch-up handoff
//! Attaching to the live feed happens under the hub lock, which is also held while publishing:
//! the backlog copied from the ring ends exactly where live delivery begins, so there is no gap
//! and no duplicate. Pages read from history may be newer than what the hub has been told yet
//! (the reader can see a commit before the writer publishes it); each watcher therefore also
//! remembers the last revision it has been given and drops live events at or below it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::stream;
use tokio::sync::mpsc;

use crate::{Error, Event, Revision, WatchStream};

/// Tuning of the in-memory watch hub.
///
/// The defaults keep recent history small enough for the control plane's memory target while
/// covering a few minutes of a busy small cluster, so re-watches after a blip come from memory.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// At most this many recent events are kept in memory for watches that start in the past.
    pub ring_events: usize,
    /// At most this many bytes of keys and values are kept in the ring (whichever limit is hit
    /// first evicts the oldest events).
    pub ring_bytes: usize,
    /// Events buffered per watcher before it is stopped with [`Error::WatcherTooSlow`].
    ///
    /// A whole group commit is published at once, so this must exceed the largest batch the
    /// writer applies (512 for SQLite); 4,096 is eight such batches, or about a second of writes
    /// at our throughput target. A slot holds a pointer to an event shared with the ring, so a
    /// full buffer costs 32 KiB plus the events it keeps alive. A consumer that can't drain
    /// that much in time is better served by re-watching (from the ring) than by growing memory.
    pub watcher_buffer: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            ring_events: 20_000,
            ring_bytes: 32 << 20,
            watcher_buffer: 4_096,
        }
    }
}

/// One page of history read by a backend to catch a watcher up.
pub(crate) struct HistoryPage {
    /// Events under the prefix with revision in `(after, scanned_to]`, in revision order.
    pub events: Vec<Event>,
    /// Every revision up to here has been looked at.
    pub scanned_to: Revision,
}

/// A backend's event history, read when a watch starts before the ring.
#[async_trait::async_trait]
pub(crate) trait History: Send + Sync + 'static {
    /// Events under `prefix` with revision greater than `after`, a bounded window of them.
    ///
    /// # Guarantees
    /// `scanned_to >= after`, and `scanned_to > after` whenever a newer revision is committed.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `after` is older than the compaction point.
    async fn page(&self, prefix: &str, after: Revision) -> Result<HistoryPage, Error>;
}

/// What the hub hands a watcher's buffer.
enum Msg {
    Event(Arc<Event>),
    /// The buffer was full: the watcher has been removed and this is its last message.
    TooSlow,
}

/// A watcher just attached to the live feed: its backlog from the ring, then its buffer.
type Attached = (Vec<Arc<Event>>, mpsc::Receiver<Msg>);

struct Slot {
    prefix: String,
    /// Live events at or below this revision were already given (from history) or not asked for.
    after: Revision,
    tx: mpsc::Sender<Msg>,
}

struct HubState {
    /// Recent events in revision order.
    ring: VecDeque<Arc<Event>>,
    ring_bytes: usize,
    /// The ring holds every event with a revision greater than this.
    floor: Revision,
    watchers: Vec<Slot>,
    closed: bool,
}

/// Fans out committed events to watchers; see the module docs.
pub(crate) struct WatchHub {
    opts: WatchOptions,
    state: Mutex<HubState>,
}

fn revision_of(event: &Event) -> Revision {
    event.kv.mod_revision
}

fn size_of(event: &Event) -> usize {
    // Keys appear twice when there is a previous value; the constant covers the structs.
    let prev = event
        .prev_kv
        .as_ref()
        .map_or(0, |p| p.key.len() + p.value.len());
    128 + event.kv.key.len() + event.kv.value.len() + prev
}

impl WatchHub {
    /// A hub whose ring starts empty at `revision`: older watches go to history.
    pub(crate) fn new(opts: WatchOptions, revision: Revision) -> Self {
        let opts = WatchOptions {
            // One slot is always kept free for the "too slow" notice.
            watcher_buffer: opts.watcher_buffer.max(2),
            ..opts
        };
        Self {
            opts,
            state: Mutex::new(HubState {
                ring: VecDeque::new(),
                ring_bytes: 0,
                floor: revision,
                watchers: Vec::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deliver committed events (in revision order) to watchers and remember them in the ring.
    ///
    /// # Guarantees
    /// Never blocks on a watcher: one whose buffer is full is removed and told it was too slow.
    pub(crate) fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.watchers.retain_mut(|slot| deliver(slot, &events));
        for event in events {
            st.ring_bytes += size_of(&event);
            st.ring.push_back(event);
        }
        while st.ring.len() > self.opts.ring_events || st.ring_bytes > self.opts.ring_bytes {
            let Some(old) = st.ring.pop_front() else {
                break;
            };
            st.ring_bytes -= size_of(&old);
            st.floor = revision_of(&old);
        }
    }

    /// Stop every watcher (they end with [`Error::Closed`]) and refuse new ones.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        // Dropping the senders ends each watcher's stream once its buffer is drained.
        st.watchers.clear();
        st.ring.clear();
        st.ring_bytes = 0;
    }

    /// Attach a watcher to the live feed if the ring covers everything after `after`.
    ///
    /// Returns the backlog from the ring and the live receiver, or `None` when `after` is older
    /// than the ring.
    fn attach(&self, prefix: &str, after: Revision) -> Result<Option<Attached>, Error> {
        let mut st = self.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        if after < st.floor {
            return Ok(None);
        }
        let start = st.ring.partition_point(|e| revision_of(e) <= after);
        let backlog: Vec<Arc<Event>> = st
            .ring
            .range(start..)
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(self.opts.watcher_buffer);
        st.watchers.push(Slot {
            prefix: prefix.to_owned(),
            after,
            tx,
        });
        Ok(Some((backlog, rx)))
    }

    /// Start a watch of `prefix` after revision `after`, using `history` for what the ring lacks.
    ///
    /// The caller checks `after` against the compaction point first; history pages check again,
    /// so a compaction during catch-up ends the stream with [`Error::Compacted`].
    pub(crate) fn watch(
        self: &Arc<Self>,
        prefix: &str,
        after: Revision,
        history: Arc<dyn History>,
    ) -> Result<WatchStream, Error> {
        // Attach now when possible, so every write acknowledged after this call is seen live.
        let phase = match self.attach(prefix, after)? {
            Some((backlog, rx)) => {
                let watch = Watch {
                    hub: Arc::clone(self),
                    history,
                    prefix: prefix.to_owned(),
                    backlog: backlog.into(),
                    phase: Phase::Live(rx),
                };
                return Ok(into_stream(watch));
            }
            None => Phase::Catchup { after },
        };
        Ok(into_stream(Watch {
            hub: Arc::clone(self),
            history,
            prefix: prefix.to_owned(),
            backlog: VecDeque::new(),
            phase,
        }))
    }

    /// How many watchers are attached (tests and metrics).
    #[cfg(test)]
    pub(crate) fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }
}

/// Give `events` to one watcher; false when it must be removed.
fn deliver(slot: &mut Slot, events: &[Arc<Event>]) -> bool {
    if slot.tx.is_closed() {
        return false;
    }
    for event in events {
        let rev = revision_of(event);
        if rev <= slot.after || !event.kv.key.starts_with(&slot.prefix) {
            continue;
        }
        // Only the hub sends, under its lock, so capacity can only grow behind our back: keeping
        // one slot free guarantees the notice below always fits.
        if slot.tx.capacity() < 2 {
            let _ = slot.tx.try_send(Msg::TooSlow);
            return false;
        }
        if slot.tx.try_send(Msg::Event(Arc::clone(event))).is_err() {
            return false;
        }
        slot.after = rev;
    }
    true
}

enum Phase {
    /// Reading history pages; everything up to `after` has been queued.
    Catchup {
        after: Revision,
    },
    Live(mpsc::Receiver<Msg>),
    Done,
}

struct Watch {
    hub: Arc<WatchHub>,
    history: Arc<dyn History>,
    prefix: String,
    /// Events to yield before reading the next page or the live feed.
    backlog: VecDeque<Arc<Event>>,
    phase: Phase,
}

fn into_stream(watch: Watch) -> WatchStream {
    Box::pin(stream::unfold(watch, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    }))
}

impl Watch {
    async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return Some(Ok(Arc::unwrap_or_clone(event)));
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Live(mut rx) => {
                    let msg = rx.recv().await;
                    match msg {
                        Some(Msg::Event(event)) => {
                            self.phase = Phase::Live(rx);
                            return Some(Ok(Arc::unwrap_or_clone(event)));
                        }
                        Some(Msg::TooSlow) => return Some(Err(Error::WatcherTooSlow)),
                        None => return Some(Err(Error::Closed)),
                    }
                }
                Phase::Catchup { after } => match self.hub.attach(&self.prefix, after) {
                    Err(e) => return Some(Err(e)),
                    Ok(Some((backlog, rx))) => {
                        self.backlog.extend(backlog);
                        self.phase = Phase::Live(rx);
                    }
                    Ok(None) => match self.history.page(&self.prefix, after).await {
                        Err(e) => return Some(Err(e)),
                        Ok(page) => {
                            self.backlog.extend(page.events.into_iter().map(Arc::new));
                            self.phase = Phase::Catchup {
                                after: page.scanned_to.max(after),
                            };
                        }
                    },
                },
            }
        }
    }
}

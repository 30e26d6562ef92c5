//! Shared watch caches: one watcher + reflector per resource type, fanned out to subscribers.
//!
//! kube-runtime's own shared-store dispatcher forwards only applied objects; controllers that
//! must recreate what was deleted (a namespace's `default` ServiceAccount, its root CA
//! ConfigMap) also need deletions. This fan-out forwards every change (applied, deleted, and
//! objects that vanished across a relist) as the object itself; subscribers are level-triggered
//! and look the current state up in the store.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// Buffered changes per resource type. A subscriber that falls further behind than this does
/// not block the watch: it is told it lagged and replays the whole store instead, which a
/// level-triggered reconciler treats like any other resync. So memory stays bounded and no
/// change is lost, only coalesced.
pub const DEFAULT_FANOUT_CAPACITY: usize = 1024;

/// The watch caches of one client, shared by every controller built on it.
///
/// # Guarantees
/// At most one watch per resource type, started on first use ([`Informers::get`]) and stopped by
/// [`Informers::shutdown`] (or when the last clone is dropped, as the tasks are owned here).
#[derive(Clone)]
pub struct Informers {
    client: Client,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    by_type: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    /// Each started informer's sync flag, for [`Informers::wait_synced`].
    synced: Vec<watch::Receiver<bool>>,
    tasks: JoinSet<()>,
}

/// The watch of an informer ended (it was shut down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the watch was stopped")]
pub struct Stopped;

/// One resource type's cache and change feed.
pub struct Informer<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    changes: broadcast::Sender<Arc<K>>,
    synced: watch::Receiver<bool>,
}

impl<K: Resource + 'static> Clone for Informer<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            changes: self.changes.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl Informers {
    /// Caches for `client` (cluster-wide watches).
    pub fn new(client: Client) -> Self {
        Informers {
            client,
            inner: Arc::new(Mutex::new(Inner {
                by_type: HashMap::new(),
                synced: Vec::new(),
                tasks: JoinSet::new(),
            })),
        }
    }

    /// The client the caches watch with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The informer for `K`, starting its watch on first call.
    ///
    /// # Assumptions
    /// Called inside a tokio runtime (the watch is a spawned task).
    pub fn get<K>(&self) -> Informer<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = inner
            .by_type
            .get(&TypeId::of::<K>())
            .and_then(|b| b.downcast_ref::<Informer<K>>())
        {
            return existing.clone();
        }
        let (store, writer) = reflector::store::<K>();
        let (changes, _) = broadcast::channel(DEFAULT_FANOUT_CAPACITY);
        let (synced_tx, synced) = watch::channel(false);
        let informer = Informer {
            store: store.clone(),
            changes: changes.clone(),
            synced,
        };
        let api: Api<K> = Api::all(self.client.clone());
        inner
            .tasks
            .spawn(run_watch(api, store, writer, changes, synced_tx));
        inner.synced.push(informer.synced.clone());
        inner
            .by_type
            .insert(TypeId::of::<K>(), Box::new(informer.clone()));
        informer
    }

    /// Waits until every cache started so far has been filled, so components sharing these
    /// caches start on complete state without each naming what it waits for.
    ///
    /// # Errors
    /// [`Stopped`] if a watch ended before it synced.
    pub async fn wait_synced(&self) -> Result<(), Stopped> {
        let flags = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.synced.clone()
        };
        for mut flag in flags {
            flag.wait_for(|s| *s).await.map_err(|_| Stopped)?;
        }
        Ok(())
    }

    /// Stops every watch and waits for the tasks to end.
    ///
    /// # Cancel safety
    /// Watches are aborted first, so cancelling the wait leaves no watch running.
    pub async fn shutdown(&self) {
        let mut tasks = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut inner.tasks)
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// The cache: possibly stale, so writers re-check against the API (or expect conflicts).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Waits until the cache has been filled by a first complete list.
    ///
    /// Use this rather than `Store::wait_until_ready` when several tasks wait: the latter
    /// (kube-runtime 5) wakes only the last waiter, so other waiters can hang.
    ///
    /// # Errors
    /// [`Stopped`] if the watch ended before it synced.
    pub async fn wait_synced(&self) -> Result<(), Stopped> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|s| *s)
            .await
            .map(|_| ())
            .map_err(|_| Stopped)
    }

    /// Every object once the cache is filled, then every change (applied or deleted).
    /// Objects may repeat; subscribers are expected to be level-triggered. This is the trigger
    /// stream for `Controller::for_shared_stream` and `watches_shared_stream`.
    ///
    /// The stream ends when the watch is stopped.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        // Subscribe before reading the store, so nothing between the two is missed.
        let rx = self.changes.subscribe();
        let state = Subscription {
            rx,
            store: self.store.clone(),
            synced: self.synced.clone(),
            pending: VecDeque::new(),
            primed: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(obj) = s.pending.pop_front() {
                    return Some((obj, s));
                }
                if !s.primed {
                    s.primed = true;
                    if s.synced.wait_for(|synced| *synced).await.is_err() {
                        return None;
                    }
                    s.pending.extend(s.store.state());
                    continue;
                }
                match s.rx.recv().await {
                    Ok(obj) => return Some((obj, s)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            kind = %K::kind(&Default::default()),
                            missed,
                            "subscriber lagged; replaying the cache"
                        );
                        s.pending.extend(s.store.state());
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

struct Subscription<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    rx: broadcast::Receiver<Arc<K>>,
    store: Store<K>,
    synced: watch::Receiver<bool>,
    pending: VecDeque<Arc<K>>,
    primed: bool,
}

/// The watch loop: kube-runtime's watcher (resumes from the last version, relists on 410,
/// backs off on errors) feeding the reflector and the fan-out.
async fn run_watch<K>(
    api: Api<K>,
    store: Store<K>,
    mut writer: reflector::store::Writer<K>,
    changes: broadcast::Sender<Arc<K>>,
    synced: watch::Sender<bool>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let kind = K::kind(&Default::default()).to_string();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // `send` fails only when nobody subscribed yet; the store still has everything.
    let send = |obj: Arc<K>| {
        let _ = changes.send(obj);
    };
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        match &event {
            watcher::Event::InitDone => {
                let before = store.state();
                writer.apply_watcher_event(&event);
                let after = store.state();
                let present: HashSet<ObjectRef<K>> = after
                    .iter()
                    .map(|o| ObjectRef::from_obj(o.as_ref()))
                    .collect();
                // Deleted while we were not watching: only a relist can tell.
                for gone in before
                    .into_iter()
                    .filter(|o| !present.contains(&ObjectRef::from_obj(o.as_ref())))
                {
                    send(gone);
                }
                tracing::debug!(%kind, objects = after.len(), "cache synced");
                synced.send_replace(true);
                for obj in after {
                    send(obj);
                }
            }
            watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => {
                writer.apply_watcher_event(&event);
                send(Arc::new(obj.clone()));
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {
                writer.apply_watcher_event(&event);
            }
        }
    }
}

//! Upstream's `ControllerExpectations` for pods: a controller remembers the pods it created,
//! deleted, or released a finalizer of until its (possibly stale) pod cache shows those
//! writes, so it never acts twice on the same gap. Shared by the ReplicaSet, DaemonSet and Job
//! controllers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Pod;

/// How long unmet expectations are trusted before the controller acts anyway: a watch event
/// can be lost (a pod created and deleted between two relists). Upstream's value.
pub const TTL: Duration = Duration::from_secs(5 * 60);

/// One write whose effect the pod cache must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A pod of this name was created.
    Create(String),
    /// The pod of this uid was deleted.
    Delete(String),
    /// The pod of this uid lost the finalizer given to [`PodExpectations::with_finalizer`].
    Finalizer(String),
}

#[derive(Debug)]
struct Entry {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    finalizers: HashSet<String>,
    since: Instant,
}

/// Pending writes per controller object (keyed `namespace/name`).
#[derive(Debug, Default)]
pub struct PodExpectations {
    all: Mutex<HashMap<String, Entry>>,
    /// The finalizer whose removal [`Expect::Finalizer`] waits for.
    finalizer: Option<&'static str>,
}

impl PodExpectations {
    /// Expectations that can also wait for `finalizer` to leave pods (the Job controller's
    /// tracking finalizer).
    pub fn with_finalizer(finalizer: &'static str) -> Self {
        PodExpectations {
            all: Mutex::default(),
            finalizer: Some(finalizer),
        }
    }

    /// Records writes made for `key`.
    pub fn expect(&self, key: &str, writes: impl IntoIterator<Item = Expect>) {
        let mut writes = writes.into_iter().peekable();
        if writes.peek().is_none() {
            return;
        }
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        // Entries of objects deleted meanwhile are never read again: drop the stale ones here.
        all.retain(|_, e| e.since.elapsed() <= TTL);
        let entry = all.entry(key.to_string()).or_insert_with(|| Entry {
            creates: HashSet::new(),
            deletes: HashSet::new(),
            finalizers: HashSet::new(),
            since: Instant::now(),
        });
        for w in writes {
            match w {
                Expect::Create(name) => entry.creates.insert(name),
                Expect::Delete(uid) => entry.deletes.insert(uid),
                Expect::Finalizer(uid) => entry.finalizers.insert(uid),
            };
        }
    }

    /// Whether `pods` (the cache's view of `key`'s pods) shows every write recorded for
    /// `key`; the observed ones are dropped. Unmet expectations older than [`TTL`] count as
    /// met.
    pub fn met(&self, key: &str, pods: &[Arc<Pod>]) -> bool {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = all.get_mut(key) else {
            return true;
        };
        let names: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let by_uid = |uid: &str| pods.iter().find(|p| p.metadata.uid.as_deref() == Some(uid));
        entry.creates.retain(|n| !names.contains(n.as_str()));
        entry
            .deletes
            .retain(|u| by_uid(u).is_some_and(|p| p.metadata.deletion_timestamp.is_none()));
        let finalizer = self.finalizer;
        entry.finalizers.retain(|u| {
            by_uid(u).is_some_and(|p| {
                let f = p.metadata.finalizers.as_deref().unwrap_or_default();
                finalizer.is_some_and(|name| f.iter().any(|x| x == name))
            })
        });
        let empty =
            entry.creates.is_empty() && entry.deletes.is_empty() && entry.finalizers.is_empty();
        if empty || entry.since.elapsed() > TTL {
            all.remove(key);
            return true;
        }
        false
    }

    /// Stops waiting for `key`'s writes (some failed, so the cache will never show them).
    pub fn forget(&self, key: &str) {
        self.all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, uid: &str, deleting: bool, finalizers: &[&str]) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(uid.into()),
                deletion_timestamp: deleting.then(|| Time(k8s_openapi::jiff::Timestamp::now())),
                finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn creates_deletes_and_finalizers_are_met_once_the_cache_shows_them() {
        let e = PodExpectations::with_finalizer("f");
        assert!(e.met("ns/a", &[]));
        e.expect(
            "ns/a",
            [
                Expect::Create("p1".into()),
                Expect::Delete("u2".into()),
                Expect::Finalizer("u3".into()),
            ],
        );
        let p2 = pod("p2", "u2", false, &[]);
        let p3 = pod("p3", "u3", false, &["f"]);
        assert!(!e.met("ns/a", &[p2.clone(), p3.clone()]));
        // Created pod seen, deleted pod terminating, finalizer gone: all met.
        let seen = [
            pod("p1", "u1", false, &[]),
            pod("p2", "u2", true, &[]),
            pod("p3", "u3", false, &[]),
        ];
        assert!(e.met("ns/a", &seen));
        // Met expectations are dropped.
        assert!(e.met("ns/a", &[p2, p3]));
    }

    #[test]
    fn forget_and_empty_writes() {
        let e = PodExpectations::default();
        e.expect("ns/a", []);
        assert!(e.met("ns/a", &[]));
        e.expect("ns/a", [Expect::Create("p1".into())]);
        assert!(!e.met("ns/a", &[]));
        e.forget("ns/a");
        assert!(e.met("ns/a", &[]));
    }
}

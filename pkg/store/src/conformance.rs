//! One conformance suite, run against every backend: callers must not be able to tell them apart.
//!
//! Each check is an `async fn(Open)`; the `suite!` macro at the bottom turns each into a test per
//! backend. Backend-specific behaviour (SQLite restart) is tested at the end.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinSet;

use crate::{
    prefix_end, Datastore, Error, Event, EventKind, KeyValue, MemoryStore, RangeRequest, Revision,
    SqliteOptions, SqliteStore, WatchOptions, WatchStream,
};

/// A store under test, with whatever it needs kept alive.
struct Fixture {
    store: Arc<dyn Datastore>,
    _dir: Option<tempfile::TempDir>,
}

type Open = fn(WatchOptions) -> Fixture;

fn memory(watch: WatchOptions) -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::with_watch_options(watch)),
        _dir: None,
    }
}

fn sqlite(watch: WatchOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = SqliteOptions {
        watch,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&dir.path().join("db/state.db"), opts).expect("open");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

/// A ring so small that most watches from the past catch up from the log.
fn tiny_ring() -> WatchOptions {
    WatchOptions {
        ring_events: 8,
        ..WatchOptions::default()
    }
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

fn range_req(start: &str, end: &str, limit: usize, revision: Option<Revision>) -> RangeRequest {
    RangeRequest {
        start: start.into(),
        end: end.into(),
        limit,
        revision,
    }
}

fn prefix(p: &str) -> RangeRequest {
    range_req(p, &prefix_end(p), 0, None)
}

/// Read `n` items from a watch, failing the test after a deadline instead of hanging.
async fn take(w: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => panic!("watch ended with {e} after {} events", out.len()),
            Ok(None) => panic!("watch ended after {} events", out.len()),
            Err(_) => panic!("watch stalled after {} of {n} events", out.len()),
        }
    }
    out
}

/// Nothing more arrives soon.
async fn quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(100), w.next()).await {
        panic!("unexpected watch item {item:?}");
    }
}

fn summary(events: &[Event]) -> Vec<(Revision, String, EventKind)> {
    events
        .iter()
        .map(|e| (e.kv.mod_revision, e.kv.key.clone(), e.kind))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checks

async fn crud(open: Open) {
    let f = open(WatchOptions::default());
    let s = &*f.store;
    assert_eq!(s.current_revision().await.unwrap(), 0);
    assert_eq!(s.get("/a").await.unwrap(), None);

    let a = s.create("/a", b("1")).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    assert_eq!(a.value, b("1"));
    assert!(matches!(
        s.create("/a", b("x")).await,
        Err(Error::AlreadyExists { key }) if key == "/a"
    ));
    assert_eq!(s.get("/a").await.unwrap(), Some(a.clone()));

    let a2 = s.update("/a", b("2"), 1).await.unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision), (1, 2));
    match s.update("/a", b("3"), 1).await {
        Err(Error::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!((key.as_str(), expected), ("/a", 1));
            assert_eq!(current, Some(a2.clone()));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/missing", b("x"), 1).await,
        Err(Error::NotFound { key }) if key == "/missing"
    ));
    assert!(matches!(
        s.delete("/a", Some(1)).await,
        Err(Error::Conflict { current: Some(c), .. }) if c == a2
    ));
    assert!(matches!(
        s.delete("/missing", None).await,
        Err(Error::NotFound { .. })
    ));
    // Failed writes use no revision.
    assert_eq!(s.current_revision().await.unwrap(), 2);

    let gone = s.delete("/a", Some(2)).await.unwrap();
    assert_eq!(
        gone,
        KeyValue {
            key: "/a".into(),
            value: b("2"),
            create_revision: 1,
            mod_revision: 3
        }
    );
    assert_eq!(s.get("/a").await.unwrap(), None);
    assert!(matches!(
        s.update("/a", b("x"), 3).await,
        Err(Error::NotFound { .. })
    ));

    // Re-created keys start a new life.
    let again = s.create("/a", b("new")).await.unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
    let b1 = s.create("/b", b("b")).await.unwrap();
    let gone = s.delete("/b", None).await.unwrap();
    assert_eq!(gone.mod_revision, b1.mod_revision + 1);
    assert_eq!(s.current_revision().await.unwrap(), 6);
    // Empty values are values.
    let empty = s.create("/empty", Bytes::new()).await.unwrap();
    assert_eq!(s.get("/empty").await.unwrap(), Some(empty));
}

async fn range_limit_more_count(open: Open) {
    let f = open(WatchOptions::default());
    let s = &*f.store;
    for i in 0..10 {
        s.create(&format!("/r/k{i:02}"), b("v")).await.unwrap();
    }
    s.create("/q", b("before")).await.unwrap();
    s.create("/r0", b("after")).await.unwrap();

    let all = s.range(prefix("/r/")).await.unwrap();
    assert_eq!(all.kvs.len(), 10);
    assert_eq!((all.count, all.more, all.revision), (10, false, 12));
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys[0], "/r/k00");

    let page = s
        .range(range_req("/r/", &prefix_end("/r/"), 3, None))
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 3);
    assert_eq!((page.count, page.more), (10, true));
    // The next page starts just after the last key, as the apiserver's continue does.
    let next = format!("{}\0", page.kvs[2].key);
    let page2 = s
        .range(range_req(&next, &prefix_end("/r/"), 3, None))
        .await
        .unwrap();
    assert_eq!(page2.kvs[0].key, "/r/k03");
    assert_eq!((page2.count, page2.more), (7, true));

    let exact = s
        .range(range_req("/r/", &prefix_end("/r/"), 10, None))
        .await
        .unwrap();
    assert_eq!((exact.kvs.len(), exact.count, exact.more), (10, 10, false));

    // Empty end: no upper bound.
    let tail = s.range(range_req("/r/", "", 0, None)).await.unwrap();
    assert_eq!(tail.count, 11);
    let everything = s.range(prefix("")).await.unwrap();
    assert_eq!(everything.count, 12);
    // Inverted and empty ranges are empty, not errors.
    let none = s.range(range_req("/z", "/a", 0, None)).await.unwrap();
    assert_eq!((none.kvs.len(), none.count, none.more), (0, 0, false));
    let none = s.range(prefix("/nothing/")).await.unwrap();
    assert_eq!((none.kvs.len(), none.count), (0, 0));
    // Revision 0 means the latest, as in etcd.
    let latest = s.range(range_req("/r/", "", 0, Some(0))).await.unwrap();
    assert_eq!(latest.revision, 12);
}

/// Apply a scripted history, recording the expected state after every revision.
async fn scripted_history(s: &dyn Datastore) -> Vec<BTreeMap<String, KeyValue>> {
    let mut states = vec![BTreeMap::new()];
    let mut live: BTreeMap<String, KeyValue> = BTreeMap::new();
    for round in 0..6 {
        for i in 0..5 {
            let key = format!("/h/{i}");
            let value = b(&format!("{round}-{i}"));
            let kv = match (live.get(&key), (round + i) % 3) {
                (None, _) => s.create(&key, value).await.unwrap(),
                (Some(cur), 0) => {
                    let gone = s.delete(&key, Some(cur.mod_revision)).await.unwrap();
                    live.remove(&key);
                    assert_eq!(gone.mod_revision, states.len() as Revision);
                    states.push(live.clone());
                    continue;
                }
                (Some(cur), _) => s.update(&key, value, cur.mod_revision).await.unwrap(),
            };
            assert_eq!(kv.mod_revision, states.len() as Revision);
            live.insert(key, kv);
            states.push(live.clone());
        }
    }
    states
}

async fn check_state_at(s: &dyn Datastore, rev: Revision, want: &BTreeMap<String, KeyValue>) {
    let got = s
        .range(range_req("/h/", &prefix_end("/h/"), 0, Some(rev)))
        .await
        .unwrap();
    let want_kvs: Vec<KeyValue> = want.values().cloned().collect();
    assert_eq!(got.kvs, want_kvs, "state at revision {rev}");
    assert_eq!(got.count, want.len() as i64);
    assert_eq!(got.revision, rev);
    // Limits apply at old revisions too.
    let page = s
        .range(range_req("/h/", &prefix_end("/h/"), 2, Some(rev)))
        .await
        .unwrap();
    assert_eq!(
        page.kvs,
        want_kvs.iter().take(2).cloned().collect::<Vec<_>>()
    );
    assert_eq!(page.more, want.len() > 2, "more at revision {rev}");
    assert_eq!(page.count, want.len() as i64);
}

async fn range_at_old_revision(open: Open) {
    let f = open(WatchOptions::default());
    let s = &*f.store;
    let states = scripted_history(s).await;
    let current = s.current_revision().await.unwrap();
    assert_eq!(current as usize, states.len() - 1);
    // (Revision 0 means the latest, so history starts at 1.)
    for (rev, want) in states.iter().enumerate().skip(1) {
        check_state_at(s, rev as Revision, want).await;
    }
    assert!(matches!(
        s.range(range_req("/h/", "", 0, Some(current + 1))).await,
        Err(Error::FutureRevision { requested, current: c }) if requested == current + 1 && c == current
    ));
}

async fn compaction(open: Open) {
    let f = open(tiny_ring());
    let s = &*f.store;
    let states = scripted_history(s).await;
    let current = s.current_revision().await.unwrap();
    let all = take(&mut s.watch("/h/", 0).await.unwrap(), current as usize).await;

    let point = 17;
    s.compact(point).await.unwrap();
    assert_eq!(s.compact_revision().await.unwrap(), point);
    assert!(matches!(
        s.range(range_req("/h/", "", 0, Some(point - 1))).await,
        Err(Error::Compacted {
            requested: 16,
            compact_revision: 17
        })
    ));
    // Everything at and after the compaction point reads as before.
    for rev in point..=current {
        check_state_at(s, rev, &states[rev as usize]).await;
    }
    assert!(matches!(
        s.watch("/h/", point - 1).await,
        Err(Error::Compacted {
            requested: 16,
            compact_revision: 17
        })
    ));
    // A watch from the compaction point replays the rest, prev values included.
    let mut w = s.watch("/h/", point).await.unwrap();
    let replay = take(&mut w, (current - point) as usize).await;
    assert_eq!(replay, all[point as usize..]);

    // Compacting again at or below the point is a no-op; the future is refused.
    s.compact(3).await.unwrap();
    assert_eq!(s.compact_revision().await.unwrap(), point);
    assert!(matches!(
        s.compact(current + 1).await,
        Err(Error::FutureRevision { .. })
    ));
    // Compacting everything keeps the live keys, and revisions keep counting.
    let live_before = s.range(prefix("/h/")).await.unwrap();
    s.compact(current).await.unwrap();
    assert_eq!(s.range(prefix("/h/")).await.unwrap().kvs, live_before.kvs);
    check_state_at(s, current, &states[current as usize]).await;
    let next = s.create("/h/new", b("n")).await.unwrap();
    assert_eq!(next.mod_revision, current + 1);
    check_state_at(s, current, &states[current as usize]).await;
}

async fn watch_prefix_from_old_and_current(open: Open) {
    for watch in [WatchOptions::default(), tiny_ring()] {
        let f = open(watch);
        let s = &*f.store;
        s.create("/w/a", b("a1")).await.unwrap(); // 1
        s.create("/x/a", b("x")).await.unwrap(); // 2
        s.update("/w/a", b("a2"), 1).await.unwrap(); // 3
        s.create("/w/b", b("b1")).await.unwrap(); // 4
        s.create("/w0", b("not under /w/")).await.unwrap(); // 5
        for i in 0..20 {
            s.create(&format!("/x/{i}"), b("filler")).await.unwrap(); // 6..=25
        }

        let mut from_start = s.watch("/w/", 0).await.unwrap();
        let mut from_now = s.watch("/w/", 25).await.unwrap();
        let mut all = s.watch("", 24).await.unwrap();
        let old = take(&mut from_start, 3).await;
        assert_eq!(
            summary(&old),
            vec![
                (1, "/w/a".into(), EventKind::Put),
                (3, "/w/a".into(), EventKind::Put),
                (4, "/w/b".into(), EventKind::Put),
            ]
        );
        assert_eq!(old[0].prev_kv, None);
        assert_eq!(
            old[1].prev_kv.as_ref().map(|p| p.value.clone()),
            Some(b("a1"))
        );
        assert_eq!(old[1].prev_kv.as_ref().map(|p| p.mod_revision), Some(1));
        assert_eq!(old[1].kv.create_revision, 1);

        s.delete("/w/a", None).await.unwrap(); // 26
        s.create("/x/late", b("x")).await.unwrap(); // 27
        s.update("/w/b", b("b2"), 4).await.unwrap(); // 28
        for w in [&mut from_start, &mut from_now] {
            let live = take(w, 2).await;
            assert_eq!(
                summary(&live),
                vec![
                    (26, "/w/a".into(), EventKind::Delete),
                    (28, "/w/b".into(), EventKind::Put),
                ]
            );
            quiet(w).await;
        }
        let everything = take(&mut all, 4).await;
        assert_eq!(
            everything
                .iter()
                .map(|e| e.kv.mod_revision)
                .collect::<Vec<_>>(),
            vec![25, 26, 27, 28]
        );
        // A watch from the future waits for it.
        let mut future = s.watch("/w/", 29).await.unwrap();
        s.create("/w/c", b("c")).await.unwrap(); // 29
        s.create("/w/d", b("d")).await.unwrap(); // 30
        assert_eq!(take(&mut future, 1).await[0].kv.mod_revision, 30);
    }
}

async fn delete_event_carries_delete_revision(open: Open) {
    for watch in [WatchOptions::default(), tiny_ring()] {
        let f = open(watch);
        let s = &*f.store;
        let mut live = s.watch("/d/", 0).await.unwrap();
        let c = s.create("/d/k", b("v1")).await.unwrap();
        let u = s.update("/d/k", b("v2"), c.mod_revision).await.unwrap();
        let gone = s.delete("/d/k", Some(u.mod_revision)).await.unwrap();
        for _ in 0..10 {
            s.create(&format!("/other/{}", gone.mod_revision), b("x"))
                .await
                .unwrap();
            s.delete(&format!("/other/{}", gone.mod_revision), None)
                .await
                .unwrap();
        }
        // Live, and replayed from history (the tiny ring has forgotten it by now).
        let replayed = take(&mut s.watch("/d/", 0).await.unwrap(), 3).await;
        let live = take(&mut live, 3).await;
        for events in [live, replayed] {
            let del = &events[2];
            assert_eq!(del.kind, EventKind::Delete);
            assert_eq!(del.kv, gone);
            assert_eq!(del.kv.mod_revision, 3);
            assert_eq!(del.kv.value, b("v2"));
            assert_eq!(del.kv.create_revision, 1);
            assert_eq!(del.prev_kv, Some(u.clone()));
        }
    }
}

/// Watchers started before, during and after concurrent writes, from old and recent revisions,
/// see exactly the events under their prefix, in order: no gap, no duplicate, no reordering.
async fn watch_concurrent_writers_no_gaps(open: Open) {
    for watch in [WatchOptions::default(), tiny_ring()] {
        let f = open(watch);
        let s = Arc::clone(&f.store);
        for i in 0..20 {
            s.create(&format!("/c/{}/seed{i}", i % 2), b("seed"))
                .await
                .unwrap();
        }
        let mut watchers = JoinSet::new();
        let spawn_watcher = |watchers: &mut JoinSet<_>, prefix: String, after: Revision| {
            let s = Arc::clone(&s);
            watchers.spawn(async move {
                let mut w = s.watch(&prefix, after).await.unwrap();
                let mut seen = Vec::new();
                // Until the end marker, written last.
                loop {
                    let e = take(&mut w, 1).await.remove(0);
                    let end = e.kv.key.ends_with("/end");
                    seen.push(e);
                    if end {
                        return (prefix, after, seen);
                    }
                }
            });
        };
        spawn_watcher(&mut watchers, "/c/0/".into(), 0);
        spawn_watcher(&mut watchers, "/c/1/".into(), 5);
        spawn_watcher(&mut watchers, "/c/".into(), 20);

        let mut writers = JoinSet::new();
        for t in 0..8 {
            let s = Arc::clone(&s);
            writers.spawn(async move {
                let mut done = Vec::new();
                for i in 0..40 {
                    let key = format!("/c/{}/t{t}-{i}", (t + i) % 2);
                    let created = s.create(&key, b("v")).await.unwrap();
                    let kv = s.update(&key, b("v2"), created.mod_revision).await.unwrap();
                    done.push((created.mod_revision, key.clone(), EventKind::Put));
                    done.push((kv.mod_revision, key.clone(), EventKind::Put));
                    if i % 3 == 0 {
                        let gone = s.delete(&key, None).await.unwrap();
                        done.push((gone.mod_revision, key, EventKind::Delete));
                    }
                    tokio::task::yield_now().await;
                }
                done
            });
        }
        // Watchers joining mid-stream, from the past and from now.
        for round in 0..4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = s.current_revision().await.unwrap();
            spawn_watcher(&mut watchers, "/c/".into(), now / 2);
            spawn_watcher(&mut watchers, format!("/c/{}/", round % 2), now);
        }
        let mut written = Vec::new();
        while let Some(done) = writers.join_next().await {
            written.extend(done.unwrap());
        }
        for p in ["/c/0/end", "/c/1/end"] {
            let kv = s.create(p, b("end")).await.unwrap();
            written.push((kv.mod_revision, p.to_owned(), EventKind::Put));
        }
        // The seeds too.
        for i in 0..20i64 {
            written.push((i + 1, format!("/c/{}/seed{i}", i % 2), EventKind::Put));
        }
        written.sort_by_key(|(rev, _, _)| *rev);

        let mut checked = 0;
        while let Some(result) = watchers.join_next().await {
            let (prefix, after, seen) = result.unwrap();
            let mut want: Vec<_> = written
                .iter()
                .filter(|(rev, key, _)| *rev > after && key.starts_with(&prefix))
                .cloned()
                .collect();
            // A watcher of "/c/" stops at the first end marker.
            let first_end = want.iter().position(|(_, k, _)| k.ends_with("/end"));
            if let Some(end) = first_end {
                want.truncate(end + 1);
            }
            assert_eq!(summary(&seen), want, "watch of {prefix} after {after}");
            checked += 1;
        }
        assert_eq!(checked, 11);
    }
}

async fn watcher_too_slow(open: Open) {
    let f = open(WatchOptions {
        watcher_buffer: 8,
        ..WatchOptions::default()
    });
    let s = &*f.store;
    let mut slow = s.watch("/s/", 0).await.unwrap();
    let mut other = s.watch("/other/", 0).await.unwrap();
    // The writer goes on while the watcher doesn't read.
    for i in 0..50 {
        s.create(&format!("/s/{i:02}"), b("v")).await.unwrap();
    }
    s.create("/other/x", b("v")).await.unwrap();
    let mut got = Vec::new();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
            Ok(Some(Ok(e))) => got.push(e.kv.mod_revision),
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the stream ended without saying why"),
            Err(_) => panic!("the slow watcher was never stopped"),
        }
    };
    assert!(matches!(end, Error::WatcherTooSlow), "got {end}");
    // What it did get is a gap-free start, so it can resume from its last revision.
    assert!(!got.is_empty() && got.len() < 50);
    assert_eq!(got, (1..=got.len() as Revision).collect::<Vec<_>>());
    assert!(slow.next().await.is_none());
    // Resuming catches up on the rest.
    let last = *got.last().unwrap();
    let mut resumed = s.watch("/s/", last).await.unwrap();
    let rest = take(&mut resumed, 50 - got.len()).await;
    assert_eq!(rest.last().unwrap().kv.mod_revision, 50);
    // Other watchers are unaffected.
    assert_eq!(take(&mut other, 1).await[0].kv.key, "/other/x");
}

async fn concurrent_writers_distinct_revisions(open: Open) {
    let f = open(WatchOptions::default());
    let s = &f.store;
    let mut tasks = JoinSet::new();
    for t in 0..32 {
        let s = Arc::clone(s);
        tasks.spawn(async move {
            let mut revs = Vec::new();
            for i in 0..20 {
                revs.push(
                    s.create(&format!("/p/{t}/{i}"), b("v"))
                        .await
                        .unwrap()
                        .mod_revision,
                );
            }
            revs
        });
    }
    let mut all = Vec::new();
    while let Some(revs) = tasks.join_next().await {
        let revs = revs.unwrap();
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "per-caller order");
        all.extend(revs);
    }
    let distinct: HashSet<_> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 640);
    assert_eq!(all.iter().max().copied(), Some(640));
    assert_eq!(s.current_revision().await.unwrap(), 640);
    assert_eq!(s.range(prefix("/p/")).await.unwrap().count, 640);

    // Compare-and-swap races: exactly one of many updates from the same revision wins.
    let base = s.create("/cas", b("0")).await.unwrap();
    let mut racers = JoinSet::new();
    for i in 0..16 {
        let s = Arc::clone(s);
        racers.spawn(async move { s.update("/cas", b(&i.to_string()), base.mod_revision).await });
    }
    let mut wins = 0;
    while let Some(result) = racers.join_next().await {
        match result.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Conflict {
                current: Some(_), ..
            }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
}

/// Not a timed test: prints the rate with `--nocapture`, and checks the writes all landed.
async fn throughput(open: Open) {
    let f = open(WatchOptions::default());
    let s = &f.store;
    let value = Bytes::from(vec![b'x'; 512]);
    let n = 5_000;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let s = Arc::clone(s);
        let value = value.clone();
        tasks.spawn(async move { s.create(&format!("/t/{i:05}"), value).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    let elapsed = start.elapsed();

    // 32 callers, each writing in a loop, like an apiserver under load.
    let start32 = Instant::now();
    let mut callers = JoinSet::new();
    for c in 0..32 {
        let s = Arc::clone(s);
        let value = value.clone();
        callers.spawn(async move {
            for i in 0..100 {
                s.create(&format!("/t32/{c}/{i}"), value.clone())
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(result) = callers.join_next().await {
        result.unwrap();
    }
    let elapsed32 = start32.elapsed();

    let start_get = Instant::now();
    for i in 0..2_000 {
        s.get(&format!("/t/{i:05}")).await.unwrap().unwrap();
    }
    let elapsed_get = start_get.elapsed();
    let start_list = Instant::now();
    for _ in 0..20 {
        let list = s
            .range(range_req("/t/", &prefix_end("/t/"), 1_000, None))
            .await
            .unwrap();
        assert_eq!((list.kvs.len(), list.count), (1_000, 5_000));
    }
    let elapsed_list = start_list.elapsed();
    println!(
        "{n} concurrent creates in {elapsed:?}: {:.0}/s; 32 callers x 100 creates: {:.0}/s; \
         sequential GET: {:.0}/s; LIST of 1,000: {:.1} ms each",
        n as f64 / elapsed.as_secs_f64(),
        3_200.0 / elapsed32.as_secs_f64(),
        2_000.0 / elapsed_get.as_secs_f64(),
        elapsed_list.as_secs_f64() * 1_000.0 / 20.0,
    );
    assert_eq!(s.current_revision().await.unwrap(), 8_200);
}

macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::memory).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::sqlite).await
                }
            )*
        }
    };
}

suite!(
    crud,
    range_limit_more_count,
    range_at_old_revision,
    compaction,
    watch_prefix_from_old_and_current,
    delete_event_carries_delete_revision,
    watch_concurrent_writers_no_gaps,
    watcher_too_slow,
    concurrent_writers_distinct_revisions,
    throughput,
);

// ---------------------------------------------------------------------------------------------
// Backend-specific

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restart_keeps_data_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/state.db");
    let opts = || SqliteOptions {
        watch: tiny_ring(),
        ..SqliteOptions::default()
    };
    let (events, deleted_rev) = {
        let s = SqliteStore::open_with(&path, opts()).unwrap();
        let mut w = s.watch("/", 0).await.unwrap();
        s.create("/k/a", b("a")).await.unwrap();
        let kb = s.create("/k/b", b("b")).await.unwrap();
        s.update("/k/b", b("b2"), kb.mod_revision).await.unwrap();
        let gone = s.create("/k/gone", b("x")).await.unwrap();
        let gone = s.delete("/k/gone", Some(gone.mod_revision)).await.unwrap();
        let events = take(&mut w, 5).await;
        s.close().await;
        // Closing finishes the watch and refuses writes.
        assert!(matches!(w.next().await, Some(Err(Error::Closed))));
        assert!(matches!(
            s.create("/k/late", b("x")).await,
            Err(Error::Closed)
        ));
        // Reads of what is committed still work.
        assert!(s.get("/k/a").await.unwrap().is_some());
        (events, gone.mod_revision)
    };

    let s = SqliteStore::open_with(&path, opts()).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), 5);
    assert_eq!(s.get("/k/b").await.unwrap().unwrap().value, b("b2"));
    assert_eq!(s.get("/k/gone").await.unwrap(), None);
    // History survives: a watch from before the restart replays it, from the log.
    let replay = take(&mut s.watch("/", 0).await.unwrap(), 5).await;
    assert_eq!(replay, events);
    // Compacting away the newest row (the tombstone) must not make revisions repeat.
    s.compact(deleted_rev).await.unwrap();
    drop(s);

    let s = SqliteStore::open_with(&path, opts()).unwrap();
    assert_eq!(s.compact_revision().await.unwrap(), deleted_rev);
    assert_eq!(s.current_revision().await.unwrap(), 5);
    let kv = s.create("/k/c", b("c")).await.unwrap();
    assert_eq!(kv.mod_revision, 6);
    assert!(matches!(
        s.watch("/", deleted_rev - 1).await,
        Err(Error::Compacted { .. })
    ));
    let list = s.range(prefix("/k/")).await.unwrap();
    assert_eq!(list.count, 3);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dropping_the_store_finishes_queued_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s = Arc::new(SqliteStore::open(&path).unwrap());
    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let s = Arc::clone(&s);
        tasks.spawn(async move { s.create(&format!("/q/{i}"), b("v")).await });
    }
    let mut acked = 0;
    while let Some(result) = tasks.join_next().await {
        if result.unwrap().is_ok() {
            acked += 1;
        }
    }
    assert_eq!(acked, 200);
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.range(prefix("/q/")).await.unwrap().count, 200);
}

#[tokio::test(start_paused = true)]
async fn compactor_keeps_an_interval_and_a_minimum_of_history() {
    let store = Arc::new(MemoryStore::new());
    for i in 0..100 {
        store.create(&format!("/k/{i}"), b("v")).await.unwrap();
    }
    let every = Duration::from_secs(300);
    let task = crate::spawn_compactor(store.clone(), every, 10);
    // The first run only notes the revision (100).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.compact_revision().await.unwrap(), 0);
    for i in 100..150 {
        store.create(&format!("/k/{i}"), b("v")).await.unwrap();
    }
    // The next compacts to the revision seen at the previous run: an interval of history stays.
    tokio::time::sleep(every).await;
    assert_eq!(store.compact_revision().await.unwrap(), 100);
    // Then to min(150, 150 - 10): at least `keep_revisions` stay.
    tokio::time::sleep(every).await;
    assert_eq!(store.compact_revision().await.unwrap(), 140);
    tokio::time::sleep(every).await;
    assert_eq!(store.compact_revision().await.unwrap(), 140);
    task.abort();
}

#[tokio::test]
async fn dropped_watchers_are_removed() {
    let store = MemoryStore::new();
    let w = store.watch("/x/", 0).await.unwrap();
    assert_eq!(store.hub.watcher_count(), 1);
    drop(w);
    store.create("/x/a", b("v")).await.unwrap();
    assert_eq!(store.hub.watcher_count(), 0);
}

/// Where the kill test's child writes; set only for the child process.
const KILL_CHILD_ENV: &str = "DISTRO_STORE_KILL_TEST_DB";

/// The child half of `sqlite_kill_loses_no_acknowledged_write`: writes until killed, printing
/// each acknowledged key. Does nothing when run on its own.
#[test]
fn sqlite_kill_child() {
    let Some(path) = std::env::var_os(KILL_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let s = Arc::new(SqliteStore::open(std::path::Path::new(&path)).unwrap());
        let mut tasks = JoinSet::new();
        for t in 0..16 {
            let s = Arc::clone(&s);
            tasks.spawn(async move {
                for i in 0.. {
                    let key = format!("/kill/{t}/{i}");
                    s.create(&key, b("v")).await.unwrap();
                    // One write(2) per line, so the parent never reads half a key.
                    println!("acked {key}");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

#[test]
fn sqlite_kill_loses_no_acknowledged_write() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "conformance::sqlite_kill_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(key) = line.strip_prefix("acked ") {
            acked.push(key.to_owned());
            if acked.len() == 2_000 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no clean shutdown.
    child.wait().unwrap();
    assert_eq!(acked.len(), 2_000, "the child stopped early");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = SqliteStore::open(&path).unwrap();
        for key in &acked {
            assert!(
                s.get(key).await.unwrap().is_some(),
                "acknowledged {key} was lost"
            );
        }
        let count = s.range(prefix("/kill/")).await.unwrap().count;
        assert!(count >= 2_000);
        // Every committed write has its own revision, and revisions continue.
        assert_eq!(s.current_revision().await.unwrap(), count);
        let next = s.create("/kill/after", b("v")).await.unwrap();
        assert_eq!(next.mod_revision, count + 1);
    });
}

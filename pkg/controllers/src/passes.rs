//! When a whole-cluster pass is due, for the controllers that are not per-object reconcilers
//! ([`crate::nodeipam`], [`crate::podgc`]): a pass every period, as upstream's resync, and
//! soon after any change, but at most once per minimum gap so a burst of changes costs one
//! pass, not one per change.
//!
//! Passes read the shared caches, which already hold every change delivered so far, so changes
//! queued while a pass is pending are dropped: the pass covers them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use tokio::time::{Instant, Interval};

/// The schedule of one controller's passes; see the module docs.
pub struct Passes<S> {
    changes: S,
    tick: Interval,
    min_gap: Duration,
    last: Option<Instant>,
    ended: bool,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
}

impl<S: Stream + Unpin> Passes<S> {
    /// Passes every `period` (the first at once) and after items of `changes`, at least
    /// `min_gap` apart when change-triggered, until `shutdown` resolves.
    pub fn new(
        changes: S,
        period: Duration,
        min_gap: Duration,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ) -> Self {
        Passes {
            changes,
            tick: tokio::time::interval(period),
            min_gap,
            last: None,
            ended: false,
            shutdown: Box::pin(shutdown),
        }
    }

    /// Waits until the next pass is due. `false` once `shutdown` resolved or `changes` ended:
    /// the controller then stops.
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled wait loses at most a change, which the next periodic pass
    /// covers.
    pub async fn due(&mut self) -> bool {
        if self.ended {
            return false;
        }
        tokio::select! {
            _ = &mut self.shutdown => return false,
            _ = self.tick.tick() => {}
            change = self.changes.next() => {
                if change.is_none() {
                    return false;
                }
                let wait = self
                    .last
                    .map_or(Duration::ZERO, |l| self.min_gap.saturating_sub(l.elapsed()));
                if !wait.is_zero() {
                    tokio::select! {
                        _ = &mut self.shutdown => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                // What came meanwhile is in the caches already: one pass covers it all.
                while let Some(next) = self.changes.next().now_or_never() {
                    if next.is_none() {
                        self.ended = true;
                        break;
                    }
                }
            }
        }
        self.last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    const PERIOD: Duration = Duration::from_secs(20);
    const GAP: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn first_pass_at_once_then_each_period() {
        let (_tx, rx) = mpsc::channel::<()>(8);
        let mut p = Passes::new(rx, PERIOD, GAP, std::future::pending());
        let start = Instant::now();
        assert!(p.due().await);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(p.due().await);
        assert_eq!(start.elapsed(), PERIOD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_one_pass_after_the_gap() {
        let (mut tx, rx) = mpsc::channel::<()>(8);
        let mut p = Passes::new(rx, PERIOD, GAP, std::future::pending());
        assert!(p.due().await);
        let start = Instant::now();
        for _ in 0..5 {
            tx.try_send(()).unwrap();
        }
        assert!(p.due().await);
        assert_eq!(
            start.elapsed(),
            GAP,
            "waits out the gap since the last pass"
        );
        // The burst was drained: the next pass is the periodic one.
        assert!(p.due().await);
        assert_eq!(start.elapsed(), PERIOD);
        // A change long after the last pass is served at once.
        tokio::time::advance(Duration::from_secs(5)).await;
        let at = Instant::now();
        tx.try_send(()).unwrap();
        assert!(p.due().await);
        assert_eq!(at.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_or_the_end_of_changes_stops() {
        let (mut tx, rx) = mpsc::channel::<()>(8);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut p = Passes::new(rx, PERIOD, GAP, async {
            let _ = stop_rx.await;
        });
        assert!(p.due().await);
        tx.try_send(()).unwrap();
        // Shutdown interrupts the wait for the gap.
        stop_tx.send(()).unwrap();
        assert!(!p.due().await);

        let (tx, rx) = mpsc::channel::<()>(8);
        let mut p = Passes::new(rx, PERIOD, GAP, std::future::pending());
        assert!(p.due().await);
        drop(tx);
        assert!(!p.due().await);
    }
}

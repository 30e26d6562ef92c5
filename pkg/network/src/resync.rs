//! When the service proxy and the policy enforcer rewrite their nftables rules: soon after a
//! change, once per burst of changes, periodically as a safety net, and with a doubling delay
//! after a failed apply. Both loops render whole tables from their informers' stores, so a
//! wake-up only has to say *that* something changed, never *what*.

use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// A burst of changes (a Deployment scaling, a namespace deleted) is applied once: the sync
/// waits until no change came for this long...
const QUIET: Duration = Duration::from_millis(30);
/// ...but never longer than this after the first change, so a change takes effect well
/// within a second even under a constant stream of others.
const MAX_DELAY: Duration = Duration::from_millis(200);
/// Re-applied this often even without a change: a safety net against a table changed or
/// deleted by hand, as upstream kube-proxy's periodic sync.
const RESYNC: Duration = Duration::from_secs(60);
/// Retry delays after a failed apply (doubling, capped).
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why [`Schedule::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Something changed (and the burst it started is over): render, and apply if the rules
    /// differ from what was applied.
    Changed,
    /// The first sync, a periodic resync or a retry: render and apply whatever the result.
    Due,
    /// Shutdown was asked for.
    Stop,
    /// The change stream ended (a watch stopped).
    Closed,
}

/// One sync loop's timing; see the module docs.
pub struct Schedule<S> {
    changes: S,
    next_sync: Instant,
    retry: Duration,
}

impl<S: Stream + Unpin> Schedule<S> {
    /// A schedule whose first sync is due at once.
    pub fn new(changes: S) -> Self {
        Schedule {
            changes,
            next_sync: Instant::now(),
            retry: RETRY_MIN,
        }
    }

    /// Waits for the first change (then for the burst it starts to end), a due sync, or
    /// shutdown.
    ///
    /// # Cancel safety
    /// Cancel-safe: the stream buffers what is not taken, and a lost wake-up only means the
    /// stores are read again.
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> Wake {
        let first = tokio::select! {
            c = self.changes.next() => match c {
                Some(_) => Instant::now(),
                None => return Wake::Closed,
            },
            _ = tokio::time::sleep_until(self.next_sync) => return Wake::Due,
            _ = shutdown.wait_for(|s| *s) => return Wake::Stop,
        };
        // Coalesce a burst: until quiet for QUIET, at most MAX_DELAY after the first.
        let cap = first + MAX_DELAY;
        loop {
            let until = (Instant::now() + QUIET).min(cap);
            tokio::select! {
                c = self.changes.next() => if c.is_none() { return Wake::Closed },
                _ = tokio::time::sleep_until(until) => return Wake::Changed,
            }
        }
    }

    /// The rules are in the kernel: the next unprompted sync is the periodic one.
    pub fn applied(&mut self) {
        self.retry = RETRY_MIN;
        self.next_sync = Instant::now() + RESYNC;
    }

    /// Applying failed: retry after the returned delay, which doubles up to a cap.
    pub fn failed(&mut self) -> Duration {
        let delay = self.retry;
        self.next_sync = Instant::now() + delay;
        self.retry = (self.retry * 2).min(RETRY_MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    fn schedule() -> (
        mpsc::UnboundedSender<()>,
        Schedule<mpsc::UnboundedReceiver<()>>,
        watch::Sender<bool>,
        watch::Receiver<bool>,
    ) {
        let (tx, rx) = mpsc::unbounded();
        let (stop_tx, stop_rx) = watch::channel(false);
        (tx, Schedule::new(rx), stop_tx, stop_rx)
    }

    #[tokio::test(start_paused = true)]
    async fn first_sync_at_once_then_periodic() {
        let (_tx, mut s, _stop, mut stop_rx) = schedule();
        let start = Instant::now();
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Due);
        assert_eq!(start.elapsed(), Duration::ZERO);
        s.applied();
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Due);
        assert_eq!(start.elapsed(), RESYNC);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_sync_after_it_quiets_and_a_stream_is_capped() {
        let (tx, mut s, _stop, mut stop_rx) = schedule();
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Due);
        s.applied();
        let start = Instant::now();
        for _ in 0..5 {
            tx.unbounded_send(()).unwrap();
        }
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Changed);
        assert_eq!(start.elapsed(), QUIET, "one sync once the burst is quiet");

        // A change every 10 ms never quiets: the sync comes MAX_DELAY after the first.
        let feeder = tokio::spawn(async move {
            loop {
                if tx.unbounded_send(()).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let start = Instant::now();
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Changed);
        assert_eq!(start.elapsed(), MAX_DELAY);
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_doubling_to_a_cap_and_success_resets() {
        let (_tx, mut s, _stop, mut stop_rx) = schedule();
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Due);
        let delays: Vec<Duration> = (0..8).map(|_| s.failed()).collect();
        assert_eq!(delays[0], RETRY_MIN);
        assert_eq!(delays[1], RETRY_MIN * 2);
        assert_eq!(*delays.last().unwrap(), RETRY_MAX);
        let start = Instant::now();
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Due);
        assert_eq!(start.elapsed(), RETRY_MAX);
        s.applied();
        assert_eq!(s.failed(), RETRY_MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_and_a_closed_stream_end_the_wait() {
        let (tx, mut s, stop, mut stop_rx) = schedule();
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Due);
        s.applied();
        drop(tx);
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Closed);
        let (_tx, mut s, _, _) = schedule();
        s.applied();
        stop.send(true).unwrap();
        assert_eq!(s.wait(&mut stop_rx).await, Wake::Stop);
    }
}

//! The daemon's clock: the one place that reads the wall clock (see
//! clippy.toml). [`start`](super::start) takes a [`Clock`] as a value and
//! everything the daemon runs reads `Shared::clock`: [`SystemClock`] in
//! production, a [`ManualClock`] in tests and benches. Waiting is
//! `tokio::time`'s, which tests can pause; a clock that is moved by hand
//! also says when it moved ([`Clock::moved`]), so a driver waiting for a
//! window's end by that clock wakes when the clock gets there, not after
//! the same span of real time (the scale bench drives hours of 30 s
//! windows in minutes this way).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::time::Timestamp;

/// Where the daemon reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;

    /// For a clock that moves other than with real time: a receiver that
    /// changes each time it is moved. `None` (the wall clock): waiting in
    /// real time is waiting by this clock.
    fn moved(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// Resolve when `moved` (from [`Clock::moved`]) says the clock moved;
/// never, for a clock that moves with real time (`None`).
pub async fn clock_moved(moved: &mut Option<watch::Receiver<u64>>) {
    match moved {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The clock is gone: nothing will move it again.
                *moved = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the daemon's clock: the one allowed reader
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that stands still until it is set or advanced.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicU64,
    /// Told the new time each time the clock is moved.
    moved: watch::Sender<u64>,
}

impl ManualClock {
    pub fn new(at: Timestamp) -> ManualClock {
        ManualClock {
            ms: AtomicU64::new(at.as_millis()),
            moved: watch::Sender::new(at.as_millis()),
        }
    }

    pub fn set(&self, at: Timestamp) {
        self.ms.store(at.as_millis(), Ordering::SeqCst);
        self.moved.send_replace(at.as_millis());
    }

    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let before = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ms| {
                Some(ms.saturating_add(by))
            })
            .unwrap_or_default();
        self.moved.send_replace(before.saturating_add(by));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.ms.load(Ordering::SeqCst))
    }

    fn moved(&self) -> Option<watch::Receiver<u64>> {
        Some(self.moved.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_millis(1_000));
        assert_eq!(c.now(), Timestamp::from_millis(1_000));
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now(), Timestamp::from_millis(1_250));
        c.set(Timestamp::from_millis(7));
        assert_eq!(c.now(), Timestamp::from_millis(7));
        c.advance(Duration::MAX);
        assert_eq!(c.now(), Timestamp::from_millis(u64::MAX));
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_its_waiters_when_moved() {
        let c = ManualClock::new(Timestamp::from_millis(1_000));
        let mut moved = c.moved();
        let waiter = async {
            clock_moved(&mut moved).await;
            c.now()
        };
        let mover = async {
            tokio::task::yield_now().await;
            c.advance(Duration::from_secs(30));
        };
        let (seen, ()) = tokio::join!(waiter, mover);
        assert_eq!(seen, Timestamp::from_millis(31_000));
        // The wall clock never says it moved: waiting on it is real time.
        let mut none = SystemClock.moved();
        assert!(none.is_none());
        let waited = tokio::time::timeout(Duration::from_millis(20), clock_moved(&mut none)).await;
        assert!(waited.is_err());
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now() > Timestamp::from_millis(1_577_836_800_000));
    }
}

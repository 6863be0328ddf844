//! Sliding windows over interval snapshots, and cumulative totals since the
//! current step began. Objective triggers read these; the sequential tests
//! keep their own running state and do not need them.
//!
//! Memory bound: at most `capacity` snapshots are kept (plus one running
//! total). A snapshot costs its counters plus, per latency signal and arm,
//! one histogram (about 10 KiB for latencies up to 10 s). With a 30 s
//! interval and a 1 h longest window, capacity is 121 and the bound is about
//! 121 × 2 × 10 KiB ≈ 2.4 MiB per latency signal per rollout. Size the
//! capacity with [`Windows::for_longest_window`].

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StatsError;
use super::snapshot::IntervalSnapshot;
use crate::time::Timestamp;

/// The retained intervals and the step's running totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    capacity: usize,
    intervals: VecDeque<IntervalSnapshot>,
    step: IntervalSnapshot,
    step_started: bool,
}

impl Windows {
    /// Keeps the last `capacity` intervals (at least 1).
    pub fn new(capacity: usize) -> Self {
        Windows {
            capacity: capacity.max(1),
            intervals: VecDeque::new(),
            step: IntervalSnapshot::default(),
            step_started: false,
        }
    }

    /// Enough capacity for windows up to `longest` at `interval`.
    pub fn for_longest_window(longest: Duration, interval: Duration) -> Self {
        let per = interval.as_millis().max(1);
        let n = longest.as_millis().div_ceil(per) + 1;
        Self::new(usize::try_from(n).unwrap_or(usize::MAX).min(1 << 20))
    }

    /// Starts a new step at `now`: cumulative totals restart from zero.
    pub fn start_step(&mut self, now: Timestamp) {
        self.step = IntervalSnapshot::new(now, now);
        self.step_started = true;
    }

    /// Appends a closed interval (intervals arrive in time order).
    pub fn push(&mut self, snap: IntervalSnapshot) -> Result<(), StatsError> {
        if !self.step_started {
            self.start_step(snap.start);
        }
        self.step.baseline.merge(&snap.baseline)?;
        self.step.canary.merge(&snap.canary)?;
        self.step.end = self.step.end.max(snap.end);
        if self.intervals.len() == self.capacity {
            self.intervals.pop_front();
        }
        self.intervals.push_back(snap);
        Ok(())
    }

    /// Number of retained intervals.
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Totals since the current step began.
    pub fn since_step(&self) -> &IntervalSnapshot {
        &self.step
    }

    /// Retained intervals, oldest first.
    pub fn intervals(&self) -> impl DoubleEndedIterator<Item = &IntervalSnapshot> {
        self.intervals.iter()
    }

    /// The retained intervals that lie inside `[now − length, now]`, oldest
    /// first. Reading counters from these is much cheaper than `sum_over`,
    /// which also merges every latency histogram.
    pub fn covering(
        &self,
        now: Timestamp,
        length: Duration,
    ) -> impl DoubleEndedIterator<Item = &IntervalSnapshot> {
        let from = now - length;
        // Intervals arrive in time order: the ones starting at or after
        // `from` are a suffix, found from the newest end.
        let first = self.intervals.len()
            - self
                .intervals
                .iter()
                .rev()
                .take_while(|s| s.start >= from)
                .count();
        self.intervals
            .range(first..)
            .filter(move |s| s.start >= from && s.end <= now)
    }

    /// Sum of the retained intervals that lie inside `[now − length, now]`;
    /// `start`/`end` of the result are the span actually covered.
    pub fn sum_over(
        &self,
        now: Timestamp,
        length: Duration,
    ) -> Result<IntervalSnapshot, StatsError> {
        let from = now - length;
        let mut out = IntervalSnapshot::new(now, from);
        for s in self.covering(now, length) {
            out.baseline.merge(&s.baseline)?;
            out.canary.merge(&s.canary)?;
            out.start = out.start.min(s.start);
            out.end = out.end.max(s.end);
        }
        if out.start > out.end {
            out.start = out.end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(i: u64, req: u64) -> IntervalSnapshot {
        let mut s = IntervalSnapshot::new(
            Timestamp::from_millis(i * 1000),
            Timestamp::from_millis((i + 1) * 1000),
        );
        s.canary.add("requests", req);
        s.canary.latency_mut("latency_ms").record_ms(10.0);
        s
    }

    #[test]
    fn windows_are_bounded_and_sum_what_they_cover() {
        let mut w = Windows::for_longest_window(Duration::from_secs(5), Duration::from_secs(1));
        for i in 0..20 {
            w.push(snap(i, i)).unwrap();
        }
        assert_eq!(w.intervals().count(), 6);
        let s = w
            .sum_over(Timestamp::from_millis(20_000), Duration::from_secs(3))
            .unwrap();
        assert_eq!(s.canary.counter("requests"), 17 + 18 + 19);
        assert_eq!(s.start, Timestamp::from_millis(17_000));
        assert_eq!(
            w.since_step().canary.counter("requests"),
            (0..20).sum::<u64>()
        );
        w.start_step(Timestamp::from_millis(20_000));
        w.push(snap(20, 5)).unwrap();
        assert_eq!(w.since_step().canary.counter("requests"), 5);
        assert_eq!(w.since_step().canary.latency["latency_ms"].total(), 1);
    }
}

//! Sliding windows over interval snapshots. Objective triggers read these,
//! one interval at a time; the sequential tests keep their own running state
//! and do not need them. Nothing keeps running totals here: no reader needed
//! them, and merging every interval's histograms into one cost more than the
//! rest of a push. (It also meant that an interval whose histogram layout
//! differed from the step's was left out; every interval is kept now.)
//!
//! Memory bound: at most `capacity` snapshots are kept (the monitor may hold
//! one more, the last one pushed out, for reuse). A snapshot costs its
//! counters plus, per latency signal and arm, one histogram (about 10 KiB
//! for latencies up to 10 s). With a 30 s interval and a 1 h longest window,
//! capacity is 121 and the bound is about 121 × 2 × 10 KiB ≈ 2.4 MiB per
//! latency signal per rollout. Size the capacity with
//! [`Windows::for_longest_window`].

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StatsError;
use super::snapshot::IntervalSnapshot;
use crate::time::Timestamp;

/// The retained intervals. (Checkpoints from before running totals were
/// dropped carry `step` fields; serde ignores them. An older daemon cannot
/// read a newer checkpoint.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    capacity: usize,
    intervals: VecDeque<IntervalSnapshot>,
}

impl Windows {
    /// Keeps the last `capacity` intervals (at least 1).
    pub fn new(capacity: usize) -> Self {
        Windows {
            capacity: capacity.max(1),
            intervals: VecDeque::new(),
        }
    }

    /// Enough capacity for windows up to `longest` at `interval`.
    pub fn for_longest_window(longest: Duration, interval: Duration) -> Self {
        let per = interval.as_millis().max(1);
        let n = longest.as_millis().div_ceil(per) + 1;
        Self::new(usize::try_from(n).unwrap_or(usize::MAX).min(1 << 20))
    }

    /// Appends a closed interval (intervals arrive in time order) and
    /// returns the one it pushed out, if any, so callers can reuse its
    /// buffers.
    pub fn push(&mut self, snap: IntervalSnapshot) -> Option<IntervalSnapshot> {
        let out = if self.intervals.len() == self.capacity {
            self.intervals.pop_front()
        } else {
            None
        };
        self.intervals.push_back(snap);
        out
    }

    /// Number of retained intervals.
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
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
        // `from` are a suffix.
        let first = self.intervals.partition_point(|s| s.start < from);
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
            let out = w.push(snap(i, i));
            assert_eq!(out.map(|o| o.canary.counter("requests")), i.checked_sub(6));
        }
        assert_eq!(w.intervals().count(), 6);
        let s = w
            .sum_over(Timestamp::from_millis(20_000), Duration::from_secs(3))
            .unwrap();
        assert_eq!(s.canary.counter("requests"), 17 + 18 + 19);
        assert_eq!(s.start, Timestamp::from_millis(17_000));
        assert_eq!(s.canary.latency["latency_ms"].total(), 3);
    }
}

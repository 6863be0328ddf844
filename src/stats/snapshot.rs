//! The input of the statistics layer: one snapshot per analysis interval with
//! both arms' data. Sources and the simulator build these; the stats layer
//! only reads them. Counters are plain `u64`, so a snapshot is serde and can
//! be journaled as-is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StatsError;
use super::histogram::LatencyHistogram;
use crate::time::Timestamp;

/// The two arms of a rollout: the version running before, and the one on
/// trial. Pushed observations, the builtin proxy and the Prometheus query
/// source all name them with this type (`"baseline"` / `"canary"` on the
/// wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    Baseline,
    Canary,
}

impl Arm {
    pub const BOTH: [Arm; 2] = [Arm::Baseline, Arm::Canary];

    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline",
            Arm::Canary => "canary",
        }
    }
}

/// One arm's data for one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmData {
    /// Signal name (`requests`, `errors`, `clicks`, ...) to count.
    pub counters: BTreeMap<String, u64>,
    /// Signal name to group to count (for `groupBy` metrics).
    pub groups: BTreeMap<String, BTreeMap<String, u64>>,
    /// Latency signal name (`latency_ms`) to histogram.
    pub latency: BTreeMap<String, LatencyHistogram>,
}

impl ArmData {
    /// Count of a signal; absent signals count as zero.
    pub fn counter(&self, signal: &str) -> u64 {
        self.counters.get(signal).copied().unwrap_or(0)
    }

    /// Count of a signal within one group.
    pub fn group_counter(&self, signal: &str, group: &str) -> u64 {
        self.groups
            .get(signal)
            .and_then(|g| g.get(group))
            .copied()
            .unwrap_or(0)
    }

    /// Adds to a counter.
    pub fn add(&mut self, signal: &str, n: u64) {
        match self.counters.get_mut(signal) {
            Some(c) => *c = c.saturating_add(n),
            None => {
                self.counters.insert(signal.to_string(), n);
            }
        }
    }

    /// Adds to a counter within a group.
    pub fn add_group(&mut self, signal: &str, group: &str, n: u64) {
        // Look up before inserting so that only missing keys are allocated.
        if let Some(g) = self.groups.get_mut(signal) {
            match g.get_mut(group) {
                Some(c) => *c = c.saturating_add(n),
                None => {
                    g.insert(group.to_string(), n);
                }
            }
            return;
        }
        let g = BTreeMap::from([(group.to_string(), n)]);
        self.groups.insert(signal.to_string(), g);
    }

    /// The histogram of a latency signal, created (log-linear) on first use.
    /// Hold the returned reference to record many values cheaply.
    pub fn latency_mut(&mut self, signal: &str) -> &mut LatencyHistogram {
        // Look up before inserting so the hot path does not allocate a key.
        if !self.latency.contains_key(signal) {
            self.latency
                .insert(signal.to_string(), LatencyHistogram::new());
        }
        // Invariant: the key is present (inserted just above when missing).
        self.latency
            .get_mut(signal)
            .expect("latency histogram was just inserted")
    }

    /// Zeroes every count and empties every histogram, keeping the keys
    /// and the buffers: a generator that writes the same signals every
    /// interval refills it without allocating.
    pub fn reset(&mut self) {
        self.counters.values_mut().for_each(|c| *c = 0);
        for groups in self.groups.values_mut() {
            groups.values_mut().for_each(|c| *c = 0);
        }
        self.latency.values_mut().for_each(LatencyHistogram::clear);
    }

    /// Adds another arm's data into this one.
    pub fn merge(&mut self, other: &ArmData) -> Result<(), StatsError> {
        for (k, &v) in &other.counters {
            self.add(k, v);
        }
        for (sig, groups) in &other.groups {
            // One lookup of the signal's groups, then one per group.
            let Some(mine) = self.groups.get_mut(sig) else {
                // (add_group never creates a signal without a group.)
                if !groups.is_empty() {
                    self.groups.insert(sig.clone(), groups.clone());
                }
                continue;
            };
            for (g, &v) in groups {
                match mine.get_mut(g) {
                    Some(c) => *c = c.saturating_add(v),
                    None => {
                        mine.insert(g.clone(), v);
                    }
                }
            }
        }
        for (sig, h) in &other.latency {
            match self.latency.get_mut(sig) {
                Some(mine) => mine.merge(h)?,
                None => {
                    self.latency.insert(sig.clone(), h.clone());
                }
            }
        }
        Ok(())
    }
}

/// Both arms' data for the interval `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalSnapshot {
    pub start: Timestamp,
    pub end: Timestamp,
    pub baseline: ArmData,
    pub canary: ArmData,
}

impl IntervalSnapshot {
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        IntervalSnapshot {
            start,
            end,
            ..Default::default()
        }
    }

    /// Reuses this snapshot for `[start, end)`: see [`ArmData::reset`].
    pub fn reset(&mut self, start: Timestamp, end: Timestamp) {
        self.start = start;
        self.end = end;
        self.baseline.reset();
        self.canary.reset();
    }

    /// One arm's data.
    pub fn arm(&self, arm: Arm) -> &ArmData {
        match arm {
            Arm::Baseline => &self.baseline,
            Arm::Canary => &self.canary,
        }
    }

    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmData {
        match arm {
            Arm::Baseline => &mut self.baseline,
            Arm::Canary => &mut self.canary,
        }
    }

    /// Length of the interval in milliseconds.
    pub fn length_ms(&self) -> u64 {
        self.end.as_millis().saturating_sub(self.start.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interval as the build of 2026-12-05 journaled it (taken from the
    /// windows of `tests/checkpoint_fixture/checkpoint-v1.json`).
    const JOURNALED: &str = include_str!("fixtures/snapshot-2026-12-05.json");

    #[test]
    fn a_journaled_interval_of_the_dense_form_reads_the_same_and_is_written_smaller() {
        let old: IntervalSnapshot = serde_json::from_str(JOURNALED).unwrap();
        assert_eq!(old.canary.latency["latency_ms"].total(), 312);
        let written = serde_json::to_string(&old).unwrap();
        assert!(
            written.len() * 2 < JOURNALED.len(),
            "{} bytes",
            written.len()
        );
        let back: IntervalSnapshot = serde_json::from_str(&written).unwrap();
        assert_eq!(back, old);
    }

    proptest::proptest! {
        #[test]
        fn merge_is_adding_every_count(
            mine in proptest::collection::vec((0usize..3, 0usize..3, 0u64..5), 0..12),
            theirs in proptest::collection::vec((0usize..3, 0usize..3, 0u64..5), 0..12),
            empty_signal in proptest::bool::ANY,
        ) {
            let names = ["a", "b", "c"];
            let build = |xs: &[(usize, usize, u64)]| {
                let mut d = ArmData::default();
                for &(s, g, n) in xs {
                    d.add(names[s], n);
                    d.add_group(names[s], names[g], n);
                }
                d
            };
            let (mut merged, mut other) = (build(&mine), build(&theirs));
            if empty_signal {
                other.groups.insert("empty".into(), BTreeMap::new());
            }
            let mut added = merged.clone();
            for (k, &v) in &other.counters {
                added.add(k, v);
            }
            for (sig, groups) in &other.groups {
                for (g, &v) in groups {
                    added.add_group(sig, g, v);
                }
            }
            merged.merge(&other).unwrap();
            proptest::prop_assert_eq!(merged, added);
        }
    }
}

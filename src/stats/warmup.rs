//! Warm-up: which intervals after a weight change the comparative tests
//! leave out.

use serde::{Deserialize, Serialize};

use super::snapshot::IntervalSnapshot;
use crate::time::Timestamp;

/// Excludes the first `intervals` intervals after each weight change (and
/// any interval that straddles the change) from the comparative tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warmup {
    intervals: u32,
    changed_at: Option<Timestamp>,
    seen_since_change: u32,
}

impl Warmup {
    pub fn new(intervals: u32) -> Self {
        Warmup {
            intervals,
            changed_at: None,
            seen_since_change: 0,
        }
    }

    /// Intervals left out after each weight change.
    pub fn intervals(&self) -> u32 {
        self.intervals
    }

    /// The router applied a new weight at `now`.
    pub fn on_weight_change(&mut self, now: Timestamp) {
        self.changed_at = Some(now);
        self.seen_since_change = 0;
    }

    /// Whether `snap` may enter the comparative tests.
    pub fn admits(&mut self, snap: &IntervalSnapshot) -> bool {
        let Some(at) = self.changed_at else {
            return true;
        };
        if snap.start < at {
            return false;
        }
        if self.seen_since_change < self.intervals {
            self.seen_since_change += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::snap;

    #[test]
    fn warmup_excludes_the_straddling_and_the_next_interval() {
        let mut w = Warmup::new(1);
        assert!(w.admits(&snap(0, 1, 1, 0.0, 0.0)));
        w.on_weight_change(Timestamp::from_millis(45_000)); // inside interval 1
        assert!(!w.admits(&snap(1, 1, 1, 0.0, 0.0)));
        assert!(!w.admits(&snap(2, 1, 1, 0.0, 0.0)));
        assert!(w.admits(&snap(3, 1, 1, 0.0, 0.0)));
    }
}

//! Test data for the statistics' unit tests.

use super::snapshot::IntervalSnapshot;
use crate::time::Timestamp;

/// Deterministic interval: counts exactly at their expectations.
pub(crate) fn snap(i: u64, nc: u64, nb: u64, pc: f64, pb: f64) -> IntervalSnapshot {
    let mut s = IntervalSnapshot::new(
        Timestamp::from_millis(i * 30_000),
        Timestamp::from_millis((i + 1) * 30_000),
    );
    for (arm, n, p) in [(&mut s.canary, nc, pc), (&mut s.baseline, nb, pb)] {
        arm.add("requests", n);
        arm.add("errors", (n as f64 * p).round() as u64);
        let h = arm.latency_mut("latency_ms");
        h.record_n_us(600_000, (n as f64 * p).round() as u64);
        h.record_n_us(50_000, n - (n as f64 * p).round() as u64);
    }
    s
}

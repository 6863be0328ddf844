//! Objective (non-statistical) triggers, applied exactly as written over
//! [`Windows`]: sustained thresholds (ratio, quantile, mean), multi-window burn rates and
//! no-data detection. Each rule says what it reads of an interval
//! (`window_read`); the windows keep just that. They are outside `alpha`; the simulator measures how
//! often they fire on healthy traffic. Where latency is bucketed, the bucket
//! bound least favourable to firing decides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::evidence::{ArmCounts, finite};
use super::histogram::{HistogramReads, LatencyReads, ms_to_us};
use super::window::{RatioColumn, RatioCounts, WindowRead, Windows};
use super::{StatsError, check_positive, check_unit_open};
use crate::time::Timestamp;

/// The outcome of an objective check, with what it measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveVerdict {
    pub fired: bool,
    /// What was measured (p95 lower bound in ms, burn rate, requests).
    pub observed: f64,
    /// The limit it is compared with.
    pub limit: f64,
    pub canary: ArmCounts,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
}

/// `threshold: {above: T, for: D}` on a latency quantile: fires when every
/// interval of the last `D` had its canary quantile above `T` (the bucket's
/// lowest value must exceed `T`) and the intervals tile at least `D`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SustainedQuantile {
    pub signal: String,
    pub quantile: f64,
    pub above_ms: f64,
    pub for_ms: u64,
}

impl SustainedQuantile {
    pub fn new(
        signal: &str,
        quantile: f64,
        above_ms: f64,
        for_: Duration,
    ) -> Result<Self, StatsError> {
        check_unit_open("quantile", quantile)?;
        check_positive("threshold.above", above_ms)?;
        Ok(SustainedQuantile {
            signal: signal.to_string(),
            quantile,
            above_ms,
            for_ms: u64::try_from(for_.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// What [`SustainedQuantile::evaluate`] reads of `signal`, in every
    /// canary snapshot the windows keep: the quantile's bucket and the count
    /// above the threshold.
    pub fn latency_reads(&self, signal: &str) -> LatencyReads {
        if signal != self.signal {
            return LatencyReads::NOTHING;
        }
        LatencyReads {
            baseline: HistogramReads::Nothing,
            canary: HistogramReads::Partial {
                above_us: vec![ms_to_us(self.above_ms)],
                quantiles: vec![self.quantile],
            },
        }
    }

    /// What it reads of each interval the windows keep.
    pub fn window_read(&self) -> WindowRead {
        WindowRead::quantile(&self.signal, self.quantile, self.above_ms)
    }

    pub fn evaluate(&self, windows: &Windows, now: Timestamp) -> ObjectiveVerdict {
        let t = ms_to_us(self.above_ms);
        let column = windows.quantiles(&self.signal, self.quantile, t);
        let run = sustained_run(windows, now, self.for_ms, |i| {
            let r = column?.at(i)?;
            let counts = ArmCounts {
                exposure: r.total,
                events: r.surely_above,
            };
            Some((r.low_us as f64 / 1000.0, r.low_us > t, counts))
        });
        let observed = run.values.iter().copied().fold(f64::MAX, f64::min);
        ObjectiveVerdict {
            fired: run.fired,
            observed: if observed == f64::MAX {
                0.0
            } else {
                finite(observed)
            },
            limit: self.above_ms,
            canary: run.canary,
            window_start: run.from.unwrap_or(now),
            window_end: now,
        }
    }
}

/// `threshold: {above|below: p, for: D}` on a ratio: fires when every
/// interval of the last `D` had the canary's `numerator / denominator`
/// above `above` (a `below` bound is written as its complement: the
/// complement counter above `1 − p`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SustainedRatio {
    pub numerator: String,
    pub denominator: String,
    pub above: f64,
    pub for_ms: u64,
}

impl SustainedRatio {
    pub fn new(numerator: &str, denominator: &str, above: f64, for_: Duration) -> Self {
        SustainedRatio {
            numerator: numerator.to_owned(),
            denominator: denominator.to_owned(),
            above,
            for_ms: u64::try_from(for_.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// What it reads of each interval the windows keep.
    pub fn window_read(&self) -> WindowRead {
        WindowRead::Ratio {
            numerator: self.numerator.clone(),
            denominator: self.denominator.clone(),
        }
    }

    /// Every interval of the last `for_ms` had the canary's rate above
    /// `above` (see [`sustained_run`] for "exactly as written").
    pub fn evaluate(&self, windows: &Windows, now: Timestamp) -> ObjectiveVerdict {
        let column = windows.ratios(&self.numerator, &self.denominator);
        let run = sustained_run(windows, now, self.for_ms, |i| {
            let RatioCounts { n, x } = column?.at(i)?;
            (n > 0).then(|| {
                let rate = x as f64 / n as f64;
                (
                    rate,
                    rate > self.above,
                    ArmCounts {
                        exposure: n,
                        events: x,
                    },
                )
            })
        });
        let lowest = run.values.iter().copied().fold(f64::MAX, f64::min);
        ObjectiveVerdict {
            fired: run.fired,
            observed: if lowest == f64::MAX { 0.0 } else { lowest },
            limit: self.above,
            canary: run.canary,
            window_start: run.from.unwrap_or(now),
            window_end: now,
        }
    }
}

/// Which side of a mean's bound fires (serialized as the policy writes it:
/// `{"above": 900.0}`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MeanLimit {
    Above(f64),
    Below(f64),
}

/// `threshold: {above|below: b, for: D}` on a mean: fires when every
/// interval of the last `D` had the canary's mean beyond `b` (values from
/// histogram bucket midpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SustainedMean {
    pub signal: String,
    pub bound: MeanLimit,
    pub for_ms: u64,
}

impl SustainedMean {
    pub fn new(signal: &str, bound: MeanLimit, for_: Duration) -> Self {
        SustainedMean {
            signal: signal.to_owned(),
            bound,
            for_ms: u64::try_from(for_.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// It reads the canary's whole histogram of its signal (now and in
    /// the windows).
    pub fn latency_reads(&self, signal: &str) -> LatencyReads {
        if signal != self.signal {
            return LatencyReads::NOTHING;
        }
        LatencyReads {
            baseline: HistogramReads::Nothing,
            canary: HistogramReads::Everything,
        }
    }

    /// What it reads of each interval the windows keep.
    pub fn window_read(&self) -> WindowRead {
        WindowRead::Mean {
            signal: self.signal.clone(),
        }
    }

    pub fn evaluate(&self, windows: &Windows, now: Timestamp) -> ObjectiveVerdict {
        let (limit, beyond): (f64, fn(f64, f64) -> bool) = match self.bound {
            MeanLimit::Above(b) => (b, |m, b| m > b),
            MeanLimit::Below(b) => (b, |m, b| m < b),
        };
        let column = windows.means(&self.signal);
        let run = sustained_run(windows, now, self.for_ms, |i| {
            let m = column?.at(i)?;
            Some((
                m.mean,
                beyond(m.mean, limit),
                ArmCounts {
                    exposure: m.n,
                    events: 0,
                },
            ))
        });
        let nearest = run
            .values
            .iter()
            .copied()
            .min_by(|a, b| (a - limit).abs().total_cmp(&(b - limit).abs()));
        ObjectiveVerdict {
            fired: run.fired,
            observed: nearest.unwrap_or(0.0),
            limit,
            canary: run.canary,
            window_start: run.from.unwrap_or(now),
            window_end: now,
        }
    }
}

/// The newest consecutive intervals for which a condition held, walking
/// back from the newest one; see [`sustained_run`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SustainedRun {
    /// The condition held over at least the requested duration.
    pub fired: bool,
    /// Each interval's measurement, newest first, including the one that
    /// broke the run.
    pub values: Vec<f64>,
    /// Canary counts over the intervals where the condition held.
    pub canary: ArmCounts,
    /// Start of the oldest interval where it held.
    pub from: Option<Timestamp>,
}

/// "`condition` for `for_ms`", exactly as written: every interval from the
/// newest one back must satisfy it, without gaps, and they must span
/// `for_ms` measured from the newest interval's end. Stale data never
/// counts: the newest interval must end within one interval length of
/// `now` (a source that went quiet cannot stretch a few bad intervals into
/// a sustained breach). `measure` gives the value of the interval at a
/// position in `windows`, whether the condition holds, and its canary
/// counts; `None` (no data) breaks the run.
pub fn sustained_run(
    windows: &Windows,
    now: Timestamp,
    for_ms: u64,
    mut measure: impl FnMut(usize) -> Option<(f64, bool, ArmCounts)>,
) -> SustainedRun {
    let mut run = SustainedRun::default();
    let mut newest_end: Option<Timestamp> = None;
    for (i, s) in windows.newest_first().filter(|(_, s)| s.end <= now) {
        let newest = *newest_end.get_or_insert(s.end);
        if now.saturating_since(newest) > newest.saturating_since(s.start) && run.values.is_empty()
        {
            break;
        }
        if run.from.is_some_and(|from| s.end != from) {
            break; // a gap: the condition did not hold throughout
        }
        let Some((value, holds, counts)) = measure(i) else {
            break;
        };
        run.values.push(value);
        if !holds {
            break;
        }
        run.canary.add(counts.exposure, counts.events);
        run.from = Some(s.start);
        if newest.as_millis().saturating_sub(s.start.as_millis()) >= for_ms {
            run.fired = true;
            break;
        }
    }
    run
}

/// One long/short window pair of a burn-rate alert.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BurnWindow {
    pub long: Duration,
    pub short: Duration,
    pub factor: f64,
}

/// `burnRate: {slo, windows}`: burn rate = error ratio / (1 − slo); fires when
/// for some pair both the long and the short window exceed `factor`. A window
/// longer than the data retained (a young rollout) uses the data it has, as a
/// Prometheus `rate` over a partial range would; size [`Windows`] for the
/// longest window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BurnRate {
    pub numerator: String,
    pub denominator: String,
    pub slo: f64,
    pub windows: Vec<BurnWindow>,
}

impl BurnRate {
    pub fn new(
        numerator: &str,
        denominator: &str,
        slo: f64,
        windows: Vec<BurnWindow>,
    ) -> Result<Self, StatsError> {
        check_unit_open("slo", slo)?;
        for w in &windows {
            check_positive("factor", w.factor)?;
        }
        Ok(BurnRate {
            numerator: numerator.to_string(),
            denominator: denominator.to_string(),
            slo,
            windows,
        })
    }

    /// What it reads of each interval the windows keep: the two canary
    /// counters.
    pub fn window_read(&self) -> WindowRead {
        WindowRead::Ratio {
            numerator: self.numerator.clone(),
            denominator: self.denominator.clone(),
        }
    }

    fn burn(
        &self,
        windows: &Windows,
        column: Option<RatioColumn<'_>>,
        now: Timestamp,
        len: Duration,
    ) -> (f64, ArmCounts, Timestamp) {
        // Only two canary counters are needed: sum them from the column's
        // running totals. (Saturating sums of counts do not depend on their
        // order or grouping.)
        let (mut n, mut x) = (0u64, 0u64);
        let mut start = None::<Timestamp>;
        for (positions, first_start) in windows.covering(now, len) {
            // (A read that is not tracked counts nothing.)
            if let Some(c) = column {
                let t = c.total(positions);
                n = n.saturating_add(t.n);
                x = x.saturating_add(t.x);
            }
            start = Some(start.map_or(first_start, |t| t.min(first_start)));
        }
        // With nothing covered the window is empty and starts where it ends.
        let start = start.unwrap_or(now - len);
        let ratio = if n == 0 { 0.0 } else { x as f64 / n as f64 };
        (
            ratio / (1.0 - self.slo),
            ArmCounts {
                exposure: n,
                events: x,
            },
            start,
        )
    }

    pub fn evaluate(&self, windows: &Windows, now: Timestamp) -> ObjectiveVerdict {
        let column = windows.ratios(&self.numerator, &self.denominator);
        let mut best = ObjectiveVerdict {
            fired: false,
            observed: 0.0,
            limit: self.windows.first().map_or(0.0, |w| w.factor),
            canary: ArmCounts::default(),
            window_start: now,
            window_end: now,
        };
        for w in &self.windows {
            let (long, counts, start) = self.burn(windows, column, now, w.long);
            let (short, _, _) = self.burn(windows, column, now, w.short);
            let level = long.min(short);
            let fired = long > w.factor && short > w.factor;
            if (fired && !best.fired)
                || (fired == best.fired
                    && level / w.factor > best.observed / best.limit.max(1e-300))
            {
                best = ObjectiveVerdict {
                    fired,
                    observed: finite(level),
                    limit: w.factor,
                    canary: counts,
                    window_start: start,
                    window_end: now,
                };
            }
        }
        best
    }
}

/// `noData: {for: D}`: fires when the canary saw no `signal` (requests) in
/// the last `D`, counted from `since` (when monitoring began) at the earliest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoData {
    pub signal: String,
    pub for_ms: u64,
}

impl NoData {
    pub fn new(signal: &str, for_: Duration) -> Self {
        NoData {
            signal: signal.to_string(),
            for_ms: u64::try_from(for_.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// What it reads of each interval the windows keep: whether the
    /// canary saw any of its signal.
    pub fn window_read(&self) -> WindowRead {
        WindowRead::Seen {
            signal: self.signal.clone(),
        }
    }

    pub fn evaluate(
        &self,
        windows: &Windows,
        since: Timestamp,
        now: Timestamp,
    ) -> ObjectiveVerdict {
        let last_seen = windows.last_seen(&self.signal).unwrap_or(since).max(since);
        let silent_ms = now.as_millis().saturating_sub(last_seen.as_millis());
        ObjectiveVerdict {
            fired: silent_ms >= self.for_ms,
            observed: silent_ms as f64 / 1000.0,
            limit: self.for_ms as f64 / 1000.0,
            canary: ArmCounts::default(),
            window_start: last_seen,
            window_end: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::snapshot::IntervalSnapshot;

    fn minute(i: u64, p95_ms: f64, req: u64, err: u64) -> IntervalSnapshot {
        let mut s = IntervalSnapshot::new(
            Timestamp::from_millis(i * 60_000),
            Timestamp::from_millis((i + 1) * 60_000),
        );
        let h = s.canary.latency_mut("latency_ms");
        for _ in 0..94 {
            h.record_ms(p95_ms / 2.0);
        }
        for _ in 0..6 {
            h.record_ms(p95_ms * 1.01);
        }
        s.canary.add("requests", req);
        s.canary.add("errors", err);
        s
    }

    fn hour_of_minutes(read: WindowRead) -> Windows {
        let mut w = Windows::for_longest_window(Duration::from_secs(3600), Duration::from_secs(60));
        w.track(read);
        w
    }

    #[test]
    fn sustained_threshold_needs_every_interval_and_full_coverage() {
        let rule = SustainedQuantile::new("latency_ms", 0.95, 200.0, Duration::from_secs(15 * 60))
            .unwrap();
        let mut w = hour_of_minutes(rule.window_read());
        for i in 0..14 {
            w.push(&minute(i, 300.0, 100, 0));
        }
        let now = Timestamp::from_millis(14 * 60_000);
        assert!(!rule.evaluate(&w, now).fired, "14 minutes are not 15");
        w.push(&minute(14, 300.0, 100, 0));
        let v = rule.evaluate(&w, Timestamp::from_millis(15 * 60_000));
        assert!(v.fired, "{v:?}");
        w.push(&minute(15, 150.0, 100, 0));
        assert!(!rule.evaluate(&w, Timestamp::from_millis(16 * 60_000)).fired);
    }

    #[test]
    fn a_sustained_threshold_never_fires_on_stale_data() {
        // Three bad minutes, then the source goes quiet: fifteen minutes
        // after the first, nothing has shown "for 15m".
        let rule = SustainedQuantile::new("latency_ms", 0.95, 200.0, Duration::from_secs(15 * 60))
            .unwrap();
        let mut w = hour_of_minutes(rule.window_read());
        for i in 0..3 {
            w.push(&minute(i, 300.0, 100, 0));
        }
        for m in [3, 15, 30] {
            let v = rule.evaluate(&w, Timestamp::from_millis(m * 60_000));
            assert!(!v.fired, "at {m}m: {v:?}");
        }
    }

    #[test]
    fn burn_rate_needs_both_windows() {
        let rule = BurnRate::new(
            "errors",
            "requests",
            0.995,
            vec![BurnWindow {
                long: Duration::from_secs(3600),
                short: Duration::from_secs(300),
                factor: 14.4,
            }],
        )
        .unwrap();
        let mut w = hour_of_minutes(rule.window_read());
        for i in 0..60 {
            w.push(&minute(i, 10.0, 1000, 1));
        }
        let now = Timestamp::from_millis(60 * 60_000);
        assert!(!rule.evaluate(&w, now).fired);
        // An hour at 10% errors: both windows burn at 10% / 0.5% = 20 > 14.4.
        for i in 60..120 {
            w.push(&minute(i, 10.0, 1000, 100));
        }
        let v = rule.evaluate(&w, Timestamp::from_millis(120 * 60_000));
        assert!(v.fired && (v.observed - 20.0).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn no_data_counts_from_the_last_request() {
        let rule = NoData::new("requests", Duration::from_secs(600));
        let mut w = hour_of_minutes(rule.window_read());
        w.push(&minute(0, 10.0, 5, 0));
        for i in 1..10 {
            w.push(&minute(i, 10.0, 0, 0));
        }
        assert!(
            !rule
                .evaluate(&w, Timestamp::EPOCH, Timestamp::from_millis(10 * 60_000))
                .fired
        );
        w.push(&minute(10, 10.0, 0, 0));
        assert!(
            rule.evaluate(&w, Timestamp::EPOCH, Timestamp::from_millis(11 * 60_000))
                .fired
        );
    }
}

/// The windows as they were before they kept only what the rules read:
/// every interval's whole snapshot, and each rule reading the snapshots
/// (the code of the build of 2026-12-05, verbatim but for names). The
/// differential test below requires the same verdicts, evidence included,
/// from the compact windows over long random sequences.
#[cfg(test)]
mod reference {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;
    use crate::stats::snapshot::IntervalSnapshot;

    pub struct SnapshotWindows {
        pub capacity: usize,
        pub intervals: VecDeque<IntervalSnapshot>,
    }

    impl SnapshotWindows {
        pub fn new(capacity: usize) -> Self {
            SnapshotWindows {
                capacity: capacity.max(1),
                intervals: VecDeque::new(),
            }
        }

        pub fn push(&mut self, snap: IntervalSnapshot) {
            if self.intervals.len() == self.capacity {
                self.intervals.pop_front();
            }
            self.intervals.push_back(snap);
        }

        fn covering(
            &self,
            now: Timestamp,
            length: Duration,
        ) -> impl DoubleEndedIterator<Item = &IntervalSnapshot> {
            let from = now - length;
            let first = self.intervals.partition_point(|s| s.start < from);
            self.intervals
                .range(first..)
                .filter(move |s| s.start >= from && s.end <= now)
        }
    }

    fn sustained_run(
        windows: &SnapshotWindows,
        now: Timestamp,
        for_ms: u64,
        mut measure: impl FnMut(&IntervalSnapshot) -> Option<(f64, bool, ArmCounts)>,
    ) -> SustainedRun {
        let mut run = SustainedRun::default();
        let mut newest_end: Option<Timestamp> = None;
        for s in windows.intervals.iter().rev().filter(|s| s.end <= now) {
            let newest = *newest_end.get_or_insert(s.end);
            if now.saturating_since(newest) > newest.saturating_since(s.start)
                && run.values.is_empty()
            {
                break;
            }
            if run.from.is_some_and(|from| s.end != from) {
                break;
            }
            let Some((value, holds, counts)) = measure(s) else {
                break;
            };
            run.values.push(value);
            if !holds {
                break;
            }
            run.canary.add(counts.exposure, counts.events);
            run.from = Some(s.start);
            if newest.as_millis().saturating_sub(s.start.as_millis()) >= for_ms {
                run.fired = true;
                break;
            }
        }
        run
    }

    pub fn quantile(
        r: &SustainedQuantile,
        w: &SnapshotWindows,
        now: Timestamp,
    ) -> ObjectiveVerdict {
        let t = ms_to_us(r.above_ms);
        let run = sustained_run(w, now, r.for_ms, |s| {
            let h = s.canary.latency.get(&r.signal)?;
            let (lo, _) = h.quantile_bounds_us(r.quantile)?;
            let counts = ArmCounts {
                exposure: h.total(),
                events: h.count_surely_above_us(t),
            };
            Some((lo as f64 / 1000.0, lo > t, counts))
        });
        let observed = run.values.iter().copied().fold(f64::MAX, f64::min);
        ObjectiveVerdict {
            fired: run.fired,
            observed: if observed == f64::MAX {
                0.0
            } else {
                finite(observed)
            },
            limit: r.above_ms,
            canary: run.canary,
            window_start: run.from.unwrap_or(now),
            window_end: now,
        }
    }

    pub fn ratio(r: &SustainedRatio, w: &SnapshotWindows, now: Timestamp) -> ObjectiveVerdict {
        let run = sustained_run(w, now, r.for_ms, |s| {
            let n = s.canary.counter(&r.denominator);
            let x = s.canary.counter(&r.numerator).min(n);
            (n > 0).then(|| {
                let rate = x as f64 / n as f64;
                (
                    rate,
                    rate > r.above,
                    ArmCounts {
                        exposure: n,
                        events: x,
                    },
                )
            })
        });
        let lowest = run.values.iter().copied().fold(f64::MAX, f64::min);
        ObjectiveVerdict {
            fired: run.fired,
            observed: if lowest == f64::MAX { 0.0 } else { lowest },
            limit: r.above,
            canary: run.canary,
            window_start: run.from.unwrap_or(now),
            window_end: now,
        }
    }

    pub fn mean(r: &SustainedMean, w: &SnapshotWindows, now: Timestamp) -> ObjectiveVerdict {
        let (limit, beyond): (f64, fn(f64, f64) -> bool) = match r.bound {
            MeanLimit::Above(b) => (b, |m, b| m > b),
            MeanLimit::Below(b) => (b, |m, b| m < b),
        };
        let run = sustained_run(w, now, r.for_ms, |s| {
            let m = s
                .canary
                .latency
                .get(&r.signal)
                .and_then(|h| h.moments_ms())?;
            Some((
                m.mean,
                beyond(m.mean, limit),
                ArmCounts {
                    exposure: m.n,
                    events: 0,
                },
            ))
        });
        let nearest = run
            .values
            .iter()
            .copied()
            .min_by(|a, b| (a - limit).abs().total_cmp(&(b - limit).abs()));
        ObjectiveVerdict {
            fired: run.fired,
            observed: nearest.unwrap_or(0.0),
            limit,
            canary: run.canary,
            window_start: run.from.unwrap_or(now),
            window_end: now,
        }
    }

    pub fn burn(r: &BurnRate, w: &SnapshotWindows, now: Timestamp) -> ObjectiveVerdict {
        let burn = |len: Duration| {
            let (mut n, mut x) = (0u64, 0u64);
            let mut start = None::<Timestamp>;
            for s in w.covering(now, len) {
                let sn = s.canary.counter(&r.denominator);
                n = n.saturating_add(sn);
                x = x.saturating_add(s.canary.counter(&r.numerator).min(sn));
                start = Some(start.map_or(s.start, |t| t.min(s.start)));
            }
            let start = start.unwrap_or(now - len);
            let ratio = if n == 0 { 0.0 } else { x as f64 / n as f64 };
            (
                ratio / (1.0 - r.slo),
                ArmCounts {
                    exposure: n,
                    events: x,
                },
                start,
            )
        };
        let mut best = ObjectiveVerdict {
            fired: false,
            observed: 0.0,
            limit: r.windows.first().map_or(0.0, |w| w.factor),
            canary: ArmCounts::default(),
            window_start: now,
            window_end: now,
        };
        for bw in &r.windows {
            let (long, counts, start) = burn(bw.long);
            let (short, _, _) = burn(bw.short);
            let level = long.min(short);
            let fired = long > bw.factor && short > bw.factor;
            if (fired && !best.fired)
                || (fired == best.fired
                    && level / bw.factor > best.observed / best.limit.max(1e-300))
            {
                best = ObjectiveVerdict {
                    fired,
                    observed: finite(level),
                    limit: bw.factor,
                    canary: counts,
                    window_start: start,
                    window_end: now,
                };
            }
        }
        best
    }

    pub fn no_data(
        r: &NoData,
        w: &SnapshotWindows,
        since: Timestamp,
        now: Timestamp,
    ) -> ObjectiveVerdict {
        let last_seen = w
            .intervals
            .iter()
            .rev()
            .find(|s| s.canary.counter(&r.signal) > 0)
            .map(|s| s.end)
            .unwrap_or(since)
            .max(since);
        let silent_ms = now.as_millis().saturating_sub(last_seen.as_millis());
        ObjectiveVerdict {
            fired: silent_ms >= r.for_ms,
            observed: silent_ms as f64 / 1000.0,
            limit: r.for_ms as f64 / 1000.0,
            canary: ArmCounts::default(),
            window_start: last_seen,
            window_end: now,
        }
    }
}

#[cfg(test)]
mod differential {
    use super::reference::{self, SnapshotWindows};
    use super::*;
    use crate::stats::histogram::LatencyHistogram;
    use crate::stats::snapshot::IntervalSnapshot;

    /// splitmix64: sequences that no dependency upgrade can change.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    const BUCKETS_MS: [f64; 7] = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

    /// One interval starting at `start`: counters that are sometimes zero
    /// or absent, and a latency histogram that is sometimes absent, empty,
    /// log-linear or bucketed (the layout can change from one interval to
    /// the next), with a level that drifts across the thresholds.
    fn interval(rng: &mut Rng, start: u64, length: u64, level_ms: f64) -> IntervalSnapshot {
        let mut s = IntervalSnapshot::new(
            Timestamp::from_millis(start),
            Timestamp::from_millis(start + length),
        );
        for arm in [&mut s.baseline, &mut s.canary] {
            if !arm_is_silent(rng) {
                let n = rng.below(400);
                arm.add("requests", n);
                arm.add("errors", rng.below(n / 4 + 2));
            }
            let latency = match rng.below(10) {
                0 => None,
                1 => Some(LatencyHistogram::new()),
                2 | 3 => Some(LatencyHistogram::with_bucket_bounds_ms(&BUCKETS_MS).unwrap()),
                _ => Some(LatencyHistogram::new()),
            };
            if let Some(mut h) = latency {
                for _ in 0..rng.below(60) {
                    let spread = 0.2 + rng.below(200) as f64 / 100.0;
                    h.record_ms(level_ms * spread);
                }
                arm.latency.insert("latency_ms".into(), h);
            }
        }
        s
    }

    fn arm_is_silent(rng: &mut Rng) -> bool {
        rng.chance(15)
    }

    struct Rules {
        quantiles: Vec<SustainedQuantile>,
        ratios: Vec<SustainedRatio>,
        means: Vec<SustainedMean>,
        burns: Vec<BurnRate>,
        no_data: Vec<NoData>,
    }

    fn rules(interval_ms: u64) -> Rules {
        let d = |n: u64| Duration::from_millis(n * interval_ms);
        Rules {
            quantiles: vec![
                SustainedQuantile::new("latency_ms", 0.95, 200.0, d(5)).unwrap(),
                SustainedQuantile::new("latency_ms", 0.5, 40.0, d(2)).unwrap(),
                SustainedQuantile::new("latency_ms", 0.99, 90.0, d(12)).unwrap(),
            ],
            ratios: vec![
                SustainedRatio::new("errors", "requests", 0.1, d(3)),
                SustainedRatio::new("errors", "requests", 0.05, d(8)),
            ],
            means: vec![
                SustainedMean::new("latency_ms", MeanLimit::Above(80.0), d(4)),
                SustainedMean::new("latency_ms", MeanLimit::Below(60.0), d(3)),
            ],
            burns: vec![
                BurnRate::new(
                    "errors",
                    "requests",
                    0.99,
                    vec![
                        BurnWindow {
                            long: d(20),
                            short: d(3),
                            factor: 10.0,
                        },
                        BurnWindow {
                            long: d(10),
                            short: d(2),
                            factor: 5.0,
                        },
                    ],
                )
                .unwrap(),
            ],
            no_data: vec![NoData::new("requests", d(4)), NoData::new("errors", d(7))],
        }
    }

    fn compact_windows(capacity: usize, r: &Rules) -> Windows {
        let mut w = Windows::new(capacity);
        let reads = r
            .quantiles
            .iter()
            .map(|q| q.window_read())
            .chain(r.ratios.iter().map(|q| q.window_read()))
            .chain(r.means.iter().map(|q| q.window_read()))
            .chain(r.burns.iter().map(|q| q.window_read()))
            .chain(r.no_data.iter().map(|q| q.window_read()));
        for read in reads {
            w.track(read);
        }
        w
    }

    fn assert_same(
        r: &Rules,
        new: &Windows,
        old: &SnapshotWindows,
        since: Timestamp,
        now: Timestamp,
        at: &str,
    ) {
        for q in &r.quantiles {
            assert_eq!(
                q.evaluate(new, now),
                reference::quantile(q, old, now),
                "{at} {q:?}"
            );
        }
        for q in &r.ratios {
            assert_eq!(
                q.evaluate(new, now),
                reference::ratio(q, old, now),
                "{at} {q:?}"
            );
        }
        for q in &r.means {
            assert_eq!(
                q.evaluate(new, now),
                reference::mean(q, old, now),
                "{at} {q:?}"
            );
        }
        for q in &r.burns {
            assert_eq!(
                q.evaluate(new, now),
                reference::burn(q, old, now),
                "{at} {q:?}"
            );
        }
        for q in &r.no_data {
            assert_eq!(
                q.evaluate(new, since, now),
                reference::no_data(q, old, since, now),
                "{at} {q:?}"
            );
        }
    }

    /// Long random sequences (gaps, overlaps, other interval lengths,
    /// silent arms, absent, empty and re-laid-out histograms, several
    /// interval lengths and window capacities, a checkpoint round trip now
    /// and then): after every interval, at its end and later, every rule
    /// answers over the compact windows exactly as over the snapshots.
    #[test]
    fn compact_windows_answer_as_the_snapshots_did() {
        let mut fired = 0;
        for seed in 0..48u64 {
            let mut rng = Rng(seed);
            let interval_ms = [1_000, 30_000, 60_000][seed as usize % 3];
            let rules = rules(interval_ms);
            let longest = Duration::from_millis(interval_ms * [3, 12, 21][(seed / 3) as usize % 3]);
            let mut new = Windows::for_longest_window(longest, Duration::from_millis(interval_ms));
            let capacity = new.capacity();
            new = compact_windows(capacity, &rules);
            let mut old = SnapshotWindows::new(capacity);
            let since = Timestamp::from_millis(rng.below(3) * interval_ms);
            let mut t = 0u64;
            let mut level = 50.0;
            for i in 0..300 {
                t += match rng.below(20) {
                    0 => interval_ms * (1 + rng.below(6)),
                    1 => rng.below(interval_ms),
                    _ => 0,
                };
                let length = match rng.below(15) {
                    0 => interval_ms / 2,
                    1 => interval_ms + rng.below(interval_ms),
                    2 => 0,
                    _ => interval_ms,
                };
                // Now and then one starts within the one before (still in
                // order of starts).
                let start = if rng.chance(3) {
                    t.saturating_sub(length / 2)
                } else {
                    t
                };
                level = (level * (0.7 + rng.below(60) as f64 / 100.0)).clamp(5.0, 2_000.0);
                let snap = interval(
                    &mut rng,
                    start.max(old.intervals.back().map_or(0, |s| s.start.as_millis())),
                    length,
                    level,
                );
                t = snap.end.as_millis().max(t);
                new.push(&snap);
                old.push(snap);
                if rng.chance(5) {
                    let json = serde_json::to_string(&new).unwrap();
                    let form: crate::stats::window::WindowsForm =
                        serde_json::from_str(&json).unwrap();
                    let back = Windows::try_from(form).unwrap();
                    assert_eq!(back, new, "seed {seed} interval {i}: round trip");
                    new = back;
                }
                assert_eq!(new.len(), old.intervals.len());
                for late in [0, 1, interval_ms / 2, interval_ms * 3, interval_ms * 30] {
                    let now = Timestamp::from_millis(t + late);
                    assert_same(
                        &rules,
                        &new,
                        &old,
                        since,
                        now,
                        &format!("seed {seed} interval {i} +{late}ms"),
                    );
                    fired += usize::from(rules.quantiles[0].evaluate(&new, now).fired);
                }
                // Before the newest interval ended.
                let early = Timestamp::from_millis(t.saturating_sub(rng.below(3 * interval_ms)));
                assert_same(
                    &rules,
                    &new,
                    &old,
                    since,
                    early,
                    &format!("seed {seed} interval {i} early"),
                );
            }
        }
        assert!(fired > 0, "the sequences make the rules fire");
    }
}

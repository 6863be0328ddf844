//! Objective (non-statistical) triggers, applied exactly as written over
//! [`Windows`]: sustained thresholds (ratio, quantile, mean), multi-window burn rates and
//! no-data detection. They are outside `alpha`; the simulator measures how
//! often they fire on healthy traffic. Where latency is bucketed, the bucket
//! bound least favourable to firing decides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::evidence::{ArmCounts, finite};
use super::histogram::{HistogramReads, LatencyReads, ms_to_us};
use super::snapshot::IntervalSnapshot;
use super::window::Windows;
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

    pub fn evaluate(&self, windows: &Windows, now: Timestamp) -> ObjectiveVerdict {
        let t = ms_to_us(self.above_ms);
        let run = sustained_run(windows, now, self.for_ms, |s| {
            let h = s.canary.latency.get(&self.signal)?;
            let (lo, _) = h.quantile_bounds_us(self.quantile)?;
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

    /// Every interval of the last `for_ms` had the canary's rate above
    /// `above` (see [`sustained_run`] for "exactly as written").
    pub fn evaluate(&self, windows: &Windows, now: Timestamp) -> ObjectiveVerdict {
        let run = sustained_run(windows, now, self.for_ms, |s| {
            let n = s.canary.counter(&self.denominator);
            let x = s.canary.counter(&self.numerator).min(n);
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

    pub fn evaluate(&self, windows: &Windows, now: Timestamp) -> ObjectiveVerdict {
        let (limit, beyond): (f64, fn(f64, f64) -> bool) = match self.bound {
            MeanLimit::Above(b) => (b, |m, b| m > b),
            MeanLimit::Below(b) => (b, |m, b| m < b),
        };
        let run = sustained_run(windows, now, self.for_ms, |s| {
            let m = s
                .canary
                .latency
                .get(&self.signal)
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
/// a sustained breach). `measure` gives an interval's value, whether the
/// condition holds, and its canary counts; `None` (no data) breaks the run.
pub fn sustained_run(
    windows: &Windows,
    now: Timestamp,
    for_ms: u64,
    mut measure: impl FnMut(&super::snapshot::IntervalSnapshot) -> Option<(f64, bool, ArmCounts)>,
) -> SustainedRun {
    let mut run = SustainedRun::default();
    let mut newest_end: Option<Timestamp> = None;
    for s in windows.intervals().rev().filter(|s| s.end <= now) {
        let newest = *newest_end.get_or_insert(s.end);
        if now.saturating_since(newest) > newest.saturating_since(s.start) && run.values.is_empty()
        {
            break;
        }
        if run.from.is_some_and(|from| s.end != from) {
            break; // a gap: the condition did not hold throughout
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

    /// The two canary counters a burn-rate rule reads from one interval.
    pub fn counts_of(&self, s: &IntervalSnapshot) -> BurnCounts {
        let n = s.canary.counter(&self.denominator);
        BurnCounts {
            start: s.start,
            end: s.end,
            n,
            x: s.canary.counter(&self.numerator).min(n),
        }
    }

    fn burn(
        &self,
        covering: impl Iterator<Item = BurnCounts>,
        now: Timestamp,
        len: Duration,
    ) -> (f64, ArmCounts, Timestamp) {
        // Only two canary counters are needed: sum them directly rather than
        // merging whole snapshots (latency histograms included) every look.
        let (mut n, mut x) = (0u64, 0u64);
        let mut start = None::<Timestamp>;
        for s in covering {
            n = n.saturating_add(s.n);
            x = x.saturating_add(s.x);
            start = Some(start.map_or(s.start, |t| t.min(s.start)));
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

    pub fn evaluate(
        &self,
        windows: &Windows,
        now: Timestamp,
    ) -> Result<ObjectiveVerdict, StatsError> {
        Ok(self.evaluate_with(
            |len| windows.covering(now, len).map(|s| self.counts_of(s)),
            now,
        ))
    }

    /// [`Self::evaluate`] over the counts of the retained intervals (oldest
    /// first, as [`Self::counts_of`] gives them), for callers that keep
    /// them alongside their [`Windows`] instead of reading every snapshot's
    /// counters at each look. Same result.
    pub fn evaluate_counts(
        &self,
        retained: &std::collections::VecDeque<BurnCounts>,
        now: Timestamp,
    ) -> ObjectiveVerdict {
        self.evaluate_with(
            |len| {
                let from = now - len;
                // Retained in time order: the covered ones are a suffix.
                let first = retained.partition_point(|c| c.start < from);
                retained
                    .range(first..)
                    .copied()
                    .filter(move |c| c.start >= from && c.end <= now)
            },
            now,
        )
    }

    fn evaluate_with<I: Iterator<Item = BurnCounts>>(
        &self,
        covering: impl Fn(Duration) -> I,
        now: Timestamp,
    ) -> ObjectiveVerdict {
        let mut best = ObjectiveVerdict {
            fired: false,
            observed: 0.0,
            limit: self.windows.first().map_or(0.0, |w| w.factor),
            canary: ArmCounts::default(),
            window_start: now,
            window_end: now,
        };
        for w in &self.windows {
            let (long, counts, start) = self.burn(covering(w.long), now, w.long);
            let (short, _, _) = self.burn(covering(w.short), now, w.short);
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

/// One interval's canary counts for a burn-rate rule: `n` of its
/// denominator, `x` of its numerator (at most `n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurnCounts {
    pub start: Timestamp,
    pub end: Timestamp,
    pub n: u64,
    pub x: u64,
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

    pub fn evaluate(
        &self,
        windows: &Windows,
        since: Timestamp,
        now: Timestamp,
    ) -> ObjectiveVerdict {
        let last_seen = windows
            .intervals()
            .rev()
            .find(|s| s.canary.counter(&self.signal) > 0)
            .map(|s| s.end)
            .unwrap_or(since)
            .max(since);
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

    #[test]
    fn sustained_threshold_needs_every_interval_and_full_coverage() {
        let rule = SustainedQuantile::new("latency_ms", 0.95, 200.0, Duration::from_secs(15 * 60))
            .unwrap();
        let mut w = Windows::for_longest_window(Duration::from_secs(3600), Duration::from_secs(60));
        for i in 0..14 {
            w.push(minute(i, 300.0, 100, 0));
        }
        let now = Timestamp::from_millis(14 * 60_000);
        assert!(!rule.evaluate(&w, now).fired, "14 minutes are not 15");
        w.push(minute(14, 300.0, 100, 0));
        let v = rule.evaluate(&w, Timestamp::from_millis(15 * 60_000));
        assert!(v.fired, "{v:?}");
        w.push(minute(15, 150.0, 100, 0));
        assert!(!rule.evaluate(&w, Timestamp::from_millis(16 * 60_000)).fired);
    }

    #[test]
    fn a_sustained_threshold_never_fires_on_stale_data() {
        // Three bad minutes, then the source goes quiet: fifteen minutes
        // after the first, nothing has shown "for 15m".
        let rule = SustainedQuantile::new("latency_ms", 0.95, 200.0, Duration::from_secs(15 * 60))
            .unwrap();
        let mut w = Windows::for_longest_window(Duration::from_secs(3600), Duration::from_secs(60));
        for i in 0..3 {
            w.push(minute(i, 300.0, 100, 0));
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
        let mut w = Windows::for_longest_window(Duration::from_secs(3600), Duration::from_secs(60));
        for i in 0..60 {
            w.push(minute(i, 10.0, 1000, 1));
        }
        let now = Timestamp::from_millis(60 * 60_000);
        assert!(!rule.evaluate(&w, now).unwrap().fired);
        // An hour at 10% errors: both windows burn at 10% / 0.5% = 20 > 14.4.
        for i in 60..120 {
            w.push(minute(i, 10.0, 1000, 100));
        }
        let v = rule
            .evaluate(&w, Timestamp::from_millis(120 * 60_000))
            .unwrap();
        assert!(v.fired && (v.observed - 20.0).abs() < 1e-9, "{v:?}");
    }

    proptest::proptest! {
        #[test]
        fn burn_rates_from_kept_counts_match_the_windows(
            minutes in proptest::collection::vec((0u64..3, 0u64..2000, 0u64..300), 1..150),
            now_after in 0u64..5,
        ) {
            let rule = BurnRate::new(
                "errors",
                "requests",
                0.995,
                vec![
                    BurnWindow { long: Duration::from_secs(3600), short: Duration::from_secs(300), factor: 14.4 },
                    BurnWindow { long: Duration::from_secs(600), short: Duration::from_secs(120), factor: 2.0 },
                ],
            )
            .unwrap();
            let mut w = Windows::for_longest_window(Duration::from_secs(3600), Duration::from_secs(60));
            let mut i = 0;
            for &(gap, req, err) in &minutes {
                i += gap;
                w.push(minute(i, 10.0, req, err));
                i += 1;
            }
            let kept: std::collections::VecDeque<BurnCounts> =
                w.intervals().map(|s| rule.counts_of(s)).collect();
            let now = Timestamp::from_millis((i + now_after) * 60_000);
            proptest::prop_assert_eq!(rule.evaluate_counts(&kept, now), rule.evaluate(&w, now).unwrap());
        }
    }

    #[test]
    fn no_data_counts_from_the_last_request() {
        let rule = NoData::new("requests", Duration::from_secs(600));
        let mut w = Windows::for_longest_window(Duration::from_secs(3600), Duration::from_secs(60));
        w.push(minute(0, 10.0, 5, 0));
        for i in 1..10 {
            w.push(minute(i, 10.0, 0, 0));
        }
        assert!(
            !rule
                .evaluate(&w, Timestamp::EPOCH, Timestamp::from_millis(10 * 60_000))
                .fired
        );
        w.push(minute(10, 10.0, 0, 0));
        assert!(
            rule.evaluate(&w, Timestamp::EPOCH, Timestamp::from_millis(11 * 60_000))
                .fired
        );
    }
}

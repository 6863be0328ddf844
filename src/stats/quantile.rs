//! **Quantile vs baseline** (`vsBaseline: {relativeIncrease: X}` on p95,
//! and latency gates): an exceedance two-arm count test at a threshold `T`
//! frozen in advance (the baseline's q-quantile estimated at the end of a
//! burn-in, or given): canary events are latencies surely above `(1+X)·T`,
//! baseline events are latencies possibly above `T`, and the null is "the
//! canary's exceedance rate is at most the baseline's". If the canary's
//! latency is at most `(1+X)` times the baseline's around the q-quantile at
//! every moment, the null holds in every interval, so the test stays exact
//! under diurnal load and a drifting split. It tests the tail at `T`, not
//! the quantile itself; with `T` at the baseline's q-quantile the two
//! statements coincide.

use serde::{Deserialize, Serialize};

use super::count::TwoArmCount;
use super::dispersion::Overdispersion;
use super::evidence::{Estimand, Evidence, Interval, Span, Status, Verdict, finite, is_false};
use super::histogram::{HistogramReads, LatencyReads};
use super::hypothesis::{Direction, log_boundary};
use super::mixture::ChangeDetection;
use super::snapshot::IntervalSnapshot;
use super::{StatsError, check_positive, check_unit_open};

/// `vsBaseline: {relativeIncrease: x}` on a latency quantile (trigger), and
/// the latency `maxIncrease` gate: a two-arm exceedance count test at a
/// threshold `T` fixed in advance. See the module docs for the null.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantileVsBaseline {
    signal: String,
    quantile: f64,
    factor: f64,
    direction: Direction,
    alpha: f64,
    change: ChangeDetection,
    burn_in: u64,
    threshold_us: Option<u64>,
    baseline_hist: super::histogram::LatencyHistogram,
    test: Option<TwoArmCount>,
    /// How the count test accounts for overdispersion. Absent in
    /// checkpoints written before it existed: no inflation, as then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispersion: Option<Overdispersion>,
    span: Span,
    crossed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    /// See [`StatTest::set_lean_gate`].
    #[serde(default, skip_serializing_if = "is_false")]
    lean_gate: bool,
    /// Where the canary's count really starts on the buckets last seen
    /// (µs): `factor·T` rounded to a bucket edge, away from the decision
    /// (up for a trigger, down for a gate). Shown as the effective factor
    /// when it differs from the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canary_edge_us: Option<u64>,
    #[serde(skip)]
    estimand: Estimand,
}

/// Latency gates (`vsBaseline` on a quantile under `gates`).
pub type QuantileGate = QuantileVsBaseline;

impl QuantileVsBaseline {
    /// Lean evidence (see [`StatTest::set_lean`](super::StatTest::set_lean)).
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

    /// Lean gate evidence (see
    /// [`StatTest::set_lean_gate`](super::StatTest::set_lean_gate)).
    pub fn set_lean_gate(&mut self, lean: bool) {
        self.lean = lean;
        self.lean_gate = lean;
    }

    /// Whether what it reads of latency can still change: while it is
    /// estimating its threshold `T` from the baseline.
    pub fn latency_reads_may_change(&self) -> bool {
        self.test.is_none()
    }

    /// Trigger: evidence that the canary's tail beyond `(1+x)·T` is heavier
    /// than the baseline's beyond `T`.
    pub fn relative_increase(
        signal: &str,
        quantile: f64,
        x: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_positive("relativeIncrease", x)?;
        Self::build(
            signal,
            quantile,
            1.0 + x,
            Direction::Increase,
            alpha,
            change,
        )
    }

    /// Gate `maxIncrease: x`: shown on evidence that the canary's tail beyond
    /// `(1+x)·T` is lighter than the baseline's beyond `T`.
    pub fn max_increase_gate(
        signal: &str,
        quantile: f64,
        x: f64,
        alpha: f64,
    ) -> Result<Self, StatsError> {
        check_positive("maxIncrease", x)?;
        Self::build(
            signal,
            quantile,
            1.0 + x,
            Direction::Decrease,
            alpha,
            ChangeDetection::OFF,
        )
    }

    /// How the test accounts for requests that are not independent
    /// (default [`Overdispersion::Auto`]; see [`super::dispersion`]).
    pub fn with_overdispersion(mut self, setting: Overdispersion) -> Self {
        self.dispersion = Some(setting);
        self
    }

    fn build(
        signal: &str,
        quantile: f64,
        factor: f64,
        direction: Direction,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_unit_open("quantile", quantile)?;
        check_unit_open("alpha", alpha)?;
        Ok(QuantileVsBaseline {
            signal: signal.to_string(),
            quantile,
            factor,
            direction,
            alpha,
            change,
            burn_in: 1000,
            threshold_us: None,
            baseline_hist: super::histogram::LatencyHistogram::new(),
            test: None,
            dispersion: Some(Overdispersion::Auto),
            span: Span::default(),
            crossed: false,
            lean: false,
            lean_gate: false,
            canary_edge_us: None,
            estimand: Estimand::default(),
        })
    }

    /// Fixes `T` in advance (e.g. the baseline's p95 before the rollout)
    /// instead of estimating it from the first `burn_in` baseline samples.
    pub fn with_threshold_ms(mut self, t_ms: f64) -> Self {
        self.threshold_us = Some(super::histogram::ms_to_us(t_ms));
        self
    }

    /// Baseline observations used to estimate `T` (default 1,000).
    pub fn with_burn_in(mut self, n: u64) -> Self {
        self.burn_in = n;
        self
    }

    /// The threshold in use, once fixed.
    pub fn threshold_ms(&self) -> Option<f64> {
        self.threshold_us.map(|t| t as f64 / 1000.0)
    }

    /// What [`QuantileVsBaseline::observe`] reads of `signal`: the whole
    /// baseline histogram while `T` is estimated, then only the counts above
    /// `T` (baseline) and `factor·T` (canary).
    pub fn latency_reads(&self, signal: &str) -> LatencyReads {
        if signal != self.signal {
            return LatencyReads::NOTHING;
        }
        match (self.threshold_us, &self.test) {
            (Some(t), Some(_)) => LatencyReads {
                baseline: HistogramReads::above(vec![t]),
                canary: HistogramReads::above(vec![self.canary_threshold_us(t)]),
            },
            _ => LatencyReads {
                baseline: HistogramReads::Everything,
                canary: HistogramReads::Nothing,
            },
        }
    }

    fn canary_threshold_us(&self, t: u64) -> u64 {
        (t as f64 * self.factor).round() as u64
    }

    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        let hc = snap.canary.latency.get(&self.signal);
        let hb = snap.baseline.latency.get(&self.signal);
        let tc = self.threshold_us.map(|t| self.canary_threshold_us(t));
        if let (Some(tc), Some(h)) = (tc, hc.filter(|h| h.total() > 0)) {
            self.canary_edge_us = Some(match self.direction {
                Direction::Increase => h.surely_above_edge_us(tc),
                Direction::Decrease => h.possibly_above_edge_us(tc),
            });
        }
        if let (Some(t), Some(tc), Some(test)) = (self.threshold_us, tc, self.test.as_mut()) {
            let (nc, nb) = (hc.map_or(0, |h| h.total()), hb.map_or(0, |h| h.total()));
            // Count so that bucketing never helps the decision being made.
            let (xc, xb) = match self.direction {
                Direction::Increase => (
                    hc.map_or(0, |h| h.count_surely_above_us(tc)),
                    hb.map_or(0, |h| h.count_possibly_above_us(t)),
                ),
                Direction::Decrease => (
                    hc.map_or(0, |h| h.count_possibly_above_us(tc)),
                    hb.map_or(0, |h| h.count_surely_above_us(t)),
                ),
            };

            test.update(nc, xc, nb, xb, snap.start, self.lean);
            self.span.cover(snap);
        } else if let Some(h) = hb {
            // Burn-in: estimate T from the baseline only; this interval's data
            // is not used by the test.
            if self.baseline_hist.merge(h).is_err() {
                self.baseline_hist = h.clone();
            }
            if self.threshold_us.is_none() && self.baseline_hist.total() >= self.burn_in {
                // The top of the bucket holding the quantile: bucket edges then
                // align with T, so the baseline's exceedance count is exact.
                self.threshold_us = self
                    .baseline_hist
                    .quantile_bounds_us(self.quantile)
                    .map(|(_, hi)| hi);
            }
        }
        if self.threshold_us.is_some() && self.test.is_none() {
            let design = match self.direction {
                Direction::Increase => std::f64::consts::LN_2,
                Direction::Decrease => -std::f64::consts::LN_2,
            };
            self.test = Some(TwoArmCount::new(
                self.direction,
                0.0,
                design,
                self.change,
                self.dispersion,
            ));
            self.baseline_hist = super::histogram::LatencyHistogram::new();
        }
        let running = if self.span.start.is_some() {
            Status::Monitoring
        } else {
            Status::Collecting
        };
        self.verdict(running)
    }

    pub fn current(&self, status_if_running: Status) -> Verdict {
        let mut me = self.clone();
        me.verdict(status_if_running)
    }

    fn verdict(&mut self, running: Status) -> Verdict {
        let boundary = log_boundary(self.alpha);
        let (log_e, max_log_e) = self
            .test
            .as_ref()
            .map_or((0.0, 0.0), |t| (t.log_e(), t.max_log_e()));
        self.crossed |= max_log_e >= boundary;
        let lean = self.lean_gate || (self.lean && !self.crossed);
        if !lean && let Some(t) = &mut self.test {
            t.catch_up();
        }
        let (estimate, interval) = self
            .test
            .as_ref()
            .filter(|_| !lean)
            .map_or((1.0, Interval::unbounded(1.0 - self.alpha)), |t| {
                t.ratio_interval(self.alpha)
            });
        let (baseline, canary) = self
            .test
            .as_ref()
            .map_or_else(Default::default, |t| t.counts());
        let estimand = self.estimand.text(self.threshold_us, || {
            format!(
                "ratio canary P({s} > {f}·T) / baseline P({s} > T), T = {t}ms (q{q})",
                s = self.signal,
                f = self.factor,
                t = self.threshold_us.map_or(0.0, |t| t as f64 / 1000.0),
                q = self.quantile
            )
        });
        let caveat = self.caveat();
        Verdict {
            status: if self.crossed {
                Status::Crossed
            } else {
                running
            },
            evidence: Evidence {
                estimand,
                baseline,
                canary,
                estimate: finite(estimate),
                interval,
                log_e_value: finite(log_e),
                log_boundary: boundary,
                window_start: self.span.start.unwrap_or(self.span.end),
                window_end: self.span.end,
                evidence_since: self
                    .test
                    .as_ref()
                    .filter(|_| !lean)
                    .and_then(|t| t.dominant_start())
                    .unwrap_or(self.span.end),
                caveat,
            },
        }
    }

    /// When the buckets move the canary's threshold by more than 2% from
    /// `factor·T`: the factor the test really applies, in words.
    fn caveat(&self) -> Option<std::sync::Arc<str>> {
        let (t, edge) = (self.threshold_us?, self.canary_edge_us?);
        let ms = |us: u64| us as f64 / 1000.0;
        if edge == u64::MAX {
            return Some(
                format!(
                    "{f}·T = {tc}ms is in the histogram's open top bucket: no canary value can be counted above it, so this test cannot fire; add buckets above {tc}ms",
                    f = self.factor,
                    tc = ms(self.canary_threshold_us(t)),
                )
                .into(),
            );
        }
        let effective = edge as f64 / t.max(1) as f64;
        // Log-linear buckets are at most 1/64 wide: never worth a caveat.
        if (effective / self.factor - 1.0).abs() <= 0.02 {
            return None;
        }
        let reads = match self.direction {
            Direction::Increase => "a looser test than written: it fires only on a larger increase",
            Direction::Decrease => "a stricter test than written",
        };
        Some(
            format!(
                "coarse buckets: the canary is counted above {e}ms = {effective:.2}·T, not {f}·T = {tc}ms ({reads})",
                e = ms(edge),
                f = self.factor,
                tc = ms(self.canary_threshold_us(t)),
            )
            .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::snap;

    #[test]
    fn latency_vs_baseline_freezes_t_after_burn_in_then_compares_tails() {
        let mut t = QuantileVsBaseline::relative_increase(
            "latency_ms",
            0.95,
            0.1,
            0.01,
            ChangeDetection::OFF,
        )
        .unwrap()
        .with_burn_in(10_000);
        // Baseline: 4% at 600 ms, rest at 50 ms → p95 in the 50 ms bucket.
        let v = t.observe(&snap(0, 1000, 19_000, 0.04, 0.04));
        assert_eq!(v.status, Status::Collecting);
        let th = t.threshold_ms().unwrap();
        assert!((th - 50.0).abs() < 1.0, "{th}");
        // Canary: 20% of requests at 600 ms vs the baseline's 4% → fires.
        let fired = (1..100).any(|i| t.observe(&snap(i, 1000, 19_000, 0.2, 0.04)).crossed());
        assert!(fired);
        let mut gate = QuantileVsBaseline::max_increase_gate("latency_ms", 0.95, 0.1, 0.05)
            .unwrap()
            .with_threshold_ms(100.0);
        let shown = (0..100).any(|i| gate.observe(&snap(i, 1000, 19_000, 0.02, 0.04)).crossed());
        assert!(shown);
    }

    /// One interval on Prometheus buckets `bounds`: `n` values per arm, 4%
    /// of the baseline's and `tail` of the canary's at 600 ms, the rest at
    /// 40 ms.
    fn on_buckets(i: u64, bounds: &[f64], n: u64, tail: f64) -> IntervalSnapshot {
        let mut s = IntervalSnapshot::new(
            crate::time::Timestamp::from_millis(i * 60_000),
            crate::time::Timestamp::from_millis((i + 1) * 60_000),
        );
        for (arm, share) in [(&mut s.canary, tail), (&mut s.baseline, 0.04)] {
            let mut h =
                crate::stats::histogram::LatencyHistogram::with_bucket_bounds_ms(bounds).unwrap();
            let slow = (n as f64 * share).round() as u64;
            for k in 0..n {
                h.record_ms(if k < slow { 600.0 } else { 40.0 });
            }
            arm.latency.insert("latency_ms".to_string(), h);
        }
        s
    }

    #[test]
    fn coarse_buckets_say_what_factor_the_test_really_applies() {
        let test = || {
            QuantileVsBaseline::relative_increase(
                "latency_ms",
                0.95,
                0.1,
                0.01,
                ChangeDetection::OFF,
            )
            .unwrap()
            .with_threshold_ms(250.0)
        };
        // 1.1·250 ms falls in the (250, 500] bucket: the canary is counted
        // above 500 ms, a factor of 2.
        let mut coarse = test();
        let v = coarse.observe(&on_buckets(
            0,
            &[50.0, 100.0, 250.0, 500.0, 1000.0],
            1000,
            0.04,
        ));
        let caveat = v.evidence.caveat.as_deref().unwrap_or_default();
        assert!(
            caveat.contains("above 500ms = 2.00·T, not 1.1·T = 275ms"),
            "{caveat}"
        );
        // Above the last finite bound nothing can be counted.
        let mut open = test();
        let v = open.observe(&on_buckets(0, &[50.0, 100.0, 250.0], 1000, 0.04));
        let caveat = v.evidence.caveat.as_deref().unwrap_or_default();
        assert!(caveat.contains("cannot fire"), "{caveat}");
        // A bound at 1.1·T: no caveat; nor on the fine log-linear layout.
        let mut exact = test();
        let v = exact.observe(&on_buckets(
            0,
            &[50.0, 100.0, 250.0, 275.0, 1000.0],
            1000,
            0.04,
        ));
        assert_eq!(v.evidence.caveat, None);
        let mut fine = test();
        assert_eq!(
            fine.observe(&snap(0, 1000, 19_000, 0.04, 0.04))
                .evidence
                .caveat,
            None
        );
        // A gate rounds the other way: stricter than written.
        let mut gate = QuantileVsBaseline::max_increase_gate("latency_ms", 0.95, 0.1, 0.05)
            .unwrap()
            .with_threshold_ms(250.0);
        let v = gate.observe(&on_buckets(
            0,
            &[50.0, 100.0, 250.0, 500.0, 1000.0],
            1000,
            0.04,
        ));
        let caveat = v.evidence.caveat.as_deref().unwrap_or_default();
        assert!(
            caveat.contains("1.00·T") && caveat.contains("stricter"),
            "{caveat}"
        );
    }
}

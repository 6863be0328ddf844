//! **Canary-alone thresholds** (`threshold: {above}` without `for` on a
//! ratio, and on a latency quantile through `P(latency > T) ≤ 1 − q ⇔
//! q-quantile ≤ T`): a grid mixture of Bernoulli likelihood ratios against
//! the threshold (`OneSampleRate`). Each interval's factor has expectation
//! ≤ 1 whenever the canary's rate is at most the threshold *in that
//! interval*, so diurnal swings below the threshold cannot fire it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dispersion::{Dispersion, Overdispersion};
use super::evidence::{
    ArmCounts, Estimand, Evidence, Interval, Span, Status, Verdict, finite, is_false,
};
use super::histogram::{HistogramReads, LatencyReads};
use super::hypothesis::{design_grid, log_boundary};
use super::mixture::{
    ChangeDetection, LogLikCache, RestartMixture, bernoulli_log_lik, bisect, log_sum_exp, logit,
};
use super::snapshot::IntervalSnapshot;
use super::{StatsError, check_positive, check_unit_open};
use crate::time::Timestamp;

/// Canary-alone test of `H0: rate ≤ p0` with a grid mixture of Bernoulli
/// likelihood ratios (alternatives at odds `p0`'s odds × e^η).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OneSampleRate {
    null_logit: f64,
    etas: Vec<f64>,
    mixture: RestartMixture,
    counts: ArmCounts,
    /// Counts per restart slot (since the slot began). A Bernoulli
    /// likelihood depends on the data only through them, so the mixture can
    /// be re-evaluated at any null to give the bound it implies.
    #[serde(default)]
    segments: Vec<ArmCounts>,
    scratch: Vec<f64>,
    #[serde(skip)]
    lik: LogLikCache,
    /// Overdispersion: each interval's likelihood is tempered by the
    /// predictable factor `φ` (its counts enter as `x/φ` of `n/φ`; see
    /// [`super::dispersion`]). Absent in checkpoints written before it
    /// existed: no inflation, as then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispersion: Option<Dispersion>,
    /// With `dispersion`: per restart slot, the tempered `(events,
    /// exposure)` the likelihood depends on (`segments` keeps the raw
    /// counts the estimate reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    effective: Vec<[f64; 2]>,
}

impl OneSampleRate {
    fn new(p0: f64, change: ChangeDetection, overdispersion: Overdispersion) -> Self {
        let p1 = (2.0 * p0).min((1.0 + p0) / 2.0);
        let etas = design_grid(logit(p1) - logit(p0));
        OneSampleRate {
            null_logit: logit(p0),
            mixture: RestartMixture::new(etas.len(), change),
            scratch: vec![0.0; etas.len()],
            etas,
            counts: ArmCounts::default(),
            segments: Vec::new(),
            lik: LogLikCache::default(),
            dispersion: Some(Dispersion::new(overdispersion).with_log_odds_scale(p0 * (1.0 - p0))),
            effective: Vec::new(),
        }
    }

    fn set_overdispersion(&mut self, setting: Overdispersion) {
        let p0 = 1.0 / (1.0 + (-self.null_logit).exp());
        self.dispersion = Some(Dispersion::new(setting).with_log_odds_scale(p0 * (1.0 - p0)));
    }

    fn update(&mut self, exposure: u64, events: u64, at: Timestamp) {
        let events = events.min(exposure);
        let (x, n) = (events as f64, exposure as f64);
        let p0 = 1.0 / (1.0 + (-self.null_logit).exp());
        let temper = match &self.dispersion {
            Some(d) if n > 0.0 => d.factor(p0 * (1.0 - p0) / n),
            _ => 1.0,
        };
        if n > 0.0 {
            // The canary's rate so far (predictable), for the binomial
            // variance of this interval's rate.
            let before = &self.counts;
            let p = (before.events as f64 + 0.5) / (before.exposure as f64 + 1.0);
            if let Some(d) = &mut self.dispersion {
                d.record(x / n, p * (1.0 - p) / n);
            }
        }
        self.counts.add(exposure, events);
        let (x_eff, n_eff) = (x / temper, n / temper);
        self.lik
            .log_lrs(x_eff, n_eff, self.null_logit, &self.etas, &mut self.scratch);
        self.mixture.update(&self.scratch, at);
        while self.segments.len() < self.mixture.slot_count() {
            self.segments.push(ArmCounts::default());
        }
        for seg in &mut self.segments {
            seg.add(exposure, events);
        }
        if self.dispersion.is_some() {
            self.effective.resize(self.mixture.slot_count(), [0.0; 2]);
            for seg in &mut self.effective {
                seg[0] += x_eff;
                seg[1] += n_eff;
            }
        }
    }

    /// Restart slot `k`'s `(events, exposure)`, as its likelihood sees them.
    fn segment_counts(&self, k: usize) -> (f64, f64) {
        if self.dispersion.is_some() {
            self.effective.get(k).map_or((0.0, 0.0), |&[x, n]| (x, n))
        } else {
            self.segments
                .get(k)
                .map_or((0.0, 0.0), |s| (s.events as f64, s.exposure as f64))
        }
    }

    /// `ln Z` of the same mixture for the null "rate ≤ sigmoid(l)" (the
    /// alternatives keep their offsets from the null).
    fn log_e_at(&self, l: f64) -> f64 {
        let (slot_w, alt_w) = self.mixture.log_weights();
        let terms = slot_w.iter().enumerate().flat_map(|(k, &sw)| {
            let (x, n) = self.segment_counts(k);
            let l0 = bernoulli_log_lik(x, n, l);
            self.etas
                .iter()
                .zip(alt_w)
                .map(move |(&eta, &aw)| sw + aw + bernoulli_log_lik(x, n, l + eta) - l0)
        });
        log_sum_exp(terms)
    }

    /// The rate's anytime-valid lower bound that this test's own mixture
    /// implies: the smallest null rate its mixture no longer rejects. Once
    /// the test has fired, it lies above the threshold.
    fn lower_bound(&self, alpha: f64) -> Option<f64> {
        if self.segments.iter().all(|s| s.exposure == 0) {
            return None;
        }
        let cut = (1.0 / alpha).ln();
        let (lo, hi) = (logit(1e-12), logit(1.0 - 1e-12));
        if self.log_e_at(lo) < cut {
            return Some(0.0);
        }
        let l = bisect(lo, hi, |l| self.log_e_at(l) < cut);
        Some(1.0 / (1.0 + (-l).exp()))
    }

    /// A canary-alone test's verdict: crossed once `ln Z` ever reached
    /// `ln(1/alpha)` (latched in `crossed`), with its evidence.
    #[allow(clippy::too_many_arguments)]
    fn verdict(
        &self,
        alpha: f64,
        crossed: &mut bool,
        running: Status,
        estimand: Arc<str>,
        span: &Span,
        lean: bool,
    ) -> Verdict {
        let boundary = log_boundary(alpha);
        *crossed |= self.mixture.max_log_e() >= boundary;
        let (estimate, interval) = if lean && !*crossed {
            let ArmCounts {
                exposure: n,
                events: x,
            } = self.counts;
            let est = if n == 0 { 0.0 } else { x as f64 / n as f64 };
            (est, Interval::unbounded(1.0 - alpha))
        } else {
            self.interval(alpha)
        };
        Verdict {
            status: if *crossed { Status::Crossed } else { running },
            evidence: Evidence {
                estimand,
                baseline: ArmCounts::default(),
                canary: self.counts,
                estimate: finite(estimate),
                interval,
                log_e_value: finite(self.mixture.log_e()),
                log_boundary: boundary,
                window_start: span.start.unwrap_or(span.end),
                window_end: span.end,
                evidence_since: if lean && !*crossed {
                    span.end
                } else {
                    self.mixture.dominant_start().unwrap_or(span.end)
                },
                caveat: None,
            },
        }
    }

    /// The estimate with the one-sided bound the test implies (its
    /// direction: the rate is above the threshold when it fires).
    fn interval(&self, alpha: f64) -> (f64, Interval) {
        // The rate of the segment carrying the evidence (the whole window
        // unless a restart point after a late change dominates), so that the
        // estimate and the bound describe the same data.
        let ArmCounts {
            exposure: n,
            events: x,
        } = self
            .segments
            .get(self.mixture.dominant_slot())
            .copied()
            .unwrap_or(self.counts);
        let est = if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let interval = match self.lower_bound(alpha) {
            Some(lower) => Interval {
                lower: Some(finite(lower)),
                upper: None,
                level: 1.0 - alpha,
            },
            None => Interval::unbounded(1.0 - alpha),
        };
        (est, interval)
    }
}

/// `threshold: {above: p0}` on a ratio metric: evidence that the canary's
/// rate is above `p0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioThreshold {
    numerator: String,
    denominator: String,
    above: f64,
    alpha: f64,
    test: OneSampleRate,
    span: Span,
    crossed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    #[serde(skip)]
    estimand: Estimand,
}

impl RatioThreshold {
    /// Lean evidence (see [`StatTest::set_lean`](super::StatTest::set_lean)).
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

    pub fn new(
        numerator: &str,
        denominator: &str,
        above: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_unit_open("threshold.above", above)?;
        check_unit_open("alpha", alpha)?;
        Ok(RatioThreshold {
            numerator: numerator.to_string(),
            denominator: denominator.to_string(),
            above,
            alpha,
            test: OneSampleRate::new(above, change, Overdispersion::Auto),
            span: Span::default(),
            crossed: false,
            lean: false,
            estimand: Estimand::default(),
        })
    }

    /// How the test accounts for requests that are not independent
    /// (default [`Overdispersion::Auto`]; see [`super::dispersion`]).
    pub fn with_overdispersion(mut self, setting: Overdispersion) -> Self {
        self.test.set_overdispersion(setting);
        self
    }

    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        self.test.update(
            snap.canary.counter(&self.denominator),
            snap.canary.counter(&self.numerator),
            snap.start,
        );
        self.span.cover(snap);
        self.verdict(Status::Monitoring)
    }

    pub fn current(&self, status_if_running: Status) -> Verdict {
        let mut me = self.clone();
        me.verdict(status_if_running)
    }

    fn verdict(&mut self, running: Status) -> Verdict {
        let estimand = self.estimand.text(None, || {
            format!(
                "canary rate of {}/{} (threshold {})",
                self.numerator, self.denominator, self.above
            )
        });
        self.test.verdict(
            self.alpha,
            &mut self.crossed,
            running,
            estimand,
            &self.span,
            self.lean,
        )
    }
}

/// `threshold: {above: T}` on a latency quantile `q` (without `for`):
/// evidence that the canary's `P(latency > T) > 1 − q`. Exceedances are
/// counted only when the whole bucket lies above `T` (least favourable to
/// firing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantileThreshold {
    signal: String,
    quantile: f64,
    threshold_us: u64,
    alpha: f64,
    test: OneSampleRate,
    span: Span,
    crossed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    #[serde(skip)]
    estimand: Estimand,
}

impl QuantileThreshold {
    /// Lean evidence (see [`StatTest::set_lean`](super::StatTest::set_lean)).
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

    pub fn new(
        signal: &str,
        quantile: f64,
        above_ms: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_unit_open("quantile", quantile)?;
        check_positive("threshold.above", above_ms)?;
        check_unit_open("alpha", alpha)?;
        Ok(QuantileThreshold {
            signal: signal.to_string(),
            quantile,
            threshold_us: super::histogram::ms_to_us(above_ms),
            alpha,
            test: OneSampleRate::new(1.0 - quantile, change, Overdispersion::Auto),
            span: Span::default(),
            crossed: false,
            lean: false,
            estimand: Estimand::default(),
        })
    }

    /// How the test accounts for requests that are not independent
    /// (default [`Overdispersion::Auto`]; see [`super::dispersion`]).
    pub fn with_overdispersion(mut self, setting: Overdispersion) -> Self {
        self.test.set_overdispersion(setting);
        self
    }

    /// What [`QuantileThreshold::observe`] reads of `signal`.
    pub fn latency_reads(&self, signal: &str) -> LatencyReads {
        if signal != self.signal {
            return LatencyReads::NOTHING;
        }
        LatencyReads {
            baseline: HistogramReads::Nothing,
            canary: HistogramReads::above(vec![self.threshold_us]),
        }
    }

    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        let (n, x) = snap
            .canary
            .latency
            .get(&self.signal)
            .map(|h| (h.total(), h.count_surely_above_us(self.threshold_us)))
            .unwrap_or((0, 0));
        self.test.update(n, x, snap.start);
        self.span.cover(snap);
        self.verdict(Status::Monitoring)
    }

    pub fn current(&self, status_if_running: Status) -> Verdict {
        let mut me = self.clone();
        me.verdict(status_if_running)
    }

    fn verdict(&mut self, running: Status) -> Verdict {
        let estimand = self.estimand.text(None, || {
            format!(
                "canary P({} > {}ms), null at most {}",
                self.signal,
                self.threshold_us as f64 / 1000.0,
                1.0 - self.quantile
            )
        });
        self.test.verdict(
            self.alpha,
            &mut self.crossed,
            running,
            estimand,
            &self.span,
            self.lean,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::snap;

    #[test]
    fn a_rate_thresholds_bound_reads_the_way_its_decision_went() {
        // Healthy for two hours, then above the threshold: the whole-window
        // rate stays below it, but the restart segment that fires does not,
        // and the bound the test reports says so.
        let c = ChangeDetection::over_horizon(480, 47);
        let mut t = RatioThreshold::new("errors", "requests", 0.005, 0.01, c).unwrap();
        let mut fired = None;
        for i in 0..480 {
            let p = if i < 240 { 0.002 } else { 0.009 };
            let v = t.observe(&snap(i, 1000, 0, p, 0.0));
            let lower = v.evidence.interval.lower;
            if v.crossed() {
                assert!(lower.is_some_and(|l| l > 0.005), "{i}: {:?}", v.evidence);
                fired = Some(i);
                break;
            }
            assert!(
                lower.is_none_or(|l| l <= 0.005 + 1e-12),
                "{i}: {:?}",
                v.evidence
            );
        }
        assert!(fired.is_some_and(|i| i > 240), "{fired:?}");
    }
}

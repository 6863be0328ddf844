//! Mean metrics (`kind: mean`): the mean of an observed value per request
//! (an ETA's absolute error, a score), compared with the baseline's mean or
//! with a fixed bound.
//!
//! The test is the normal-mixture mSPRT on information time (statistics.md
//! §2.2), stratified per interval exactly like the ratio normal test: each
//! interval contributes the contrast `d = s·(m_c − f·m_b)` (or `s·(m_c − T)`
//! for a bound) with variance `v = σ²_c/n_c + f²·σ²_b/n_b`, and the mixture
//! over `λ ≥ 0` of `exp(λ Σ d/v − λ² Σ 1/v / 2)` is an e-process whenever the
//! contrast's mean is at most 0 in every interval. Because each interval is a
//! concurrent comparison, a mean that moves with the time of day moves both
//! arms and does not bias it. Validity is asymptotic (plug-in variances), so
//! the test waits for a burn-in of observations per arm and skips intervals
//! with fewer than `MIN_PER_INTERVAL` observations in an arm. The design
//! effect (twice the tolerance) is fixed from the burn-in data, before the
//! test starts, so the alternatives are predictable.
//!
//! Values in a histogram's open top bucket (Prometheus' `+Inf`) are known
//! only to be at least its lower bound. Counted there, they understate
//! their arm's mean, which is conservative on one side: the canary's when
//! the test seeks evidence that the canary is higher, the baseline's when
//! it seeks evidence that the canary is lower. On the other side they would
//! manufacture evidence (a baseline understated makes a canary look worse;
//! a canary understated makes it look better, and a gate shown), so the
//! first such value stops the test for good: from that interval on it
//! gains no evidence and reads none (a stopped e-process is still one, and
//! reading less is always allowed), and the evidence says why.

use serde::{Deserialize, Serialize};

use super::dispersion::{Dispersion, Overdispersion};
use super::evidence::{ArmCounts, Evidence, Interval, Status, Verdict, finite, is_false};
use super::histogram::{LatencyReads, Moments};
use super::hypothesis::{Direction, GateKind, design_grid};
use super::mixture::{ChangeDetection, RestartMixture, normal_mixture_bound, normal_mixture_rho};
use super::normal_contrast::{one_sided_bound, sync_segments};
use super::snapshot::IntervalSnapshot;
use super::{StatsError, check_positive, check_unit_open};
use crate::time::Timestamp;

/// Values per arm a batch needs before it contributes a contrast: the
/// normal approximation of a mean of fewer skewed values is too rough (an
/// A/A test with 5 lognormal values a minute fired 15% of the time at 5%).
pub const BATCH_MIN: u64 = 50;

/// Running sums of the intervals not yet used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Batch {
    n: u64,
    sum: f64,
    sum_sq: f64,
}

impl Batch {
    fn add(&mut self, m: Moments) {
        let n = m.n as f64;
        self.n = self.n.saturating_add(m.n);
        self.sum += n * m.mean;
        self.sum_sq += n * (m.variance + m.mean * m.mean);
    }

    fn moments(&self) -> Option<Moments> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            let mean = self.sum / n;
            Moments {
                n: self.n,
                mean,
                variance: (self.sum_sq / n - mean * mean).max(0.0),
                ..Moments::default()
            }
        })
    }
}

/// What the canary's mean is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "against")]
pub enum MeanNull {
    /// Evidence that `mean_c / mean_b` is above (Increase) or below
    /// (Decrease) `null_ratio`; the design is `design_ratio`.
    Baseline { null_ratio: f64, design_ratio: f64 },
    /// Evidence that `mean_c` is above (Increase) or below (Decrease) `bound`.
    Bound { bound: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanTest {
    signal: String,
    direction: Direction,
    null: MeanNull,
    alpha: f64,
    change: ChangeDetection,
    burn_in: u64,
    /// Per-arm totals (n, Σx) for estimates and evidence.
    canary_n: u64,
    canary_sum: f64,
    /// Σ n·variance and Σ n of the canary's batches fed to the mixture.
    canary_var_sum: f64,
    canary_var_n: u64,
    batch_canary: Batch,
    batch_baseline: Batch,
    baseline_n: u64,
    baseline_sum: f64,
    /// Set when the burn-in ends: the design contrast and the mixture.
    design: Option<f64>,
    lambdas: Vec<f64>,
    mixture: Option<RestartMixture>,
    s: f64,
    v: f64,
    scratch: Vec<f64>,
    span_start: Option<Timestamp>,
    span_end: Timestamp,
    crossed: bool,
    /// Σ n·variance and Σ n of the baseline's batches fed to the mixture.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    baseline_var_sum: f64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    baseline_var_n: u64,
    /// Set by tests built since each arm's variance comes from its own
    /// earlier batches (a canary whose spread grows is not tested against
    /// the baseline's), and the batch contrasts carry the predictable
    /// overdispersion factor of [`super::dispersion`]. Checkpoints written
    /// before lack it and keep the pooled current-batch variance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispersion: Option<Dispersion>,
    /// With `dispersion`: per restart slot, `(Σ d/v, Σ 1/v)` since it
    /// began, so the interval reported is the bound the mixture itself
    /// implies (it reads the way the decision went).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    segments: Vec<(f64, f64)>,
    /// Set by the first interval whose values above a histogram's open top
    /// bucket would make evidence on this test's side (module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unbounded: Option<Unbounded>,
    /// Lean evidence (see [`StatTest::set_lean`](super::StatTest::set_lean)):
    /// no interval until crossed, and none at all for a gate.
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    lean_gate: bool,
}

/// Why a mean test stopped: values of `arm` above the open top bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Unbounded {
    arm: String,
    values: u64,
    above_ms: f64,
    since: Timestamp,
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

fn is_zero_u64(x: &u64) -> bool {
    *x == 0
}

impl MeanTest {
    fn build(
        signal: &str,
        direction: Direction,
        null: MeanNull,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_unit_open("alpha", alpha)?;
        if let MeanNull::Baseline {
            null_ratio,
            design_ratio,
        } = null
        {
            check_positive("null ratio", null_ratio)?;
            check_positive("design ratio", design_ratio)?;
        }
        Ok(MeanTest {
            signal: signal.to_string(),
            direction,
            null,
            alpha,
            change,
            burn_in: 200,
            canary_n: 0,
            canary_sum: 0.0,
            canary_var_sum: 0.0,
            canary_var_n: 0,
            batch_canary: Batch::default(),
            batch_baseline: Batch::default(),
            baseline_n: 0,
            baseline_sum: 0.0,
            design: None,
            lambdas: Vec::new(),
            mixture: None,
            s: 0.0,
            v: 0.0,
            scratch: Vec::new(),
            baseline_var_sum: 0.0,
            baseline_var_n: 0,
            dispersion: Some(Dispersion::new(Overdispersion::Auto)),
            segments: Vec::new(),
            unbounded: None,
            lean: false,
            lean_gate: false,
            span_start: None,
            span_end: Timestamp::EPOCH,
            crossed: false,
        })
    }

    /// `vsBaseline: {relativeIncrease: x}` (larger is worse).
    pub fn relative_increase(
        signal: &str,
        x: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_positive("relativeIncrease", x)?;
        let null = MeanNull::Baseline {
            null_ratio: 1.0 + x,
            design_ratio: 1.0 + 2.0 * x,
        };
        Self::build(signal, Direction::Increase, null, alpha, change)
    }

    /// `vsBaseline: {relativeDrop: x}` (smaller is worse).
    pub fn relative_drop(
        signal: &str,
        x: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_unit_open("relativeDrop", x)?;
        let design = (1.0 - 2.0 * x).max((1.0 - x) / 2.0);
        let null = MeanNull::Baseline {
            null_ratio: 1.0 - x,
            design_ratio: design,
        };
        Self::build(signal, Direction::Decrease, null, alpha, change)
    }

    /// `threshold: {above: b}` (Increase) or `{below: b}` (Decrease) on the
    /// canary's mean.
    pub fn bound(
        signal: &str,
        direction: Direction,
        bound: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        if !bound.is_finite() {
            return Err(StatsError::InvalidParameter {
                name: "threshold",
                value: bound.to_string(),
                expected: "a finite number",
            });
        }
        Self::build(signal, direction, MeanNull::Bound { bound }, alpha, change)
    }

    /// A mean gate (no restarts): `minGain`, `maxIncrease`, `maxDrop`.
    pub fn gate(signal: &str, kind: GateKind, alpha: f64) -> Result<Self, StatsError> {
        let (direction, null_ratio, design_ratio) = kind.ratio_null()?;
        let null = MeanNull::Baseline {
            null_ratio,
            design_ratio,
        };
        Self::build(signal, direction, null, alpha, ChangeDetection::OFF)
    }

    /// Observations per arm before the test starts (default 200).
    pub fn with_burn_in(mut self, n: u64) -> Self {
        self.burn_in = n;
        self
    }

    /// How the test accounts for values that are not independent (default
    /// [`Overdispersion::Auto`]; see [`super::dispersion`]).
    pub fn with_overdispersion(mut self, setting: Overdispersion) -> Self {
        self.dispersion = Some(Dispersion::new(setting));
        self
    }

    fn sign(&self) -> f64 {
        match self.direction {
            Direction::Increase => 1.0,
            Direction::Decrease => -1.0,
        }
    }

    fn baseline_mean(&self) -> f64 {
        if self.baseline_n == 0 {
            0.0
        } else {
            self.baseline_sum / self.baseline_n as f64
        }
    }

    fn canary_mean(&self) -> f64 {
        if self.canary_n == 0 {
            0.0
        } else {
            self.canary_sum / self.canary_n as f64
        }
    }

    fn compares_baseline(&self) -> bool {
        matches!(self.null, MeanNull::Baseline { .. })
    }

    /// What [`MeanTest::observe`] reads of the latency `signal`: both arms'
    /// moments, so everything.
    pub fn latency_reads(&self, signal: &str) -> LatencyReads {
        if signal == self.signal {
            LatencyReads::EVERYTHING
        } else {
            LatencyReads::NOTHING
        }
    }

    /// Feeds one interval (already admitted past warm-up).
    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        let mc = snap
            .canary
            .latency
            .get(&self.signal)
            .and_then(|h| h.moments_ms());
        let mb = snap
            .baseline
            .latency
            .get(&self.signal)
            .and_then(|h| h.moments_ms());
        self.span_start.get_or_insert(snap.start);
        self.span_end = self.span_end.max(snap.end);
        if self.unbounded.is_none() {
            self.unbounded = self.unbounded_side(mc, mb, snap.start);
        }
        // The contrast of this interval uses this interval's data only; the
        // design was fixed from earlier intervals.
        if self.mixture.is_some() && self.unbounded.is_none() {
            self.update(mc, mb, snap.start);
        }
        if let Some(m) = mc {
            self.canary_n = self.canary_n.saturating_add(m.n);
            self.canary_sum += m.mean * m.n as f64;
        }
        if let Some(m) = mb {
            self.baseline_n = self.baseline_n.saturating_add(m.n);
            self.baseline_sum += m.mean * m.n as f64;
        }
        self.maybe_start();
        self.verdict(Status::Monitoring)
    }

    /// The verdict for an interval excluded by warm-up.
    pub fn excluded(&self) -> Verdict {
        self.clone().verdict(Status::Excluded)
    }

    /// The arm whose values above the open top bucket would make evidence
    /// on this test's side, if it has any (module docs).
    fn unbounded_side(
        &self,
        mc: Option<Moments>,
        mb: Option<Moments>,
        at: Timestamp,
    ) -> Option<Unbounded> {
        let (arm, m) = match self.direction {
            // Evidence that the canary is higher: an understated baseline.
            Direction::Increase if self.compares_baseline() => ("baseline", mb?),
            Direction::Increase => return None,
            // Evidence that the canary is lower: an understated canary.
            Direction::Decrease => ("canary", mc?),
        };
        (m.above_top > 0).then(|| Unbounded {
            arm: arm.to_string(),
            values: m.above_top,
            above_ms: m.top_ms,
            since: at,
        })
    }

    fn maybe_start(&mut self) {
        if self.mixture.is_some() {
            return;
        }
        let ready = self.canary_n >= self.burn_in
            && (!self.compares_baseline() || self.baseline_n >= self.burn_in);
        if !ready {
            return;
        }
        let scale = match self.null {
            MeanNull::Baseline {
                null_ratio,
                design_ratio,
            } => (design_ratio - null_ratio).abs() * self.baseline_mean().abs(),
            // Against a bound, design for a shift of 10% of the bound (or of
            // the canary's mean when the bound is 0).
            MeanNull::Bound { bound } => 0.1 * bound.abs().max(self.canary_mean().abs()),
        };
        let design = scale.max(1e-9);
        self.design = Some(design);
        self.lambdas = design_grid(design);
        self.scratch = vec![0.0; self.lambdas.len()];
        self.mixture = Some(RestartMixture::new(self.lambdas.len(), self.change));
    }

    fn update(&mut self, mc: Option<Moments>, mb: Option<Moments>, start: Timestamp) {
        if let Some(c) = mc {
            self.batch_canary.add(c);
        }
        if let Some(b) = mb {
            self.batch_baseline.add(b);
        }
        let contrast = self.take_batch();
        let Some(mixture) = self.mixture.as_mut() else {
            return;
        };
        let (mut si, mut vi) = (0.0, 0.0);
        match contrast {
            Some((d, var)) => {
                (si, vi) = (d / var, 1.0 / var);
                self.s += si;
                self.v += vi;
                for (out, &lam) in self.scratch.iter_mut().zip(&self.lambdas) {
                    *out = lam * si - 0.5 * lam * lam * vi;
                }
            }
            // No complete batch this interval: the mixture still ticks, so
            // its restart points stay on schedule.
            None => self.scratch.iter_mut().for_each(|l| *l = 0.0),
        }
        mixture.update(&self.scratch, start);
        if self.dispersion.is_some() {
            sync_segments(&mut self.segments, mixture, si, vi);
        }
    }

    /// The contrast and its variance of a complete batch (each arm at least
    /// [`BATCH_MIN`] values), which then starts over. When a batch is
    /// complete depends on counts only, never on values, so the batching is
    /// predictable.
    fn take_batch(&mut self) -> Option<(f64, f64)> {
        let (c, b) = (self.batch_canary.moments()?, self.batch_baseline.moments());
        let contrast = match self.null {
            MeanNull::Baseline { null_ratio: f, .. } => {
                let b = b?;
                if c.n < BATCH_MIN || b.n < BATCH_MIN {
                    return None;
                }
                // Weights must not follow the canary's own noise: with a
                // per-arm variance, a batch whose canary mean came out high
                // (skewed values) also gets a high variance and a low weight,
                // and the weighted contrast is biased towards the null, a
                // large loss of power. The within-arm pooled variance is
                // dominated by the larger arm; scaled by the null ratio it is
                // the canary's variance for a scale family at the null.
                let (nc, nb) = (c.n as f64, b.n as f64);
                let d = self.sign() * (c.mean - f * b.mean);
                let earlier = |sum: f64, n: u64, now: f64| {
                    if n > 0 { sum / n as f64 } else { now }
                };
                let var = if self.dispersion.is_some() && self.canary_var_n > 0 {
                    // Each arm's own spread, from its earlier batches:
                    // predictable, and a canary whose spread grows at an
                    // equal mean is not held to the baseline's.
                    let vc = earlier(self.canary_var_sum, self.canary_var_n, c.variance);
                    let vb = earlier(self.baseline_var_sum, self.baseline_var_n, b.variance);
                    vc / nc + f * f * vb / nb
                } else {
                    let pooled = (nc * c.variance + nb * b.variance) / (nc + nb);
                    pooled * f.max(1.0).powi(2) * (1.0 / nc + 1.0 / nb)
                }
                .max(1e-12);
                self.baseline_var_sum += b.variance * nb;
                self.baseline_var_n = self.baseline_var_n.saturating_add(b.n);
                (d, var)
            }
            MeanNull::Bound { bound } => {
                if c.n < BATCH_MIN {
                    return None;
                }
                // The same bias, with no baseline to lean on: the variance
                // comes from earlier batches (predictable), which assumes
                // the spread is roughly stable within the rollout.
                let unit = if self.canary_var_n > 0 {
                    self.canary_var_sum / self.canary_var_n as f64
                } else {
                    c.variance
                };
                (
                    self.sign() * (c.mean - bound),
                    (unit / c.n as f64).max(1e-12),
                )
            }
        };
        self.canary_var_sum += c.variance * c.n as f64;
        self.canary_var_n = self.canary_var_n.saturating_add(c.n);
        self.batch_canary = Batch::default();
        self.batch_baseline = Batch::default();
        let (d, var) = contrast;
        Some(match self.dispersion.as_mut() {
            Some(dispersion) => {
                let factor = dispersion.factor(var);
                dispersion.record(d, var);
                (d, var * factor)
            }
            None => (d, var),
        })
    }

    fn verdict(&mut self, running: Status) -> Verdict {
        let boundary = (1.0 / self.alpha).ln();
        let (log_e, max_log_e) = self
            .mixture
            .as_ref()
            .map_or((0.0, 0.0), |m| (m.log_e(), m.max_log_e()));
        self.crossed |= max_log_e >= boundary;
        // Stopped: what it had reached still counts for `crossed` (reached
        // before the stop), but it reads no evidence now.
        let log_e = if self.unbounded.is_some() { 0.0 } else { log_e };
        let status = if self.crossed {
            Status::Crossed
        } else if self.mixture.is_some() {
            running
        } else if running == Status::Excluded {
            Status::Excluded
        } else {
            Status::Collecting
        };
        let (estimand, estimate, interval) = self.estimate();
        Verdict {
            status,
            evidence: Evidence {
                estimand: estimand.into(),
                baseline: ArmCounts {
                    exposure: self.baseline_n,
                    events: 0,
                },
                canary: ArmCounts {
                    exposure: self.canary_n,
                    events: 0,
                },
                estimate: finite(estimate),
                interval,
                log_e_value: finite(log_e),
                log_boundary: boundary,
                window_start: self.span_start.unwrap_or(self.span_end),
                window_end: self.span_end,
                evidence_since: self
                    .mixture
                    .as_ref()
                    .and_then(RestartMixture::dominant_start)
                    .or(self.span_start)
                    .unwrap_or(self.span_end),
                caveat: self.unbounded.as_ref().map(|u| {
                    format!(
                        "{n} {arm} value(s) above the histogram's largest bucket bound ({b}ms): the {arm}'s mean is unbounded there, so this test stopped and reads no evidence; add buckets above {b}ms or use a quantile",
                        n = u.values,
                        arm = u.arm,
                        b = u.above_ms,
                    )
                    .into()
                }),
            },
        }
    }

    /// The estimate and its anytime-valid interval: the ratio of means
    /// against the baseline, or the canary's mean against a bound.
    /// The bound on the contrast its own mixture implies, on the side it
    /// tests (tests built since `segments` exist).
    fn mixture_bound(&self) -> Option<f64> {
        let (mixture, design) = (self.mixture.as_ref()?, self.design?);
        if self.lean_now() {
            return None;
        }
        if self.segments.is_empty() {
            return None;
        }
        one_sided_bound(
            mixture,
            &self.lambdas,
            &self.segments,
            self.s / self.v.max(1e-300),
            design,
            self.alpha,
        )
    }

    /// An interval from a one-sided bound on the contrast, mapped by `to`
    /// (increasing in the contrast for an increase, decreasing for a drop).
    fn one_sided(&self, c: f64, to: impl Fn(f64) -> f64) -> Interval {
        let level = 1.0 - self.alpha;
        let bound = finite(to(c));
        match self.direction {
            Direction::Increase => Interval {
                lower: Some(bound),
                upper: None,
                level,
            },
            Direction::Decrease => Interval {
                lower: None,
                upper: Some(bound),
                level,
            },
        }
    }

    /// Whether this verdict goes without an interval (lean evidence).
    fn lean_now(&self) -> bool {
        self.lean_gate || (self.lean && !self.crossed)
    }

    /// Lean evidence (see [`StatTest::set_lean`](super::StatTest::set_lean)).
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

    /// Lean evidence for a gate (see
    /// [`StatTest::set_lean_gate`](super::StatTest::set_lean_gate)).
    pub fn set_lean_gate(&mut self, lean: bool) {
        self.lean = lean;
        self.lean_gate = lean;
    }

    fn estimate(&self) -> (String, f64, Interval) {
        let level = 1.0 - self.alpha;
        let one_sided = self.mixture_bound();
        let half = match self.design {
            _ if self.lean_now() => None,
            Some(design) if self.v > 0.0 => {
                let rho = (1.0 / (design * design)).max(normal_mixture_rho(1e-300, self.alpha));
                Some(normal_mixture_bound(self.v, rho, self.alpha) / self.v)
            }
            _ => None,
        };
        match self.null {
            MeanNull::Baseline { null_ratio, .. } => {
                let mb = self.baseline_mean();
                let est = if mb != 0.0 {
                    self.canary_mean() / mb
                } else {
                    1.0
                };
                // Contrast c = s·(m_c − f·m_b) ⇒ ratio = f + s·c / m_b.
                let to_ratio = |x: f64| null_ratio + self.sign() * x / mb;
                let interval = match (one_sided, half) {
                    (Some(c), _) if mb != 0.0 => self.one_sided(c, to_ratio),
                    (None, Some(h)) if mb != 0.0 => {
                        let c = self.s / self.v;
                        let (a, b) = (to_ratio(c - h), to_ratio(c + h));
                        Interval::new(a.min(b), a.max(b), level)
                    }
                    _ => Interval::unbounded(level),
                };
                (
                    format!("ratio of canary/baseline mean {}", self.signal),
                    est,
                    interval,
                )
            }
            MeanNull::Bound { bound } => {
                let to_mean = |x: f64| bound + self.sign() * x;
                let interval = match (one_sided, half) {
                    (Some(c), _) => self.one_sided(c, to_mean),
                    (None, Some(h)) => {
                        let c = self.s / self.v;
                        let (a, b) = (to_mean(c - h), to_mean(c + h));
                        Interval::new(a.min(b), a.max(b), level)
                    }
                    (None, None) => Interval::unbounded(level),
                };
                (
                    format!("canary mean {} (bound {bound})", self.signal),
                    self.canary_mean(),
                    interval,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values spread evenly around `mean` (±50%), `n` of them.
    fn interval(i: u64, canary: (u64, f64), baseline: (u64, f64)) -> IntervalSnapshot {
        let mut s = IntervalSnapshot::new(
            Timestamp::from_millis(i * 60_000),
            Timestamp::from_millis((i + 1) * 60_000),
        );
        for (arm, (n, mean)) in [(&mut s.canary, canary), (&mut s.baseline, baseline)] {
            let h = arm.latency_mut("eta_err");
            for k in 0..n {
                let f = 0.5 + (k % 11) as f64 / 10.0;
                h.record_ms(mean * f);
            }
        }
        s
    }

    #[test]
    fn an_increase_beyond_the_tolerance_fires_and_an_equal_mean_does_not() {
        let change = ChangeDetection::over_horizon(1000, 31);
        let mut worse = MeanTest::relative_increase("eta_err", 0.05, 0.01, change).unwrap();
        let mut same = MeanTest::relative_increase("eta_err", 0.05, 0.01, change).unwrap();
        let mut fired_at = None;
        for i in 0..300 {
            let v = worse.observe(&interval(i, (50, 120.0), (450, 100.0)));
            if v.crossed() && fired_at.is_none() {
                fired_at = Some(i);
                assert!(
                    v.evidence.interval.lower.unwrap() > 1.05,
                    "{:?}",
                    v.evidence
                );
            }
            assert!(
                !same
                    .observe(&interval(i, (50, 100.0), (450, 100.0)))
                    .crossed()
            );
        }
        assert!(fired_at.is_some_and(|i| i < 100), "{fired_at:?}");
    }

    #[test]
    fn a_drop_is_caught_by_relative_drop_and_bounds_work_both_ways() {
        let change = ChangeDetection::OFF;
        let mut drop = MeanTest::relative_drop("eta_err", 0.02, 0.01, change).unwrap();
        let mut above =
            MeanTest::bound("eta_err", Direction::Increase, 100.0, 0.01, change).unwrap();
        let mut below =
            MeanTest::bound("eta_err", Direction::Decrease, 100.0, 0.01, change).unwrap();
        let (mut d, mut a, mut b) = (false, false, false);
        for i in 0..200 {
            d |= drop
                .observe(&interval(i, (100, 90.0), (100, 100.0)))
                .crossed();
            a |= above
                .observe(&interval(i, (100, 110.0), (0, 0.0)))
                .crossed();
            b |= below
                .observe(&interval(i, (100, 110.0), (0, 0.0)))
                .crossed();
        }
        assert!(d && a && !b);
    }

    #[test]
    fn gates_show_bounds_and_nothing_is_non_finite() {
        let mut gain = MeanTest::gate("eta_err", GateKind::MinGain(0.02), 0.05).unwrap();
        let mut no_data = MeanTest::gate("eta_err", GateKind::MaxIncrease(0.05), 0.05).unwrap();
        let mut shown = false;
        for i in 0..200 {
            shown |= gain
                .observe(&interval(i, (100, 110.0), (100, 100.0)))
                .crossed();
            let v = no_data.observe(&IntervalSnapshot::new(
                Timestamp::from_millis(i),
                Timestamp::from_millis(i + 1),
            ));
            assert_eq!(v.status, Status::Collecting);
            assert!(v.evidence.estimate.is_finite() && v.evidence.log_e_value.is_finite());
        }
        assert!(shown);
    }

    /// Lean evidence changes nothing but the interval: the same statuses
    /// and e-values interval by interval, no interval before crossing (the
    /// root search over every restart slot is what it spares), the whole
    /// evidence once crossed, and none for a gate.
    #[test]
    fn lean_evidence_keeps_every_decision() {
        let change = ChangeDetection::over_horizon(1000, 31);
        let mut full = MeanTest::relative_increase("eta_err", 0.05, 0.01, change).unwrap();
        let mut lean = full.clone();
        lean.set_lean(true);
        let mut gate = MeanTest::gate("eta_err", GateKind::MaxIncrease(0.3), 0.05).unwrap();
        let mut lean_gate = gate.clone();
        lean_gate.set_lean_gate(true);
        let mut crossed = false;
        for i in 0..200 {
            let canary = if i < 40 { 100.0 } else { 125.0 };
            let snap = interval(i, (50, canary), (450, 100.0));
            let (a, b) = (full.observe(&snap), lean.observe(&snap));
            assert_eq!(a.status, b.status, "interval {i}");
            assert_eq!(a.evidence.log_e_value, b.evidence.log_e_value);
            assert_eq!(a.evidence.estimate, b.evidence.estimate);
            if a.crossed() {
                crossed = true;
                assert_eq!(a.evidence.interval, b.evidence.interval);
            } else {
                assert_eq!(b.evidence.interval, Interval::unbounded(0.99));
                assert!(i < 40 || a.evidence.interval != b.evidence.interval);
            }
            let snap = interval(i, (50, 100.0), (450, 100.0));
            let (a, b) = (gate.observe(&snap), lean_gate.observe(&snap));
            assert_eq!(a.status, b.status, "gate, interval {i}");
            assert_eq!(a.evidence.log_e_value, b.evidence.log_e_value);
            assert_eq!(b.evidence.interval, Interval::unbounded(0.95));
        }
        assert!(crossed);
    }

    /// Like [`interval`], on Prometheus buckets (10, 20, ..., 200 ms, then
    /// `+Inf`), and `share` of each arm's values at 5 s, above them all.
    fn bucketed(i: u64, canary: (u64, f64, f64), baseline: (u64, f64, f64)) -> IntervalSnapshot {
        let bounds: Vec<f64> = (1..=20).map(|k| 10.0 * k as f64).collect();
        let mut s = IntervalSnapshot::new(
            Timestamp::from_millis(i * 60_000),
            Timestamp::from_millis((i + 1) * 60_000),
        );
        for (arm, (n, mean, share)) in [(&mut s.canary, canary), (&mut s.baseline, baseline)] {
            let mut h =
                crate::stats::histogram::LatencyHistogram::with_bucket_bounds_ms(&bounds).unwrap();
            let tail = (n as f64 * share).round() as u64;
            for k in 0..n - tail {
                h.record_ms(mean * (0.5 + (k % 11) as f64 / 10.0));
            }
            for _ in 0..tail {
                h.record_ms(5000.0);
            }
            arm.latency.insert("eta_err".to_string(), h);
        }
        s
    }

    #[test]
    fn values_above_the_top_bucket_make_no_evidence_on_their_unsafe_side() {
        // Counted at 200 ms, a canary whose 5% of values at 5 s triple its
        // mean reads 86 ms against the baseline's 100: the gate must not be
        // shown on that.
        let mut gate = MeanTest::gate("eta_err", GateKind::MaxIncrease(0.05), 0.05).unwrap();
        // A baseline understated likewise (reads 105 ms, is 345 ms) must not
        // make a better canary (120 ms) look 14% worse.
        let mut trigger =
            MeanTest::relative_increase("eta_err", 0.05, 0.01, ChangeDetection::OFF).unwrap();
        // On the safe side (the canary's values understated, evidence that
        // it is higher) they count at the bound: still 20% worse, caught.
        let mut safe =
            MeanTest::relative_increase("eta_err", 0.05, 0.01, ChangeDetection::OFF).unwrap();
        let (mut g, mut t, mut fired) = (None, None, false);
        for i in 0..200 {
            g = Some(gate.observe(&bucketed(i, (200, 80.0, 0.05), (200, 100.0, 0.0))));
            t = Some(trigger.observe(&bucketed(i, (200, 120.0, 0.0), (200, 100.0, 0.05))));
            let v = safe.observe(&bucketed(i, (200, 100.0, 0.2), (200, 100.0, 0.0)));
            fired |= v.crossed();
            assert_eq!(v.evidence.caveat, None);
        }
        let (g, t) = (g.unwrap(), t.unwrap());
        assert!(!g.crossed() && g.evidence.log_e_value == 0.0, "{g:?}");
        let caveat = g.evidence.caveat.as_deref().unwrap_or_default();
        assert!(
            caveat.contains("canary value(s) above") && caveat.contains("200ms"),
            "{caveat}"
        );
        assert!(!t.crossed() && t.evidence.log_e_value == 0.0, "{t:?}");
        let caveat = t.evidence.caveat.as_deref().unwrap_or_default();
        assert!(caveat.contains("baseline value(s) above"), "{caveat}");
        assert!(fired);
    }
}

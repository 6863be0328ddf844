//! The statistical triggers and gates: anytime-valid e-processes fed one
//! interval at a time, each owning its state (serde) and answering with a
//! [`Verdict`] that carries its evidence.
//!
//! Which test runs where:
//! - **Ratio vs baseline** (`vsBaseline` on a ratio metric, and the ratio
//!   gates): rare events (pooled rate below 2% when the choice is made) use
//!   the exposure-conditioned count test of statistics.md §2.9, exact for
//!   Poisson counts under any shared diurnal factor and any measured split;
//!   common events (CTR) use the normal-mixture mSPRT on information time
//!   (§2.2), stratified per interval (each interval's contrast is a concurrent
//!   comparison, so a split that changes with load does not bias it), with a
//!   burn-in because its validity is asymptotic. The conditional binomial is
//!   only approximately right for non-rare Bernoulli data (it tests an odds
//!   ratio, not a rate ratio), which is why common events go to the normal
//!   test. `RatioMethod::Auto` makes the choice once, from data seen before
//!   the test starts, so the choice is predictable and the guarantee holds.
//! - **Canary-alone thresholds** (`threshold: {above}` on a ratio, and on a
//!   latency quantile through `P(latency > T) ≤ 1 − q ⇔ q-quantile ≤ T`):
//!   a grid mixture of Bernoulli likelihood ratios against the threshold.
//!   Each interval's factor has expectation ≤ 1 whenever the canary's rate is
//!   at most the threshold *in that interval*, so diurnal swings below the
//!   threshold cannot fire it.
//! - **Quantile vs baseline** (`vsBaseline: {relativeIncrease: X}` on p95):
//!   an exceedance two-arm count test at a threshold `T` frozen in advance
//!   (the baseline's q-quantile estimated at the end of a burn-in, or given):
//!   canary events are latencies surely above `(1+X)·T`, baseline events are
//!   latencies possibly above `T`, and the null is "the canary's exceedance
//!   rate is at most the baseline's". If the canary's latency is at most
//!   `(1+X)` times the baseline's around the q-quantile at every moment, the
//!   null holds in every interval, so the test stays exact under diurnal load
//!   and a drifting split. It tests the tail at `T`, not the quantile itself;
//!   with `T` at the baseline's q-quantile the two statements coincide.
//! - **Disparity** (`disparity: {minRatio}` over groups): per-group rate
//!   confidence sequences (conjugate beta mixture) with a union bound over at
//!   most `max_groups` groups; fires when `min_i UCB_i < minRatio · max_j LCB_j`.
//!   This assumes each group's rate is stationary within the step.
//! - **Sample-ratio check**: two-sided grid mixture on the canary's share of
//!   requests against the set weight, per interval.
//!
//! Late changes: every trigger's mixture restarts at evenly spaced points of
//! the rollout horizon (see [`ChangeDetection`]), so a regression that starts
//! hours in is caught about as fast as one present from the start, while the
//! false-fire probability over the whole horizon stays at most the trigger's
//! alpha share. Gates use no restarts (`ChangeDetection::OFF`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::evidence::{ArmCounts, Evidence, Interval, Status, Verdict, finite};
use super::histogram::{HistogramReads, LatencyReads};
pub use super::mixture::ChangeDetection;
use super::mixture::{
    LikelihoodGrid, LogLikCache, RestartMixture, bernoulli_log_lik, bisect, clamp_p, log_sum_exp,
    logit, normal_mixture_bound, normal_mixture_rho, rate_confidence_sequence, rate_log_e,
};
use super::snapshot::IntervalSnapshot;
use super::{StatsError, check_positive, check_unit_open};
use crate::time::Timestamp;

/// Which side of the null the alternative lies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Evidence that the canary's value is above the null (larger is worse
    /// for triggers; `minGain` for gates).
    Increase,
    /// Evidence that the canary's value is below the null.
    Decrease,
}

impl Direction {
    fn sign(self) -> f64 {
        match self {
            Direction::Increase => 1.0,
            Direction::Decrease => -1.0,
        }
    }
}

/// How a ratio metric is compared with the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatioMethod {
    /// Decide once `auto_decide_exposure` canary denominators were seen: pooled
    /// rate below [`RARE_RATE`] → `Count`, otherwise `Normal`.
    Auto,
    /// Exposure-conditioned count test (rare events).
    Count,
    /// Normal-mixture mSPRT on information time (common events).
    Normal,
}

/// Pooled rate below which `RatioMethod::Auto` picks the count test.
pub const RARE_RATE: f64 = 0.02;

/// The alternatives of a grid mixture: the design effect times powers of two.
pub fn design_grid(design: f64) -> Vec<f64> {
    (-3..=3).map(|k| design * 2f64.powi(k)).collect()
}

/// serde: omit the `lean` flag while it is off (older checkpoints lack it).
fn is_false(b: &bool) -> bool {
    !*b
}

/// A verdict's estimand text, formatted once. It depends only on the test's
/// parameters and on `key` (a threshold fixed once, a group count), while a
/// verdict is built every interval. Not state: skipped by serde (rebuilt on
/// first use) and equal to any other cache.
#[derive(Clone, Debug, Default)]
struct Estimand(Option<(Option<u64>, Arc<str>)>);

impl PartialEq for Estimand {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Estimand {
    /// The text for `key`, from `make` when the cache holds another key.
    fn text(&mut self, key: Option<u64>, make: impl FnOnce() -> String) -> Arc<str> {
        match &self.0 {
            Some((k, text)) if *k == key => text.clone(),
            _ => {
                let text: Arc<str> = make().into();
                self.0 = Some((key, text.clone()));
                text
            }
        }
    }
}

fn log_boundary(alpha: f64) -> f64 {
    (1.0 / alpha).ln()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Span {
    start: Option<Timestamp>,
    end: Timestamp,
}

impl Span {
    fn cover(&mut self, snap: &IntervalSnapshot) {
        if self.start.is_none() {
            self.start = Some(snap.start);
        }
        self.end = self.end.max(snap.end);
    }
}

/// Two-arm exposure-conditioned count test (statistics.md §2.9): given an
/// interval's events, the canary's share is Binomial with success log-odds
/// `logit(r) + δ`, `r` the canary's share of exposure in that interval and
/// `δ` the log rate ratio. Tests `δ ≤ δ0` (Increase) or `δ ≥ δ0` (Decrease).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwoArmCount {
    direction: Direction,
    null_log_ratio: f64,
    etas: Vec<f64>,
    mixture: RestartMixture,
    grid: LikelihoodGrid,
    /// Intervals `(x, n, base)` not yet added to `grid`: with lean evidence
    /// (see [`StatTest::set_lean`]) the grid, 61 likelihoods an interval, is
    /// read only once the test has crossed, so its updates wait until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deferred: Vec<[f64; 3]>,
    baseline: ArmCounts,
    canary: ArmCounts,
    scratch: Vec<f64>,
}

impl TwoArmCount {
    /// `design_log_ratio` is the log rate ratio the grid is centred on (e.g.
    /// twice the tolerance).
    pub fn new(
        direction: Direction,
        null_log_ratio: f64,
        design_log_ratio: f64,
        change: ChangeDetection,
    ) -> Self {
        let design = (design_log_ratio - null_log_ratio).abs().max(1e-3);
        let etas = design_grid(design);
        TwoArmCount {
            direction,
            null_log_ratio,
            mixture: RestartMixture::new(etas.len(), change),
            scratch: vec![0.0; etas.len()],
            etas,
            grid: LikelihoodGrid::default(),
            deferred: Vec::new(),
            baseline: ArmCounts::default(),
            canary: ArmCounts::default(),
        }
    }

    /// Feeds one interval's exposures and events. With `defer_interval`, the
    /// confidence sequence's share of the work waits for
    /// [`TwoArmCount::ratio_interval`] (or [`TwoArmCount::catch_up`]).
    pub fn update(
        &mut self,
        canary_exposure: u64,
        canary_events: u64,
        baseline_exposure: u64,
        baseline_events: u64,
        at: Timestamp,
        defer_interval: bool,
    ) {
        self.canary.add(canary_exposure, canary_events);
        self.baseline.add(baseline_exposure, baseline_events);
        if canary_exposure == 0 || baseline_exposure == 0 {
            // No comparison is possible; the factor is 1.
            self.scratch.iter_mut().for_each(|l| *l = 0.0);
            self.mixture.update(&self.scratch, at);
            return;
        }
        let r = canary_exposure as f64 / (canary_exposure as f64 + baseline_exposure as f64);
        let x = canary_events as f64;
        let n = x + baseline_events as f64;
        let base = logit(r);
        let null = base + self.null_log_ratio;
        let l0 = bernoulli_log_lik(x, n, null);
        let s = self.direction.sign();
        for (out, &eta) in self.scratch.iter_mut().zip(&self.etas) {
            *out = bernoulli_log_lik(x, n, null + s * eta) - l0;
        }
        self.mixture.update(&self.scratch, at);
        if n > 0.0 {
            if defer_interval {
                self.deferred.push([x, n, base]);
            } else {
                self.catch_up();
                self.grid.update(x, n, base);
            }
        }
    }

    /// Adds the deferred intervals to the grid.
    pub fn catch_up(&mut self) {
        for [x, n, base] in self.deferred.drain(..) {
            self.grid.update(x, n, base);
        }
    }

    pub fn log_e(&self) -> f64 {
        self.mixture.log_e()
    }

    pub fn max_log_e(&self) -> f64 {
        self.mixture.max_log_e()
    }

    /// Rate ratio estimate and its confidence sequence at `alpha`.
    pub fn ratio_interval(&self, alpha: f64) -> (f64, Interval) {
        if self.canary.events + self.baseline.events == 0 {
            return (1.0, Interval::unbounded(1.0 - alpha));
        }
        let caught_up;
        let grid = if self.deferred.is_empty() {
            &self.grid
        } else {
            // Callers catch up first; this keeps a forgotten one correct.
            let mut g = self.grid.clone();
            for &[x, n, base] in &self.deferred {
                g.update(x, n, base);
            }
            caught_up = g;
            &caught_up
        };
        let (lo, hi) = grid.interval(alpha);
        let est = grid.estimate().exp();
        let lower = lo.map(f64::exp).unwrap_or(0.0);
        let upper = hi.map(f64::exp).unwrap_or(f64::INFINITY);
        (est, Interval::new(lower, upper, 1.0 - alpha))
    }

    pub fn counts(&self) -> (ArmCounts, ArmCounts) {
        (self.baseline, self.canary)
    }
}

/// Normal-mixture mSPRT on information time for the contrast
/// `s·(p_c − f·p_b)`, stratified per interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct NormalContrast {
    direction: Direction,
    null_ratio: f64,
    design_contrast: f64,
    lambdas: Vec<f64>,
    mixture: RestartMixture,
    /// Σ d_b / v_b and Σ 1 / v_b since the test started.
    s: f64,
    v: f64,
    /// The same sums per restart slot (since the slot began), so the mixture
    /// can be re-evaluated at a shifted null to give the bound it implies.
    #[serde(default)]
    segments: Vec<(f64, f64)>,
    overdispersion: f64,
    scratch: Vec<f64>,
}

const VARIANCE_PRIOR_WEIGHT: f64 = 100.0;

impl NormalContrast {
    #[allow(clippy::too_many_arguments)]
    fn update(&mut self, xc: u64, nc: u64, xb: u64, nb: u64, pooled_before: f64, at: Timestamp) {
        if nc == 0 || nb == 0 {
            self.scratch.iter_mut().for_each(|l| *l = 0.0);
            self.mixture.update(&self.scratch, at);
            self.sync_segments(0.0, 0.0);
            return;
        }
        let (xc, nc, xb, nb) = (xc as f64, nc as f64, xb as f64, nb as f64);
        let f = self.null_ratio;
        let d = self.direction.sign() * (xc / nc - f * xb / nb);
        let p =
            (xc + xb + VARIANCE_PRIOR_WEIGHT * pooled_before) / (nc + nb + VARIANCE_PRIOR_WEIGHT);
        let unit = if p < 1.0 { p * (1.0 - p) } else { p };
        let var = (unit.max(1e-12) * (1.0 / nc + f * f / nb) * self.overdispersion).max(1e-300);
        let (si, vi) = (d / var, 1.0 / var);
        self.s += si;
        self.v += vi;
        for (out, &lam) in self.scratch.iter_mut().zip(&self.lambdas) {
            *out = lam * si - 0.5 * lam * lam * vi;
        }
        self.mixture.update(&self.scratch, at);
        self.sync_segments(si, vi);
    }

    /// Mirror the mixture's slots: a slot that began with this interval
    /// starts from zero; every slot adds this interval's `(s, v)`.
    fn sync_segments(&mut self, si: f64, vi: f64) {
        while self.segments.len() < self.mixture.slot_count() {
            self.segments.push((0.0, 0.0));
        }
        for (s, v) in &mut self.segments {
            *s += si;
            *v += vi;
        }
    }

    /// `ln Z` of the same mixture (slots, alternatives, weights) for the
    /// null "contrast ≤ c0" instead of "≤ 0": each slot's log likelihood
    /// ratio `λ·S − λ²·V/2` becomes `λ·(S − c0·V) − λ²·V/2`.
    fn log_e_at(&self, c0: f64) -> f64 {
        let (slot_w, alt_w) = self.mixture.log_weights();
        let terms = self.segments.iter().zip(slot_w).flat_map(|(&(s, v), &sw)| {
            self.lambdas
                .iter()
                .zip(alt_w)
                .map(move |(&lam, &aw)| sw + aw + lam * (s - c0 * v) - 0.5 * lam * lam * v)
        });
        log_sum_exp(terms)
    }

    /// The one-sided anytime-valid bound on the contrast that this test's
    /// own mixture implies: the smallest `c0` for which the mixture against
    /// "contrast ≤ c0" stays below `1/alpha`. Inverting a family of
    /// e-processes gives a confidence sequence (Ville at the true contrast),
    /// and it is consistent with the decision: when the test has fired,
    /// the bound lies beyond the null. `None` before any information.
    fn one_sided_bound(&self, alpha: f64) -> Option<f64> {
        if self.segments.iter().all(|&(_, v)| v <= 0.0) {
            return None;
        }
        let cut = (1.0 / alpha).ln();
        let below = |c0: f64| self.log_e_at(c0) < cut;
        // Bracket: widen until one end is below the cut and the other not.
        let scale = self.design_contrast.abs().max(1e-12);
        let mut hi = self.s / self.v.max(1e-300) + scale;
        let mut steps = 0;
        while !below(hi) && steps < 200 {
            hi += scale * 2f64.powi(steps.min(60));
            steps += 1;
        }
        let mut lo = hi - scale;
        steps = 0;
        while below(lo) && steps < 200 {
            lo -= scale * 2f64.powi(steps.min(60));
            steps += 1;
        }
        Some(bisect(lo, hi, below))
    }

    /// Estimate and anytime-valid interval of the contrast (two-sided normal
    /// mixture, tuned to the design effect).
    fn contrast_interval(&self, alpha: f64) -> (f64, f64, f64) {
        if self.v <= 0.0 {
            return (0.0, f64::NEG_INFINITY, f64::INFINITY);
        }
        let rho = 1.0 / (self.design_contrast * self.design_contrast).max(1e-300);
        let rho = rho.max(normal_mixture_rho(1e-300, alpha));
        let half = normal_mixture_bound(self.v, rho, alpha) / self.v;
        let est = self.s / self.v;
        (est, est - half, est + half)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum RatioEngine {
    Collecting,
    Count(TwoArmCount),
    Normal(NormalContrast),
}

/// A ratio metric (numerator/denominator signals) of the canary against the
/// baseline's: `vsBaseline` triggers and the ratio gates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioVsBaseline {
    numerator: String,
    denominator: String,
    direction: Direction,
    null_ratio: f64,
    design_ratio: f64,
    alpha: f64,
    change: ChangeDetection,
    method: RatioMethod,
    auto_decide_exposure: u64,
    burn_in_exposure: u64,
    overdispersion: f64,
    engine: RatioEngine,
    baseline: ArmCounts,
    canary: ArmCounts,
    span: Span,
    crossed: bool,
    /// Lean evidence: the interval is computed only once the test has
    /// crossed (see [`StatTest::set_lean`]).
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    /// Lean as a gate: no interval even once crossed (see
    /// [`StatTest::set_lean_gate`]).
    #[serde(default, skip_serializing_if = "is_false")]
    lean_gate: bool,
    #[serde(skip)]
    estimand: Estimand,
}

impl RatioVsBaseline {
    /// General form: evidence that `rate_c / rate_b` is above (Increase) or
    /// below (Decrease) `null_ratio`, tuned for `design_ratio`, at level
    /// `alpha` (this test's share).
    pub fn new(
        numerator: &str,
        denominator: &str,
        direction: Direction,
        null_ratio: f64,
        design_ratio: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_positive("null ratio", null_ratio)?;
        check_positive("design ratio", design_ratio)?;
        check_unit_open("alpha", alpha)?;
        Ok(RatioVsBaseline {
            numerator: numerator.to_string(),
            denominator: denominator.to_string(),
            direction,
            null_ratio,
            design_ratio,
            alpha,
            change,
            method: RatioMethod::Auto,
            auto_decide_exposure: 200,
            burn_in_exposure: 1000,
            overdispersion: 1.0,
            engine: RatioEngine::Collecting,
            baseline: ArmCounts::default(),
            canary: ArmCounts::default(),
            span: Span::default(),
            crossed: false,
            lean: false,
            lean_gate: false,
            estimand: Estimand::default(),
        })
    }

    /// Trigger `vsBaseline: {relativeIncrease: x}` (larger is worse).
    pub fn relative_increase(
        numerator: &str,
        denominator: &str,
        x: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_positive("relativeIncrease", x)?;
        Self::new(
            numerator,
            denominator,
            Direction::Increase,
            1.0 + x,
            1.0 + 2.0 * x,
            alpha,
            change,
        )
    }

    /// Trigger `vsBaseline: {relativeDrop: x}` (smaller is worse).
    pub fn relative_drop(
        numerator: &str,
        denominator: &str,
        x: f64,
        alpha: f64,
        change: ChangeDetection,
    ) -> Result<Self, StatsError> {
        check_unit_open("relativeDrop", x)?;
        let design = (1.0 - 2.0 * x).max((1.0 - x) / 2.0);
        Self::new(
            numerator,
            denominator,
            Direction::Decrease,
            1.0 - x,
            design,
            alpha,
            change,
        )
    }

    /// A ratio gate (no restarts; shown once its boundary is crossed).
    pub fn gate(
        numerator: &str,
        denominator: &str,
        kind: GateKind,
        alpha: f64,
    ) -> Result<Self, StatsError> {
        let (direction, null, design) = kind.ratio_null()?;
        Self::new(
            numerator,
            denominator,
            direction,
            null,
            design,
            alpha,
            ChangeDetection::OFF,
        )
    }

    /// Chooses the method (default `Auto`).
    pub fn with_method(mut self, method: RatioMethod) -> Self {
        self.method = method;
        self
    }

    /// Denominators per arm the normal test waits for (default 1,000) and the
    /// canary denominators after which `Auto` decides (default 200).
    pub fn with_burn_in(mut self, burn_in_exposure: u64, auto_decide_exposure: u64) -> Self {
        self.burn_in_exposure = burn_in_exposure;
        self.auto_decide_exposure = auto_decide_exposure;
        self
    }

    /// Variance inflation for the normal test when requests are correlated
    /// within users or hosts (estimate it from A/A runs; default 1).
    pub fn with_overdispersion(mut self, phi: f64) -> Self {
        self.overdispersion = if phi.is_finite() && phi >= 1.0 {
            phi
        } else {
            1.0
        };
        self
    }

    /// The method in use, once chosen.
    pub fn method_in_use(&self) -> Option<RatioMethod> {
        match self.engine {
            RatioEngine::Collecting => None,
            RatioEngine::Count(_) => Some(RatioMethod::Count),
            RatioEngine::Normal(_) => Some(RatioMethod::Normal),
        }
    }

    fn pooled_rate(&self) -> f64 {
        let n = self.canary.exposure as f64 + self.baseline.exposure as f64;
        if n == 0.0 {
            0.0
        } else {
            (self.canary.events as f64 + self.baseline.events as f64) / n
        }
    }

    fn baseline_rate(&self) -> f64 {
        if self.baseline.exposure == 0 {
            self.pooled_rate()
        } else {
            self.baseline.events as f64 / self.baseline.exposure as f64
        }
    }

    fn maybe_start(&mut self) {
        if !matches!(self.engine, RatioEngine::Collecting) {
            return;
        }
        let method = match self.method {
            RatioMethod::Auto if self.canary.exposure < self.auto_decide_exposure => return,
            RatioMethod::Auto if self.pooled_rate() < RARE_RATE => RatioMethod::Count,
            RatioMethod::Auto => RatioMethod::Normal,
            m => m,
        };
        match method {
            RatioMethod::Count | RatioMethod::Auto => {
                self.engine = RatioEngine::Count(TwoArmCount::new(
                    self.direction,
                    self.null_ratio.ln(),
                    self.design_ratio.ln(),
                    self.change,
                ));
            }
            RatioMethod::Normal => {
                if self.canary.exposure < self.burn_in_exposure
                    || self.baseline.exposure < self.burn_in_exposure
                {
                    return;
                }
                let design =
                    ((self.design_ratio - self.null_ratio).abs() * self.baseline_rate()).max(1e-9);
                let lambdas = design_grid(design);
                self.engine = RatioEngine::Normal(NormalContrast {
                    direction: self.direction,
                    null_ratio: self.null_ratio,
                    design_contrast: design,
                    mixture: RestartMixture::new(lambdas.len(), self.change),
                    scratch: vec![0.0; lambdas.len()],
                    lambdas,
                    s: 0.0,
                    v: 0.0,
                    segments: Vec::new(),
                    overdispersion: self.overdispersion,
                });
            }
        }
    }

    /// Feeds one (admitted) interval and answers.
    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        let xc = snap.canary.counter(&self.numerator);
        let nc = snap.canary.counter(&self.denominator);
        let xb = snap.baseline.counter(&self.numerator);
        let nb = snap.baseline.counter(&self.denominator);
        let pooled_before = self.pooled_rate();
        let started = !matches!(self.engine, RatioEngine::Collecting);
        match &mut self.engine {
            RatioEngine::Collecting => {}
            RatioEngine::Count(t) => t.update(nc, xc, nb, xb, snap.start, self.lean),
            RatioEngine::Normal(t) => t.update(xc, nc, xb, nb, pooled_before, snap.start),
        }
        self.canary.add(nc, xc);
        self.baseline.add(nb, xb);
        if started {
            self.span.cover(snap);
        }
        self.maybe_start();
        self.verdict(started)
    }

    /// The current answer without feeding data (e.g. for an excluded interval).
    pub fn current(&self, status_if_running: Status) -> Verdict {
        let started = !matches!(self.engine, RatioEngine::Collecting);
        let mut v = self.clone().verdict(started);
        if v.status != Status::Crossed {
            v.status = status_if_running;
        }
        v
    }

    fn log_e(&self) -> f64 {
        match &self.engine {
            RatioEngine::Collecting => 0.0,
            RatioEngine::Count(t) => t.log_e(),
            RatioEngine::Normal(t) => t.mixture.log_e(),
        }
    }

    fn max_log_e(&self) -> f64 {
        match &self.engine {
            RatioEngine::Collecting => 0.0,
            RatioEngine::Count(t) => t.max_log_e(),
            RatioEngine::Normal(t) => t.mixture.max_log_e(),
        }
    }

    fn verdict(&mut self, started: bool) -> Verdict {
        let boundary = log_boundary(self.alpha);
        if self.max_log_e() >= boundary {
            self.crossed = true;
        }
        let status = if self.crossed {
            Status::Crossed
        } else if started {
            Status::Monitoring
        } else {
            Status::Collecting
        };
        let lean = self.lean_gate || (self.lean && !self.crossed);
        if !lean && let RatioEngine::Count(t) = &mut self.engine {
            t.catch_up();
        }
        let (estimate, interval) = match &self.engine {
            _ if lean => (self.naive_ratio(), Interval::unbounded(1.0 - self.alpha)),
            RatioEngine::Count(t) => t.ratio_interval(self.alpha),
            RatioEngine::Normal(t) => {
                let pb = self.baseline_rate().max(1e-300);
                let (est, _, _) = t.contrast_interval(self.alpha);
                // Contrast s·(p_c − f·p_b) → ratio f + s·contrast/p_b (delta method).
                let s = self.direction.sign();
                let to_ratio = |c: f64| self.null_ratio + s * c / pb;
                // The bound this test's own mixture implies, on the side it
                // tests: a lower bound on the ratio for an increase, an upper
                // bound for a decrease. Once the test fires, it excludes the
                // null ratio, so the evidence reads the way the decision went.
                let interval = match t.one_sided_bound(self.alpha) {
                    Some(c) => {
                        let bound = to_ratio(c);
                        match self.direction {
                            Direction::Increase => Interval {
                                lower: Some(finite(bound.max(0.0))),
                                upper: None,
                                level: 1.0 - self.alpha,
                            },
                            Direction::Decrease => Interval {
                                lower: None,
                                upper: Some(finite(bound.max(0.0))),
                                level: 1.0 - self.alpha,
                            },
                        }
                    }
                    None => Interval::unbounded(1.0 - self.alpha),
                };
                (to_ratio(est).max(0.0), interval)
            }
            RatioEngine::Collecting => (self.naive_ratio(), Interval::unbounded(1.0 - self.alpha)),
        };
        let (baseline, canary) = match &self.engine {
            RatioEngine::Count(t) => t.counts(),
            _ => (self.baseline, self.canary),
        };
        Verdict {
            status,
            evidence: Evidence {
                estimand: self.estimand.text(None, || {
                    format!(
                        "rate ratio canary/baseline of {}/{}",
                        self.numerator, self.denominator
                    )
                }),
                baseline,
                canary,
                estimate: finite(estimate),
                interval,
                log_e_value: finite(self.log_e()),
                log_boundary: boundary,
                window_start: self.span.start.unwrap_or(self.span.end),
                window_end: self.span.end,
                evidence_since: self.evidence_since(),
            },
        }
    }

    fn evidence_since(&self) -> Timestamp {
        let dominant = match &self.engine {
            _ if self.lean && !self.crossed => None,
            RatioEngine::Collecting => None,
            RatioEngine::Count(t) => t.mixture.dominant_start(),
            RatioEngine::Normal(t) => t.mixture.dominant_start(),
        };
        dominant.unwrap_or(self.span.start.unwrap_or(self.span.end))
    }

    fn naive_ratio(&self) -> f64 {
        let rc = self.canary.events as f64 / (self.canary.exposure.max(1)) as f64;
        let rb = self.baseline.events as f64 / (self.baseline.exposure.max(1)) as f64;
        if rb > 0.0 { rc / rb } else { 1.0 }
    }
}

/// Gate kinds (`vsBaseline` under `gates`). `alpha` for gates is the
/// false-promotion budget, separate from the triggers' false-rollback budget.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GateKind {
    /// Shown when the LCB of canary/baseline exceeds `1 + x`.
    MinGain(f64),
    /// Shown when the UCB of canary/baseline is below `1 + x`.
    MaxIncrease(f64),
    /// Shown when the LCB of canary/baseline exceeds `1 − x`.
    MaxDrop(f64),
}

impl GateKind {
    /// (direction of the evidence sought, null ratio, design ratio).
    pub(crate) fn ratio_null(self) -> Result<(Direction, f64, f64), StatsError> {
        Ok(match self {
            GateKind::MinGain(x) => {
                check_positive("minGain", x)?;
                (Direction::Increase, 1.0 + x, 1.0 + 2.0 * x)
            }
            GateKind::MaxIncrease(x) => {
                check_positive("maxIncrease", x)?;
                (Direction::Decrease, 1.0 + x, 1.0)
            }
            GateKind::MaxDrop(x) => {
                check_unit_open("maxDrop", x)?;
                (Direction::Increase, 1.0 - x, 1.0)
            }
        })
    }
}

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
}

impl OneSampleRate {
    fn new(p0: f64, change: ChangeDetection) -> Self {
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
        }
    }

    fn update(&mut self, exposure: u64, events: u64, at: Timestamp) {
        let events = events.min(exposure);
        self.counts.add(exposure, events);
        let (x, n) = (events as f64, exposure as f64);
        self.lik
            .log_lrs(x, n, self.null_logit, &self.etas, &mut self.scratch);
        self.mixture.update(&self.scratch, at);
        while self.segments.len() < self.mixture.slot_count() {
            self.segments.push(ArmCounts::default());
        }
        for seg in &mut self.segments {
            seg.add(exposure, events);
        }
    }

    /// `ln Z` of the same mixture for the null "rate ≤ sigmoid(l)" (the
    /// alternatives keep their offsets from the null).
    fn log_e_at(&self, l: f64) -> f64 {
        let (slot_w, alt_w) = self.mixture.log_weights();
        let terms = self.segments.iter().zip(slot_w).flat_map(|(seg, &sw)| {
            let (x, n) = (seg.events as f64, seg.exposure as f64);
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
            test: OneSampleRate::new(above, change),
            span: Span::default(),
            crossed: false,
            lean: false,
            estimand: Estimand::default(),
        })
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
            test: OneSampleRate::new(1.0 - quantile, change),
            span: Span::default(),
            crossed: false,
            lean: false,
            estimand: Estimand::default(),
        })
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
    span: Span,
    crossed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    /// See [`StatTest::set_lean_gate`].
    #[serde(default, skip_serializing_if = "is_false")]
    lean_gate: bool,
    #[serde(skip)]
    estimand: Estimand,
}

/// Latency gates (`vsBaseline` on a quantile under `gates`).
pub type QuantileGate = QuantileVsBaseline;

impl QuantileVsBaseline {
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
            span: Span::default(),
            crossed: false,
            lean: false,
            lean_gate: false,
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
            self.test = Some(TwoArmCount::new(self.direction, 0.0, design, self.change));
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
                    .and_then(|t| t.mixture.dominant_start())
                    .unwrap_or(self.span.end),
            },
        }
    }
}

/// `disparity: {minRatio: m}` on a grouped ratio metric of the canary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disparity {
    numerator: String,
    denominator: String,
    min_ratio: f64,
    alpha: f64,
    max_groups: usize,
    groups: BTreeMap<String, ArmCounts>,
    ignored_groups: u64,
    span: Span,
    crossed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    #[serde(skip)]
    estimand: Estimand,
}

const JEFFREYS: f64 = 0.5;

impl Disparity {
    /// `max_groups` bounds memory and fixes the union bound (each group's
    /// confidence sequence runs at `alpha / max_groups`); groups beyond it are
    /// ignored and counted.
    pub fn new(
        numerator: &str,
        denominator: &str,
        min_ratio: f64,
        alpha: f64,
        max_groups: usize,
    ) -> Result<Self, StatsError> {
        check_unit_open("minRatio", min_ratio)?;
        check_unit_open("alpha", alpha)?;
        Ok(Disparity {
            numerator: numerator.to_string(),
            denominator: denominator.to_string(),
            min_ratio,
            alpha,
            max_groups: max_groups.max(2),
            groups: BTreeMap::new(),
            ignored_groups: 0,
            span: Span::default(),
            crossed: false,
            lean: false,
            estimand: Estimand::default(),
        })
    }

    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        if let Some(dens) = snap.canary.groups.get(&self.denominator) {
            for (g, &n) in dens {
                let x = snap.canary.group_counter(&self.numerator, g).min(n);
                if let Some(c) = self.groups.get_mut(g) {
                    c.add(n, x);
                } else if self.groups.len() < self.max_groups {
                    let mut c = ArmCounts::default();
                    c.add(n, x);
                    self.groups.insert(g.clone(), c);
                } else {
                    self.ignored_groups += 1;
                }
            }
        }
        self.span.cover(snap);
        self.verdict(Status::Monitoring)
    }

    pub fn current(&self, status_if_running: Status) -> Verdict {
        let mut me = self.clone();
        me.verdict(status_if_running)
    }

    fn group_alpha(&self) -> f64 {
        self.alpha / self.max_groups as f64
    }

    fn verdict(&mut self, running: Status) -> Verdict {
        let a = self.group_alpha();
        let boundary = log_boundary(a);
        if self.lean && !self.crossed && !self.may_fire() {
            return self.lean_verdict(running, boundary);
        }
        let cs: Vec<(&String, ArmCounts, f64, f64)> = self
            .groups
            .iter()
            .filter(|(_, c)| c.exposure > 0)
            .map(|(g, c)| {
                let (lo, hi) =
                    rate_confidence_sequence(c.events, c.exposure, JEFFREYS, JEFFREYS, a);
                (g, *c, lo, hi)
            })
            .collect();
        let mut stat = f64::MIN;
        let (mut lower, mut upper, mut estimate) = (0.0, 1.0, 1.0);
        if cs.len() >= 2 {
            let rate = |c: &ArmCounts| c.events as f64 / c.exposure as f64;
            let min_ucb = cs
                .iter()
                .min_by(|a, b| a.3.total_cmp(&b.3))
                .map(|t| t.3)
                .unwrap_or(1.0);
            let max_lcb = cs
                .iter()
                .max_by(|a, b| a.2.total_cmp(&b.2))
                .map(|t| t.2)
                .unwrap_or(0.0);
            let min_lcb = cs.iter().map(|t| t.2).fold(1.0, f64::min);
            let max_ucb = cs.iter().map(|t| t.3).fold(0.0, f64::max);
            let min_rate = cs.iter().map(|t| rate(&t.1)).fold(f64::MAX, f64::min);
            let max_rate = cs.iter().map(|t| rate(&t.1)).fold(0.0, f64::max);
            estimate = if max_rate > 0.0 {
                min_rate / max_rate
            } else {
                1.0
            };
            lower = if max_ucb > 0.0 {
                min_lcb / max_ucb
            } else {
                0.0
            };
            upper = if max_lcb > 0.0 {
                (min_ucb / max_lcb).min(1.0)
            } else {
                1.0
            };
            // Statistic: for the pair (lowest rate, highest rate), the least
            // evidence against any null point with p_i ≥ m·p_j.
            let lo_g = cs.iter().min_by(|a, b| rate(&a.1).total_cmp(&rate(&b.1)));
            let hi_g = cs.iter().max_by(|a, b| rate(&a.1).total_cmp(&rate(&b.1)));
            if let (Some(i), Some(j)) = (lo_g, hi_g) {
                stat = self.pair_statistic(i.1, j.1);
            }
        }
        let fire = cs.len() >= 2 && upper < self.min_ratio;
        let canary = cs.iter().fold(ArmCounts::default(), |mut acc, t| {
            acc.add(t.1.exposure, t.1.events);
            acc
        });
        let n_groups = cs.len();
        drop(cs);
        self.crossed |= fire;
        Verdict {
            status: if self.crossed {
                Status::Crossed
            } else {
                running
            },
            evidence: Evidence {
                estimand: self.estimand.text(Some(n_groups as u64), || {
                    format!(
                        "canary min/max group rate of {}/{} over {} groups",
                        self.numerator, self.denominator, n_groups
                    )
                }),
                baseline: ArmCounts::default(),
                canary,
                estimate: finite(estimate),
                interval: Interval::new(lower, upper, 1.0 - self.alpha),
                log_e_value: finite(stat.max(-1e300)),
                log_boundary: boundary,
                window_start: self.span.start.unwrap_or(self.span.end),
                window_end: self.span.end,
                evidence_since: self.span.start.unwrap_or(self.span.end),
            },
        }
    }

    /// Whether the test could fire now. Each group's confidence sequence
    /// contains its observed rate, so the upper bound of min/max it fires on
    /// is at least the observed min/max rate: while that ratio is above
    /// `minRatio` (with a margin for rounding), it cannot fire.
    fn may_fire(&self) -> bool {
        let rates: Vec<f64> = self
            .groups
            .values()
            .filter(|c| c.exposure > 0)
            .map(|c| c.events as f64 / c.exposure as f64)
            .collect();
        if rates.len() < 2 {
            return false;
        }
        let min_rate = rates.iter().copied().fold(f64::MAX, f64::min);
        let max_rate = rates.iter().copied().fold(0.0, f64::max);
        let estimate = if max_rate > 0.0 {
            min_rate / max_rate
        } else {
            1.0
        };
        estimate <= self.min_ratio * (1.0 + 1e-9)
    }

    /// Lean evidence while the test cannot fire: counts and the observed
    /// ratio, no confidence sequences (see [`StatTest::set_lean`]).
    fn lean_verdict(&mut self, running: Status, boundary: f64) -> Verdict {
        let mut canary = ArmCounts::default();
        let (mut lo, mut hi, mut n_groups) = (f64::MAX, 0.0f64, 0);
        for c in self.groups.values().filter(|c| c.exposure > 0) {
            canary.add(c.exposure, c.events);
            let r = c.events as f64 / c.exposure as f64;
            lo = lo.min(r);
            hi = hi.max(r);
            n_groups += 1;
        }
        let estimate = if n_groups >= 2 && hi > 0.0 {
            lo / hi
        } else {
            1.0
        };
        Verdict {
            status: running,
            evidence: Evidence {
                estimand: self.estimand.text(Some(n_groups as u64), || {
                    format!(
                        "canary min/max group rate of {}/{} over {} groups",
                        self.numerator, self.denominator, n_groups
                    )
                }),
                baseline: ArmCounts::default(),
                canary,
                estimate: finite(estimate),
                interval: Interval::unbounded(1.0 - self.alpha),
                log_e_value: 0.0,
                log_boundary: boundary,
                window_start: self.span.start.unwrap_or(self.span.end),
                window_end: self.span.end,
                evidence_since: self.span.start.unwrap_or(self.span.end),
            },
        }
    }

    /// `min_c max(ℓ_i(c), ℓ_j(c/m))` over the boundary of the null
    /// `p_i ≥ m·p_j`, where ℓ is the log e-value of the rate CS.
    fn pair_statistic(&self, i: ArmCounts, j: ArmCounts) -> f64 {
        let m = self.min_ratio;
        let (pi, pj) = (
            i.events as f64 / i.exposure as f64,
            j.events as f64 / j.exposure as f64,
        );
        if pi >= m * pj {
            return 0.0;
        }
        let li = |c: f64| rate_log_e(i.events, i.exposure, JEFFREYS, JEFFREYS, clamp_p(c));
        let lj = |c: f64| rate_log_e(j.events, j.exposure, JEFFREYS, JEFFREYS, clamp_p(c / m));
        let c = super::mixture::bisect(pi, m * pj, |c| li(c) >= lj(c));
        li(c).max(lj(c))
    }
}

/// Sample-ratio check: evidence that the observed canary share of requests
/// differs from the set weight. Fires (→ pause) at `ln E ≥ ln(1/alpha)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRatioCheck {
    signal: String,
    alpha: f64,
    etas: Vec<f64>,
    mixture: RestartMixture,
    grid: LikelihoodGrid,
    baseline: ArmCounts,
    canary: ArmCounts,
    span: Span,
    scratch: Vec<f64>,
    crossed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    lean: bool,
    #[serde(skip)]
    lik: LogLikCache,
}

impl SampleRatioCheck {
    /// `signal` is the request counter (`requests`).
    pub fn new(signal: &str, alpha: f64, change: ChangeDetection) -> Result<Self, StatsError> {
        check_unit_open("alpha", alpha)?;
        let mut etas: Vec<f64> = (0..6).map(|k| 0.025 * 2f64.powi(k)).collect();
        let neg: Vec<f64> = etas.iter().map(|e| -e).collect();
        etas.extend(neg);
        Ok(SampleRatioCheck {
            signal: signal.to_string(),
            alpha,
            mixture: RestartMixture::new(etas.len(), change),
            scratch: vec![0.0; etas.len()],
            etas,
            grid: LikelihoodGrid::default(),
            baseline: ArmCounts::default(),
            canary: ArmCounts::default(),
            span: Span::default(),
            crossed: false,
            lean: false,
            lik: LogLikCache::default(),
        })
    }

    /// Lean evidence (see [`StatTest::set_lean`]).
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

    /// Feeds an interval whose traffic was routed at `canary_weight` (a
    /// fraction in (0, 1); intervals at weight 0 or 1 carry no information).
    pub fn observe(&mut self, snap: &IntervalSnapshot, canary_weight: f64) -> Verdict {
        let at = snap.start;
        let c = snap.canary.counter(&self.signal);
        let b = snap.baseline.counter(&self.signal);
        self.canary.add(c, c);
        self.baseline.add(b, b);
        self.span.cover(snap);
        if canary_weight > 0.0 && canary_weight < 1.0 {
            let (x, n) = (c as f64, (c + b) as f64);
            let l = logit(canary_weight);
            // The weight, hence `l`, stays put through a stage.
            self.lik.log_lrs(x, n, l, &self.etas, &mut self.scratch);
            self.mixture.update(&self.scratch, at);
            if n > 0.0 {
                self.grid.update(x, n, l);
            }
        }
        let boundary = log_boundary(self.alpha);
        self.crossed |= self.mixture.max_log_e() >= boundary;
        let (lo, hi) = if self.lean && !self.crossed {
            (None, None)
        } else {
            self.grid.interval(self.alpha)
        };
        Verdict {
            status: if self.crossed {
                Status::Crossed
            } else {
                Status::Monitoring
            },
            evidence: Evidence {
                estimand: "odds ratio of observed canary share to set weight".into(),
                baseline: self.baseline,
                canary: self.canary,
                estimate: finite(self.grid.estimate().exp()),
                interval: Interval::new(
                    lo.map_or(0.0, f64::exp),
                    hi.map_or(f64::INFINITY, f64::exp),
                    1.0 - self.alpha,
                ),
                log_e_value: finite(self.mixture.log_e()),
                log_boundary: boundary,
                window_start: self.span.start.unwrap_or(self.span.end),
                window_end: self.span.end,
                evidence_since: if self.lean && !self.crossed {
                    self.span.end
                } else {
                    self.mixture.dominant_start().unwrap_or(self.span.end)
                },
            },
        }
    }
}

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

/// One statistical trigger or gate, whatever its kind, so the engine can keep
/// them in one list and checkpoint them together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatTest {
    RatioVsBaseline(RatioVsBaseline),
    RatioThreshold(RatioThreshold),
    QuantileThreshold(QuantileThreshold),
    QuantileVsBaseline(QuantileVsBaseline),
    Disparity(Disparity),
}

/// Alias used for gates built with [`RatioVsBaseline::gate`].
pub type RatioGate = RatioVsBaseline;

impl StatTest {
    /// Whether what it reads of latency ([`StatTest::latency_reads`]) can
    /// still change: only a latency-vs-baseline test estimating its `T`.
    pub fn latency_reads_may_change(&self) -> bool {
        matches!(self, StatTest::QuantileVsBaseline(t) if t.test.is_none())
    }

    /// What [`StatTest::observe`] will read of the latency `signal`.
    pub fn latency_reads(&self, signal: &str) -> LatencyReads {
        match self {
            StatTest::QuantileThreshold(t) => t.latency_reads(signal),
            StatTest::QuantileVsBaseline(t) => t.latency_reads(signal),
            StatTest::RatioVsBaseline(_) | StatTest::RatioThreshold(_) | StatTest::Disparity(_) => {
                LatencyReads::NOTHING
            }
        }
    }

    /// Feeds one admitted interval.
    pub fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        match self {
            StatTest::RatioVsBaseline(t) => t.observe(snap),
            StatTest::RatioThreshold(t) => t.observe(snap),
            StatTest::QuantileThreshold(t) => t.observe(snap),
            StatTest::QuantileVsBaseline(t) => t.observe(snap),
            StatTest::Disparity(t) => t.observe(snap),
        }
    }

    /// Lean evidence: a verdict that has not crossed carries no interval
    /// (unbounded) and, for ratio tests, the naive estimate; the status, the
    /// e-values, the counts and a crossed verdict's whole evidence are the
    /// same as without it. The bounds cost a root search over every restart
    /// slot each interval, and a caller that reads evidence only from the
    /// trigger that fires (the simulator) need not pay for them. Disparity
    /// decides on its intervals: lean, it skips them only while it cannot
    /// fire (see `Disparity::may_fire`).
    pub fn set_lean(&mut self, lean: bool) {
        match self {
            StatTest::RatioVsBaseline(t) => t.lean = lean,
            StatTest::RatioThreshold(t) => t.lean = lean,
            StatTest::QuantileThreshold(t) => t.lean = lean,
            StatTest::QuantileVsBaseline(t) => t.lean = lean,
            StatTest::Disparity(t) => t.lean = lean,
        }
    }

    /// Lean evidence for a gate, whose caller asks only whether it is shown:
    /// as [`StatTest::set_lean`], and no interval even once crossed (the
    /// e-value, the counts and the status are the same).
    pub fn set_lean_gate(&mut self, lean: bool) {
        self.set_lean(lean);
        match self {
            StatTest::RatioVsBaseline(t) => t.lean_gate = lean,
            StatTest::QuantileVsBaseline(t) => t.lean_gate = lean,
            StatTest::RatioThreshold(_)
            | StatTest::QuantileThreshold(_)
            | StatTest::Disparity(_) => {}
        }
    }

    /// The answer for an interval excluded by warm-up (no data is fed).
    pub fn excluded(&self) -> Verdict {
        match self {
            StatTest::RatioVsBaseline(t) => t.current(Status::Excluded),
            StatTest::RatioThreshold(t) => t.current(Status::Excluded),
            StatTest::QuantileThreshold(t) => t.current(Status::Excluded),
            StatTest::QuantileVsBaseline(t) => t.current(Status::Excluded),
            StatTest::Disparity(t) => t.current(Status::Excluded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic interval: counts exactly at their expectations.
    fn snap(i: u64, nc: u64, nb: u64, pc: f64, pb: f64) -> IntervalSnapshot {
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

    fn crossed_within(t: &mut RatioVsBaseline, n: u64, pc: f64, pb: f64) -> Option<u64> {
        (0..n).find(|&i| t.observe(&snap(i, 1000, 19_000, pc, pb)).crossed())
    }

    #[test]
    fn the_normal_tests_bound_reads_the_way_its_decision_went() {
        // A late drop (restart slots carry it) and an early increase: at the
        // moment each test fires, its one-sided bound excludes the null, and
        // before that it does not.
        let c = ChangeDetection::over_horizon(400, 31);
        let mut drop = RatioVsBaseline::relative_drop("errors", "requests", 0.02, 0.01, c)
            .unwrap()
            .with_method(RatioMethod::Normal);
        let mut fired = false;
        for i in 0..400 {
            let pc = if i < 120 { 0.05 } else { 0.045 };
            let v = drop.observe(&snap(i, 1000, 19_000, pc, 0.05));
            let upper = v.evidence.interval.upper;
            assert!(v.evidence.interval.lower.is_none());
            if v.crossed() && !fired {
                fired = true;
                assert!(upper.is_some_and(|u| u < 0.98), "{:?}", v.evidence);
            }
            if !drop.crossed && v.status == Status::Monitoring {
                assert!(
                    upper.is_none_or(|u| u >= 0.98 - 1e-9),
                    "{i}: {:?}",
                    v.evidence
                );
            }
        }
        assert!(fired);
        let mut inc = RatioVsBaseline::relative_increase("errors", "requests", 0.05, 0.01, c)
            .unwrap()
            .with_method(RatioMethod::Normal);
        let at = crossed_within(&mut inc, 400, 0.06, 0.05).expect("fires");
        let v = inc.current(Status::Monitoring);
        assert!(
            v.evidence.interval.lower.is_some_and(|l| l > 1.05),
            "{at}: {:?}",
            v.evidence
        );
    }

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

    #[test]
    fn auto_picks_count_for_rare_and_normal_for_common_events() {
        let c = ChangeDetection::OFF;
        let mut rare =
            RatioVsBaseline::relative_increase("errors", "requests", 0.1, 0.01, c).unwrap();
        rare.observe(&snap(0, 1000, 19_000, 0.005, 0.005));
        assert_eq!(rare.method_in_use(), Some(RatioMethod::Count));
        let mut common =
            RatioVsBaseline::relative_increase("errors", "requests", 0.1, 0.01, c).unwrap();
        common.observe(&snap(0, 1000, 19_000, 0.05, 0.05));
        assert_eq!(common.method_in_use(), Some(RatioMethod::Normal));
    }

    #[test]
    fn increase_and_drop_fire_on_their_own_side_only() {
        let c = ChangeDetection::over_horizon(400, 15);
        for method in [RatioMethod::Count, RatioMethod::Normal] {
            let inc = || {
                RatioVsBaseline::relative_increase("errors", "requests", 0.1, 0.01, c)
                    .unwrap()
                    .with_method(method)
            };
            let drop = || {
                RatioVsBaseline::relative_drop("errors", "requests", 0.1, 0.01, c)
                    .unwrap()
                    .with_method(method)
            };
            assert!(
                crossed_within(&mut inc(), 400, 0.015, 0.01).is_some(),
                "{method:?}"
            );
            assert!(
                crossed_within(&mut inc(), 400, 0.006, 0.01).is_none(),
                "{method:?}"
            );
            assert!(
                crossed_within(&mut drop(), 400, 0.006, 0.01).is_some(),
                "{method:?}"
            );
            assert!(
                crossed_within(&mut drop(), 400, 0.015, 0.01).is_none(),
                "{method:?}"
            );
        }
    }

    #[test]
    fn gates_are_shown_on_the_right_evidence() {
        let gate = |k| RatioVsBaseline::gate("errors", "requests", k, 0.05).unwrap();
        assert!(crossed_within(&mut gate(GateKind::MinGain(0.05)), 400, 0.013, 0.01).is_some());
        assert!(crossed_within(&mut gate(GateKind::MinGain(0.05)), 400, 0.0104, 0.01).is_none());
        assert!(crossed_within(&mut gate(GateKind::MaxIncrease(0.2)), 400, 0.01, 0.01).is_some());
        assert!(crossed_within(&mut gate(GateKind::MaxIncrease(0.2)), 400, 0.013, 0.01).is_none());
        assert!(crossed_within(&mut gate(GateKind::MaxDrop(0.2)), 400, 0.01, 0.01).is_some());
        assert!(crossed_within(&mut gate(GateKind::MaxDrop(0.2)), 400, 0.007, 0.01).is_none());
        assert!(RatioVsBaseline::gate("e", "r", GateKind::MaxDrop(1.5), 0.05).is_err());
    }

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

    #[test]
    fn sample_ratio_check_fires_on_a_skewed_split() {
        let mut srm = SampleRatioCheck::new("requests", 0.001, ChangeDetection::OFF).unwrap();
        let mut fired = None;
        for i in 0..200 {
            // Router delivers 6% while the weight says 5%.
            if srm.observe(&snap(i, 600, 9_400, 0.0, 0.0), 0.05).crossed() {
                fired = Some(i);
                break;
            }
        }
        assert!(fired.is_some_and(|i| i < 20), "{fired:?}");
        let mut ok = SampleRatioCheck::new("requests", 0.001, ChangeDetection::OFF).unwrap();
        assert!((0..200).all(|i| !ok.observe(&snap(i, 500, 9_500, 0.0, 0.0), 0.05).crossed()));
    }

    #[test]
    fn warmup_excludes_the_straddling_and_the_next_interval() {
        let mut w = Warmup::new(1);
        assert!(w.admits(&snap(0, 1, 1, 0.0, 0.0)));
        w.on_weight_change(Timestamp::from_millis(45_000)); // inside interval 1
        assert!(!w.admits(&snap(1, 1, 1, 0.0, 0.0)));
        assert!(!w.admits(&snap(2, 1, 1, 0.0, 0.0)));
        assert!(w.admits(&snap(3, 1, 1, 0.0, 0.0)));
    }

    #[test]
    fn disparity_fires_on_a_clear_gap_and_reports_evidence() {
        let mut d = Disparity::new("approvals", "requests", 0.8, 0.01, 4).unwrap();
        let mut last = None;
        for i in 0..200 {
            let mut s = snap(i, 0, 0, 0.0, 0.0);
            for (g, rate) in [("a", 0.15), ("b", 0.3)] {
                s.canary.add_group("requests", g, 100);
                s.canary.add_group("approvals", g, (100.0 * rate) as u64);
            }
            let v = d.observe(&s);
            if v.crossed() {
                last = Some(v);
                break;
            }
        }
        let v = last.expect("fires");
        assert!((v.evidence.estimate - 0.5).abs() < 1e-9);
        assert!(v.evidence.interval.upper.unwrap() < 0.8);
        assert!(v.evidence.log_e_value >= v.evidence.log_boundary - 0.5);
    }
}

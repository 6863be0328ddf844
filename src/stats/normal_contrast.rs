//! The normal-mixture mSPRT on information time (statistics.md §2.2), the
//! engine of ratio-vs-baseline tests on common events (CTR).

use serde::{Deserialize, Serialize};

use super::dispersion::{Dispersion, Overdispersion};
use super::hypothesis::{Direction, design_grid};
use super::mixture::{
    ChangeDetection, RestartMixture, bisect, log_sum_exp, normal_mixture_bound, normal_mixture_rho,
};
use crate::time::Timestamp;

/// Normal-mixture mSPRT on information time for the contrast
/// `s·(p_c − f·p_b)`, stratified per interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct NormalContrast {
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
    /// Overdispersion, estimated predictably (see [`super::dispersion`]).
    /// Its presence also marks a test whose per-interval variance comes
    /// from earlier intervals only; checkpoints written before it existed
    /// lack it and keep the variance they were started with (which also
    /// used the current interval's counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispersion: Option<Dispersion>,
}

const VARIANCE_PRIOR_WEIGHT: f64 = 100.0;

impl NormalContrast {
    /// A test of `direction` against `null_ratio`, its mixture spread
    /// around a `design` contrast, restarting as `change` says.
    pub(crate) fn new(
        direction: Direction,
        null_ratio: f64,
        design: f64,
        change: ChangeDetection,
        overdispersion: f64,
        dispersion: Option<Overdispersion>,
    ) -> NormalContrast {
        let lambdas = design_grid(design);
        NormalContrast {
            direction,
            null_ratio,
            design_contrast: design,
            mixture: RestartMixture::new(lambdas.len(), change),
            scratch: vec![0.0; lambdas.len()],
            lambdas,
            s: 0.0,
            v: 0.0,
            segments: Vec::new(),
            overdispersion,
            dispersion: dispersion.map(Dispersion::new),
        }
    }

    /// Where the dispersion estimate starts, for a rate near `p` (see
    /// [`Dispersion::with_log_odds_scale`]).
    pub(crate) fn with_rate(mut self, p: f64) -> Self {
        if let Some(d) = &mut self.dispersion {
            d.set_log_odds_scale(p * (1.0 - p));
        }
        self
    }

    /// Starts the dispersion estimate from `history`, fed by intervals
    /// before the test (its burn-in), on this test's scale (before any
    /// data; only when both estimate the same way).
    pub(crate) fn with_dispersion_history(mut self, history: Dispersion) -> Self {
        if self.mixture.steps() == 0
            && self
                .dispersion
                .as_ref()
                .is_some_and(|d| d.setting() == history.setting())
        {
            self.dispersion = Some(history);
        }
        self
    }

    /// Replaces the alternatives (before any data): see
    /// [`super::hypothesis::information_grid`].
    pub(crate) fn with_grid(mut self, lambdas: Vec<f64>) -> Self {
        if !lambdas.is_empty() && self.mixture.steps() == 0 {
            self.mixture = RestartMixture::new(lambdas.len(), self.mixture.change());
            self.scratch = vec![0.0; lambdas.len()];
            self.lambdas = lambdas;
        }
        self
    }

    pub(crate) fn log_e(&self) -> f64 {
        self.mixture.log_e()
    }

    pub(crate) fn max_log_e(&self) -> f64 {
        self.mixture.max_log_e()
    }

    /// Where the restart slot with the most evidence began.
    pub(crate) fn dominant_start(&self) -> Option<Timestamp> {
        self.mixture.dominant_start()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update(
        &mut self,
        xc: u64,
        nc: u64,
        xb: u64,
        nb: u64,
        pooled_before: f64,
        at: Timestamp,
    ) {
        if nc == 0 || nb == 0 {
            self.scratch.iter_mut().for_each(|l| *l = 0.0);
            self.mixture.update(&self.scratch, at);
            self.sync_segments(0.0, 0.0);
            return;
        }
        let f = self.null_ratio;
        // Predictable: the rate pooled over earlier intervals only.
        let (d, model) = interval_contrast(self.direction, f, pooled_before, [xc, nc, xb, nb]);
        let (xc, nc, xb, nb) = (xc as f64, nc as f64, xb as f64, nb as f64);
        let var = match self.dispersion.as_mut() {
            Some(dispersion) => {
                let var = model * self.overdispersion * dispersion.factor(model);
                dispersion.record(d, model);
                var
            }
            None => {
                let p = (xc + xb + VARIANCE_PRIOR_WEIGHT * pooled_before)
                    / (nc + nb + VARIANCE_PRIOR_WEIGHT);
                let unit = if p < 1.0 { p * (1.0 - p) } else { p };
                unit.max(1e-12) * (1.0 / nc + f * f / nb) * self.overdispersion
            }
        }
        .max(1e-300);
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
        sync_segments(&mut self.segments, &self.mixture, si, vi);
    }

    /// The one-sided anytime-valid bound on the contrast that this test's
    /// own mixture implies (see [`one_sided_bound`]).
    pub(crate) fn one_sided_bound(&self, alpha: f64) -> Option<f64> {
        one_sided_bound(
            &self.mixture,
            &self.lambdas,
            &self.segments,
            self.s / self.v.max(1e-300),
            self.design_contrast,
            alpha,
        )
    }

    /// Estimate and anytime-valid interval of the contrast (two-sided normal
    /// mixture, tuned to the design effect).
    pub(crate) fn contrast_interval(&self, alpha: f64) -> (f64, f64, f64) {
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

/// Mirrors a mixture's slots in `segments` (each slot's `(Σ s, Σ v)` since
/// it began): a slot that began with this interval starts from zero; every
/// slot adds this interval's `(s, v)`.
pub(crate) fn sync_segments(
    segments: &mut Vec<(f64, f64)>,
    mixture: &RestartMixture,
    si: f64,
    vi: f64,
) {
    while segments.len() < mixture.slot_count() {
        segments.push((0.0, 0.0));
    }
    for (s, v) in segments {
        *s += si;
        *v += vi;
    }
}

/// `ln Z` of a normal mixture on information time (slots, alternatives
/// `lambdas`, weights) for the null "contrast ≤ c0" instead of "≤ 0": each
/// slot's log likelihood ratio `λ·S − λ²·V/2` becomes
/// `λ·(S − c0·V) − λ²·V/2`.
fn log_e_at(mixture: &RestartMixture, lambdas: &[f64], segments: &[(f64, f64)], c0: f64) -> f64 {
    let (slot_w, alt_w) = mixture.log_weights();
    let terms = segments.iter().zip(slot_w).flat_map(|(&(s, v), &sw)| {
        lambdas
            .iter()
            .zip(alt_w)
            .map(move |(&lam, &aw)| sw + aw + lam * (s - c0 * v) - 0.5 * lam * lam * v)
    });
    log_sum_exp(terms)
}

/// The one-sided anytime-valid bound on the contrast that a normal
/// mixture implies: the smallest `c0` for which the mixture against
/// "contrast ≤ c0" stays below `1/alpha`. Inverting a family of
/// e-processes gives a confidence sequence (Ville at the true contrast),
/// and it is consistent with the decision: when the test has fired, the
/// bound lies beyond the null. `estimate` (the pooled contrast) and
/// `scale` (the design) start the bracket. `None` before any information.
pub(crate) fn one_sided_bound(
    mixture: &RestartMixture,
    lambdas: &[f64],
    segments: &[(f64, f64)],
    estimate: f64,
    scale: f64,
    alpha: f64,
) -> Option<f64> {
    if segments.iter().all(|&(_, v)| v <= 0.0) {
        return None;
    }
    let cut = (1.0 / alpha).ln();
    let below = |c0: f64| log_e_at(mixture, lambdas, segments, c0) < cut;
    // Bracket: widen until one end is below the cut and the other not.
    let scale = scale.abs().max(1e-12);
    let mut hi = estimate + scale;
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

/// One interval's contrast `s·(p̂_c − f·p̂_b)` and its binomial variance at
/// the pooled rate `pooled`, from `[x_c, n_c, x_b, n_b]` (both `n` > 0). An
/// interval whose events are all zero (or all one) so far carries the
/// information of one event, not of 1e12.
pub(crate) fn interval_contrast(
    direction: Direction,
    f: f64,
    pooled: f64,
    [xc, nc, xb, nb]: [u64; 4],
) -> (f64, f64) {
    let (xc, nc, xb, nb) = (xc as f64, nc as f64, xb as f64, nb as f64);
    let d = direction.sign() * (xc / nc - f * xb / nb);
    let unit = if pooled < 1.0 {
        pooled * (1.0 - pooled)
    } else {
        pooled
    };
    let unit = unit.max(1.0 / (nc + nb));
    (d, unit * (1.0 / nc + f * f / nb))
}

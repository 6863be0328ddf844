//! The two-arm exposure-conditioned count test (statistics.md §2.9): the
//! engine of ratio-vs-baseline tests on rare events and of
//! latency-vs-baseline exceedance tests.

use serde::{Deserialize, Serialize};

use super::dispersion::{Dispersion, Overdispersion};
use super::evidence::{ArmCounts, Interval};
use super::hypothesis::{Direction, design_grid};
use super::mixture::{ChangeDetection, LikelihoodGrid, RestartMixture, bernoulli_log_lik, logit};
use crate::time::Timestamp;

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
    /// Overdispersion: each interval's likelihood is tempered by the
    /// predictable factor `φ` (its counts enter as `x/φ` of `n/φ`), which
    /// keeps its factor a supermartingale increment when the canary's
    /// share of events varies `φ` times more than binomially. Absent in
    /// checkpoints written before it existed (no inflation, as then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispersion: Option<Dispersion>,
    /// With `dispersion`: the counts before the last interval of data.
    #[serde(default, skip_serializing_if = "is_empty")]
    canary_before: ArmCounts,
    #[serde(default, skip_serializing_if = "is_empty")]
    baseline_before: ArmCounts,
}

fn is_empty(c: &ArmCounts) -> bool {
    *c == ArmCounts::default()
}

/// The log rate ratio the counts point to (½ added to each arm's events,
/// so no arm's zero makes it infinite; 0 before any exposure).
fn pooled_log_ratio(canary: ArmCounts, baseline: ArmCounts) -> f64 {
    if canary.exposure == 0 || baseline.exposure == 0 {
        return 0.0;
    }
    let rate = |c: ArmCounts| (c.events as f64 + 0.5) / c.exposure as f64;
    (rate(canary) / rate(baseline)).ln()
}

impl TwoArmCount {
    /// Where the restart slot with the most evidence began.
    pub fn dominant_start(&self) -> Option<Timestamp> {
        self.mixture.dominant_start()
    }

    /// `design_log_ratio` is the log rate ratio the grid is centred on (e.g.
    /// twice the tolerance).
    pub fn new(
        direction: Direction,
        null_log_ratio: f64,
        design_log_ratio: f64,
        change: ChangeDetection,
        overdispersion: Option<Overdispersion>,
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
            dispersion: overdispersion.map(|o| Dispersion::new(o).with_log_odds_scale(1.0)),
            canary_before: ArmCounts::default(),
            baseline_before: ArmCounts::default(),
        }
    }

    /// Replaces the alternatives (before any data): see
    /// [`super::hypothesis::information_grid`].
    pub fn with_grid(mut self, etas: Vec<f64>) -> Self {
        if !etas.is_empty() && self.mixture.steps() == 0 {
            self.mixture = RestartMixture::new(etas.len(), self.mixture.change());
            self.scratch = vec![0.0; etas.len()];
            self.etas = etas;
        }
        self
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
        // The canary's share of events under the null, and the binomial
        // information of its log-odds there.
        let share = 1.0 / (1.0 + (-null).exp());
        let info = n * share * (1.0 - share);
        let temper = match &self.dispersion {
            Some(d) if info > 0.0 => d.factor(1.0 / info),
            _ => 1.0,
        };
        let (x_eff, n_eff) = (x / temper, n / temper);
        let l0 = bernoulli_log_lik(x_eff, n_eff, null);
        let s = self.direction.sign();
        for (out, &eta) in self.scratch.iter_mut().zip(&self.etas) {
            *out = bernoulli_log_lik(x_eff, n_eff, null + s * eta) - l0;
        }
        self.mixture.update(&self.scratch, at);
        if n > 0.0
            && let Some(d) = &mut self.dispersion
        {
            // Deviations from the null share (a constant offset under a
            // constant effect, which differencing removes), against the
            // binomial variance at the share the data so far point to
            // (predictable: counts before this interval): under a
            // regression that variance differs from the null's, and the
            // difference is not overdispersion.
            let shift = pooled_log_ratio(self.canary_before, self.baseline_before);
            let expected = 1.0 / (1.0 + (-(base + shift)).exp());
            let unit = share * (1.0 - share);
            let spread = expected * (1.0 - expected);
            if unit > 0.0 && spread > 0.0 {
                d.record((x / n - share) / unit, spread / (n * unit * unit));
            }
        }
        if self.dispersion.is_some() {
            self.canary_before = self.canary;
            self.baseline_before = self.baseline;
        }
        if n > 0.0 {
            if defer_interval {
                self.deferred.push([x_eff, n_eff, base]);
            } else {
                self.catch_up();
                self.grid.update(x_eff, n_eff, base);
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

//! The two-arm exposure-conditioned count test (statistics.md §2.9): the
//! engine of ratio-vs-baseline tests on rare events and of
//! latency-vs-baseline exceedance tests.

use serde::{Deserialize, Serialize};

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

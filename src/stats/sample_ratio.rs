//! The **sample-ratio check**: a two-sided grid mixture on the canary's
//! share of requests against the set weight, per interval. It only pauses.
//!
//! Routing per connection or per sticky session is not per request, so the
//! split is never exactly the weight: the null is a band, "the odds of the
//! observed share are within a factor `1 ± tolerance` of the weight's"
//! (each side's alternatives are tested against the band's edge on their
//! side), and the per-interval variance is inflated by the predictable
//! overdispersion estimate of [`super::dispersion`].

use serde::{Deserialize, Serialize};

use super::dispersion::{Dispersion, Overdispersion};
use super::evidence::{
    ArmCounts, Estimand, Evidence, Interval, Span, Status, Verdict, finite, is_false,
};
use super::hypothesis::log_boundary;
use super::mixture::{ChangeDetection, LikelihoodGrid, LogLikCache, RestartMixture, logit};
use super::snapshot::IntervalSnapshot;
use super::{StatsError, check_unit_open};

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
    /// The band's half-width on the log-odds scale, `ln(1 + tolerance)`;
    /// 0 (an exact null) in checkpoints written before it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    band: f64,
    #[serde(skip)]
    lik_below: LogLikCache,
    /// Absent in checkpoints written before it existed: no inflation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispersion: Option<Dispersion>,
    /// The weight of the last interval fed (a new weight starts a new
    /// chain of differences for the dispersion estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_weight: Option<f64>,
    /// The estimand's text, made once (every interval's verdict points at
    /// it instead of allocating its own).
    #[serde(skip)]
    estimand: Estimand,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
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
            band: 0.0,
            lik_below: LogLikCache::default(),
            dispersion: Some(Dispersion::new(Overdispersion::Auto)),
            last_weight: None,
            estimand: Estimand::default(),
        })
    }

    /// Accepts an observed share whose odds are within `1 ± tolerance` of
    /// the weight's (default 0: the exact weight).
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        self.band = if tolerance.is_finite() && tolerance > 0.0 {
            tolerance.ln_1p()
        } else {
            0.0
        };
        self
    }

    /// How the check accounts for a split that varies more than binomially
    /// (default [`Overdispersion::Auto`]).
    pub fn with_overdispersion(mut self, setting: Overdispersion) -> Self {
        self.dispersion = Some(Dispersion::new(setting));
        self
    }

    /// The same check with no data: its signal, budget, restart grid, band,
    /// overdispersion setting and lean flag (a new weight step starts one).
    pub fn renewed(&self) -> Self {
        let mut fresh = SampleRatioCheck::new(&self.signal, self.alpha, self.mixture.change())
            .unwrap_or_else(|_| self.clone());
        fresh.band = self.band;
        fresh.dispersion = self
            .dispersion
            .as_ref()
            .map(|d| Dispersion::new(d.setting()));
        fresh.lean = self.lean;
        fresh
    }

    /// Lean evidence (see [`StatTest::set_lean`](super::StatTest::set_lean)).
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
            let (x, n) = (c as f64, c as f64 + b as f64);
            let l = logit(canary_weight);
            let model = canary_weight * (1.0 - canary_weight) / n;
            let temper = match &mut self.dispersion {
                Some(d) if n > 0.0 => {
                    if self.last_weight != Some(canary_weight) {
                        d.break_chain();
                        if d.pairs() == 0 {
                            d.set_log_odds_scale(canary_weight * (1.0 - canary_weight));
                        }
                    }
                    let f = d.factor(model);
                    d.record(x / n, model);
                    f
                }
                _ => 1.0,
            };
            self.last_weight = Some(canary_weight);
            let (x, n) = (x / temper, n / temper);
            // The weight, hence `l`, stays put through a weight step.
            if self.band == 0.0 {
                self.lik.log_lrs(x, n, l, &self.etas, &mut self.scratch);
            } else {
                // Alternatives above the band against its upper edge, those
                // below against its lower edge (`etas` holds the positive
                // half first).
                let half = self.etas.len() / 2;
                let (up, down) = self.scratch.split_at_mut(half);
                self.lik
                    .log_lrs(x, n, l + self.band, &self.etas[..half], up);
                self.lik_below
                    .log_lrs(x, n, l - self.band, &self.etas[half..], down);
            }
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
                estimand: self.estimand.text(None, || {
                    "odds ratio of observed canary share to set weight".into()
                }),
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
                caveat: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::snap;

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
        // About 20 intervals: the first are weighed down until the split's
        // own interval-to-interval spread is known (see `dispersion`).
        assert!(fired.is_some_and(|i| i < 30), "{fired:?}");
        let mut ok = SampleRatioCheck::new("requests", 0.001, ChangeDetection::OFF).unwrap();
        assert!((0..200).all(|i| !ok.observe(&snap(i, 500, 9_500, 0.0, 0.0), 0.05).crossed()));
    }
}

//! The **sample-ratio check**: a two-sided grid mixture on the canary's
//! share of requests against the set weight, per interval. It only pauses.

use serde::{Deserialize, Serialize};

use super::evidence::{ArmCounts, Evidence, Interval, Span, Status, Verdict, finite, is_false};
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
            let (x, n) = (c as f64, (c + b) as f64);
            let l = logit(canary_weight);
            // The weight, hence `l`, stays put through a weight step.
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
        assert!(fired.is_some_and(|i| i < 20), "{fired:?}");
        let mut ok = SampleRatioCheck::new("requests", 0.001, ChangeDetection::OFF).unwrap();
        assert!((0..200).all(|i| !ok.observe(&snap(i, 500, 9_500, 0.0, 0.0), 0.05).crossed()));
    }
}

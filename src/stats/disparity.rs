//! **Disparity** (`disparity: {minRatio}` over groups): per-group rate
//! confidence sequences (conjugate beta mixture) with a union bound over at
//! most `max_groups` groups; fires when `min_i UCB_i < minRatio · max_j
//! LCB_j`. This assumes each group's rate is stationary within the step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::evidence::{
    ArmCounts, Estimand, Evidence, Interval, Span, Status, Verdict, finite, is_false,
};
use super::hypothesis::log_boundary;
use super::mixture::{clamp_p, rate_confidence_sequence, rate_log_e};
use super::snapshot::IntervalSnapshot;
use super::{StatsError, check_unit_open};

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
    /// Lean evidence (see [`StatTest::set_lean`](super::StatTest::set_lean)).
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
    }

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
                caveat: None,
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
                caveat: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::snap;

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

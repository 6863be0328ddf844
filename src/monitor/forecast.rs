//! `policy explain --rps`: the expected time to detect a change of twice a
//! statistical trigger's tolerance, from the tests' own formulas.

use super::build::{change_detection, schedule};
use crate::policy::{Bound, Policy, Regression, Trigger, TriggerCheck, Weight};
use crate::stats::{self, Direction};

/// Expected time to detect a change of twice a statistical trigger's
/// tolerance, from the tests' own formulas, at `rps_total` requests per
/// second and canary `weight`. `base_rate` is the baseline's rate for
/// `vsBaseline` on a ratio metric (the count test and the normal test behave
/// very differently at 0.1% and at 5%). `None` when the test has no closed
/// form here (latency vs baseline, means and disparity depend on
/// distributions the policy does not state; simulate those with
/// `canaryd-sim`), and for objective rules.
#[deny(clippy::wildcard_enum_match_arm)]
pub fn forecast(
    policy: &Policy,
    trigger: &Trigger,
    rps_total: f64,
    weight: Weight,
    base_rate: Option<f64>,
) -> Option<stats::DetectionForecast> {
    let change = change_detection(policy);
    let alpha = policy.alpha_per_trigger();
    let w = weight.fraction();
    let usable = w > 0.0 && w < 1.0 && rps_total.is_finite() && rps_total > 0.0;
    if !usable {
        return None;
    }
    match &trigger.check {
        TriggerCheck::RatioVsBaseline { regression, .. } => {
            let base = base_rate.filter(|b| *b > 0.0 && *b < 1.0)?;
            let (direction, tolerance) = match *regression {
                Regression::RelativeIncrease(x) => (Direction::Increase, x),
                Regression::RelativeDrop(x) => (Direction::Decrease, x),
            };
            Some(stats::forecast::ratio_vs_baseline(
                base,
                direction,
                tolerance,
                rps_total,
                w,
                alpha,
                change,
                Some(&schedule(policy)),
            ))
        }
        TriggerCheck::RatioThreshold { bound, .. } => {
            let p0 = match *bound {
                Bound::Above(p) => p,
                Bound::Below(p) => 1.0 - p,
            };
            (p0 > 0.0 && p0 < 1.0)
                .then(|| stats::forecast::rate_threshold(p0, rps_total, w, alpha, change))
        }
        TriggerCheck::QuantileThreshold { metric, .. } => Some(stats::forecast::rate_threshold(
            1.0 - metric.quantile,
            rps_total,
            w,
            alpha,
            change,
        )),
        TriggerCheck::QuantileVsBaseline { .. }
        | TriggerCheck::MeanVsBaseline { .. }
        | TriggerCheck::MeanThreshold { .. }
        | TriggerCheck::Disparity { .. }
        | TriggerCheck::SustainedRatio { .. }
        | TriggerCheck::SustainedQuantile { .. }
        | TriggerCheck::SustainedMean { .. }
        | TriggerCheck::BurnRate { .. }
        | TriggerCheck::NoData { .. } => None,
    }
}

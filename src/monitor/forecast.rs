//! `policy explain --rps`: the expected time to detect a change of twice a
//! statistical trigger's tolerance, and the expected time a healthy canary
//! takes to show a gate (above all the `requireNoHarm` ones), from the
//! tests' own formulas, set against the policy's schedule.

use std::time::Duration;

use super::build::{change_detection, schedule};
use super::warmup;
use crate::policy::{
    Bound, Gate, GateCheck, GateRequirement, Policy, Regression, Step, Trigger, TriggerCheck,
    Weight,
};
use crate::stats::forecast::{Cadence, Conditions};
use crate::stats::ratio::{AUTO_DECIDE_EXPOSURE, RARE_RATE};
use crate::stats::{self, ChangeDetection, Direction};

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
    let w = weight.fraction();
    let usable = w > 0.0 && w < 1.0 && rps_total.is_finite() && rps_total > 0.0;
    if !usable {
        return None;
    }
    let plan = schedule(policy);
    let at = Conditions {
        rps_total,
        canary_weight: w,
        alpha_share: policy.alpha_per_trigger(),
        change: change_detection(policy),
        schedule: Some(&plan),
        cadence: Some(Cadence {
            interval_s: policy.analysis.interval.as_secs_f64(),
            warmup_intervals: warmup(policy).intervals(),
        }),
    };
    match &trigger.check {
        TriggerCheck::RatioVsBaseline { regression, .. } => {
            let base = base_rate.filter(|b| *b > 0.0 && *b < 1.0)?;
            let (direction, tolerance) = match *regression {
                Regression::RelativeIncrease(x) => (Direction::Increase, x),
                Regression::RelativeDrop(x) => (Direction::Decrease, x),
            };
            Some(stats::forecast::ratio_vs_baseline(
                base, direction, tolerance, &at,
            ))
        }
        TriggerCheck::RatioThreshold { bound, .. } => {
            let p0 = match *bound {
                Bound::Above(p) => p,
                Bound::Below(p) => 1.0 - p,
            };
            (p0 > 0.0 && p0 < 1.0).then(|| stats::forecast::rate_threshold(p0, &at))
        }
        TriggerCheck::QuantileThreshold { metric, .. } => {
            Some(stats::forecast::rate_threshold(1.0 - metric.quantile, &at))
        }
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

/// Expected time for a healthy canary (true ratio 1, the baseline's rate
/// `base_rate`) to show a ratio gate that bounds harm (`maxIncrease` or
/// `maxDrop`), at `rps_total` and canary `weight`: the time for the e-value
/// of the null "the harm is at least the bound" to reach its boundary at
/// the gate's share of alpha. `None` for gates that a healthy canary does
/// not show (`minGain`), for latency and mean gates (their distributions are
/// not in the policy: simulate them), and at weights 0 and 100.
pub fn gate_forecast(
    policy: &Policy,
    gate: &Gate,
    rps_total: f64,
    weight: Weight,
    base_rate: Option<f64>,
) -> Option<stats::DetectionForecast> {
    let (direction, null) = harm_bound(&gate.check)?;
    ratio_gate_forecast(
        base_rate?,
        direction,
        null,
        rps_total,
        weight.fraction(),
        policy.alpha_per_gate(),
    )
}

/// (direction of the evidence, null ratio) of a ratio gate bounding harm.
fn harm_bound(check: &GateCheck) -> Option<(Direction, f64)> {
    match check {
        GateCheck::Ratio { requirement, .. } => match *requirement {
            GateRequirement::MaxIncrease(x) => Some((Direction::Decrease, 1.0 + x)),
            GateRequirement::MaxDrop(x) => Some((Direction::Increase, 1.0 - x)),
            GateRequirement::MinGain(_) => None,
        },
        GateCheck::QuantileMaxIncrease { .. } | GateCheck::Mean { .. } => None,
    }
}

/// The ratio gate's test (count test below `RARE_RATE`, the normal
/// contrast above, as `RatioMethod::Auto`; no restarts) when the truth is
/// ratio 1, with the null at the gate's bound.
fn ratio_gate_forecast(
    base_rate: f64,
    direction: Direction,
    null: f64,
    rps_total: f64,
    w: f64,
    alpha: f64,
) -> Option<stats::DetectionForecast> {
    let usable = w > 0.0
        && w < 1.0
        && rps_total.is_finite()
        && rps_total > 0.0
        && base_rate > 0.0
        && base_rate < 1.0
        && null > 0.0;
    if !usable {
        return None;
    }
    // Continuous: the schedule walk weighs the evidence rate at each
    // weight, which a rollout's fixed costs would distort.
    let at = Conditions {
        rps_total,
        canary_weight: w,
        alpha_share: alpha,
        change: ChangeDetection::OFF,
        schedule: None,
        cadence: None,
    };
    if base_rate < RARE_RATE {
        return Some(stats::forecast::two_arm_count(
            base_rate,
            direction,
            null,
            1.0,
            AUTO_DECIDE_EXPOSURE,
            &at,
        ));
    }
    Some(stats::forecast::normal_contrast(base_rate, null, 1.0, &at))
}

/// A gate's expected showing set against the policy's schedule (fastest
/// path: approvals granted at once; evidence accumulates over the weights
/// in force, and after the step that needs the gate the canary holds at the
/// weight before it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateSchedule {
    /// When the step that needs the gate comes on the fastest path.
    pub needed_at: Duration,
    /// Expected time from start until a healthy canary shows it; `None`
    /// when the canary never has a weight between 0 and 100 before it.
    pub shown_at: Option<Duration>,
    /// The rollout's `maxDuration`.
    pub max_duration: Duration,
}

impl GateSchedule {
    /// Expected to be shown before `maxDuration` ends the rollout.
    pub fn in_time(&self) -> bool {
        self.shown_at.is_some_and(|t| t <= self.max_duration)
    }
}

/// [`GateSchedule`] for a ratio gate bounding harm at `rps_total`, from
/// [`gate_forecast`] at each weight of the schedule. `None` where
/// `gate_forecast` has no estimate.
pub fn gate_schedule(
    policy: &Policy,
    gate: &Gate,
    rps_total: f64,
    base_rate: Option<f64>,
) -> Option<GateSchedule> {
    let (direction, null) = harm_bound(&gate.check)?;
    let base = base_rate?;
    let alpha = policy.alpha_per_gate();
    schedule_for(policy, gate.before, |w| {
        ratio_gate_forecast(base, direction, null, rps_total, w.fraction(), alpha)
            .map(|f| f.seconds)
    })
}

/// The smallest margin over the tolerance `bound / margin` (searched from
/// the policy's margin up to 100x) at which a healthy canary is expected
/// to show `gate` by the step that needs it; `None` when even 100x is not
/// enough or the gate has no estimate.
pub fn margin_in_time(
    policy: &Policy,
    gate: &Gate,
    rps_total: f64,
    base_rate: Option<f64>,
) -> Option<f64> {
    let margin = policy.analysis.require_no_harm?.margin;
    let (direction, null) = harm_bound(&gate.check)?;
    let base = base_rate?;
    let alpha = policy.alpha_per_gate();
    let tolerance = (null - 1.0).abs() / margin;
    let fits = |m: f64| {
        let null_m = match direction {
            Direction::Decrease => 1.0 + m * tolerance,
            Direction::Increase => 1.0 - m * tolerance,
        };
        if null_m <= 0.0 {
            // A drop bound at 100% or more needs no evidence.
            return true;
        }
        schedule_for(policy, gate.before, |w| {
            ratio_gate_forecast(base, direction, null_m, rps_total, w.fraction(), alpha)
                .map(|f| f.seconds)
        })
        .and_then(|s| s.shown_at.map(|t| t <= s.needed_at))
        .unwrap_or(false)
    };
    if fits(margin) {
        return Some(margin);
    }
    let (mut lo, mut hi) = (margin, 100.0);
    if !fits(hi) {
        return None;
    }
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if fits(mid) { hi = mid } else { lo = mid }
    }
    Some(hi)
}

/// Walks the steps: each bake at weight `w` adds `bake / seconds(w)` of
/// the evidence needed; from the step that sets `before` or more on, the
/// canary holds at the weight before it.
fn schedule_for(
    policy: &Policy,
    before: Weight,
    seconds_at: impl Fn(Weight) -> Option<f64>,
) -> Option<GateSchedule> {
    let mut t = 0.0f64;
    let mut progress = 0.0f64;
    let mut weight = Weight::ZERO;
    let mut shown_at = None;
    let mut needed_at = None;
    for step in &policy.steps {
        match step {
            Step::SetWeight(w) if *w >= before => {
                needed_at = Some(t);
                break;
            }
            Step::SetWeight(w) => weight = *w,
            Step::Bake(d) => {
                let d = d.as_secs_f64();
                if shown_at.is_none()
                    && weight > Weight::ZERO
                    && let Some(s) = seconds_at(weight)
                {
                    let rate = 1.0 / s.max(1e-9);
                    if progress + d * rate >= 1.0 {
                        shown_at = Some(t + (1.0 - progress) / rate);
                    }
                    progress += d * rate;
                }
                t += d;
            }
            Step::Approval(_) => {}
        }
    }
    let needed_at = needed_at.unwrap_or(t);
    if shown_at.is_none() && weight > Weight::ZERO && weight < Weight::FULL {
        let s = seconds_at(weight)?;
        shown_at = Some(needed_at + (1.0 - progress).max(0.0) * s);
    }
    let secs = |x: f64| Duration::from_secs_f64(x.clamp(0.0, 3.15e9));
    Some(GateSchedule {
        needed_at: secs(needed_at),
        shown_at: shown_at.map(secs),
        max_duration: policy.analysis.max_duration,
    })
}

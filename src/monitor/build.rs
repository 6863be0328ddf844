//! The policy-to-statistics mapping: one check per trigger and one test per
//! gate, each a `match` arm on the compiled check (`policy::TriggerCheck`,
//! `policy::GateCheck`). The compiler has already refused every combination
//! that is not legal, so no arm can meet one; a new trigger kind fails to
//! build until it has an arm here. What can still fail is a statistics
//! constructor refusing a parameter (a tolerance out of its range), which
//! the compiler's ranges rule out too; it is reported with the trigger's
//! name.

use std::time::Duration;

use super::Check;
use crate::policy::{
    Bound, GateCheck, GateRequirement, Policy, Regression, Step, Trigger, TriggerCheck,
};
use crate::stats::{
    BurnRate, BurnWindow, ChangeDetection, Direction, Disparity, GateKind, MeanLimit, MeanTest,
    NoData, Overdispersion, QuantileThreshold, QuantileVsBaseline, RatioThreshold, RatioVsBaseline,
    Schedule, StatTest, StatsError, SustainedMean, SustainedQuantile, SustainedRatio,
};

/// Budget of the sample-ratio guard: a false pause costs an operator's look,
/// so it is kept rare and apart from the rollback budget.
pub const SRM_ALPHA: f64 = 0.001;
/// The sample-ratio guard's band: an observed share whose odds are within
/// 10% of the weight's is not a mismatch (routing per connection or per
/// sticky session splits sessions, not requests, and never lands exactly).
pub const SRM_TOLERANCE: f64 = 0.1;
/// Most restart points of the change-detecting mixtures over the horizon.
pub const MAX_RESTARTS: u32 = 255;
/// Fewest intervals between two restart points.
pub const MIN_RESTART_SPACING: u64 = 10;
/// Groups a disparity test keeps (and splits its budget over).
pub const MAX_GROUPS: usize = 16;

/// The restart grid for a policy: restart points every `horizon / R`
/// intervals over the rollout's real schedule, with `R` as large as
/// [`MAX_RESTARTS`] while the spacing stays at least
/// [`MIN_RESTART_SPACING`] intervals.
///
/// A regression that starts between two restart points waits for the next
/// one (the slots already running carry the healthy evidence gathered before
/// it), so the spacing bounds the extra delay of a late change; each restart
/// point costs `ln(R / 0.1)` nats of evidence for the changes it catches
/// (the start slot holds 0.9 of the weight, see `stats::mixture`).
///
/// The horizon is `maxDuration` plus the approvals' timeouts (data keeps
/// arriving while an approval is awaited), or an experiment's duration. An
/// approval without a timeout adds nothing: its wait is unknown, and giving
/// it a day of restart points (as before) spread the weight of every
/// restart over 250 points instead of ~50 on a short policy, about 1.7
/// nats more for each late change. A change that starts after the horizon
/// is still caught by the slots opened before it, more slowly; the
/// guarantee holds for any duration.
pub fn change_detection(policy: &Policy) -> ChangeDetection {
    let a = &policy.analysis;
    let interval_ms = a.interval.as_millis().max(1) as u64;
    let approval_waits: Duration = policy
        .steps
        .iter()
        .map(|s| match s {
            Step::Approval(ap) => ap.timeout.unwrap_or(Duration::ZERO),
            Step::SetWeight(_) | Step::Bake(_) => Duration::ZERO,
        })
        .sum();
    let experiment = policy
        .experiment
        .as_ref()
        .map_or(Duration::ZERO, |e| e.duration);
    let horizon_time = (a.max_duration + approval_waits).max(experiment);
    let horizon = (horizon_time.as_millis() as u64).div_ceil(interval_ms);
    let restarts = (horizon / MIN_RESTART_SPACING).min(u64::from(MAX_RESTARTS)) as u32;
    ChangeDetection::over_horizon(horizon, restarts)
}

/// The weights the policy holds before it promotes, and how long: each
/// bake at the weight set before it, up to the step that sets 100%; an
/// experiment holds its weight for its duration. A schedule with no bake
/// below 100% holds its first weight for `maxDuration`. Approval waits are
/// not counted (unknown; more data only helps).
pub fn schedule(policy: &Policy) -> Schedule {
    if let Some(e) = &policy.experiment {
        return Schedule {
            holds: vec![(e.weight.fraction(), e.duration.as_secs_f64())],
        };
    }
    let mut holds = Vec::new();
    let mut weight = 0.0;
    let mut first = None;
    for step in &policy.steps {
        match step {
            Step::SetWeight(w) => {
                weight = w.fraction();
                if weight >= 1.0 {
                    break;
                }
                first.get_or_insert(weight);
            }
            Step::Bake(d) if weight > 0.0 => holds.push((weight, d.as_secs_f64())),
            Step::Bake(_) | Step::Approval(_) => {}
        }
    }
    if holds.is_empty()
        && let Some(w) = first
    {
        holds.push((w, policy.analysis.max_duration.as_secs_f64()));
    }
    Schedule { holds }
}

/// A counter added to each snapshot: `name = denominator − numerator`, so a
/// `below` bound on a rate becomes an `above` bound on its complement.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Complement {
    pub(super) name: String,
    pub(super) numerator: String,
    pub(super) denominator: String,
}

fn complement(complements: &mut Vec<Complement>, numerator: &str, denominator: &str) -> String {
    let name = format!("{denominator}-minus-{numerator}");
    if !complements.iter().any(|c| c.name == name) {
        complements.push(Complement {
            name: name.clone(),
            numerator: numerator.to_owned(),
            denominator: denominator.to_owned(),
        });
    }
    name
}

/// A statistical check; `comparative` ones skip warm-up intervals.
fn statistical(test: StatTest, comparative: bool) -> Check {
    Check::Statistical {
        test: Box::new(test),
        comparative,
        last: None,
    }
}

/// The check for one trigger, at its share `alpha` of the budget.
#[deny(clippy::wildcard_enum_match_arm)]
pub(super) fn trigger_check(
    t: &Trigger,
    alpha: f64,
    change: ChangeDetection,
    o: Overdispersion,
    plan: &Schedule,
    complements: &mut Vec<Complement>,
) -> Result<Check, StatsError> {
    Ok(match &t.check {
        TriggerCheck::RatioVsBaseline { metric, regression } => {
            let (n, d) = (&metric.numerator, &metric.denominator);
            let test = match *regression {
                Regression::RelativeIncrease(x) => {
                    RatioVsBaseline::relative_increase(n, d, x, alpha, change)?
                }
                Regression::RelativeDrop(x) => {
                    RatioVsBaseline::relative_drop(n, d, x, alpha, change)?
                }
            };
            let test = test.with_overdispersion(o).with_schedule(plan.clone());
            statistical(StatTest::RatioVsBaseline(test), true)
        }
        TriggerCheck::QuantileVsBaseline { metric, increase } => {
            let test = QuantileVsBaseline::relative_increase(
                &metric.signal,
                metric.quantile,
                *increase,
                alpha,
                change,
            )?;
            statistical(
                StatTest::QuantileVsBaseline(test.with_overdispersion(o)),
                true,
            )
        }
        TriggerCheck::MeanVsBaseline { metric, regression } => {
            let test = match *regression {
                Regression::RelativeIncrease(x) => {
                    MeanTest::relative_increase(&metric.signal, x, alpha, change)?
                }
                Regression::RelativeDrop(x) => {
                    MeanTest::relative_drop(&metric.signal, x, alpha, change)?
                }
            };
            statistical(StatTest::Mean(test.with_overdispersion(o)), true)
        }
        TriggerCheck::RatioThreshold { metric, bound } => {
            let (n, d) = (&metric.numerator, &metric.denominator);
            let test = match *bound {
                Bound::Above(p) => RatioThreshold::new(n, d, p, alpha, change)?,
                Bound::Below(p) => {
                    let name = complement(complements, n, d);
                    RatioThreshold::new(&name, d, 1.0 - p, alpha, change)?
                }
            };
            statistical(StatTest::RatioThreshold(test.with_overdispersion(o)), false)
        }
        TriggerCheck::QuantileThreshold { metric, above_ms } => {
            let test =
                QuantileThreshold::new(&metric.signal, metric.quantile, *above_ms, alpha, change)?;
            statistical(
                StatTest::QuantileThreshold(test.with_overdispersion(o)),
                false,
            )
        }
        TriggerCheck::MeanThreshold { metric, bound } => {
            let (side, b) = match *bound {
                Bound::Above(b) => (Direction::Increase, b),
                Bound::Below(b) => (Direction::Decrease, b),
            };
            let test = MeanTest::bound(&metric.signal, side, b, alpha, change)?;
            statistical(StatTest::Mean(test.with_overdispersion(o)), false)
        }
        TriggerCheck::SustainedRatio {
            metric,
            bound,
            for_duration,
        } => {
            let (n, d) = (&metric.numerator, &metric.denominator);
            let (numerator, above) = match *bound {
                Bound::Above(p) => (n.clone(), p),
                Bound::Below(p) => (complement(complements, n, d), 1.0 - p),
            };
            Check::SustainedRatio(SustainedRatio::new(&numerator, d, above, *for_duration))
        }
        TriggerCheck::SustainedQuantile {
            metric,
            above_ms,
            for_duration,
        } => Check::SustainedQuantile(SustainedQuantile::new(
            &metric.signal,
            metric.quantile,
            *above_ms,
            *for_duration,
        )?),
        TriggerCheck::SustainedMean {
            metric,
            bound,
            for_duration,
        } => {
            let limit = match *bound {
                Bound::Above(b) => MeanLimit::Above(b),
                Bound::Below(b) => MeanLimit::Below(b),
            };
            Check::SustainedMean(SustainedMean::new(&metric.signal, limit, *for_duration))
        }
        TriggerCheck::BurnRate {
            metric,
            slo,
            windows,
        } => {
            let windows = windows
                .iter()
                .map(|w| BurnWindow {
                    long: w.long,
                    short: w.short,
                    factor: w.factor,
                })
                .collect();
            Check::BurnRate(BurnRate::new(
                &metric.numerator,
                &metric.denominator,
                *slo,
                windows,
            )?)
        }
        TriggerCheck::Disparity {
            metric, min_ratio, ..
        } => {
            // minRatio 1 can never be shown false by evidence; the compiler
            // allows it, the test needs it inside (0, 1).
            let m = min_ratio.min(1.0 - 1e-9);
            let test =
                Disparity::new(&metric.numerator, &metric.denominator, m, alpha, MAX_GROUPS)?;
            statistical(StatTest::Disparity(test), false)
        }
        TriggerCheck::NoData {
            signal,
            for_duration,
            ..
        } => Check::NoData(NoData::new(signal, *for_duration)),
    })
}

/// The test for one gate, at its share `alpha` of the promotion budget.
#[deny(clippy::wildcard_enum_match_arm)]
pub(super) fn gate_test(
    check: &GateCheck,
    alpha: f64,
    o: Overdispersion,
) -> Result<StatTest, StatsError> {
    let kind = match check.requirement() {
        GateRequirement::MinGain(x) => GateKind::MinGain(x),
        GateRequirement::MaxIncrease(x) => GateKind::MaxIncrease(x),
        GateRequirement::MaxDrop(x) => GateKind::MaxDrop(x),
    };
    Ok(match check {
        GateCheck::Ratio { metric, .. } => StatTest::RatioVsBaseline(
            RatioVsBaseline::gate(&metric.numerator, &metric.denominator, kind, alpha)?
                .with_overdispersion(o),
        ),
        GateCheck::QuantileMaxIncrease {
            metric,
            max_increase,
        } => StatTest::QuantileVsBaseline(
            QuantileVsBaseline::max_increase_gate(
                &metric.signal,
                metric.quantile,
                *max_increase,
                alpha,
            )?
            .with_overdispersion(o),
        ),
        GateCheck::Mean { metric, .. } => {
            StatTest::Mean(MeanTest::gate(&metric.signal, kind, alpha)?.with_overdispersion(o))
        }
    })
}

/// What an objective check measures, in words, for its readings' evidence;
/// empty for statistical checks (their evidence names its estimand).
pub(super) fn measured(check: &Check) -> String {
    match check {
        Check::Statistical { .. } => String::new(),
        Check::SustainedMean(rule) => format!(
            "canary mean {} over consecutive intervals beyond the bound",
            rule.signal
        ),
        Check::SustainedQuantile(rule) => format!(
            "lowest canary p{} bound (ms) over consecutive intervals above {}ms",
            rule.quantile * 100.0,
            rule.above_ms
        ),
        Check::SustainedRatio(rule) => format!(
            "lowest canary {}/{} over consecutive intervals above {}",
            rule.numerator, rule.denominator, rule.above
        ),
        Check::BurnRate(rule) => format!(
            "burn rate of {}/{} against a {} SLO",
            rule.numerator, rule.denominator, rule.slo
        ),
        Check::NoData(rule) => format!("seconds without canary {}", rule.signal),
    }
}

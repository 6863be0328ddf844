//! `spec.analysis.requireNoHarm`: promotion needs evidence, not silence.
//! This module owns the gates the policy implies: one per `vsBaseline`
//! trigger, derived from the trigger's metric and tolerance.
//!
//! A trigger `relativeIncrease: x` implies the gate `maxIncrease: m·x` on
//! the same metric (a latency quantile's trigger, the latency gate; a
//! mean's, the mean gate); `relativeDrop: x` implies `maxDrop: m·x`, and no
//! gate when `m·x ≥ 100%` (a rate or a positive mean cannot drop by more
//! than all of it, so the bound holds without evidence). `m` is
//! `requireNoHarm.margin` (default 2); the gates are needed before a step
//! sets `requireNoHarm.before` or more (default 100: before promotion).
//!
//! Each implied gate is an ordinary gate (`Policy::gates`), named
//! `no-harm:<trigger>`. Written gate and trigger names are `[a-z0-9-]`, so
//! that name can never be a written gate's, nor another implied gate's.
//!
//! # The guarantee, and why the implied gates share the gates' budget
//!
//! Let the policy have `G` gates in all (written and implied). Each gate's
//! test is an e-process for its null (for an implied gate: "the canary's
//! harm is at least `m·x`") and shows the gate at `alpha / G`, i.e. when its
//! log e-value is at least `ln(G / alpha)`. A canary whose true harm on
//! trigger `k`'s metric is at least `m·x_k` makes gate `k`'s null true, so by
//! Ville's inequality the probability that its e-value *ever* reaches
//! `G / alpha` is at most `alpha / G`. The engine promotes only if, at the
//! moment it sets 100% (or `before`), every gate it needs reads shown *now*
//! (gates are not latched, see `engine::rollout`): that event is contained
//! in "the e-value reached its boundary at some time", so such a canary is
//! promoted with probability at most `alpha / G ≤ alpha`. Over all gates at
//! once, written ones included, the union bound keeps the chance that any
//! gate whose null is true is shown within `G · alpha / G = alpha`: the
//! whole policy's false-promotion budget. Giving the implied gates a budget
//! of their own would double it.
//!
//! Outside the guarantee, by design: `promote --override-gates` (an
//! operator's decision, audited), an emergency change's bypass window, and
//! a harm that starts after the gate was last read.

use super::check::{GateCheck, TriggerCheck};
use super::model::{Gate, NoHarm, Trigger};
use super::written::{GateRequirement, Regression};

/// What every implied gate's name starts with.
pub const IMPLIED_PREFIX: &str = "no-harm:";

/// The implied gate's name for a trigger.
pub fn implied_gate_name(trigger: &str) -> String {
    format!("{IMPLIED_PREFIX}{trigger}")
}

/// What `requireNoHarm` asks of one trigger.
#[derive(Clone, Debug, PartialEq)]
pub enum NoHarmCheck {
    /// This gate must be shown.
    Gate(GateCheck),
    /// `relativeDrop: x` with `margin · x ≥ 100%`: a drop can never exceed
    /// it, so nothing needs showing.
    Unneeded { bound: f64 },
}

/// What `requireNoHarm` with `margin` asks of a trigger's check; `None` for
/// a check that does not compare with the baseline.
#[deny(clippy::wildcard_enum_match_arm)]
pub fn no_harm_check(check: &TriggerCheck, margin: f64) -> Option<NoHarmCheck> {
    let requirement = |r: Regression| match r {
        Regression::RelativeIncrease(x) => Ok(GateRequirement::MaxIncrease(margin * x)),
        Regression::RelativeDrop(x) if margin * x < 1.0 => Ok(GateRequirement::MaxDrop(margin * x)),
        Regression::RelativeDrop(x) => Err(NoHarmCheck::Unneeded { bound: margin * x }),
    };
    let made = match check {
        TriggerCheck::RatioVsBaseline { metric, regression } => {
            requirement(*regression).map(|requirement| GateCheck::Ratio {
                metric: metric.clone(),
                requirement,
            })
        }
        TriggerCheck::QuantileVsBaseline { metric, increase } => {
            Ok(GateCheck::QuantileMaxIncrease {
                metric: metric.clone(),
                max_increase: margin * increase,
            })
        }
        TriggerCheck::MeanVsBaseline { metric, regression } => {
            requirement(*regression).map(|requirement| GateCheck::Mean {
                metric: metric.clone(),
                requirement,
            })
        }
        TriggerCheck::RatioThreshold { .. }
        | TriggerCheck::QuantileThreshold { .. }
        | TriggerCheck::MeanThreshold { .. }
        | TriggerCheck::SustainedRatio { .. }
        | TriggerCheck::SustainedQuantile { .. }
        | TriggerCheck::SustainedMean { .. }
        | TriggerCheck::BurnRate { .. }
        | TriggerCheck::Disparity { .. }
        | TriggerCheck::NoData { .. } => return None,
    };
    Some(match made {
        Ok(check) => NoHarmCheck::Gate(check),
        Err(unneeded) => unneeded,
    })
}

/// The gates `no_harm` implies for `triggers`, in trigger order.
pub fn implied_gates(triggers: &[Trigger], no_harm: NoHarm) -> Vec<Gate> {
    triggers
        .iter()
        .filter_map(|t| match no_harm_check(&t.check, no_harm.margin)? {
            NoHarmCheck::Gate(check) => Some(Gate {
                name: implied_gate_name(&t.name),
                check,
                before: no_harm.before,
                implied_by: Some(t.name.clone()),
            }),
            NoHarmCheck::Unneeded { .. } => None,
        })
        .collect()
}

//! What each trigger and gate checks, resolved: one variant per legal
//! combination of rule and metric kind, each holding the signals it reads.
//!
//! The compiler (`compile.rs`) turns a trigger as written (a metric name, a
//! quantile, one rule) into a [`TriggerCheck`] with [`resolve_trigger`], and
//! a gate into a [`GateCheck`] with [`resolve_gate`]; a combination that is
//! not legal is a [`Mismatch`], which the compiler reports with its place.
//! Everything downstream (the monitor that builds statistics tests, `policy
//! explain`, forecasts, the simulator's peer styles) matches on these enums
//! and never looks a metric up by name again: a new rule is a new variant,
//! and every `match` that does not handle it fails to build.

use std::collections::BTreeMap;
use std::time::Duration;

use super::written::{Bound, BurnWindow, GateRequirement, Metric, Regression, TriggerRule};

/// The request counter every source provides; a `noData` trigger with no
/// metric (or on a latency or mean metric) watches it.
pub const REQUESTS: &str = "requests";

/// A ratio metric: `numerator / denominator` per request, or per group.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    /// The metric's name in `spec.metrics`.
    pub name: String,
    pub numerator: String,
    pub denominator: String,
    pub group_by: Option<String>,
}

impl Ratio {
    pub fn new(name: &str, numerator: &str, denominator: &str, group_by: Option<&str>) -> Ratio {
        Ratio {
            name: name.to_owned(),
            numerator: numerator.to_owned(),
            denominator: denominator.to_owned(),
            group_by: group_by.map(str::to_owned),
        }
    }
}

/// A latency metric tested at one quantile.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantile {
    pub name: String,
    /// The latency histogram's signal (milliseconds).
    pub signal: String,
    /// In (0, 1).
    pub quantile: f64,
}

/// A `kind: mean` metric: the mean of a value signal.
#[derive(Clone, Debug, PartialEq)]
pub struct Mean {
    pub name: String,
    pub signal: String,
}

impl Mean {
    pub fn new(name: &str, signal: &str) -> Mean {
        Mean {
            name: name.to_owned(),
            signal: signal.to_owned(),
        }
    }
}

/// The metric a `noData` trigger names, of any kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    pub name: String,
    pub metric: Metric,
}

/// What a trigger checks. Statistical variants fire on anytime-valid
/// evidence and share `alpha` (see [`TriggerCheck::is_statistical`]);
/// the others are rules applied exactly as written.
#[derive(Clone, Debug, PartialEq)]
pub enum TriggerCheck {
    /// `vsBaseline` on a ratio: the canary's rate beyond the baseline's by
    /// a relative tolerance.
    RatioVsBaseline {
        metric: Ratio,
        regression: Regression,
    },
    /// `vsBaseline: {relativeIncrease}` on a latency quantile (a drop is
    /// an improvement, not a regression).
    QuantileVsBaseline { metric: Quantile, increase: f64 },
    /// `vsBaseline` on a mean.
    MeanVsBaseline {
        metric: Mean,
        regression: Regression,
    },
    /// `threshold` without `for` on a ratio: evidence the canary's rate is
    /// beyond a bound.
    RatioThreshold { metric: Ratio, bound: Bound },
    /// `threshold: {above}` without `for` on a latency quantile.
    QuantileThreshold { metric: Quantile, above_ms: f64 },
    /// `threshold` without `for` on a mean.
    MeanThreshold { metric: Mean, bound: Bound },
    /// `threshold` with `for` on a ratio: beyond the bound in every
    /// interval for that long.
    SustainedRatio {
        metric: Ratio,
        bound: Bound,
        for_duration: Duration,
    },
    /// `threshold: {above, for}` on a latency quantile.
    SustainedQuantile {
        metric: Quantile,
        above_ms: f64,
        for_duration: Duration,
    },
    /// `threshold` with `for` on a mean.
    SustainedMean {
        metric: Mean,
        bound: Bound,
        for_duration: Duration,
    },
    /// `burnRate` on a ratio (bad events / all events).
    BurnRate {
        metric: Ratio,
        slo: f64,
        windows: Vec<BurnWindow>,
    },
    /// `disparity` on a ratio with `groupBy`.
    Disparity {
        metric: Ratio,
        group_by: String,
        min_ratio: f64,
    },
    /// `noData`: no canary `signal` (the ratio's denominator, else
    /// requests) for this long.
    NoData {
        /// The metric named, if any (for the words).
        metric: Option<Named>,
        signal: String,
        for_duration: Duration,
    },
}

// No catch-all arm in these matches: a new variant must say what it is.
#[deny(clippy::wildcard_enum_match_arm)]
impl TriggerCheck {
    /// Statistical checks fire only on anytime-valid evidence and share the
    /// policy's `alpha`; objective ones fire exactly as written.
    pub fn is_statistical(&self) -> bool {
        match self {
            TriggerCheck::RatioVsBaseline { .. }
            | TriggerCheck::QuantileVsBaseline { .. }
            | TriggerCheck::MeanVsBaseline { .. }
            | TriggerCheck::RatioThreshold { .. }
            | TriggerCheck::QuantileThreshold { .. }
            | TriggerCheck::MeanThreshold { .. }
            | TriggerCheck::Disparity { .. } => true,
            TriggerCheck::SustainedRatio { .. }
            | TriggerCheck::SustainedQuantile { .. }
            | TriggerCheck::SustainedMean { .. }
            | TriggerCheck::BurnRate { .. }
            | TriggerCheck::NoData { .. } => false,
        }
    }

    /// The metric's name, `None` for `noData` on requests.
    pub fn metric_name(&self) -> Option<&str> {
        match self {
            TriggerCheck::RatioVsBaseline { metric, .. }
            | TriggerCheck::RatioThreshold { metric, .. }
            | TriggerCheck::SustainedRatio { metric, .. }
            | TriggerCheck::BurnRate { metric, .. }
            | TriggerCheck::Disparity { metric, .. } => Some(&metric.name),
            TriggerCheck::QuantileVsBaseline { metric, .. }
            | TriggerCheck::QuantileThreshold { metric, .. }
            | TriggerCheck::SustainedQuantile { metric, .. } => Some(&metric.name),
            TriggerCheck::MeanVsBaseline { metric, .. }
            | TriggerCheck::MeanThreshold { metric, .. }
            | TriggerCheck::SustainedMean { metric, .. } => Some(&metric.name),
            TriggerCheck::NoData { metric, .. } => metric.as_ref().map(|m| m.name.as_str()),
        }
    }

    /// The quantile tested, for latency checks.
    pub fn quantile(&self) -> Option<f64> {
        match self {
            TriggerCheck::QuantileVsBaseline { metric, .. }
            | TriggerCheck::QuantileThreshold { metric, .. }
            | TriggerCheck::SustainedQuantile { metric, .. } => Some(metric.quantile),
            TriggerCheck::RatioVsBaseline { .. }
            | TriggerCheck::MeanVsBaseline { .. }
            | TriggerCheck::RatioThreshold { .. }
            | TriggerCheck::MeanThreshold { .. }
            | TriggerCheck::SustainedRatio { .. }
            | TriggerCheck::SustainedMean { .. }
            | TriggerCheck::BurnRate { .. }
            | TriggerCheck::Disparity { .. }
            | TriggerCheck::NoData { .. } => None,
        }
    }

    /// The longest stretch of past intervals the check reads (zero for
    /// the e-processes, which keep their own state).
    pub fn window(&self) -> Duration {
        match self {
            TriggerCheck::SustainedRatio { for_duration, .. }
            | TriggerCheck::SustainedQuantile { for_duration, .. }
            | TriggerCheck::SustainedMean { for_duration, .. }
            | TriggerCheck::NoData { for_duration, .. } => *for_duration,
            TriggerCheck::BurnRate { windows, .. } => {
                windows.iter().map(|w| w.long).max().unwrap_or_default()
            }
            TriggerCheck::RatioVsBaseline { .. }
            | TriggerCheck::QuantileVsBaseline { .. }
            | TriggerCheck::MeanVsBaseline { .. }
            | TriggerCheck::RatioThreshold { .. }
            | TriggerCheck::QuantileThreshold { .. }
            | TriggerCheck::MeanThreshold { .. }
            | TriggerCheck::Disparity { .. } => Duration::ZERO,
        }
    }

    /// The trigger as written: metric name, quantile and rule (the
    /// checkpoint form, see `repr.rs`).
    pub fn written(&self) -> (Option<String>, Option<f64>, TriggerRule) {
        let rule = match self {
            TriggerCheck::RatioVsBaseline { regression, .. }
            | TriggerCheck::MeanVsBaseline { regression, .. } => {
                TriggerRule::VsBaseline(*regression)
            }
            TriggerCheck::QuantileVsBaseline { increase, .. } => {
                TriggerRule::VsBaseline(Regression::RelativeIncrease(*increase))
            }
            TriggerCheck::RatioThreshold { bound, .. }
            | TriggerCheck::MeanThreshold { bound, .. } => TriggerRule::Threshold {
                bound: *bound,
                sustained_for: None,
            },
            TriggerCheck::QuantileThreshold { above_ms, .. } => TriggerRule::Threshold {
                bound: Bound::Above(*above_ms),
                sustained_for: None,
            },
            TriggerCheck::SustainedRatio {
                bound,
                for_duration,
                ..
            }
            | TriggerCheck::SustainedMean {
                bound,
                for_duration,
                ..
            } => TriggerRule::Threshold {
                bound: *bound,
                sustained_for: Some(*for_duration),
            },
            TriggerCheck::SustainedQuantile {
                above_ms,
                for_duration,
                ..
            } => TriggerRule::Threshold {
                bound: Bound::Above(*above_ms),
                sustained_for: Some(*for_duration),
            },
            TriggerCheck::BurnRate { slo, windows, .. } => TriggerRule::BurnRate {
                slo: *slo,
                windows: windows.clone(),
            },
            TriggerCheck::Disparity { min_ratio, .. } => TriggerRule::Disparity {
                min_ratio: *min_ratio,
            },
            TriggerCheck::NoData { for_duration, .. } => TriggerRule::NoData {
                for_duration: *for_duration,
            },
        };
        (self.metric_name().map(str::to_owned), self.quantile(), rule)
    }
}

/// What a gate must show, by metric kind.
#[derive(Clone, Debug, PartialEq)]
pub enum GateCheck {
    /// A ratio against the baseline's (any requirement).
    Ratio {
        metric: Ratio,
        requirement: GateRequirement,
    },
    /// A latency quantile at most `max_increase` above the baseline's.
    QuantileMaxIncrease { metric: Quantile, max_increase: f64 },
    /// A mean against the baseline's (any requirement).
    Mean {
        metric: Mean,
        requirement: GateRequirement,
    },
}

#[deny(clippy::wildcard_enum_match_arm)]
impl GateCheck {
    pub fn metric_name(&self) -> &str {
        match self {
            GateCheck::Ratio { metric, .. } => &metric.name,
            GateCheck::QuantileMaxIncrease { metric, .. } => &metric.name,
            GateCheck::Mean { metric, .. } => &metric.name,
        }
    }

    pub fn quantile(&self) -> Option<f64> {
        match self {
            GateCheck::QuantileMaxIncrease { metric, .. } => Some(metric.quantile),
            GateCheck::Ratio { .. } | GateCheck::Mean { .. } => None,
        }
    }

    pub fn requirement(&self) -> GateRequirement {
        match self {
            GateCheck::Ratio { requirement, .. } | GateCheck::Mean { requirement, .. } => {
                *requirement
            }
            GateCheck::QuantileMaxIncrease { max_increase, .. } => {
                GateRequirement::MaxIncrease(*max_increase)
            }
        }
    }
}

/// Why a rule does not fit its metric. The compiler reports each with the
/// place it points at (the `what` field under the trigger or gate).
#[derive(Clone, Debug, PartialEq)]
pub enum Mismatch {
    /// No metric of that name (`defined` lists the names there are).
    UndefinedMetric { name: String, defined: Vec<String> },
    /// A latency metric tested without `quantile`.
    MissingQuantile,
    /// `quantile` on a metric that is not a latency.
    QuantileOnNonLatency { kind: &'static str },
    /// `vsBaseline.relativeDrop` on a latency.
    LatencyDrop { metric: String },
    /// `threshold.below` on a latency.
    LatencyBelow { metric: String },
    /// `burnRate` on a metric that is not a ratio.
    BurnRateNeedsRatio { metric: String, kind: &'static str },
    /// `disparity` on a metric without groups.
    DisparityNeedsGroups { metric: String },
    /// A latency gate that does not bound an increase (`minGain`/`maxDrop`).
    LatencyGateRequirement { metric: String, key: &'static str },
}

/// The metric definitions the checks resolve against: compiled metrics by
/// name, `None` for one that failed to compile (its own errors are
/// reported; what refers to it is not reported again).
pub type Definitions<'m> = BTreeMap<&'m str, Option<&'m Metric>>;

/// A trigger as written into its check. `Err` lists every problem (empty
/// when the metric it names failed to compile: nothing more to say).
pub fn resolve_trigger(
    defined: &Definitions<'_>,
    metric: Option<&str>,
    quantile: Option<f64>,
    rule: &TriggerRule,
) -> Result<TriggerCheck, Vec<Mismatch>> {
    let Some(name) = metric else {
        return match rule {
            TriggerRule::NoData { for_duration } => Ok(TriggerCheck::NoData {
                metric: None,
                signal: REQUESTS.to_owned(),
                for_duration: *for_duration,
            }),
            // The compiler requires `metric` for every other rule.
            TriggerRule::VsBaseline(_)
            | TriggerRule::Threshold { .. }
            | TriggerRule::BurnRate { .. }
            | TriggerRule::Disparity { .. } => Err(Vec::new()),
        };
    };
    let m = lookup(defined, name)?;
    let mut problems = Vec::new();
    let uses_quantile = matches!(
        rule,
        TriggerRule::VsBaseline(_) | TriggerRule::Threshold { .. }
    );
    let q = check_quantile(m, quantile, uses_quantile, &mut problems);
    let check = if let TriggerRule::NoData { for_duration } = rule {
        Ok(Some(TriggerCheck::NoData {
            signal: match m {
                Metric::Ratio { denominator, .. } => denominator.clone(),
                Metric::Latency { .. } | Metric::Mean { .. } => REQUESTS.to_owned(),
            },
            metric: Some(Named {
                name: name.to_owned(),
                metric: m.clone(),
            }),
            for_duration: *for_duration,
        }))
    } else {
        match m {
            Metric::Ratio {
                numerator,
                denominator,
                group_by,
            } => on_ratio(
                Ratio::new(name, numerator, denominator, group_by.as_deref()),
                rule,
            ),
            Metric::Latency { signal } => on_latency(name, signal, q, rule),
            Metric::Mean { signal } => on_mean(Mean::new(name, signal), rule),
        }
    };
    match check {
        Ok(Some(c)) if problems.is_empty() => Ok(c),
        Ok(_) => Err(problems),
        Err(p) => {
            problems.push(p);
            Err(problems)
        }
    }
}

/// A rule on a ratio metric (every rule fits a ratio; `disparity` needs
/// groups). `noData` is resolved by the caller for every kind.
#[deny(clippy::wildcard_enum_match_arm)]
fn on_ratio(metric: Ratio, rule: &TriggerRule) -> Result<Option<TriggerCheck>, Mismatch> {
    Ok(Some(match rule {
        TriggerRule::VsBaseline(regression) => TriggerCheck::RatioVsBaseline {
            metric,
            regression: *regression,
        },
        TriggerRule::Threshold {
            bound,
            sustained_for: None,
        } => TriggerCheck::RatioThreshold {
            metric,
            bound: *bound,
        },
        TriggerRule::Threshold {
            bound,
            sustained_for: Some(d),
        } => TriggerCheck::SustainedRatio {
            metric,
            bound: *bound,
            for_duration: *d,
        },
        TriggerRule::BurnRate { slo, windows } => TriggerCheck::BurnRate {
            metric,
            slo: *slo,
            windows: windows.clone(),
        },
        TriggerRule::Disparity { min_ratio } => match metric.group_by.clone() {
            Some(group_by) => TriggerCheck::Disparity {
                metric,
                group_by,
                min_ratio: *min_ratio,
            },
            None => {
                return Err(Mismatch::DisparityNeedsGroups {
                    metric: metric.name,
                });
            }
        },
        TriggerRule::NoData { .. } => return Ok(None),
    }))
}

/// A rule on a latency metric, tested at quantile `q` (`None` when it is
/// missing, already reported): only increases and upper bounds.
#[deny(clippy::wildcard_enum_match_arm)]
fn on_latency(
    name: &str,
    signal: &str,
    q: Option<f64>,
    rule: &TriggerRule,
) -> Result<Option<TriggerCheck>, Mismatch> {
    let metric = |quantile| Quantile {
        name: name.to_owned(),
        signal: signal.to_owned(),
        quantile,
    };
    match rule {
        TriggerRule::VsBaseline(Regression::RelativeDrop(_)) => Err(Mismatch::LatencyDrop {
            metric: name.to_owned(),
        }),
        TriggerRule::VsBaseline(Regression::RelativeIncrease(x)) => {
            Ok(q.map(|q| TriggerCheck::QuantileVsBaseline {
                metric: metric(q),
                increase: *x,
            }))
        }
        TriggerRule::Threshold {
            bound: Bound::Below(_),
            ..
        } => Err(Mismatch::LatencyBelow {
            metric: name.to_owned(),
        }),
        TriggerRule::Threshold {
            bound: Bound::Above(ms),
            sustained_for,
        } => Ok(q.map(|q| match sustained_for {
            None => TriggerCheck::QuantileThreshold {
                metric: metric(q),
                above_ms: *ms,
            },
            Some(d) => TriggerCheck::SustainedQuantile {
                metric: metric(q),
                above_ms: *ms,
                for_duration: *d,
            },
        })),
        TriggerRule::BurnRate { .. } => Err(Mismatch::BurnRateNeedsRatio {
            metric: name.to_owned(),
            kind: "latency",
        }),
        TriggerRule::Disparity { .. } => Err(Mismatch::DisparityNeedsGroups {
            metric: name.to_owned(),
        }),
        TriggerRule::NoData { .. } => Ok(None),
    }
}

/// A rule on a mean metric: against the baseline or a bound.
#[deny(clippy::wildcard_enum_match_arm)]
fn on_mean(metric: Mean, rule: &TriggerRule) -> Result<Option<TriggerCheck>, Mismatch> {
    Ok(Some(match rule {
        TriggerRule::VsBaseline(regression) => TriggerCheck::MeanVsBaseline {
            metric,
            regression: *regression,
        },
        TriggerRule::Threshold {
            bound,
            sustained_for: None,
        } => TriggerCheck::MeanThreshold {
            metric,
            bound: *bound,
        },
        TriggerRule::Threshold {
            bound,
            sustained_for: Some(d),
        } => TriggerCheck::SustainedMean {
            metric,
            bound: *bound,
            for_duration: *d,
        },
        TriggerRule::BurnRate { .. } => {
            return Err(Mismatch::BurnRateNeedsRatio {
                metric: metric.name,
                kind: "mean",
            });
        }
        TriggerRule::Disparity { .. } => {
            return Err(Mismatch::DisparityNeedsGroups {
                metric: metric.name,
            });
        }
        TriggerRule::NoData { .. } => return Ok(None),
    }))
}

/// A gate as written into its check (see [`resolve_trigger`]).
pub fn resolve_gate(
    defined: &Definitions<'_>,
    metric: &str,
    quantile: Option<f64>,
    requirement: GateRequirement,
) -> Result<GateCheck, Vec<Mismatch>> {
    let m = lookup(defined, metric)?;
    let mut problems = Vec::new();
    let q = check_quantile(m, quantile, true, &mut problems);
    let name = metric.to_owned();
    let check = match (m, requirement) {
        (
            Metric::Ratio {
                numerator,
                denominator,
                group_by,
            },
            requirement,
        ) => Some(GateCheck::Ratio {
            metric: Ratio::new(&name, numerator, denominator, group_by.as_deref()),
            requirement,
        }),
        (Metric::Latency { signal }, GateRequirement::MaxIncrease(x)) => {
            q.map(|quantile| GateCheck::QuantileMaxIncrease {
                metric: Quantile {
                    name,
                    signal: signal.clone(),
                    quantile,
                },
                max_increase: x,
            })
        }
        (Metric::Latency { .. }, GateRequirement::MinGain(_)) => {
            problems.push(Mismatch::LatencyGateRequirement {
                metric: name,
                key: "minGain",
            });
            None
        }
        (Metric::Latency { .. }, GateRequirement::MaxDrop(_)) => {
            problems.push(Mismatch::LatencyGateRequirement {
                metric: name,
                key: "maxDrop",
            });
            None
        }
        (Metric::Mean { signal }, requirement) => Some(GateCheck::Mean {
            metric: Mean::new(&name, signal),
            requirement,
        }),
    };
    match check {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(problems),
    }
}

fn lookup<'m>(defined: &Definitions<'m>, name: &str) -> Result<&'m Metric, Vec<Mismatch>> {
    match defined.get(name) {
        Some(Some(m)) => Ok(m),
        // Failed to compile: its own errors say why.
        Some(None) => Err(Vec::new()),
        None => Err(vec![Mismatch::UndefinedMetric {
            name: name.to_owned(),
            defined: defined.keys().map(|k| (*k).to_owned()).collect(),
        }]),
    }
}

/// The quantile a latency metric is tested at; records what is wrong.
fn check_quantile(
    m: &Metric,
    quantile: Option<f64>,
    rule_uses_it: bool,
    problems: &mut Vec<Mismatch>,
) -> Option<f64> {
    match (m, quantile) {
        (Metric::Latency { .. }, None) if rule_uses_it => {
            problems.push(Mismatch::MissingQuantile);
            None
        }
        (Metric::Latency { .. }, q) => q,
        (Metric::Ratio { .. } | Metric::Mean { .. }, Some(_)) => {
            problems.push(Mismatch::QuantileOnNonLatency {
                kind: m.kind_name(),
            });
            None
        }
        (Metric::Ratio { .. } | Metric::Mean { .. }, None) => None,
    }
}

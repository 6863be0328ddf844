//! Evidence in words: what a trigger saw, as plain sentences with units,
//! for people. The one renderer of evidence: notifications
//! ([`trigger_evidence`]), the rollout status's state of evidence and its
//! one-line summary ([`trigger_status`], [`gate_status`]: the API, the CLI
//! and the dashboard), incidents and the simulator's trace
//! ([`evidence_line`]) all read it here. It takes the types the daemon
//! already holds (the policy's `Trigger`, its reading and evidence) and
//! returns text and numbers; it decides nothing and reads no clock, so the
//! same evidence always reads the same.
//!
//! Each check says its estimate in the metric's unit: a rate as a
//! percentage, a latency in milliseconds, a comparison with the baseline
//! as a factor (`×1.35`), and the tolerance written in the policy beside it.
//! Statistical evidence adds its e-value against the boundary it crossed;
//! objective evidence, the measurement against its limit. Then the counts
//! and how much data it covers. A state of evidence is never a bare "ok":
//! no data, gathering (with how far it is on the way to the boundary),
//! shown (the interval excludes harm beyond the tolerance), fired or
//! stopped; thin evidence never reads as healthy.

use serde::{Deserialize, Serialize};

use crate::engine::{GateReading, TriggerReading, TriggerVerdict};
use crate::policy::{Bound, Gate, GateCheck, GateRequirement, Regression, Trigger, TriggerCheck};
use crate::stats::{ArmCounts, Evidence};
use crate::time::format_duration;
use crate::yaml::units::{format_latency_ms, format_percent};

use super::evidence::{ObjectiveEvidence, TriggerEvidence};

/// A trigger's evidence in words: one headline and the sentences behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceWords {
    /// What the trigger found against what the policy tolerates.
    pub headline: String,
    /// The statistic against its boundary, the counts, the data covered.
    pub details: Vec<String>,
}

impl EvidenceWords {
    /// Headline and details as one paragraph.
    pub fn paragraph(&self) -> String {
        let mut out = self.headline.clone();
        for d in &self.details {
            out.push(' ');
            out.push_str(d);
        }
        out
    }
}

/// `trigger`'s `evidence` in words. Without evidence (a rollback decided
/// on a rule that carries none) the headline says what the trigger checks.
pub fn trigger_evidence(trigger: &Trigger, evidence: Option<&TriggerEvidence>) -> EvidenceWords {
    let what = Check::of(&trigger.check);
    let name = &trigger.name;
    match evidence {
        None => EvidenceWords {
            headline: format!(
                "Trigger `{name}` fired ({}); it carried no measurement.",
                what.tolerance
            ),
            details: Vec::new(),
        },
        Some(TriggerEvidence::Statistical(e)) => statistical(name, &what, e),
        Some(TriggerEvidence::Objective(o)) => objective(name, &what, o),
    }
}

/// How one check's numbers read: the unit of its estimate and what the
/// policy tolerates, in that unit.
struct Check {
    /// What is measured, e.g. "canary/baseline rate of errors/requests".
    subject: String,
    unit: Unit,
    /// What the policy tolerates, in words with its unit.
    tolerance: String,
    /// The tolerance as a number on the estimate's scale, and on which side
    /// of it harm lies; `None` where it is read from the evidence (the
    /// objective rule's own limit).
    limit: Option<Limit>,
    /// Its evidence counts values (a mean), not events among exposures.
    values: bool,
}

/// A tolerance on the estimate's scale.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Limit {
    value: f64,
    /// Harm is above `value` (an increase), else below it (a drop).
    harm_above: bool,
}

/// The unit an estimate is written in.
#[derive(Clone, Debug)]
enum Unit {
    /// A fraction, shown as a percentage.
    Fraction,
    /// One quantity against another, shown as a factor (`×1.35`); the
    /// name says against what (`baseline`, `highest group`, `budget`).
    Factor(&'static str),
    Milliseconds,
    /// Seconds without data.
    Seconds,
    /// The signal's own unit (means): its name.
    Own(String),
}

impl Unit {
    fn show(&self, x: f64) -> String {
        match self {
            Unit::Fraction => format_percent(x),
            Unit::Factor(_) => format!("×{}", num(x)),
            Unit::Milliseconds => format_latency_ms(x),
            Unit::Seconds => format!("{}s", num(x)),
            Unit::Own(name) => format!("{} {name}", num(x)),
        }
    }

    /// How the API names it (`TriggerView.unit`).
    fn name(&self) -> String {
        match self {
            Unit::Fraction => "%".into(),
            Unit::Factor(of) => format!("× {of}"),
            Unit::Milliseconds => "ms".into(),
            Unit::Seconds => "s".into(),
            Unit::Own(name) => name.clone(),
        }
    }

    /// The factor from the evidence's scale to the API's: percentages are
    /// written as percentages.
    fn scale(&self) -> f64 {
        match self {
            Unit::Fraction => 100.0,
            Unit::Factor(_) | Unit::Milliseconds | Unit::Seconds | Unit::Own(_) => 1.0,
        }
    }
}

impl Check {
    /// No catch-all arm: a new check kind says how its numbers read.
    #[deny(clippy::wildcard_enum_match_arm)]
    fn of(check: &TriggerCheck) -> Check {
        let baseline = Unit::Factor("baseline");
        let vs = |r: &Regression| match r {
            Regression::RelativeIncrease(x) => (
                format!(
                    "tolerance: at most {} baseline's (+{})",
                    Unit::Factor("baseline").show(1.0 + x),
                    format_percent(*x)
                ),
                Some(Limit {
                    value: 1.0 + x,
                    harm_above: true,
                }),
            ),
            Regression::RelativeDrop(x) => (
                format!(
                    "tolerance: at least {} baseline's (-{})",
                    Unit::Factor("baseline").show(1.0 - x),
                    format_percent(*x)
                ),
                Some(Limit {
                    value: 1.0 - x,
                    harm_above: false,
                }),
            ),
        };
        let bound = |b: &Bound, unit: &Unit| match b {
            Bound::Above(v) => (
                format!("tolerance: at most {}", unit.show(*v)),
                Some(Limit {
                    value: *v,
                    harm_above: true,
                }),
            ),
            Bound::Below(v) => (
                format!("tolerance: at least {}", unit.show(*v)),
                Some(Limit {
                    value: *v,
                    harm_above: false,
                }),
            ),
        };
        let above = |value: f64| {
            Some(Limit {
                value,
                harm_above: true,
            })
        };
        let sustained = |d: &std::time::Duration| format!(" for {}", format_duration(*d));
        match check {
            TriggerCheck::RatioVsBaseline { metric, regression } => {
                let (tolerance, limit) = vs(regression);
                Check {
                    values: false,
                    subject: format!(
                        "canary/baseline rate of {}/{}",
                        metric.numerator, metric.denominator
                    ),
                    unit: baseline,
                    tolerance,
                    limit,
                }
            }
            // The test's null: the canary's share beyond (1+X) times the
            // baseline's quantile is at most the baseline's share beyond it.
            TriggerCheck::QuantileVsBaseline { metric, increase } => Check {
                values: false,
                subject: format!(
                    "canary/baseline share of {} beyond the baseline's p{}",
                    metric.signal,
                    num(metric.quantile * 100.0)
                ),
                unit: baseline,
                tolerance: format!(
                    "tolerance: p{} latency at most +{} over baseline's",
                    num(metric.quantile * 100.0),
                    format_percent(*increase)
                ),
                limit: above(1.0),
            },
            TriggerCheck::MeanVsBaseline { metric, regression } => {
                let (tolerance, limit) = vs(regression);
                Check {
                    values: true,
                    subject: format!("canary/baseline mean of {}", metric.signal),
                    unit: baseline,
                    tolerance,
                    limit,
                }
            }
            TriggerCheck::RatioThreshold { metric, bound: b } => {
                let (tolerance, limit) = bound(b, &Unit::Fraction);
                Check {
                    values: false,
                    subject: format!("canary rate of {}/{}", metric.numerator, metric.denominator),
                    unit: Unit::Fraction,
                    tolerance,
                    limit,
                }
            }
            TriggerCheck::QuantileThreshold { metric, above_ms } => Check {
                values: false,
                subject: format!(
                    "canary share of {} slower than {}",
                    metric.signal,
                    format_latency_ms(*above_ms)
                ),
                unit: Unit::Fraction,
                tolerance: format!(
                    "tolerance: p{} at most {} (at most {} slower)",
                    num(metric.quantile * 100.0),
                    format_latency_ms(*above_ms),
                    format_percent(1.0 - metric.quantile)
                ),
                limit: above(1.0 - metric.quantile),
            },
            TriggerCheck::MeanThreshold { metric, bound: b } => {
                let unit = Unit::Own(metric.signal.clone());
                let (tolerance, limit) = bound(b, &unit);
                Check {
                    values: true,
                    subject: format!("canary mean of {}", metric.signal),
                    unit,
                    tolerance,
                    limit,
                }
            }
            TriggerCheck::SustainedRatio {
                metric,
                bound: b,
                for_duration,
            } => {
                let (tolerance, limit) = bound(b, &Unit::Fraction);
                Check {
                    values: false,
                    subject: format!("canary rate of {}/{}", metric.numerator, metric.denominator),
                    unit: Unit::Fraction,
                    tolerance: tolerance + &sustained(for_duration),
                    limit,
                }
            }
            TriggerCheck::SustainedQuantile {
                metric,
                above_ms,
                for_duration,
            } => Check {
                values: false,
                subject: format!(
                    "canary p{} of {}",
                    num(metric.quantile * 100.0),
                    metric.signal
                ),
                unit: Unit::Milliseconds,
                tolerance: format!(
                    "tolerance: at most {}{}",
                    format_latency_ms(*above_ms),
                    sustained(for_duration)
                ),
                limit: above(*above_ms),
            },
            TriggerCheck::SustainedMean {
                metric,
                bound: b,
                for_duration,
            } => {
                let unit = Unit::Own(metric.signal.clone());
                let (tolerance, limit) = bound(b, &unit);
                Check {
                    values: true,
                    subject: format!("canary mean of {}", metric.signal),
                    unit,
                    tolerance: tolerance + &sustained(for_duration),
                    limit,
                }
            }
            // Each window has its own factor: the evidence carries the one
            // it was read against.
            TriggerCheck::BurnRate { metric, slo, .. } => Check {
                values: false,
                subject: format!(
                    "canary error-budget burn rate of {}/{} against a {} SLO",
                    metric.numerator,
                    metric.denominator,
                    format_percent(*slo)
                ),
                unit: Unit::Factor("budget"),
                tolerance: "tolerance: the burn factor of each window".into(),
                limit: None,
            },
            TriggerCheck::Disparity {
                metric,
                group_by,
                min_ratio,
            } => Check {
                values: false,
                subject: format!(
                    "canary lowest/highest {group_by} group rate of {}/{}",
                    metric.numerator, metric.denominator
                ),
                unit: Unit::Factor("highest group"),
                tolerance: format!(
                    "tolerance: at least {}",
                    Unit::Factor("highest group").show(*min_ratio)
                ),
                limit: Some(Limit {
                    value: *min_ratio,
                    harm_above: false,
                }),
            },
            TriggerCheck::NoData {
                signal,
                for_duration,
                ..
            } => Check {
                values: false,
                subject: format!("time without canary {signal}"),
                unit: Unit::Seconds,
                tolerance: format!("tolerance: less than {}", format_duration(*for_duration)),
                limit: above(for_duration.as_secs_f64()),
            },
        }
    }
}

fn statistical(name: &str, what: &Check, e: &Evidence) -> EvidenceWords {
    let level = num(e.interval.level * 100.0);
    let interval = match (e.interval.lower, e.interval.upper) {
        (Some(lo), Some(hi)) => format!(
            "{level}% anytime-valid interval {} to {}",
            what.unit.show(lo),
            what.unit.show(hi)
        ),
        (Some(lo), None) => format!("at least {} at {level}% anytime-valid", what.unit.show(lo)),
        (None, Some(hi)) => format!("at most {} at {level}% anytime-valid", what.unit.show(hi)),
        (None, None) => "no interval yet".to_string(),
    };
    let headline = format!(
        "Trigger `{name}` fired: the {} is {} ({interval}); {}.",
        what.subject,
        what.unit.show(e.estimate),
        what.tolerance
    );
    let mut details = vec![format!(
        "The evidence (log e-value {}) crossed its boundary {} (an e-value of {} against {}).",
        num(e.log_e_value),
        num(e.log_boundary),
        big(e.log_e_value.exp()),
        big(e.log_boundary.exp())
    )];
    // A check of the canary alone counts no baseline.
    let baseline = (e.baseline.exposure > 0).then_some(&e.baseline);
    details.push(counts(&e.canary, baseline));
    details.push(format!(
        "It covers {} of data; most of the evidence is from the last {}.",
        format_duration(e.window_end.saturating_since(e.window_start)),
        format_duration(e.window_end.saturating_since(e.evidence_since))
    ));
    if let Some(c) = &e.caveat {
        details.push(format!("Note: {c}."));
    }
    EvidenceWords { headline, details }
}

fn objective(name: &str, what: &Check, o: &ObjectiveEvidence) -> EvidenceWords {
    let v = &o.verdict;
    let headline = format!(
        "Trigger `{name}` fired: {} was {} against a limit of {}; {}.",
        o.measured,
        what.unit.show(v.observed),
        what.unit.show(v.limit),
        what.tolerance
    );
    let details = vec![
        counts(&v.canary, None),
        format!(
            "It covers {} of data.",
            format_duration(v.window_end.saturating_since(v.window_start))
        ),
    ];
    EvidenceWords { headline, details }
}

/// Where a trigger's (or a gate's) evidence stands, as the status shows it
/// (`TriggerView.state`, `GateView.state`). Never a bare "ok": thin
/// evidence is `gathering`, not healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceState {
    /// No samples yet.
    #[default]
    NoData,
    /// Evidence below the boundary and nothing shown yet (including too
    /// little data to test: thin evidence).
    Gathering,
    /// Within tolerance, shown: the anytime-valid interval excludes harm
    /// beyond the tolerance (an objective rule: met, with data).
    Shown,
    /// The trigger fired.
    Fired,
    /// A statistical test that stopped gathering (its note says why).
    Stopped,
}

impl EvidenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceState::NoData => "no_data",
            EvidenceState::Gathering => "gathering",
            EvidenceState::Shown => "shown",
            EvidenceState::Fired => "fired",
            EvidenceState::Stopped => "stopped",
        }
    }
}

/// A trigger's reading as the status shows it: the state of its evidence,
/// its estimate and interval against its tolerance on one scale, how far
/// the evidence is on the way to the boundary, and all of it in one line.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerStatus {
    pub state: EvidenceState,
    /// The share of the way from no evidence to the rollback boundary, in
    /// [0, 1]; `None` without data.
    pub progress: Option<f64>,
    /// The estimate, interval and tolerance in [`Self::unit`] (a
    /// percentage for a rate).
    pub estimate: Option<f64>,
    pub interval: Option<(Option<f64>, Option<f64>)>,
    pub tolerance: Option<f64>,
    /// How to read them: `× baseline`, `%`, `ms`, `s`, or a signal's name.
    pub unit: String,
    /// The state in words with units, one line.
    pub summary: String,
}

/// A promotion gate's reading in words.
#[derive(Clone, Debug, PartialEq)]
pub struct GateStatus {
    /// `no_data`, `gathering` or `shown`.
    pub state: EvidenceState,
    pub summary: String,
}

/// The words a statistical test uses when it stops reading evidence
/// (`stats::mean`'s caveat); `tests/status_words.rs` pins it against the
/// test itself.
const STOPPED_MARK: &str = "this test stopped";

/// A `vsBaseline` trigger whose implied gate (`no-harm:<trigger>`) is
/// shown: that gate's anytime-valid bound excludes harm beyond its margin
/// times the tolerance. Most trigger tests carry only the bound on the
/// harm side (the side they fire on), so without the gate a healthy
/// canary reads "gathering" for the whole rollout; with it, the status
/// says what has been shown, in the gate's words. Other states are kept.
pub fn shown_by_gate(
    state: &mut EvidenceState,
    summary: &mut String,
    gate: &str,
    gate_state: EvidenceState,
    gate_summary: &str,
) {
    if *state == EvidenceState::Gathering && gate_state == EvidenceState::Shown {
        *state = EvidenceState::Shown;
        *summary = format!("shown by gate `{gate}`: {gate_summary}");
    }
}

/// `trigger`'s `reading` as the status shows it.
pub fn trigger_status(
    trigger: &Trigger,
    reading: &TriggerReading<TriggerEvidence>,
) -> TriggerStatus {
    let what = Check::of(&trigger.check);
    let scale = what.unit.scale();
    let scaled = |x: f64| (x * scale).is_finite().then_some(x * scale);
    let no_data = |what: &Check| TriggerStatus {
        state: EvidenceState::NoData,
        progress: None,
        estimate: None,
        interval: None,
        tolerance: what.limit.and_then(|l| scaled(l.value)),
        unit: what.unit.name(),
        summary: format!("no data yet; {}", what.tolerance),
    };
    match &reading.evidence {
        None => no_data(&what),
        Some(TriggerEvidence::Statistical(e)) => {
            let thin = reading.verdict == TriggerVerdict::Inconclusive;
            if thin && e.canary.exposure == 0 {
                return no_data(&what);
            }
            let progress = if reading.verdict == TriggerVerdict::Fired {
                1.0
            } else {
                progress(e.log_e_value, e.log_boundary)
            };
            let stopped = e
                .caveat
                .as_deref()
                .is_some_and(|c| c.contains(STOPPED_MARK));
            let shown = !thin
                && what.limit.is_some_and(|l| {
                    if l.harm_above {
                        e.interval.upper.is_some_and(|u| u <= l.value)
                    } else {
                        e.interval.lower.is_some_and(|lo| lo >= l.value)
                    }
                });
            let state = match reading.verdict {
                TriggerVerdict::Fired => EvidenceState::Fired,
                _ if stopped => EvidenceState::Stopped,
                _ if shown => EvidenceState::Shown,
                _ => EvidenceState::Gathering,
            };
            let summary = match state {
                EvidenceState::Fired => format!("fired: {}", statistical_line(&what, e)),
                EvidenceState::Stopped => format!(
                    "stopped: {}; {}",
                    e.caveat.as_deref().unwrap_or("the test stopped"),
                    estimate_phrase(&what, e)
                ),
                EvidenceState::Shown => format!(
                    "within tolerance, shown: {}; {}",
                    estimate_phrase(&what, e),
                    counts_phrase(&what, e)
                ),
                _ if thin => format!(
                    "gathering: too little data to test yet; {}; {}",
                    counts_phrase(&what, e),
                    what.tolerance
                ),
                _ => format!(
                    "gathering: {} of the way to rollback; {}; {}",
                    way(progress),
                    estimate_phrase(&what, e),
                    counts_phrase(&what, e)
                ),
            };
            TriggerStatus {
                state,
                progress: Some(progress),
                estimate: scaled(e.estimate).filter(|_| !thin),
                interval: (!thin).then(|| {
                    (
                        e.interval.lower.and_then(scaled),
                        e.interval.upper.and_then(scaled),
                    )
                }),
                tolerance: what.limit.and_then(|l| scaled(l.value)),
                unit: what.unit.name(),
                summary,
            }
        }
        Some(TriggerEvidence::Objective(o)) => {
            let v = &o.verdict;
            let limit = what.limit.unwrap_or(Limit {
                value: v.limit,
                harm_above: true,
            });
            let within = if limit.harm_above {
                v.observed <= v.limit
            } else {
                v.observed >= v.limit
            };
            // A rule is shown met only on data, and only while its
            // measurement is within its limit (beyond it, a sustained rule
            // has not fired yet: that is not healthy).
            let state = match reading.verdict {
                TriggerVerdict::Fired => EvidenceState::Fired,
                TriggerVerdict::Ok if within => EvidenceState::Shown,
                TriggerVerdict::Ok => EvidenceState::Gathering,
                TriggerVerdict::Inconclusive if reading.samples == 0 => EvidenceState::NoData,
                TriggerVerdict::Inconclusive => EvidenceState::Gathering,
            };
            if state == EvidenceState::NoData {
                return no_data(&what);
            }
            let progress = if state == EvidenceState::Fired {
                1.0
            } else if limit.harm_above {
                ratio_progress(v.observed, v.limit)
            } else {
                ratio_progress(v.limit, v.observed)
            };
            let measured = format!(
                "{} {} against a limit of {}",
                o.measured,
                what.unit.show(v.observed),
                what.unit.show(v.limit)
            );
            let summary = match state {
                EvidenceState::Fired => format!("fired: {}", objective_line(&what, o)),
                EvidenceState::Shown => format!(
                    "within tolerance, shown: {measured} ({} of the way to rollback); {}",
                    way(progress),
                    what.tolerance
                ),
                _ if !within => format!(
                    "gathering: beyond its limit, not yet for long enough to fire; {measured}; {}",
                    what.tolerance
                ),
                _ => format!(
                    "gathering: {} of the way to rollback; {measured}; {}",
                    way(progress),
                    what.tolerance
                ),
            };
            TriggerStatus {
                state,
                progress: Some(progress),
                estimate: scaled(v.observed),
                interval: None,
                tolerance: scaled(limit.value),
                unit: what.unit.name(),
                summary,
            }
        }
    }
}

/// A gate's `reading` in words: shown, or how far on the way to showing
/// its bound.
pub fn gate_status(gate: &Gate, reading: &GateReading<TriggerEvidence>) -> GateStatus {
    let (subject, bound) = gate_words(&gate.check);
    let unit = Unit::Factor("baseline");
    let Some(TriggerEvidence::Statistical(e)) = &reading.evidence else {
        return GateStatus {
            state: EvidenceState::NoData,
            summary: format!("no data yet; must show {subject} {bound}"),
        };
    };
    if e.canary.exposure == 0 {
        return GateStatus {
            state: EvidenceState::NoData,
            summary: format!("no data yet; must show {subject} {bound}"),
        };
    }
    let what = Check {
        values: matches!(gate.check, GateCheck::Mean { .. }),
        subject,
        unit,
        tolerance: String::new(),
        limit: None,
    };
    if reading.shown {
        GateStatus {
            state: EvidenceState::Shown,
            summary: format!(
                "shown: {} is {bound}; {}",
                estimate_phrase(&what, e),
                counts_phrase(&what, e)
            ),
        }
    } else {
        GateStatus {
            state: EvidenceState::Gathering,
            summary: format!(
                "gathering: {} of the way to showing {} {bound}; {}; {}",
                way(progress(e.log_e_value, e.log_boundary)),
                what.subject,
                estimate_phrase(&what, e),
                counts_phrase(&what, e)
            ),
        }
    }
}

/// What a gate must show: its subject and its bound in words.
#[deny(clippy::wildcard_enum_match_arm)]
fn gate_words(check: &GateCheck) -> (String, String) {
    let factor = Unit::Factor("baseline");
    let requirement = |r: GateRequirement| match r {
        GateRequirement::MinGain(x) => format!("at least {} baseline's", factor.show(1.0 + x)),
        GateRequirement::MaxIncrease(x) => {
            format!("below {} baseline's", factor.show(1.0 + x))
        }
        GateRequirement::MaxDrop(x) => format!("above {} baseline's", factor.show(1.0 - x)),
    };
    match check {
        GateCheck::Ratio {
            metric,
            requirement: r,
        } => (
            format!(
                "canary/baseline rate of {}/{}",
                metric.numerator, metric.denominator
            ),
            requirement(*r),
        ),
        GateCheck::QuantileMaxIncrease {
            metric,
            max_increase,
        } => (
            format!(
                "canary/baseline share of {} beyond +{} over the baseline's p{}",
                metric.signal,
                format_percent(*max_increase),
                num(metric.quantile * 100.0)
            ),
            format!("below {}", factor.show(1.0)),
        ),
        GateCheck::Mean {
            metric,
            requirement: r,
        } => (
            format!("canary/baseline mean of {}", metric.signal),
            requirement(*r),
        ),
    }
}

/// A trigger's fired evidence in one line, for an incident's summary and
/// the simulator's trace (`--trace`): the estimate and its interval in the
/// metric's unit against the tolerance, the e-value against its boundary,
/// the counts and the data covered. Without the trigger (its policy no
/// longer reads) the numbers are written as the evidence names them.
pub fn evidence_line(trigger: Option<&Trigger>, evidence: Option<&TriggerEvidence>) -> String {
    let what = match trigger {
        Some(t) => Check::of(&t.check),
        None => Check {
            values: false,
            subject: match evidence {
                Some(TriggerEvidence::Statistical(e)) => e.estimand.to_string(),
                Some(TriggerEvidence::Objective(o)) => o.measured.to_string(),
                None => "the trigger".into(),
            },
            unit: Unit::Own("(the estimand's unit)".into()),
            tolerance: "tolerance: as the policy wrote it".into(),
            limit: None,
        },
    };
    match evidence {
        None => format!("no measurement; {}", what.tolerance),
        Some(TriggerEvidence::Statistical(e)) => statistical_line(&what, e),
        Some(TriggerEvidence::Objective(o)) => objective_line(&what, o),
    }
}

fn statistical_line(what: &Check, e: &Evidence) -> String {
    let mut out = format!(
        "{}; {}; evidence ln e {} ≥ boundary {}; {}; window {}, most of the evidence from the last {}",
        estimate_phrase(what, e),
        what.tolerance,
        num(e.log_e_value),
        num(e.log_boundary),
        counts_phrase(what, e),
        format_duration(e.window_end.saturating_since(e.window_start)),
        format_duration(e.window_end.saturating_since(e.evidence_since))
    );
    if let Some(c) = &e.caveat {
        out.push_str(&format!("; note: {c}"));
    }
    out
}

fn objective_line(what: &Check, o: &ObjectiveEvidence) -> String {
    let v = &o.verdict;
    let canary = if v.canary.exposure > 0 && what.values {
        format!("; canary {} values", thousands(v.canary.exposure))
    } else if v.canary.exposure > 0 {
        format!("; canary {}", arm_counts(&v.canary))
    } else {
        String::new()
    };
    format!(
        "{} {} against a limit of {}; {}{canary}; window {}",
        o.measured,
        what.unit.show(v.observed),
        what.unit.show(v.limit),
        what.tolerance,
        format_duration(v.window_end.saturating_since(v.window_start))
    )
}

/// `canary/baseline rate of errors/requests: estimate ×1.1, 99%
/// anytime-valid interval [×0.95, ×1.32]`.
fn estimate_phrase(what: &Check, e: &Evidence) -> String {
    let bound = |b: Option<f64>| b.map_or_else(|| "-".to_string(), |x| what.unit.show(x));
    let interval = match (e.interval.lower, e.interval.upper) {
        (None, None) => "no interval yet".to_string(),
        (lo, hi) => format!(
            "{}% anytime-valid interval [{}, {}]",
            num(e.interval.level * 100.0),
            bound(lo),
            bound(hi)
        ),
    };
    format!(
        "{}: estimate {}, {interval}",
        what.subject,
        what.unit.show(e.estimate)
    )
}

/// `canary 48 of 2,000 (2.4%), baseline 200 of 20,000 (1%)`.
fn counts_phrase(what: &Check, e: &Evidence) -> String {
    let arm = |a: &ArmCounts| {
        if what.values {
            format!("{} values", thousands(a.exposure))
        } else {
            arm_counts(a)
        }
    };
    if e.baseline.exposure > 0 {
        format!("canary {}, baseline {}", arm(&e.canary), arm(&e.baseline))
    } else {
        format!("canary {}", arm(&e.canary))
    }
}

/// A share of the way, as a whole percentage: `37%`.
fn way(progress: f64) -> String {
    format!("{:.0}%", (progress * 100.0).floor())
}

/// The share of the way to the boundary, in [0, 1].
fn progress(log_e: f64, log_boundary: f64) -> f64 {
    if log_boundary > 0.0 && log_e.is_finite() {
        (log_e.max(0.0) / log_boundary).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// `measured / limit` in [0, 1].
fn ratio_progress(measured: f64, limit: f64) -> f64 {
    if limit > 0.0 && measured.is_finite() {
        (measured.max(0.0) / limit).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// `Counts: canary 48 of 2,000 (2.4%), baseline 20 of 2,000 (1%).`
fn counts(canary: &ArmCounts, baseline: Option<&ArmCounts>) -> String {
    let arm = arm_counts;
    match baseline {
        Some(b) => format!("Counts: canary {}, baseline {}.", arm(canary), arm(b)),
        None => format!("Counts: canary {}.", arm(canary)),
    }
}

/// `48 of 2,000 (2.4%)`.
fn arm_counts(a: &ArmCounts) -> String {
    let share = if a.exposure > 0 {
        format!(" ({})", format_percent(a.events as f64 / a.exposure as f64))
    } else {
        String::new()
    };
    format!(
        "{} of {}{share}",
        thousands(a.events),
        thousands(a.exposure)
    )
}

/// At most three decimals, trailing zeros trimmed: 1.2000 → `1.2`.
fn num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// A large positive number readably: `455`, `1.2e6`.
fn big(x: f64) -> String {
    if !x.is_finite() || x >= 1e6 {
        format!("{x:.1e}")
    } else if x >= 100.0 {
        thousands(x.round() as u64)
    } else {
        num(x)
    }
}

/// `12345` → `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use expect_test::expect;

    use super::*;

    /// A trigger test carries only its harm-side bound; its implied gate
    /// shows the other side. Gathering becomes shown, in the gate's words,
    /// only when the gate is shown; nothing else changes.
    #[test]
    fn a_shown_no_harm_gate_shows_its_trigger() {
        let gate = "no-harm:errors";
        let shown = "shown: canary/baseline rate of errors/requests is below ×1.5";
        let (mut state, mut summary) = (EvidenceState::Gathering, "gathering: 3%".to_string());
        shown_by_gate(
            &mut state,
            &mut summary,
            gate,
            EvidenceState::Gathering,
            "gathering",
        );
        assert_eq!(
            (state, summary.as_str()),
            (EvidenceState::Gathering, "gathering: 3%")
        );
        shown_by_gate(&mut state, &mut summary, gate, EvidenceState::Shown, shown);
        assert_eq!(state, EvidenceState::Shown);
        assert_eq!(summary, format!("shown by gate `{gate}`: {shown}"));
        for kept in [
            EvidenceState::Fired,
            EvidenceState::Stopped,
            EvidenceState::NoData,
        ] {
            let (mut state, mut summary) = (kept, "as it was".to_string());
            shown_by_gate(&mut state, &mut summary, gate, EvidenceState::Shown, shown);
            assert_eq!((state, summary.as_str()), (kept, "as it was"));
        }
    }
    use crate::policy::{Action, Quantile, Ratio};
    use crate::stats::Interval;
    use crate::stats::objective::ObjectiveVerdict;
    use crate::time::Timestamp;

    fn trigger(check: TriggerCheck) -> Trigger {
        Trigger {
            name: "errors".into(),
            check,
            action: Action::Rollback,
        }
    }

    #[test]
    fn a_ratio_against_baseline_reads_as_a_factor_beside_its_tolerance() {
        let t = trigger(TriggerCheck::RatioVsBaseline {
            metric: Ratio::new("error-rate", "errors", "requests", None),
            regression: Regression::RelativeIncrease(0.2),
        });
        let e = Evidence {
            estimand: Arc::from("rate ratio canary/baseline of errors/requests"),
            baseline: ArmCounts {
                exposure: 20_000,
                events: 200,
            },
            canary: ArmCounts {
                exposure: 2_000,
                events: 48,
            },
            estimate: 2.4,
            interval: Interval::new(1.61, 3.5, 0.99),
            log_e_value: 6.12,
            log_boundary: 100f64.ln(),
            window_start: Timestamp::from_millis(0),
            window_end: Timestamp::from_millis(300_000),
            caveat: None,
            evidence_since: Timestamp::from_millis(120_000),
        };
        let words = trigger_evidence(&t, Some(&TriggerEvidence::Statistical(e)));
        expect!["Trigger `errors` fired: the canary/baseline rate of errors/requests is ×2.4 (99% anytime-valid interval ×1.61 to ×3.5); tolerance: at most ×1.2 baseline's (+20%). The evidence (log e-value 6.12) crossed its boundary 4.605 (an e-value of 455 against 100). Counts: canary 48 of 2,000 (2.4%), baseline 200 of 20,000 (1%). It covers 5m of data; most of the evidence is from the last 3m."]
        .assert_eq(&words.paragraph());
    }

    #[test]
    fn a_sustained_latency_reads_in_milliseconds() {
        let t = trigger(TriggerCheck::SustainedQuantile {
            metric: Quantile {
                name: "latency".into(),
                signal: "latency_ms".into(),
                quantile: 0.95,
            },
            above_ms: 250.0,
            for_duration: Duration::from_secs(120),
        });
        let o = ObjectiveEvidence {
            measured: Arc::from("canary p95 of latency_ms (lower bound of its bucket)"),
            verdict: ObjectiveVerdict {
                fired: true,
                observed: 310.0,
                limit: 250.0,
                canary: ArmCounts {
                    exposure: 1_234,
                    events: 0,
                },
                window_start: Timestamp::from_millis(0),
                window_end: Timestamp::from_millis(120_000),
            },
        };
        let words = trigger_evidence(&t, Some(&TriggerEvidence::Objective(o)));
        expect![[r#"
            Trigger `errors` fired: canary p95 of latency_ms (lower bound of its bucket) was 310ms against a limit of 250ms; tolerance: at most 250ms for 2m. Counts: canary 0 of 1,234 (0%). It covers 2m of data."#]]
        .assert_eq(&words.paragraph());
    }

    #[test]
    fn no_evidence_says_what_the_trigger_checks() {
        let t = trigger(TriggerCheck::RatioThreshold {
            metric: Ratio::new("error-rate", "errors", "requests", None),
            bound: Bound::Above(0.05),
        });
        expect!["Trigger `errors` fired (tolerance: at most 5%); it carried no measurement."]
            .assert_eq(&trigger_evidence(&t, None).paragraph());
    }

    #[test]
    fn a_canary_only_check_reads_one_sided_and_counts_the_canary_alone() {
        let t = trigger(TriggerCheck::RatioThreshold {
            metric: Ratio::new("error-rate", "errors", "requests", None),
            bound: Bound::Above(0.02),
        });
        let e = Evidence {
            estimand: Arc::from("canary rate of errors/requests (threshold 0.02)"),
            baseline: ArmCounts::default(),
            canary: ArmCounts {
                exposure: 400,
                events: 120,
            },
            estimate: 0.3,
            interval: Interval::new(0.21, f64::INFINITY, 0.95),
            log_e_value: 9.5,
            log_boundary: 20f64.ln(),
            window_start: Timestamp::from_millis(0),
            window_end: Timestamp::from_millis(2_000),
            caveat: None,
            evidence_since: Timestamp::from_millis(0),
        };
        let words = trigger_evidence(&t, Some(&TriggerEvidence::Statistical(e)));
        expect![[r#"
            Trigger `errors` fired: the canary rate of errors/requests is 30% (at least 21% at 95% anytime-valid); tolerance: at most 2%. The evidence (log e-value 9.5) crossed its boundary 2.996 (an e-value of 13,360 against 20). Counts: canary 120 of 400 (30%). It covers 2s of data; most of the evidence is from the last 2s."#]]
        .assert_eq(&words.paragraph());
    }

    #[test]
    fn numbers_read_plainly() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(num(1.2000), "1.2");
        assert_eq!(num(-0.0001), "0");
        assert_eq!(big(2.0e7), "2.0e7");
    }
}

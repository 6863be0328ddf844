//! Evidence in words: what a trigger saw, as plain sentences with units,
//! for people (notifications today; the CLI and incidents may reuse it).
//! It takes the types the daemon already holds (the policy's `Trigger` and
//! its `TriggerEvidence`) and returns text; it decides nothing and reads no
//! clock, so the same evidence always reads the same.
//!
//! Each check says its estimate in the metric's unit: a rate as a
//! percentage, a latency in milliseconds, a comparison with the baseline
//! as a factor (`1.35x`), and the tolerance written in the policy beside it.
//! Statistical evidence adds its e-value against the boundary it crossed;
//! objective evidence, the measurement against its limit. Then the counts
//! and how much data it covers.

use crate::policy::{Bound, Regression, Trigger, TriggerCheck};
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
}

/// The unit an estimate is written in.
#[derive(Clone, Copy)]
enum Unit {
    /// A fraction, shown as a percentage.
    Fraction,
    /// Canary against baseline, shown as a factor (`1.35x`).
    Factor,
    Milliseconds,
    /// Seconds without data.
    Seconds,
    /// The signal's own unit (means).
    Plain,
}

impl Unit {
    fn show(self, x: f64) -> String {
        match self {
            Unit::Fraction => format_percent(x),
            Unit::Factor => format!("{}x", num(x)),
            Unit::Milliseconds => format_latency_ms(x),
            Unit::Seconds => format!("{}s", num(x)),
            Unit::Plain => num(x),
        }
    }
}

impl Check {
    /// No catch-all arm: a new check kind says how its numbers read.
    #[deny(clippy::wildcard_enum_match_arm)]
    fn of(check: &TriggerCheck) -> Check {
        let vs = |r: &Regression| match r {
            Regression::RelativeIncrease(x) => format!(
                "tolerance: at most {} baseline's (+{})",
                Unit::Factor.show(1.0 + x),
                format_percent(*x)
            ),
            Regression::RelativeDrop(x) => format!(
                "tolerance: at least {} baseline's (-{})",
                Unit::Factor.show(1.0 - x),
                format_percent(*x)
            ),
        };
        let bound = |b: &Bound, unit: Unit| match b {
            Bound::Above(v) => format!("tolerance: at most {}", unit.show(*v)),
            Bound::Below(v) => format!("tolerance: at least {}", unit.show(*v)),
        };
        let sustained = |d: &std::time::Duration| format!(" for {}", format_duration(*d));
        match check {
            TriggerCheck::RatioVsBaseline { metric, regression } => Check {
                subject: format!(
                    "canary/baseline rate of {}/{}",
                    metric.numerator, metric.denominator
                ),
                unit: Unit::Factor,
                tolerance: vs(regression),
            },
            TriggerCheck::QuantileVsBaseline { metric, increase } => Check {
                subject: format!(
                    "canary/baseline share of {} beyond the baseline's p{}",
                    metric.signal,
                    num(metric.quantile * 100.0)
                ),
                unit: Unit::Factor,
                tolerance: format!(
                    "tolerance: p{} latency at most +{} over baseline's",
                    num(metric.quantile * 100.0),
                    format_percent(*increase)
                ),
            },
            TriggerCheck::MeanVsBaseline { metric, regression } => Check {
                subject: format!("canary/baseline mean of {}", metric.signal),
                unit: Unit::Factor,
                tolerance: vs(regression),
            },
            TriggerCheck::RatioThreshold { metric, bound: b } => Check {
                subject: format!("canary rate of {}/{}", metric.numerator, metric.denominator),
                unit: Unit::Fraction,
                tolerance: bound(b, Unit::Fraction),
            },
            TriggerCheck::QuantileThreshold { metric, above_ms } => Check {
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
            },
            TriggerCheck::MeanThreshold { metric, bound: b } => Check {
                subject: format!("canary mean of {}", metric.signal),
                unit: Unit::Plain,
                tolerance: bound(b, Unit::Plain),
            },
            TriggerCheck::SustainedRatio {
                metric,
                bound: b,
                for_duration,
            } => Check {
                subject: format!("canary rate of {}/{}", metric.numerator, metric.denominator),
                unit: Unit::Fraction,
                tolerance: bound(b, Unit::Fraction) + &sustained(for_duration),
            },
            TriggerCheck::SustainedQuantile {
                metric,
                above_ms,
                for_duration,
            } => Check {
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
            },
            TriggerCheck::SustainedMean {
                metric,
                bound: b,
                for_duration,
            } => Check {
                subject: format!("canary mean of {}", metric.signal),
                unit: Unit::Plain,
                tolerance: bound(b, Unit::Plain) + &sustained(for_duration),
            },
            TriggerCheck::BurnRate { metric, slo, .. } => Check {
                subject: format!(
                    "canary error-budget burn rate of {}/{} against a {} SLO",
                    metric.numerator,
                    metric.denominator,
                    format_percent(*slo)
                ),
                unit: Unit::Factor,
                tolerance: "tolerance: the burn factor of each window".into(),
            },
            TriggerCheck::Disparity {
                metric,
                group_by,
                min_ratio,
            } => Check {
                subject: format!(
                    "canary lowest/highest {group_by} group rate of {}/{}",
                    metric.numerator, metric.denominator
                ),
                unit: Unit::Factor,
                tolerance: format!("tolerance: at least {}", Unit::Factor.show(*min_ratio)),
            },
            TriggerCheck::NoData {
                signal,
                for_duration,
                ..
            } => Check {
                subject: format!("time without canary {signal}"),
                unit: Unit::Seconds,
                tolerance: format!("tolerance: less than {}", format_duration(*for_duration)),
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

/// `Counts: canary 48 of 2,000 (2.4%), baseline 20 of 2,000 (1%).`
fn counts(canary: &ArmCounts, baseline: Option<&ArmCounts>) -> String {
    let arm = |a: &ArmCounts| {
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
    };
    match baseline {
        Some(b) => format!("Counts: canary {}, baseline {}.", arm(canary), arm(b)),
        None => format!("Counts: canary {}.", arm(canary)),
    }
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
        expect![[r#"
            Trigger `errors` fired: the canary/baseline rate of errors/requests is 2.4x (99% anytime-valid interval 1.61x to 3.5x); tolerance: at most 1.2x baseline's (+20%). The evidence (log e-value 6.12) crossed its boundary 4.605 (an e-value of 455 against 100). Counts: canary 48 of 2,000 (2.4%), baseline 200 of 20,000 (1%). It covers 5m of data; most of the evidence is from the last 3m."#]]
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

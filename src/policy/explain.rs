//! `policy explain`: a compiled policy in plain language. Each step with its
//! cumulative time, each trigger and gate in words (the gates `requireNoHarm`
//! implies with the trigger behind each), how `alpha` is split, and the
//! fastest possible promotion; and the warnings `policy check` prints for a
//! policy that compiles (opting out of `requireNoHarm`). Pure: it formats,
//! it does not print.

use std::fmt::Write;
use std::time::Duration;

use super::check::{GateCheck, Mean, Named, Quantile, Ratio, TriggerCheck};
use super::model::*;
use super::no_harm::{NoHarmCheck, implied_gate_name, no_harm_check};
use super::written::{Bound, GateRequirement, Metric, Regression};
use crate::stats::Overdispersion;
use crate::time::format_duration as dur;
use crate::yaml::units::{format_latency_ms, format_percent};

pub fn explain(policy: &Policy) -> String {
    let mut out = String::new();
    let w = &mut out;
    header(w, policy);
    steps(w, policy);
    triggers(w, policy);
    gates(w, policy);
    no_harm(w, policy);
    let _ = writeln!(
        w,
        "\non rollback: an incident ({}) with the evidence{}",
        policy.incident.severity,
        if policy.incident.notify.is_empty() {
            String::new()
        } else {
            let urls: Vec<&str> = policy
                .incident
                .notify
                .iter()
                .map(|n| match n {
                    Notify::Webhook(u) => u.as_str(),
                })
                .collect();
            format!(", notifying {}", urls.join(", "))
        }
    );
    out
}

/// The policy's name, how it judges data, and its change type.
fn header(w: &mut String, policy: &Policy) {
    let a = &policy.analysis;
    let _ = writeln!(w, "policy {}", policy.name);
    if let Some(d) = &policy.description {
        let _ = writeln!(w, "  {d}");
    }
    let _ = writeln!(
        w,
        "change type {}; evaluated every {}; a step advances once its bake is over, its canary has served {} requests, and the gates its next weight needs are shown",
        policy.change_type.as_str(),
        dur(a.interval),
        a.min_samples
    );
    let _ = writeln!(
        w,
        "after each weight change the first {} of data is left out of comparisons (warm-up){}",
        dur(a.warmup),
        if a.sample_ratio_check {
            "; evidence that the observed split differs from the set weight (by more than 10% on the odds) pauses the rollout"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "{}", overdispersion(a.overdispersion));
    if policy.change_type == ChangeType::Emergency {
        let _ = writeln!(
            w,
            "emergency: for the first {} bakes, approvals and gates are skipped (each weight still serves {} canary requests, and triggers stay armed); a reason and a ticket are required, and a post-incident review is opened",
            dur(policy.emergency.bypass_for),
            a.min_samples
        );
    }
    if let Some(e) = &policy.experiment {
        let _ = writeln!(
            w,
            "experiment: the canary never gets more than {}% of traffic; after {} the rollout ends `concluded` with a report and traffic back to baseline, never a promotion",
            e.weight.percent(),
            dur(e.duration)
        );
    }
}

/// Each step with its cumulative time on the fastest path.
fn steps(w: &mut String, policy: &Policy) {
    let a = &policy.analysis;
    let _ = writeln!(
        w,
        "\nsteps (time from start on the fastest path; approval waits not counted):"
    );
    let mut t = Duration::ZERO;
    let mut weight = 0u8;
    for (i, step) in policy.steps.iter().enumerate() {
        match step {
            Step::SetWeight(wt) => {
                let _ = write!(
                    w,
                    "  {:>2}. at {:<10} set the canary to {}% of traffic",
                    i + 1,
                    dur(t),
                    wt.percent()
                );
                let needed: Vec<&str> = policy
                    .gates
                    .iter()
                    .filter(|g| {
                        g.before > Weight::new(weight).unwrap_or(Weight::ZERO) && g.before <= *wt
                    })
                    .map(|g| g.name.as_str())
                    .collect();
                match needed.len() {
                    0 => {}
                    1 => {
                        let _ = write!(w, ", once gate {} is shown", needed[0]);
                    }
                    _ => {
                        let _ = write!(w, ", once gates {} are shown", needed.join(" and "));
                    }
                }
                let _ = writeln!(w);
                weight = wt.percent();
            }
            Step::Bake(d) => {
                let _ = writeln!(
                    w,
                    "  {:>2}. at {:<10} bake {} (until {})",
                    i + 1,
                    dur(t),
                    dur(*d),
                    dur(t + *d)
                );
                t += *d;
            }
            Step::Approval(ap) => {
                let _ = write!(
                    w,
                    "  {:>2}. at {:<10} wait for approval by {}",
                    i + 1,
                    dur(t),
                    ap.roles.join(" and ")
                );
                if ap.distinct && ap.roles.len() > 1 {
                    let _ = write!(
                        w,
                        " (a different person for each role, none of them the starter)"
                    );
                } else if ap.distinct {
                    let _ = write!(w, " (not the starter)");
                }
                if let Some(to) = ap.timeout {
                    let what = match ap.on_timeout {
                        OnTimeout::Rollback => {
                            "traffic goes back to baseline and the rollout ends inconclusive"
                        }
                        OnTimeout::Pause => "the rollout pauses",
                    };
                    let _ = write!(w, "; after {} without every approval, {what}", dur(to));
                }
                let _ = writeln!(w);
            }
        }
    }
    if weight < 100 && policy.change_type != ChangeType::Experiment {
        let _ = writeln!(
            w,
            "      at {:<10} promote: the canary takes all traffic",
            dur(t)
        );
    }
    let approvals = policy
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Approval(_)))
        .count();
    let _ = writeln!(
        w,
        "fastest possible promotion: {} after start{}, if every step reaches {} canary requests in time",
        dur(t),
        if approvals > 0 {
            " plus the approval waits"
        } else {
            ""
        },
        a.min_samples
    );
    let _ = writeln!(
        w,
        "a gate not shown within {} (approval waits not counted) ends the rollout inconclusive, traffic back to baseline",
        dur(a.max_duration)
    );
}

/// Each trigger in words, and how alpha is split among them.
fn triggers(w: &mut String, policy: &Policy) {
    let a = &policy.analysis;
    let _ = writeln!(
        w,
        "\ntriggers (each stays armed in every state, also while paused or awaiting approval):"
    );
    if policy.triggers.is_empty() {
        let _ = writeln!(w, "  none");
    }
    let share = policy.alpha_per_trigger();
    for t in &policy.triggers {
        let kind = if t.is_statistical() {
            format!("statistical, alpha share {}", fmt_prob(share))
        } else {
            "objective".to_owned()
        };
        let action = match t.action {
            Action::Rollback => "roll back",
            Action::Pause => "pause",
        };
        let _ = writeln!(
            w,
            "  - {} ({kind}): {action} {}",
            t.name,
            describe_trigger(t)
        );
    }
    let k = policy.statistical_triggers().count();
    if k > 0 {
        let _ = writeln!(
            w,
            "alpha: the {k} statistical trigger{} share alpha = {}: each fires when its e-value reaches {}/{} = {} (Bonferroni over e-values), so the chance that any of them rolls back a healthy canary over the whole rollout, watched at every interval, is at most {}",
            if k == 1 { "" } else { "s" },
            fmt_prob(a.alpha),
            k,
            fmt_prob(a.alpha),
            fmt_num(k as f64 / a.alpha),
            fmt_prob(a.alpha)
        );
    }
    if policy.triggers.iter().any(|t| !t.is_statistical()) {
        let _ = writeln!(
            w,
            "objective triggers fire exactly as written and are outside alpha; the simulator reports how often they fire on healthy traffic"
        );
    }
    let latency_vs_baseline = policy
        .triggers
        .iter()
        .any(|t| matches!(t.check, TriggerCheck::QuantileVsBaseline { .. }))
        || policy
            .gates
            .iter()
            .any(|g| matches!(g.check, GateCheck::QuantileMaxIncrease { .. }));
    if latency_vs_baseline {
        let _ = writeln!(
            w,
            "latency is compared with the baseline by counting requests above a threshold: on Prometheus histograms the canary's threshold rounds to a bucket bound (up for a trigger, down for a gate), so coarse buckets test another factor than written; the status and the evidence show the factor applied when it differs by more than 2%"
        );
    }
    let means = policy.triggers.iter().any(|t| {
        matches!(
            t.check,
            TriggerCheck::MeanVsBaseline { .. } | TriggerCheck::MeanThreshold { .. }
        )
    }) || policy
        .gates
        .iter()
        .any(|g| matches!(g.check, GateCheck::Mean { .. }));
    if means {
        let _ = writeln!(
            w,
            "means are read from histogram buckets; values above the largest finite bucket are known only to be above it, so a mean test stops (and reads no evidence) once they appear on the side where counting them at the bound would make evidence"
        );
    }
}

/// Each gate in words, and how the false-promotion budget is split.
fn gates(w: &mut String, policy: &Policy) {
    if policy.gates.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "\ngates (shown by an anytime-valid bound; checked again each time a step needs them, not latched):"
    );
    for g in &policy.gates {
        let from = match &g.implied_by {
            Some(t) => format!(" (implied by requireNoHarm for trigger `{t}`)"),
            None => String::new(),
        };
        let _ = writeln!(
            w,
            "  - {}{from}: before any step sets {}% or more, show {}",
            g.name,
            g.before.percent(),
            describe_gate(g)
        );
    }
    let g = policy.gates.len();
    let _ = writeln!(
        w,
        "the {g} gate{} share the false-promotion budget alpha = {}: each is shown while its e-value is at least {}/{} = {}, so the chance that any gate whose claim is false is shown when a step needs it is at most {}",
        if g == 1 { "" } else { "s" },
        fmt_prob(policy.analysis.alpha),
        g,
        fmt_prob(policy.analysis.alpha),
        fmt_num(g as f64 / policy.analysis.alpha),
        fmt_prob(policy.analysis.alpha)
    );
}

/// What `requireNoHarm` asks, or that the policy opted out.
fn no_harm(w: &mut String, policy: &Policy) {
    let vs_baseline: Vec<&Trigger> = policy
        .triggers
        .iter()
        .filter(|t| no_harm_check(&t.check, 1.0).is_some())
        .collect();
    let Some(nh) = policy.analysis.require_no_harm else {
        if vs_baseline.is_empty() {
            let _ = writeln!(
                w,
                "\nrequireNoHarm: false (no vsBaseline trigger, so nothing changes)"
            );
        } else {
            let _ = writeln!(
                w,
                "\nWARNING: requireNoHarm: false: promotion needs no evidence that the canary is not worse than baseline; the absence of a rollback promotes it, however little data there was (triggers {} only roll back on evidence of harm)",
                vs_baseline
                    .iter()
                    .map(|t| format!("`{}`", t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        return;
    };
    let _ = writeln!(
        w,
        "\npromotion needs evidence, not silence (requireNoHarm, margin {}x): before a step sets {}% or more, each vsBaseline trigger's harm must be shown below {}x its tolerance, so a canary whose true harm is at least {}x a tolerance is promoted with probability at most {}",
        fmt_num(nh.margin),
        nh.before.percent(),
        fmt_num(nh.margin),
        fmt_num(nh.margin),
        fmt_prob(policy.analysis.alpha / policy.gates.len().max(1) as f64)
    );
    if vs_baseline.is_empty() {
        let _ = writeln!(w, "  (no vsBaseline trigger: no gate implied)");
    }
    for t in vs_baseline {
        match no_harm_check(&t.check, nh.margin) {
            Some(NoHarmCheck::Gate(_)) => {
                let _ = writeln!(w, "  - `{}`: gate `{}`", t.name, implied_gate_name(&t.name));
            }
            Some(NoHarmCheck::Unneeded { bound }) => {
                let _ = writeln!(
                    w,
                    "  - `{}`: no gate needed: {}x its tolerance is a drop of {}, and no drop can be larger than all of it",
                    t.name,
                    fmt_num(nh.margin),
                    format_percent(bound)
                );
            }
            None => {}
        }
    }
    let _ = writeln!(
        w,
        "  a gate not shown within maxDuration {} ends the rollout inconclusive; `policy explain --rps` forecasts how long a healthy canary takes to show each",
        dur(policy.analysis.max_duration)
    );
}

/// What `policy check` warns about in a policy that compiles: today, a
/// policy that opts out of `requireNoHarm` while it has `vsBaseline`
/// triggers. Each is `(field path, message)`.
pub fn warnings(policy: &Policy) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let vs_baseline = policy
        .triggers
        .iter()
        .filter(|t| no_harm_check(&t.check, 1.0).is_some())
        .count();
    if policy.analysis.require_no_harm.is_none() && vs_baseline > 0 {
        out.push((
            "spec.analysis.requireNoHarm".to_owned(),
            format!(
                "false: this policy promotes a canary on the absence of evidence of harm; its {vs_baseline} vsBaseline trigger{} will not be required to show that the harm is small before 100% (remove the field to get the default `{{ margin: 2x }}`)",
                if vs_baseline == 1 { "" } else { "s" }
            ),
        ));
    }
    out
}

fn ratio_words(m: &Ratio) -> String {
    let g = m
        .group_by
        .as_ref()
        .map(|g| format!(" by {g}"))
        .unwrap_or_default();
    format!("`{}` ({} / {}{g})", m.name, m.numerator, m.denominator)
}

fn quantile_words(m: &Quantile) -> String {
    format!(
        "p{} of `{}` ({})",
        fmt_num(m.quantile * 100.0),
        m.name,
        m.signal
    )
}

fn mean_words(m: &Mean) -> String {
    format!("the mean of `{}` ({})", m.name, m.signal)
}

fn named_words(m: &Named) -> String {
    let name = &m.name;
    match &m.metric {
        Metric::Ratio {
            numerator,
            denominator,
            group_by,
        } => ratio_words(&Ratio::new(
            name,
            numerator,
            denominator,
            group_by.as_deref(),
        )),
        Metric::Latency { signal } => format!("`{name}` ({signal})"),
        Metric::Mean { signal } => mean_words(&Mean::new(name, signal)),
    }
}

fn bound(b: &Bound) -> (&'static str, f64) {
    match b {
        Bound::Above(v) => ("above", *v),
        Bound::Below(v) => ("below", *v),
    }
}

fn regression(r: &Regression) -> (String, &'static str) {
    match r {
        Regression::RelativeDrop(x) => (format_percent(*x), "below"),
        Regression::RelativeIncrease(x) => (format_percent(*x), "above"),
    }
}

/// Every check in words. A new check kind is a new arm here: the match
/// has no catch-all, so the build fails until it is described.
#[deny(clippy::wildcard_enum_match_arm)]
fn describe_trigger(t: &Trigger) -> String {
    let sustained = |m: String, side: &str, limit: String, d: &Duration| {
        format!(
            "when the canary's {m} stays {side} {limit} in every interval for {} running",
            dur(*d)
        )
    };
    match &t.check {
        TriggerCheck::RatioVsBaseline {
            metric,
            regression: r,
        } => {
            let (x, side) = regression(r);
            format!(
                "on evidence that the canary's {} is more than {x} {side} baseline's",
                ratio_words(metric)
            )
        }
        TriggerCheck::QuantileVsBaseline { metric, increase } => format!(
            "on evidence that the canary's {} is more than {} above baseline's",
            quantile_words(metric),
            format_percent(*increase)
        ),
        TriggerCheck::MeanVsBaseline {
            metric,
            regression: r,
        } => {
            let (x, side) = regression(r);
            format!(
                "on evidence that the canary's {} is more than {x} {side} baseline's",
                mean_words(metric)
            )
        }
        TriggerCheck::RatioThreshold { metric, bound: b } => {
            let (side, v) = bound(b);
            format!(
                "on evidence that the canary's {} is {side} {}",
                ratio_words(metric),
                format_percent(v)
            )
        }
        TriggerCheck::QuantileThreshold { metric, above_ms } => format!(
            "on evidence that the canary's {} is above {}",
            quantile_words(metric),
            format_latency_ms(*above_ms)
        ),
        TriggerCheck::MeanThreshold { metric, bound: b } => {
            let (side, v) = bound(b);
            format!(
                "on evidence that the canary's {} is {side} {}",
                mean_words(metric),
                fmt_num(v)
            )
        }
        TriggerCheck::SustainedRatio {
            metric,
            bound: b,
            for_duration,
        } => {
            let (side, v) = bound(b);
            sustained(ratio_words(metric), side, format_percent(v), for_duration)
        }
        TriggerCheck::SustainedQuantile {
            metric,
            above_ms,
            for_duration,
        } => sustained(
            quantile_words(metric),
            "above",
            format_latency_ms(*above_ms),
            for_duration,
        ),
        TriggerCheck::SustainedMean {
            metric,
            bound: b,
            for_duration,
        } => {
            let (side, v) = bound(b);
            sustained(mean_words(metric), side, fmt_num(v), for_duration)
        }
        TriggerCheck::BurnRate {
            metric,
            slo,
            windows,
        } => {
            let ws: Vec<String> = windows
                .iter()
                .map(|bw| {
                    format!(
                        "over both the last {} and the last {} at more than {}x the sustainable rate (error ratio above {})",
                        dur(bw.long),
                        dur(bw.short),
                        fmt_num(bw.factor),
                        format_percent(bw.factor * (1.0 - slo))
                    )
                })
                .collect();
            format!(
                "when the canary burns the error budget of a {} SLO on {} {}",
                format_percent(*slo),
                ratio_words(metric),
                ws.join(", or ")
            )
        }
        TriggerCheck::Disparity {
            metric, min_ratio, ..
        } => format!(
            "on evidence that, for the canary, the lowest group's {} divided by the highest group's is below {}",
            ratio_words(metric),
            fmt_num(*min_ratio)
        ),
        TriggerCheck::NoData {
            metric: Some(m),
            for_duration,
            ..
        } => format!(
            "when the canary has had no data for {} for {}",
            named_words(m),
            dur(*for_duration)
        ),
        TriggerCheck::NoData {
            metric: None,
            for_duration,
            ..
        } => format!(
            "when the canary has served no requests for {}",
            dur(*for_duration)
        ),
    }
}

#[deny(clippy::wildcard_enum_match_arm)]
fn describe_gate(g: &Gate) -> String {
    let m = match &g.check {
        GateCheck::Ratio { metric, .. } => ratio_words(metric),
        GateCheck::QuantileMaxIncrease { metric, .. } => quantile_words(metric),
        GateCheck::Mean { metric, .. } => mean_words(metric),
    };
    match g.check.requirement() {
        GateRequirement::MinGain(x) => format!(
            "that the canary's {m} is at least {} above baseline's",
            format_percent(x)
        ),
        GateRequirement::MaxIncrease(x) => format!(
            "that the canary's {m} is less than {} above baseline's",
            format_percent(x)
        ),
        GateRequirement::MaxDrop(x) => format!(
            "that the canary's {m} is less than {} below baseline's",
            format_percent(x)
        ),
    }
}

/// A probability as a percentage: 0.01 → `1%`, 0.0033 → `0.333%`.
fn fmt_prob(p: f64) -> String {
    let pct = p * 100.0;
    let digits = if pct >= 1.0 { 2 } else { 3 };
    let rounded = format!("{pct:.*}", digits);
    let trimmed = rounded.trim_end_matches('0').trim_end_matches('.');
    format!("{trimmed}%")
}

fn fmt_num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// What the tests assume about requests that are not independent.
fn overdispersion(o: Option<Overdispersion>) -> String {
    match o {
        Some(Overdispersion::Fixed(1.0)) => "requests are taken as independent (overdispersion 1): counts that vary more than binomially from one interval to the next (sessions, bursts, hosts) will read as evidence".to_owned(),
        Some(Overdispersion::Fixed(f)) => format!(
            "every binomial variance is multiplied by {f} (overdispersion), for requests that are not independent"
        ),
        Some(Overdispersion::Auto) | None => "requests are not taken as independent: each test inflates an interval's variance by how much more than binomially its counts varied over the intervals before it (overdispersion auto)".to_owned(),
    }
}

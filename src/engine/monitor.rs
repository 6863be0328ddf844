//! The policy-driven [`Analysis`]: builds one statistics test per trigger and
//! gate of a compiled policy, feeds them interval snapshots, and reports
//! readings with their evidence. This is what the daemon and the simulator
//! run; it is glue, the statistics live in `crate::stats`.
//!
//! Budgets: the `K` statistical triggers share `alpha` (each runs at
//! `alpha / K`, Bonferroni over e-values, see `Policy::alpha_per_trigger`);
//! the `G` gates share a separate false-promotion budget `alpha` (each at
//! `alpha / G`); the sample-ratio guard runs at [`SRM_ALPHA`] and only
//! pauses. Statistical triggers restart their mixtures at up to
//! [`change_detection`] points over the rollout's horizon (`maxDuration`), so a
//! regression that starts late is caught about as fast as an early one.
//!
//! Warm-up: after each weight change, the first `warmup` of data is kept out
//! of the comparative tests (vsBaseline, gates, sample ratio); canary-alone
//! and objective checks see every interval.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::analysis::{Analysis, Assessment, GateReading, TriggerReading, TriggerVerdict};
use crate::policy::{
    Bound, Gate, GateRequirement, Metric, Policy, Regression, Trigger, TriggerRule, Weight,
};
use crate::stats::mean::MeanTest;
use crate::stats::{
    self, ArmCounts, BurnRate, ChangeDetection, Disparity, GateKind, HistogramReads,
    IntervalSnapshot, LatencyReads, NoData, QuantileThreshold, QuantileVsBaseline, RatioThreshold,
    RatioVsBaseline, SampleRatioCheck, StatTest, Status, SustainedQuantile, Verdict, Warmup,
    Windows,
};
use crate::time::Timestamp;

/// Budget of the sample-ratio guard: a false pause costs an operator's look,
/// so it is kept rare and apart from the rollback budget.
pub const SRM_ALPHA: f64 = 0.001;
/// Most restart points of the change-detecting mixtures over the horizon.
pub const MAX_RESTARTS: u32 = 255;
/// Fewest intervals between two restart points.
pub const MIN_RESTART_SPACING: u64 = 10;

/// The restart grid for a policy: restart points every `horizon / R`
/// intervals, with `R` as large as [`MAX_RESTARTS`] while the spacing stays
/// at least [`MIN_RESTART_SPACING`] intervals.
///
/// A regression that starts between two restart points waits for the next
/// one (the slots already running carry the healthy evidence gathered before
/// it), so the spacing bounds the extra delay of a late change; each restart
/// point costs `ln(2R)` nats of evidence for the changes it catches. With a
/// fixed R = 31 the recommender policy (98 h horizon) restarted every 3.1 h
/// and caught an error spike starting 2 h in after 1 h 14 m (p50, 100 runs);
/// R = 255 (23 min spacing) pays 2.1 nats more and waits far less.
pub fn change_detection(policy: &Policy) -> ChangeDetection {
    let a = &policy.analysis;
    let interval_ms = a.interval.as_millis().max(1) as u64;
    // Data keeps arriving while approvals are awaited (not counted in
    // maxDuration) and for an experiment's whole duration: the grid covers
    // those too, so restart points do not run out early.
    let approval_waits: Duration = policy
        .steps
        .iter()
        .map(|s| match s {
            crate::policy::Step::Approval(ap) => ap.timeout.unwrap_or(Duration::from_secs(86_400)),
            _ => Duration::ZERO,
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
/// Groups a disparity test keeps (and splits its budget over).
pub const MAX_GROUPS: usize = 16;
/// The request counter every source provides.
pub const REQUESTS: &str = "requests";

/// What a reading rests on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TriggerEvidence {
    /// An anytime-valid test: counts, estimate with its confidence interval,
    /// log e-value against its log boundary, window.
    Statistical(stats::Evidence),
    /// A rule applied exactly as written: what was measured against the limit.
    Objective(ObjectiveEvidence),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveEvidence {
    /// What was measured, in words (shared, formatted once).
    pub measured: Arc<str>,
    /// The measurement against its limit, the counts and the window.
    #[serde(flatten)]
    pub verdict: stats::objective::ObjectiveVerdict,
}

/// One trigger's check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "check")]
enum Check {
    /// An e-process; `comparative` ones skip warm-up intervals.
    Statistical {
        test: Box<StatTest>,
        comparative: bool,
        last: Option<Verdict>,
    },
    /// A mean metric's e-process (`kind: mean`); comparative unless it
    /// tests a bound.
    Mean {
        test: Box<MeanTest>,
        comparative: bool,
        last: Option<Verdict>,
    },
    SustainedQuantile(SustainedQuantile),
    /// A ratio (or its complement, for `below`) above a bound in every
    /// interval for a duration.
    SustainedRatio {
        numerator: String,
        denominator: String,
        above: f64,
        for_ms: u64,
    },
    /// The canary's mean beyond a bound in every interval for a duration.
    SustainedMean {
        signal: String,
        bound: Bound,
        for_ms: u64,
    },
    BurnRate(BurnRate),
    NoData(NoData),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GateCheck {
    test: GateTest,
    last: Option<Verdict>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum GateTest {
    Stat(StatTest),
    Mean(MeanTest),
}

impl GateTest {
    fn observe(&mut self, snap: &IntervalSnapshot) -> Verdict {
        match self {
            GateTest::Stat(t) => t.observe(snap),
            GateTest::Mean(t) => t.observe(snap),
        }
    }

    fn excluded(&self) -> Verdict {
        match self {
            GateTest::Stat(t) => t.excluded(),
            GateTest::Mean(t) => t.excluded(),
        }
    }
}

/// A counter added to each snapshot: `name = denominator − numerator`, so a
/// `below` bound on a rate becomes an `above` bound on its complement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Complement {
    name: String,
    numerator: String,
    denominator: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    checks: Vec<Check>,
    gates: Vec<GateCheck>,
    srm: Option<SampleRatioCheck>,
    /// Evidence of a broken split in the current stage (the check restarts
    /// with each weight, so a fixed split is judged on its own).
    srm_evidence: Option<stats::Evidence>,
    change: ChangeDetection,
    complements: Vec<Complement>,
    windows: Windows,
    warmup: Warmup,
    stage_requests: u64,
    /// When the router confirmed the current weight: only data from then on
    /// counts towards the stage's `minSamples`.
    #[serde(default)]
    stage_start: Option<Timestamp>,
    /// When data started to count (for no-data checks).
    since: Option<Timestamp>,
    /// Lean evidence (see [`Monitor::set_lean`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    lean: bool,
    /// Per check, for burn-rate rules: the two counters the rule reads from
    /// each interval retained in `windows`, in step with it. Derived state:
    /// skipped by serde (rebuilt from `windows` on the next observation;
    /// until then the rules read the windows) and ignored by equality.
    #[serde(skip)]
    burn_counts: BurnCache,
    /// Per check, what its objective reading says was measured: words fixed
    /// by the policy, formatted once rather than at every assessment.
    /// Derived: skipped by serde (rebuilt on the next assessment) and
    /// ignored by equality.
    #[serde(skip)]
    measured: Measured,
    /// The snapshot the windows pushed out last, for a caller that fills a
    /// new one in its buffers (see [`Analysis::take_spare`]). Not state:
    /// skipped by serde and ignored by equality.
    #[serde(skip)]
    spare: Spare,
    /// What the checks read of a latency signal, until the next observation
    /// or stage changes a check (see [`Analysis::latency_reads`]). Not
    /// state: skipped by serde and ignored by equality.
    #[serde(skip)]
    reads: ReadsCache,
}

/// Derived data kept beside the monitor's state: skipped by serde (each
/// field says how it is rebuilt) and equal to any other value, so it never
/// makes two monitors with the same state differ.
#[derive(Clone, Debug, Default)]
struct NotState<T>(T);

impl<T> PartialEq for NotState<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

type ReadsCache = NotState<std::sync::OnceLock<(String, LatencyReads)>>;
type Spare = NotState<Option<IntervalSnapshot>>;
type Measured = NotState<Vec<Arc<str>>>;
type BurnCache = NotState<Vec<VecDeque<stats::objective::BurnCounts>>>;

impl Monitor {
    /// Build the checks for a compiled policy. Fails only for combinations
    /// the policy compiler already rejects; the message names the trigger.
    pub fn new(policy: &Policy) -> Result<Monitor, String> {
        let a = &policy.analysis;
        let change = change_detection(policy);
        let trigger_alpha = policy.alpha_per_trigger();
        let gate_alpha = a.alpha / policy.gates.len().max(1) as f64;
        let mut complements = Vec::new();
        let mut checks = Vec::new();
        let mut longest = a.interval;
        for t in &policy.triggers {
            let check = build_check(policy, t, trigger_alpha, change, &mut complements)
                .map_err(|e| format!("trigger `{}`: {e}", t.name))?;
            longest = longest.max(check_window(t));
            checks.push(check);
        }
        let gates = policy
            .gates
            .iter()
            .map(|g| {
                build_gate(policy, g, gate_alpha)
                    .map(|test| GateCheck { test, last: None })
                    .map_err(|e| format!("gate `{}`: {e}", g.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let srm = if a.sample_ratio_check {
            Some(SampleRatioCheck::new(REQUESTS, SRM_ALPHA, change).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let interval_ms = a.interval.as_millis().max(1);
        let warmup_intervals = a.warmup.as_millis().div_ceil(interval_ms);
        Ok(Monitor {
            checks,
            gates,
            srm,
            srm_evidence: None,
            change,
            complements,
            windows: Windows::for_longest_window(longest, a.interval),
            warmup: Warmup::new(u32::try_from(warmup_intervals).unwrap_or(u32::MAX)),
            stage_requests: 0,
            stage_start: None,
            since: None,
            lean: false,
            burn_counts: BurnCache::default(),
            measured: Measured::default(),
            spare: Spare::default(),
            reads: ReadsCache::default(),
        })
    }

    /// Lean evidence: statistical readings that have not fired, and
    /// `vsBaseline` gates whether shown or not, carry no confidence
    /// interval, which spares a likelihood grid per test and interval.
    /// Verdicts, e-values, counts and the evidence of a reading that fires
    /// are unchanged. For callers that read evidence only when a trigger
    /// fires (the simulator); the daemon keeps full evidence for its status
    /// API.
    pub fn set_lean(&mut self, lean: bool) {
        self.lean = lean;
        for check in &mut self.checks {
            if let Check::Statistical { test, .. } = check {
                test.set_lean(lean);
            }
        }
        for gate in &mut self.gates {
            if let GateTest::Stat(t) = &mut gate.test {
                t.set_lean_gate(lean);
            }
        }
        if let Some(srm) = &mut self.srm {
            srm.set_lean(lean);
        }
    }

    /// Adds the complement counters to a snapshot the monitor now owns.
    fn add_complements(&self, s: &mut IntervalSnapshot) {
        for c in &self.complements {
            for arm in [&mut s.baseline, &mut s.canary] {
                let n = arm.counter(&c.denominator);
                let x = arm.counter(&c.numerator).min(n);
                arm.add(&c.name, n - x);
            }
        }
    }
}

fn check_window(t: &Trigger) -> Duration {
    match &t.rule {
        TriggerRule::Threshold {
            sustained_for: Some(d),
            ..
        } => *d,
        TriggerRule::BurnRate { windows, .. } => {
            windows.iter().map(|w| w.long).max().unwrap_or_default()
        }
        TriggerRule::NoData { for_duration } => *for_duration,
        _ => Duration::ZERO,
    }
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

fn build_check(
    policy: &Policy,
    t: &Trigger,
    alpha: f64,
    change: ChangeDetection,
    complements: &mut Vec<Complement>,
) -> Result<Check, String> {
    let metric = t.metric.as_deref().and_then(|m| policy.metric(m));
    let stat = |test: Result<StatTest, stats::StatsError>, comparative: bool| {
        test.map(|test| Check::Statistical {
            test: Box::new(test),
            comparative,
            last: None,
        })
        .map_err(|e| e.to_string())
    };
    let mean = |test: Result<MeanTest, stats::StatsError>, comparative: bool| {
        test.map(|test| Check::Mean {
            test: Box::new(test),
            comparative,
            last: None,
        })
        .map_err(|e| e.to_string())
    };
    match (&t.rule, metric) {
        (TriggerRule::NoData { for_duration }, m) => {
            let signal = match m {
                Some(Metric::Ratio { denominator, .. }) => denominator.as_str(),
                _ => REQUESTS,
            };
            Ok(Check::NoData(NoData::new(signal, *for_duration)))
        }
        (
            TriggerRule::VsBaseline(r),
            Some(Metric::Ratio {
                numerator,
                denominator,
                ..
            }),
        ) => {
            let test = match r {
                Regression::RelativeIncrease(x) => {
                    RatioVsBaseline::relative_increase(numerator, denominator, *x, alpha, change)
                }
                Regression::RelativeDrop(x) => {
                    RatioVsBaseline::relative_drop(numerator, denominator, *x, alpha, change)
                }
            };
            stat(test.map(StatTest::RatioVsBaseline), true)
        }
        (
            TriggerRule::VsBaseline(Regression::RelativeIncrease(x)),
            Some(Metric::Latency { signal }),
        ) => {
            let q = t.quantile.ok_or("a latency trigger needs a quantile")?;
            let test = QuantileVsBaseline::relative_increase(signal, q, *x, alpha, change);
            stat(test.map(StatTest::QuantileVsBaseline), true)
        }
        (
            TriggerRule::Threshold {
                bound,
                sustained_for: None,
            },
            Some(Metric::Ratio {
                numerator,
                denominator,
                ..
            }),
        ) => {
            let test = match bound {
                Bound::Above(p) => RatioThreshold::new(numerator, denominator, *p, alpha, change),
                Bound::Below(p) => {
                    let name = complement(complements, numerator, denominator);
                    RatioThreshold::new(&name, denominator, 1.0 - p, alpha, change)
                }
            };
            stat(test.map(StatTest::RatioThreshold), false)
        }
        (
            TriggerRule::Threshold {
                bound: Bound::Above(ms),
                sustained_for: None,
            },
            Some(Metric::Latency { signal }),
        ) => {
            let q = t.quantile.ok_or("a latency trigger needs a quantile")?;
            let test = QuantileThreshold::new(signal, q, *ms, alpha, change);
            stat(test.map(StatTest::QuantileThreshold), false)
        }
        (
            TriggerRule::Threshold {
                bound: Bound::Above(ms),
                sustained_for: Some(d),
            },
            Some(Metric::Latency { signal }),
        ) => {
            let q = t.quantile.ok_or("a latency trigger needs a quantile")?;
            SustainedQuantile::new(signal, q, *ms, *d)
                .map(Check::SustainedQuantile)
                .map_err(|e| e.to_string())
        }
        (
            TriggerRule::Threshold {
                bound,
                sustained_for: Some(d),
            },
            Some(Metric::Ratio {
                numerator,
                denominator,
                ..
            }),
        ) => {
            let (numerator, above) = match bound {
                Bound::Above(p) => (numerator.clone(), *p),
                Bound::Below(p) => (complement(complements, numerator, denominator), 1.0 - p),
            };
            Ok(Check::SustainedRatio {
                numerator,
                denominator: denominator.clone(),
                above,
                for_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            })
        }
        (
            TriggerRule::BurnRate { slo, windows },
            Some(Metric::Ratio {
                numerator,
                denominator,
                ..
            }),
        ) => {
            let windows = windows
                .iter()
                .map(|w| stats::BurnWindow {
                    long: w.long,
                    short: w.short,
                    factor: w.factor,
                })
                .collect();
            BurnRate::new(numerator, denominator, *slo, windows)
                .map(Check::BurnRate)
                .map_err(|e| e.to_string())
        }
        (
            TriggerRule::Disparity { min_ratio },
            Some(Metric::Ratio {
                numerator,
                denominator,
                group_by: Some(_),
            }),
        ) => {
            // minRatio 1 can never be shown false by evidence; the compiler
            // allows it, the test needs it inside (0, 1).
            let m = min_ratio.min(1.0 - 1e-9);
            let test = Disparity::new(numerator, denominator, m, alpha, MAX_GROUPS);
            stat(test.map(StatTest::Disparity), false)
        }
        (TriggerRule::VsBaseline(r), Some(Metric::Mean { signal })) => {
            let test = match r {
                Regression::RelativeIncrease(x) => {
                    MeanTest::relative_increase(signal, *x, alpha, change)
                }
                Regression::RelativeDrop(x) => MeanTest::relative_drop(signal, *x, alpha, change),
            };
            mean(test, true)
        }
        (
            TriggerRule::Threshold {
                bound,
                sustained_for: None,
            },
            Some(Metric::Mean { signal }),
        ) => {
            let test = match bound {
                Bound::Above(b) => {
                    MeanTest::bound(signal, stats::Direction::Increase, *b, alpha, change)
                }
                Bound::Below(b) => {
                    MeanTest::bound(signal, stats::Direction::Decrease, *b, alpha, change)
                }
            };
            mean(test, false)
        }
        (
            TriggerRule::Threshold {
                bound,
                sustained_for: Some(d),
            },
            Some(Metric::Mean { signal }),
        ) => Ok(Check::SustainedMean {
            signal: signal.clone(),
            bound: *bound,
            for_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        }),
        (rule, m) => Err(format!(
            "{} on a {} metric is not supported",
            rule_name(rule),
            m.map_or("missing", Metric::kind_name)
        )),
    }
}

fn rule_name(rule: &TriggerRule) -> &'static str {
    match rule {
        TriggerRule::VsBaseline(Regression::RelativeDrop(_)) => "vsBaseline.relativeDrop",
        TriggerRule::VsBaseline(Regression::RelativeIncrease(_)) => "vsBaseline.relativeIncrease",
        TriggerRule::Threshold {
            bound: Bound::Above(_),
            ..
        } => "threshold.above",
        TriggerRule::Threshold {
            bound: Bound::Below(_),
            ..
        } => "threshold.below",
        TriggerRule::BurnRate { .. } => "burnRate",
        TriggerRule::Disparity { .. } => "disparity",
        TriggerRule::NoData { .. } => "noData",
    }
}

fn build_gate(policy: &Policy, g: &Gate, alpha: f64) -> Result<GateTest, String> {
    let kind = match g.requirement {
        GateRequirement::MinGain(x) => GateKind::MinGain(x),
        GateRequirement::MaxIncrease(x) => GateKind::MaxIncrease(x),
        GateRequirement::MaxDrop(x) => GateKind::MaxDrop(x),
    };
    match (policy.metric(&g.metric), g.requirement) {
        (
            Some(Metric::Ratio {
                numerator,
                denominator,
                ..
            }),
            _,
        ) => RatioVsBaseline::gate(numerator, denominator, kind, alpha)
            .map(|t| GateTest::Stat(StatTest::RatioVsBaseline(t)))
            .map_err(|e| e.to_string()),
        (Some(Metric::Latency { signal }), GateRequirement::MaxIncrease(x)) => {
            let q = g.quantile.ok_or("a latency gate needs a quantile")?;
            QuantileVsBaseline::max_increase_gate(signal, q, x, alpha)
                .map(|t| GateTest::Stat(StatTest::QuantileVsBaseline(t)))
                .map_err(|e| e.to_string())
        }
        (Some(Metric::Mean { signal }), _) => MeanTest::gate(signal, kind, alpha)
            .map(GateTest::Mean)
            .map_err(|e| e.to_string()),
        (m, _) => Err(format!(
            "this requirement on a {} metric is not supported",
            m.map_or("missing", Metric::kind_name)
        )),
    }
}

/// What an objective check measures, in words, for its readings' evidence;
/// empty for statistical checks (their evidence names its estimand).
fn measured(check: &Check) -> String {
    match check {
        Check::Statistical { .. } | Check::Mean { .. } => String::new(),
        Check::SustainedMean { signal, .. } => {
            format!("canary mean {signal} over consecutive intervals beyond the bound")
        }
        Check::SustainedQuantile(rule) => format!(
            "lowest canary p{} bound (ms) over consecutive intervals above {}ms",
            rule.quantile * 100.0,
            rule.above_ms
        ),
        Check::SustainedRatio {
            numerator,
            denominator,
            above,
            ..
        } => format!(
            "lowest canary {numerator}/{denominator} over consecutive intervals above {above}"
        ),
        Check::BurnRate(rule) => format!(
            "burn rate of {}/{} against a {} SLO",
            rule.numerator, rule.denominator, rule.slo
        ),
        Check::NoData(rule) => format!("seconds without canary {}", rule.signal),
    }
}

fn verdict_of(status: Status) -> TriggerVerdict {
    match status {
        Status::Crossed => TriggerVerdict::Fired,
        Status::Monitoring => TriggerVerdict::Ok,
        Status::Collecting | Status::Excluded => TriggerVerdict::Inconclusive,
    }
}

fn statistical_reading(v: &Verdict) -> TriggerReading<TriggerEvidence> {
    TriggerReading {
        verdict: verdict_of(v.status),
        estimate: Some(v.evidence.estimate),
        boundary: Some(v.evidence.log_boundary),
        samples: v.evidence.canary.exposure,
        evidence: Some(TriggerEvidence::Statistical(v.evidence.clone())),
    }
}

fn objective_reading(
    v: stats::objective::ObjectiveVerdict,
    measured: Arc<str>,
    has_data: bool,
) -> TriggerReading<TriggerEvidence> {
    TriggerReading {
        verdict: if v.fired {
            TriggerVerdict::Fired
        } else if has_data {
            TriggerVerdict::Ok
        } else {
            TriggerVerdict::Inconclusive
        },
        estimate: Some(v.observed),
        boundary: Some(v.limit),
        samples: v.canary.exposure,
        evidence: Some(TriggerEvidence::Objective(ObjectiveEvidence {
            measured,
            verdict: v,
        })),
    }
}

/// Every interval of the last `for_ms` had the canary's rate above `above`
/// (see `stats::objective::sustained_run` for "exactly as written").
fn sustained_ratio(
    windows: &Windows,
    now: Timestamp,
    numerator: &str,
    denominator: &str,
    above: f64,
    for_ms: u64,
) -> stats::objective::ObjectiveVerdict {
    let run = stats::objective::sustained_run(windows, now, for_ms, |s| {
        let n = s.canary.counter(denominator);
        let x = s.canary.counter(numerator).min(n);
        (n > 0).then(|| {
            let rate = x as f64 / n as f64;
            (
                rate,
                rate > above,
                ArmCounts {
                    exposure: n,
                    events: x,
                },
            )
        })
    });
    let lowest = run.values.iter().copied().fold(f64::MAX, f64::min);
    stats::objective::ObjectiveVerdict {
        fired: run.fired,
        observed: if lowest == f64::MAX { 0.0 } else { lowest },
        limit: above,
        canary: run.canary,
        window_start: run.from.unwrap_or(now),
        window_end: now,
    }
}

/// Every interval of the last `for_ms` had the canary's mean beyond `bound`
/// (values from histogram bucket midpoints).
fn sustained_mean(
    windows: &Windows,
    now: Timestamp,
    signal: &str,
    bound: Bound,
    for_ms: u64,
) -> stats::objective::ObjectiveVerdict {
    let (limit, beyond): (f64, fn(f64, f64) -> bool) = match bound {
        Bound::Above(b) => (b, |m, b| m > b),
        Bound::Below(b) => (b, |m, b| m < b),
    };
    let run = stats::objective::sustained_run(windows, now, for_ms, |s| {
        let m = s.canary.latency.get(signal).and_then(|h| h.moments_ms())?;
        Some((
            m.mean,
            beyond(m.mean, limit),
            ArmCounts {
                exposure: m.n,
                events: 0,
            },
        ))
    });
    let nearest = run
        .values
        .iter()
        .copied()
        .min_by(|a, b| (a - limit).abs().total_cmp(&(b - limit).abs()));
    stats::objective::ObjectiveVerdict {
        fired: run.fired,
        observed: nearest.unwrap_or(0.0),
        limit,
        canary: run.canary,
        window_start: run.from.unwrap_or(now),
        window_end: now,
    }
}

impl Analysis for Monitor {
    type Snapshot = IntervalSnapshot;
    type Evidence = TriggerEvidence;

    fn stage_started(&mut self, now: Timestamp, _weight: Weight) {
        self.reads = ReadsCache::default();
        self.stage_requests = 0;
        self.stage_start = Some(now);
        self.warmup.on_weight_change(now);
        if self.srm.is_some() {
            self.srm = SampleRatioCheck::new(REQUESTS, SRM_ALPHA, self.change).ok();
            if let Some(srm) = &mut self.srm {
                srm.set_lean(self.lean);
            }
            self.srm_evidence = None;
        }
        self.since.get_or_insert(now);
    }

    fn observe(&mut self, snapshot: &IntervalSnapshot, weight: Weight) {
        self.observe_owned(snapshot.clone(), weight);
    }

    /// The windows keep the snapshot: taking it by value spares a clone
    /// (every histogram and string key) per interval.
    fn observe_owned(&mut self, mut snap: IntervalSnapshot, weight: Weight) {
        if self.latency_reads_may_change() {
            self.reads = ReadsCache::default();
        }
        self.add_complements(&mut snap);
        self.since.get_or_insert(snap.start);
        if self.stage_start.is_none_or(|at| snap.start >= at) {
            self.stage_requests = self
                .stage_requests
                .saturating_add(snap.canary.counter(REQUESTS));
        }
        let admitted = self.warmup.admits(&snap);
        for check in &mut self.checks {
            match check {
                Check::Statistical {
                    test,
                    comparative,
                    last,
                } => {
                    *last = Some(if admitted || !*comparative {
                        test.observe(&snap)
                    } else {
                        test.excluded()
                    });
                }
                Check::Mean {
                    test,
                    comparative,
                    last,
                } => {
                    *last = Some(if admitted || !*comparative {
                        test.observe(&snap)
                    } else {
                        test.excluded()
                    });
                }
                _ => {}
            }
        }
        for gate in &mut self.gates {
            gate.last = Some(if admitted {
                gate.test.observe(&snap)
            } else {
                gate.test.excluded()
            });
        }
        if admitted && let Some(srm) = &mut self.srm {
            let v = srm.observe(&snap, weight.fraction());
            if v.crossed() && self.srm_evidence.is_none() {
                self.srm_evidence = Some(v.evidence);
            }
        }
        self.spare.0 = self.windows.push(snap);
        self.sync_burn_counts();
    }

    fn take_spare(&mut self) -> Option<IntervalSnapshot> {
        self.spare.0.take()
    }

    /// The union of what every check reads (see [`Monitor::reads_of`]),
    /// kept from the last observation when it was for `signal`.
    fn latency_reads(&self, signal: &str) -> Cow<'_, LatencyReads> {
        let (s, reads) = self
            .reads
            .0
            .get_or_init(|| (signal.to_string(), self.reads_of(signal)));
        if s == signal {
            Cow::Borrowed(reads)
        } else {
            Cow::Owned(self.reads_of(signal))
        }
    }

    /// A function of the monitor's state and `now`. The engine does not ask
    /// twice at one instant without new data (see `Rollout::handle`), so
    /// nothing is memoized here.
    fn assess(&mut self, now: Timestamp) -> Assessment<TriggerEvidence> {
        if self.measured.0.len() != self.checks.len() {
            self.measured = NotState(self.checks.iter().map(|c| measured(c).into()).collect());
        }
        self.assess_now(now)
    }

    fn span(snapshot: &IntervalSnapshot) -> (Timestamp, Timestamp) {
        (snapshot.start, snapshot.end)
    }
}

impl Monitor {
    /// Whether an observation may change what the checks read of latency
    /// (the rest of the checks read the same every interval).
    fn latency_reads_may_change(&self) -> bool {
        self.checks.iter().any(|c| match c {
            Check::Statistical { test, .. } => test.latency_reads_may_change(),
            _ => false,
        }) || self.gates.iter().any(|g| match &g.test {
            GateTest::Stat(t) => t.latency_reads_may_change(),
            GateTest::Mean(_) => false,
        })
    }

    /// The union of what every check reads: statistical checks, gates and
    /// sustained quantiles say what they read; a sustained mean reads the
    /// canary's whole histogram (now and in the windows).
    fn reads_of(&self, signal: &str) -> LatencyReads {
        let mut reads = LatencyReads::NOTHING;
        for check in &self.checks {
            let r = match check {
                Check::Statistical { test, .. } => test.latency_reads(signal),
                Check::Mean { test, .. } => test.latency_reads(signal),
                Check::SustainedQuantile(rule) => rule.latency_reads(signal),
                Check::SustainedMean { signal: s, .. } if s == signal => LatencyReads {
                    baseline: HistogramReads::Nothing,
                    canary: HistogramReads::Everything,
                },
                Check::SustainedMean { .. }
                | Check::SustainedRatio { .. }
                | Check::BurnRate(_)
                | Check::NoData(_) => LatencyReads::NOTHING,
            };
            reads = reads.union(r);
        }
        for gate in &self.gates {
            let r = match &gate.test {
                GateTest::Stat(t) => t.latency_reads(signal),
                GateTest::Mean(t) => t.latency_reads(signal),
            };
            reads = reads.union(r);
        }
        reads
    }

    /// Appends the burn counts of the interval just pushed (the newest in
    /// `windows`) and keeps the cache the length of `windows`; rebuilds it
    /// from `windows` when it was not in step (after a restore).
    fn sync_burn_counts(&mut self) {
        let len = self.windows.len();
        let cache = &mut self.burn_counts.0;
        let in_step = cache.len() == self.checks.len()
            && self
                .checks
                .iter()
                .zip(cache.iter())
                .all(|(c, q)| !matches!(c, Check::BurnRate(_)) || q.len() + 1 >= len);
        if in_step && let Some(newest) = self.windows.intervals().next_back() {
            for (q, c) in cache.iter_mut().zip(&self.checks) {
                if let Check::BurnRate(rule) = c {
                    q.push_back(rule.counts_of(newest));
                    while q.len() > len {
                        q.pop_front();
                    }
                }
            }
            return;
        }
        *cache = self
            .checks
            .iter()
            .map(|c| match c {
                Check::BurnRate(rule) => self
                    .windows
                    .intervals()
                    .map(|s| rule.counts_of(s))
                    .collect(),
                _ => VecDeque::new(),
            })
            .collect();
    }

    /// What check `i` measures, in words (formatted once, see `measured`).
    fn measured_by(&self, i: usize, check: &Check) -> Arc<str> {
        match self.measured.0.get(i) {
            Some(words) => words.clone(),
            None => measured(check).into(),
        }
    }

    fn assess_now(&self, now: Timestamp) -> Assessment<TriggerEvidence> {
        let since = self.since.unwrap_or(now);
        let has_data = self.windows.intervals().next().is_some();
        let triggers = self
            .checks
            .iter()
            .enumerate()
            .map(|(i, check)| match check {
                Check::Statistical { last: Some(v), .. } | Check::Mean { last: Some(v), .. } => {
                    statistical_reading(v)
                }
                Check::Statistical { last: None, .. } | Check::Mean { last: None, .. } => {
                    TriggerReading::default()
                }
                Check::SustainedMean {
                    signal,
                    bound,
                    for_ms,
                } => objective_reading(
                    sustained_mean(&self.windows, now, signal, *bound, *for_ms),
                    self.measured_by(i, check),
                    has_data,
                ),
                Check::SustainedQuantile(rule) => objective_reading(
                    rule.evaluate(&self.windows, now),
                    self.measured_by(i, check),
                    has_data,
                ),
                Check::SustainedRatio {
                    numerator,
                    denominator,
                    above,
                    for_ms,
                } => objective_reading(
                    sustained_ratio(&self.windows, now, numerator, denominator, *above, *for_ms),
                    self.measured_by(i, check),
                    has_data,
                ),
                Check::BurnRate(rule) => match self
                    .burn_counts
                    .0
                    .get(i)
                    .filter(|q| q.len() == self.windows.len())
                {
                    Some(q) => objective_reading(
                        rule.evaluate_counts(q, now),
                        self.measured_by(i, check),
                        has_data,
                    ),
                    None => match rule.evaluate(&self.windows, now) {
                        Ok(v) => objective_reading(v, self.measured_by(i, check), has_data),
                        Err(_) => TriggerReading::default(),
                    },
                },
                Check::NoData(rule) => {
                    let v = rule.evaluate(&self.windows, since, now);
                    let mut r = objective_reading(v, self.measured_by(i, check), true);
                    if r.verdict == TriggerVerdict::Ok && !has_data {
                        r.verdict = TriggerVerdict::Inconclusive;
                    }
                    r
                }
            })
            .collect();
        let gates = self
            .gates
            .iter()
            .map(|g| GateReading {
                shown: g.last.as_ref().is_some_and(Verdict::crossed),
                evidence: g
                    .last
                    .as_ref()
                    .map(|v| TriggerEvidence::Statistical(v.evidence.clone())),
            })
            .collect();
        Assessment {
            triggers,
            gates,
            sample_ratio_mismatch: self.srm_evidence.clone().map(TriggerEvidence::Statistical),
            canary_requests_in_stage: self.stage_requests,
        }
    }
}

/// Expected time to detect a change of twice a statistical trigger's
/// tolerance, from the tests' own formulas, at `rps_total` requests per
/// second and canary `weight`. `base_rate` is the baseline's rate for
/// `vsBaseline` on a ratio metric (the count test and the normal test behave
/// very differently at 0.1% and at 5%). `None` when the test has no closed
/// form here (latency vs baseline and disparity depend on distributions the
/// policy does not state; simulate those with `canaryd-sim`).
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
    let metric = trigger.metric.as_deref().and_then(|m| policy.metric(m));
    match (&trigger.rule, metric) {
        (TriggerRule::VsBaseline(r), Some(Metric::Ratio { .. })) => {
            let base = base_rate.filter(|b| *b > 0.0 && *b < 1.0)?;
            let (direction, tolerance) = match r {
                Regression::RelativeIncrease(x) => (stats::Direction::Increase, *x),
                Regression::RelativeDrop(x) => (stats::Direction::Decrease, *x),
            };
            Some(stats::forecast::ratio_vs_baseline(
                base, direction, tolerance, rps_total, w, alpha, change,
            ))
        }
        (
            TriggerRule::Threshold {
                bound,
                sustained_for: None,
            },
            Some(Metric::Ratio { .. }),
        ) => {
            let p0 = match bound {
                Bound::Above(p) => *p,
                Bound::Below(p) => 1.0 - p,
            };
            (p0 > 0.0 && p0 < 1.0)
                .then(|| stats::forecast::rate_threshold(p0, rps_total, w, alpha, change))
        }
        (
            TriggerRule::Threshold {
                bound: Bound::Above(_),
                sustained_for: None,
            },
            Some(Metric::Latency { .. }),
        ) => {
            let q = trigger.quantile?;
            Some(stats::forecast::rate_threshold(
                1.0 - q,
                rps_total,
                w,
                alpha,
                change,
            ))
        }
        _ => None,
    }
}

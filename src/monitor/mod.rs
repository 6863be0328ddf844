//! The policy-driven [`Analysis`]: builds one statistics test per trigger and
//! gate of a compiled policy, feeds them interval snapshots, and reports
//! readings with their evidence. This is what the daemon and the simulator
//! run; it is glue: the statistics live in `crate::stats`, and which test
//! each compiled check becomes is `build.rs`, one `match` with an arm per
//! `policy::TriggerCheck` variant.
//!
//! Budgets: the `K` statistical triggers share `alpha` (each runs at
//! `alpha / K`, Bonferroni over e-values, see `Policy::alpha_per_trigger`);
//! the `G` gates, written and implied by `requireNoHarm` alike, share a
//! separate false-promotion budget `alpha` (each at `alpha / G`, see
//! `policy::no_harm` for the guarantee), and a gate reads shown while its
//! current e-value is at its boundary (never latched); the sample-ratio guard runs at [`SRM_ALPHA`] and only
//! pauses. Statistical triggers restart their mixtures at up to
//! [`change_detection`] points over the rollout's horizon (`maxDuration`), so a
//! regression that starts late is caught about as fast as an early one.
//!
//! Warm-up: after each weight change, the first `warmup` of data is kept out
//! of the comparative tests (vsBaseline, gates, sample ratio); canary-alone
//! and objective checks see every interval.

mod build;
mod evidence;
mod forecast;
pub mod words;

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use build::{Complement, gate_test, measured, trigger_check};
pub use build::{
    MAX_GROUPS, MAX_RESTARTS, MIN_RESTART_SPACING, SRM_ALPHA, SRM_TOLERANCE, change_detection,
    schedule,
};
pub use evidence::{ObjectiveEvidence, TriggerEvidence};
pub use forecast::{GateSchedule, forecast, gate_forecast, gate_schedule, margin_in_time};

use crate::engine::{Analysis, Assessment, GateReading, TriggerReading, TriggerVerdict};
use crate::policy::{Policy, REQUESTS, Weight};
use crate::stats::evidence::assign_shared;
use crate::stats::window::WindowRead;
use crate::stats::{
    self, BurnRate, ChangeDetection, IntervalSnapshot, LatencyReads, NoData, Overdispersion,
    SampleRatioCheck, StatTest, StatsError, Status, SustainedMean, SustainedQuantile,
    SustainedRatio, Verdict, Warmup, Windows,
};
use crate::time::Timestamp;

/// One trigger's check, as it runs.
#[derive(Clone, Debug, PartialEq)]
enum Check {
    /// An e-process; `comparative` ones skip warm-up intervals.
    Statistical {
        test: Box<StatTest>,
        comparative: bool,
        last: Option<Verdict>,
    },
    SustainedQuantile(SustainedQuantile),
    SustainedRatio(SustainedRatio),
    SustainedMean(SustainedMean),
    BurnRate(BurnRate),
    NoData(NoData),
}

/// One gate's test, as it runs, and its last verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GateState {
    #[serde(with = "checkpoint_form::gate_test")]
    test: StatTest,
    last: Option<Verdict>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "checkpoint_form::MonitorForm")]
pub struct Monitor {
    checks: Vec<Check>,
    gates: Vec<GateState>,
    srm: Option<SampleRatioCheck>,
    /// Evidence of a broken split in the current weight step (the check restarts
    /// with each weight, so a fixed split is judged on its own).
    srm_evidence: Option<stats::Evidence>,
    change: ChangeDetection,
    complements: Vec<Complement>,
    /// What the objective checks read of the intervals they look back
    /// over (see `stats::window`).
    windows: Windows,
    warmup: Warmup,
    /// (Serialized under its checkpoint-v1 name.)
    #[serde(rename = "stage_requests")]
    step_requests: u64,
    /// When the router confirmed the current weight: only data from then on
    /// counts towards the weight step's `minSamples`.
    #[serde(default, rename = "stage_start")]
    step_start: Option<Timestamp>,
    /// When data started to count (for no-data checks).
    since: Option<Timestamp>,
    /// Lean evidence (see [`Monitor::set_lean`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    lean: bool,
    /// Per check, what its objective reading says was measured: words fixed
    /// by the policy, formatted once rather than at every assessment.
    /// Derived: skipped by serde (rebuilt on the next assessment) and
    /// ignored by equality.
    #[serde(skip)]
    measured: Measured,
    /// The snapshot observed last, for a caller that fills a new one in its
    /// buffers (see [`Analysis::take_spare`]): kept only once a caller has
    /// taken one (the simulator does; the daemon does not, and would
    /// otherwise hold a whole snapshot per rollout for nothing). Not state:
    /// skipped by serde and ignored by equality.
    #[serde(skip)]
    spare: Spare,
    /// What the checks read of a latency signal, until the next observation
    /// or weight step changes a check (see [`Analysis::latency_reads`]). Not
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
type Spare = NotState<SpareSnapshot>;

/// The snapshot observed last, kept for reuse once a caller has asked for
/// one (`wanted`).
#[derive(Clone, Debug, Default)]
struct SpareSnapshot {
    kept: Option<IntervalSnapshot>,
    wanted: bool,
}
type Measured = NotState<Vec<Arc<str>>>;

/// The policy's warm-up (`analysis.warmup`) in whole intervals: what a
/// monitor of `policy` keeps out of its comparative tests after each weight
/// change.
pub fn warmup(policy: &Policy) -> Warmup {
    let a = &policy.analysis;
    let interval_ms = a.interval.as_millis().max(1);
    let intervals = a.warmup.as_millis().div_ceil(interval_ms);
    Warmup::new(u32::try_from(intervals).unwrap_or(u32::MAX))
}

impl Monitor {
    /// Build the checks for a compiled policy (see `build.rs`).
    pub fn new(policy: &Policy) -> Result<Monitor, BuildError> {
        let a = &policy.analysis;
        let change = change_detection(policy);
        let o = a.overdispersion.unwrap_or(Overdispersion::Auto);
        let plan = schedule(policy);
        let trigger_alpha = policy.alpha_per_trigger();
        let gate_alpha = policy.alpha_per_gate();
        let mut complements = Vec::new();
        let mut checks = Vec::new();
        let mut longest = a.interval;
        for t in &policy.triggers {
            let check = trigger_check(t, trigger_alpha, change, o, &plan, &mut complements)
                .map_err(|source| BuildError {
                    what: "trigger",
                    name: t.name.clone(),
                    source,
                })?;
            longest = longest.max(t.check.window());
            checks.push(check);
        }
        let gates = policy
            .gates
            .iter()
            .map(|g| {
                gate_test(&g.check, gate_alpha, o)
                    .map(|test| GateState { test, last: None })
                    .map_err(|source| BuildError {
                        what: "gate",
                        name: g.name.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let srm = if a.sample_ratio_check {
            Some(
                SampleRatioCheck::new(REQUESTS, SRM_ALPHA, change)
                    .map_err(|source| BuildError {
                        what: "sample-ratio check",
                        name: REQUESTS.to_owned(),
                        source,
                    })?
                    .with_tolerance(SRM_TOLERANCE)
                    .with_overdispersion(o),
            )
        } else {
            None
        };
        let mut windows = Windows::for_longest_window(longest, a.interval);
        for read in checks.iter().filter_map(window_read) {
            windows.track(read);
        }
        Ok(Monitor {
            checks,
            gates,
            srm,
            srm_evidence: None,
            change,
            complements,
            windows,
            warmup: warmup(policy),
            step_requests: 0,
            step_start: None,
            since: None,
            lean: false,
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
            gate.test.set_lean_gate(lean);
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

/// Whether a gate's test shows its bound *now*: its current log e-value is
/// at or above its boundary. Not `Status::Crossed`, which latches once the
/// running maximum has crossed: a gate is checked again whenever a step
/// needs it, so a canary that degrades after showing it loses it. Reading
/// the current value keeps the guarantee (the event is a subset of Ville's
/// "the e-process ever reached its boundary"; see `policy::no_harm`).
fn shown_now(v: &Verdict) -> bool {
    v.status != Status::Collecting && v.evidence.log_e_value >= v.evidence.log_boundary
}

/// What an objective check reads of each interval the windows keep.
fn window_read(check: &Check) -> Option<WindowRead> {
    match check {
        Check::Statistical { .. } => None,
        Check::SustainedQuantile(rule) => Some(rule.window_read()),
        Check::SustainedRatio(rule) => Some(rule.window_read()),
        Check::SustainedMean(rule) => Some(rule.window_read()),
        Check::BurnRate(rule) => Some(rule.window_read()),
        Check::NoData(rule) => Some(rule.window_read()),
    }
}

fn verdict_of(status: Status) -> TriggerVerdict {
    match status {
        Status::Crossed => TriggerVerdict::Fired,
        Status::Monitoring => TriggerVerdict::Ok,
        Status::Collecting | Status::Excluded => TriggerVerdict::Inconclusive,
    }
}

/// Writes a statistical verdict's reading over `r` (see
/// [`Analysis::assess_into`]).
fn write_statistical(r: &mut TriggerReading<TriggerEvidence>, v: &Verdict) {
    r.verdict = verdict_of(v.status);
    r.estimate = Some(v.evidence.estimate);
    r.boundary = Some(v.evidence.log_boundary);
    r.samples = v.evidence.canary.exposure;
    write_statistical_evidence(&mut r.evidence, &v.evidence);
}

/// `*slot = Some(Statistical(evidence.clone()))`, reusing what `slot`
/// holds (see `stats::Evidence::assign_from`).
fn write_statistical_evidence(slot: &mut Option<TriggerEvidence>, evidence: &stats::Evidence) {
    match slot {
        Some(TriggerEvidence::Statistical(mine)) => mine.assign_from(evidence),
        _ => *slot = Some(TriggerEvidence::Statistical(evidence.clone())),
    }
}

/// Writes an objective verdict's reading over `r`.
fn write_objective(
    r: &mut TriggerReading<TriggerEvidence>,
    v: stats::objective::ObjectiveVerdict,
    measured: &Arc<str>,
    has_data: bool,
) {
    r.verdict = if v.fired {
        TriggerVerdict::Fired
    } else if has_data {
        TriggerVerdict::Ok
    } else {
        TriggerVerdict::Inconclusive
    };
    r.estimate = Some(v.observed);
    r.boundary = Some(v.limit);
    r.samples = v.canary.exposure;
    match &mut r.evidence {
        Some(TriggerEvidence::Objective(mine)) => {
            assign_shared(&mut mine.measured, measured);
            mine.verdict = v;
        }
        slot => {
            *slot = Some(TriggerEvidence::Objective(ObjectiveEvidence {
                measured: measured.clone(),
                verdict: v,
            }));
        }
    }
}

impl Analysis for Monitor {
    type Snapshot = IntervalSnapshot;
    type Evidence = TriggerEvidence;

    fn step_started(&mut self, now: Timestamp, _weight: Weight) {
        self.reads = ReadsCache::default();
        self.step_requests = 0;
        self.step_start = Some(now);
        self.warmup.on_weight_change(now);
        if let Some(srm) = &mut self.srm {
            *srm = srm.renewed();
            srm.set_lean(self.lean);
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
        if self.step_start.is_none_or(|at| snap.start >= at) {
            self.step_requests = self
                .step_requests
                .saturating_add(snap.canary.counter(REQUESTS));
        }
        let admitted = self.warmup.admits(&snap);
        // The objective rules read the windows when assessed.
        for check in &mut self.checks {
            if let Check::Statistical {
                test,
                comparative,
                last,
            } = check
            {
                *last = Some(if admitted || !*comparative {
                    test.observe(&snap)
                } else {
                    test.excluded()
                });
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
        self.windows.push(&snap);
        if self.spare.0.wanted {
            self.spare.0.kept = Some(snap);
        }
    }

    fn take_spare(&mut self) -> Option<IntervalSnapshot> {
        self.spare.0.wanted = true;
        self.spare.0.kept.take()
    }

    /// The union of what every check reads (see `Monitor::reads_of`),
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
        let mut out = Assessment::empty(self.checks.len(), self.gates.len());
        self.assess_into(now, &mut out);
        out
    }

    fn assess_into(&mut self, now: Timestamp, out: &mut Assessment<TriggerEvidence>) {
        if self.measured.0.len() != self.checks.len() {
            self.measured = NotState(self.checks.iter().map(|c| measured(c).into()).collect());
        }
        self.write_assessment(now, out);
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
        }) || self.gates.iter().any(|g| g.test.latency_reads_may_change())
    }

    /// The union of what every check reads: statistical checks, gates and
    /// sustained quantiles say what they read; a sustained mean reads the
    /// canary's whole histogram (now and in the windows).
    fn reads_of(&self, signal: &str) -> LatencyReads {
        let mut reads = LatencyReads::NOTHING;
        for check in &self.checks {
            let r = match check {
                Check::Statistical { test, .. } => test.latency_reads(signal),
                Check::SustainedQuantile(rule) => rule.latency_reads(signal),
                Check::SustainedMean(rule) => rule.latency_reads(signal),
                Check::SustainedRatio(_) | Check::BurnRate(_) | Check::NoData(_) => {
                    LatencyReads::NOTHING
                }
            };
            reads = reads.union(r);
        }
        for gate in &self.gates {
            reads = reads.union(gate.test.latency_reads(signal));
        }
        reads
    }

    /// Writes the assessment at `now` over `out`, reading by reading, so
    /// that nothing is allocated and no shared text is cloned again when
    /// `out` holds the previous interval's (see [`Analysis::assess_into`]).
    fn write_assessment(&self, now: Timestamp, out: &mut Assessment<TriggerEvidence>) {
        let since = self.since.unwrap_or(now);
        let has_data = !self.windows.is_empty();
        out.triggers
            .resize_with(self.checks.len(), TriggerReading::default);
        for (i, (check, r)) in self.checks.iter().zip(&mut out.triggers).enumerate() {
            // What the check measures, in words (formatted once, see
            // `measured`; a monitor always has them when assessed).
            let fresh: Arc<str>;
            let measured = match self.measured.0.get(i) {
                Some(words) => words,
                None => {
                    fresh = measured(check).into();
                    &fresh
                }
            };
            match check {
                Check::Statistical { last: Some(v), .. } => write_statistical(r, v),
                Check::Statistical { last: None, .. } => *r = TriggerReading::default(),
                Check::SustainedMean(rule) => {
                    write_objective(r, rule.evaluate(&self.windows, now), measured, has_data);
                }
                Check::SustainedQuantile(rule) => {
                    write_objective(r, rule.evaluate(&self.windows, now), measured, has_data);
                }
                Check::SustainedRatio(rule) => {
                    write_objective(r, rule.evaluate(&self.windows, now), measured, has_data);
                }
                Check::BurnRate(rule) => {
                    write_objective(r, rule.evaluate(&self.windows, now), measured, has_data);
                }
                Check::NoData(rule) => {
                    let v = rule.evaluate(&self.windows, since, now);
                    write_objective(r, v, measured, true);
                    if r.verdict == TriggerVerdict::Ok && !has_data {
                        r.verdict = TriggerVerdict::Inconclusive;
                    }
                }
            }
        }
        out.gates
            .resize_with(self.gates.len(), GateReading::default);
        for (g, r) in self.gates.iter().zip(&mut out.gates) {
            r.shown = g.last.as_ref().is_some_and(shown_now);
            match &g.last {
                Some(v) => write_statistical_evidence(&mut r.evidence, &v.evidence),
                None => r.evidence = None,
            }
        }
        match &self.srm_evidence {
            Some(e) => write_statistical_evidence(&mut out.sample_ratio_mismatch, e),
            None => out.sample_ratio_mismatch = None,
        }
        out.canary_requests_in_step = self.step_requests;
    }
}

/// A check a statistics constructor refused (the compiler's ranges rule
/// this out; see `build.rs`).
#[derive(Debug, thiserror::Error)]
#[error("{what} `{name}`: {source}")]
pub struct BuildError {
    what: &'static str,
    name: String,
    #[source]
    source: StatsError,
}

/// The serialized form of the running checks, as checkpoint version 1
/// wrote them: a mean metric's test was a check (and a gate test) of its
/// own before it joined [`StatTest`]. Serializing writes that form;
/// deserializing reads it. The windows are read in either form: kept whole
/// (checkpoint version 1: every retained interval's snapshot, replayed into
/// compact windows for the checks) or compact (version 2).
mod checkpoint_form {
    use std::collections::VecDeque;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Check, Complement, GateState, Measured, Monitor, ReadsCache, Spare, window_read};
    use crate::stats::window::{InvalidWindows, WindowsForm};
    use crate::stats::{
        self, BurnRate, ChangeDetection, IntervalSnapshot, MeanTest, NoData, SampleRatioCheck,
        StatTest, SustainedMean, SustainedQuantile, SustainedRatio, Verdict, Warmup, Windows,
    };
    use crate::time::Timestamp;

    /// A monitor as a checkpoint holds it (see [`Monitor`] for the fields).
    #[derive(Deserialize)]
    pub(super) struct MonitorForm {
        checks: Vec<Check>,
        gates: Vec<GateState>,
        srm: Option<SampleRatioCheck>,
        srm_evidence: Option<stats::Evidence>,
        change: ChangeDetection,
        complements: Vec<Complement>,
        windows: WindowsInCheckpoint,
        warmup: Warmup,
        #[serde(rename = "stage_requests")]
        step_requests: u64,
        #[serde(default, rename = "stage_start")]
        step_start: Option<Timestamp>,
        since: Option<Timestamp>,
        #[serde(default)]
        lean: bool,
    }

    /// The windows in either form: version 1 kept every retained
    /// interval's snapshot (`intervals`).
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum WindowsInCheckpoint {
        Whole {
            capacity: usize,
            intervals: VecDeque<IntervalSnapshot>,
        },
        Compact(WindowsForm),
    }

    impl TryFrom<MonitorForm> for Monitor {
        type Error = InvalidWindows;

        fn try_from(f: MonitorForm) -> Result<Monitor, InvalidWindows> {
            let windows = match f.windows {
                WindowsInCheckpoint::Whole {
                    capacity,
                    intervals,
                } => {
                    let mut w = Windows::new(capacity);
                    for read in f.checks.iter().filter_map(window_read) {
                        w.track(read);
                    }
                    for s in &intervals {
                        w.push(s);
                    }
                    w
                }
                WindowsInCheckpoint::Compact(form) => {
                    let w = Windows::try_from(form)?;
                    if let Some(read) = f
                        .checks
                        .iter()
                        .filter_map(window_read)
                        .find(|r| !w.tracks(r))
                    {
                        return Err(InvalidWindows(format!("no values kept for {read:?}")));
                    }
                    w
                }
            };
            Ok(Monitor {
                checks: f.checks,
                gates: f.gates,
                srm: f.srm,
                srm_evidence: f.srm_evidence,
                change: f.change,
                complements: f.complements,
                windows,
                warmup: f.warmup,
                step_requests: f.step_requests,
                step_start: f.step_start,
                since: f.since,
                lean: f.lean,
                measured: Measured::default(),
                spare: Spare::default(),
                reads: ReadsCache::default(),
            })
        }
    }

    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case", tag = "check")]
    enum CheckRef<'a> {
        Statistical {
            test: &'a StatTest,
            comparative: bool,
            last: &'a Option<Verdict>,
        },
        Mean {
            test: &'a MeanTest,
            comparative: bool,
            last: &'a Option<Verdict>,
        },
        SustainedQuantile(&'a SustainedQuantile),
        SustainedRatio(&'a SustainedRatio),
        SustainedMean(&'a SustainedMean),
        BurnRate(&'a BurnRate),
        NoData(&'a NoData),
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case", tag = "check")]
    enum CheckForm {
        Statistical {
            test: Box<StatTest>,
            comparative: bool,
            last: Option<Verdict>,
        },
        Mean {
            test: Box<MeanTest>,
            comparative: bool,
            last: Option<Verdict>,
        },
        SustainedQuantile(SustainedQuantile),
        SustainedRatio(SustainedRatio),
        SustainedMean(SustainedMean),
        BurnRate(BurnRate),
        NoData(NoData),
    }

    impl Serialize for Check {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Check::Statistical {
                    test,
                    comparative,
                    last,
                } => match test.as_ref() {
                    StatTest::Mean(test) => CheckRef::Mean {
                        test,
                        comparative: *comparative,
                        last,
                    },
                    test => CheckRef::Statistical {
                        test,
                        comparative: *comparative,
                        last,
                    },
                },
                Check::SustainedQuantile(r) => CheckRef::SustainedQuantile(r),
                Check::SustainedRatio(r) => CheckRef::SustainedRatio(r),
                Check::SustainedMean(r) => CheckRef::SustainedMean(r),
                Check::BurnRate(r) => CheckRef::BurnRate(r),
                Check::NoData(r) => CheckRef::NoData(r),
            }
            .serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for Check {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
            Ok(match CheckForm::deserialize(d)? {
                CheckForm::Statistical {
                    test,
                    comparative,
                    last,
                } => Check::Statistical {
                    test,
                    comparative,
                    last,
                },
                CheckForm::Mean {
                    test,
                    comparative,
                    last,
                } => Check::Statistical {
                    test: Box::new(StatTest::Mean(*test)),
                    comparative,
                    last,
                },
                CheckForm::SustainedQuantile(r) => Check::SustainedQuantile(r),
                CheckForm::SustainedRatio(r) => Check::SustainedRatio(r),
                CheckForm::SustainedMean(r) => Check::SustainedMean(r),
                CheckForm::BurnRate(r) => Check::BurnRate(r),
                CheckForm::NoData(r) => Check::NoData(r),
            })
        }
    }

    /// A gate's test: `{"stat": {...}}` or `{"mean": {...}}`.
    pub(super) mod gate_test {
        use super::*;

        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        enum GateTestRef<'a> {
            Stat(&'a StatTest),
            Mean(&'a MeanTest),
        }

        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        enum GateTestForm {
            Stat(StatTest),
            Mean(MeanTest),
        }

        pub fn serialize<S: Serializer>(test: &StatTest, s: S) -> Result<S::Ok, S::Error> {
            match test {
                StatTest::Mean(m) => GateTestRef::Mean(m),
                other => GateTestRef::Stat(other),
            }
            .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StatTest, D::Error> {
            Ok(match GateTestForm::deserialize(d)? {
                GateTestForm::Stat(t) => t,
                GateTestForm::Mean(m) => StatTest::Mean(m),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    const POLICY: &str = "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: spare }
spec:
  analysis: { interval: 1s, alpha: 0.01, minSamples: 10 }
  steps: [ { setWeight: 10 }, { bake: 1h }, { setWeight: 100 } ]
  metrics:
    errors: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - { name: budget, metric: errors, burnRate: { slo: 99%, windows: [ { long: 5s, short: 2s, factor: 10 } ] } }
";

    fn interval(i: u64) -> IntervalSnapshot {
        let mut s = IntervalSnapshot::new(
            Timestamp::from_millis(i * 1000),
            Timestamp::from_millis((i + 1) * 1000),
        );
        s.canary.add("requests", 10);
        s.canary.latency_mut("latency_ms").record_ms(20.0);
        s
    }

    /// The daemon never takes a spare: its monitors hold no snapshot (they
    /// held the last one their windows pushed out). A caller that takes
    /// them gets the snapshot observed last, from the next interval on.
    #[test]
    fn a_spare_snapshot_is_kept_only_for_a_caller_that_takes_them() {
        let policy = parse_policy("spare.yaml", POLICY.as_bytes()).unwrap();
        let weight = Weight::new(10).unwrap();
        let mut monitor = Monitor::new(&policy).unwrap();
        for i in 0..20 {
            monitor.observe_owned(interval(i), weight);
        }
        assert!(monitor.spare.0.kept.is_none());
        assert_eq!(monitor.take_spare(), None);
        monitor.observe_owned(interval(20), weight);
        let spare = monitor.take_spare().expect("kept once asked for");
        assert_eq!(spare.start, Timestamp::from_millis(20_000));
    }

    /// Assessing in place gives what assessing afresh gives, over the
    /// previous interval's assessment, over an empty one and over one of
    /// another shape; and the readings' shared texts stay the monitor's.
    #[test]
    fn assessing_in_place_is_assessing_afresh() {
        let policy = parse_policy(
            "example.yaml",
            include_bytes!("../../simulator/policies/product-example.yaml"),
        )
        .unwrap();
        let weight = Weight::new(10).unwrap();
        let mut monitor = Monitor::new(&policy).unwrap();
        monitor.set_lean(true);
        let mut kept = Assessment::empty(0, 0);
        let mut odd = Assessment::empty(9, 1);
        odd.sample_ratio_mismatch = Some(TriggerEvidence::Objective(ObjectiveEvidence {
            measured: "nothing".into(),
            verdict: stats::objective::ObjectiveVerdict {
                fired: true,
                observed: 1.0,
                limit: 0.0,
                canary: stats::ArmCounts::default(),
                window_start: Timestamp::EPOCH,
                window_end: Timestamp::EPOCH,
            },
        }));
        monitor.step_started(Timestamp::EPOCH, weight);
        for i in 0..200u64 {
            let mut s = IntervalSnapshot::new(
                Timestamp::from_millis(i * 30_000),
                Timestamp::from_millis((i + 1) * 30_000),
            );
            for (arm, n) in [(&mut s.baseline, 5_400), (&mut s.canary, 600 + i % 7)] {
                arm.add("requests", n);
                arm.add("impressions", n);
                arm.add("errors", n / 400 + i % 3);
                arm.add("clicks", n / 20 - i % 5);
                arm.add_group("approvals", "a", n / 5);
                arm.add_group("approvals", "b", n / 8 + i % 2);
                arm.add_group("requests", "a", n * 6 / 10);
                arm.add_group("requests", "b", n - n * 6 / 10);
                let h = arm.latency_mut("latency_ms");
                for k in 0..20 {
                    h.record_ms(60.0 + 7.0 * k as f64 + (i % 11) as f64);
                }
            }
            monitor.observe_owned(s, weight);
            let now = Timestamp::from_millis((i + 1) * 30_000);
            let fresh = monitor.assess(now);
            monitor.assess_into(now, &mut kept);
            assert_eq!(kept, fresh, "interval {i}");
            let mut empty = Assessment::empty(0, 0);
            monitor.assess_into(now, &mut empty);
            assert_eq!(empty, fresh, "interval {i}, from empty");
            let mut other = odd.clone();
            monitor.assess_into(now, &mut other);
            assert_eq!(other, fresh, "interval {i}, from another shape");
        }
        assert!(kept.gates.iter().all(|g| g.evidence.is_some()));
    }
}

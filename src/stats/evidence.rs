//! What every verdict carries: per-arm counts, the estimate with its
//! anytime-valid interval, the statistic and the boundary it is compared
//! with, and the window it covers. Plain data (serde); every number in it is
//! finite, because JSON cannot carry NaN or infinity and an incident record
//! must never show one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::snapshot::IntervalSnapshot;
use crate::time::Timestamp;

/// Where a test stands after an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The interval was excluded (warm-up after a weight change).
    Excluded,
    /// Not enough data yet to run the test (burn-in); nothing accumulates.
    Collecting,
    /// The test runs and has not crossed its boundary.
    Monitoring,
    /// The boundary was crossed: the trigger fires (or the gate is shown).
    Crossed,
}

/// One arm's counts behind a verdict: the exposure (denominator: requests,
/// impressions, latency observations) and the events (numerator: errors,
/// clicks, exceedances).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmCounts {
    pub exposure: u64,
    pub events: u64,
}

impl ArmCounts {
    pub fn add(&mut self, exposure: u64, events: u64) {
        self.exposure = self.exposure.saturating_add(exposure);
        self.events = self.events.saturating_add(events);
    }
}

/// A confidence interval; `None` bounds are unbounded in that direction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// Coverage, simultaneously over all times (e.g. 0.99).
    pub level: f64,
}

impl Interval {
    pub fn unbounded(level: f64) -> Self {
        Interval {
            lower: None,
            upper: None,
            level: finite(level),
        }
    }

    /// Builds an interval, dropping non-finite bounds.
    pub fn new(lower: f64, upper: f64, level: f64) -> Self {
        Interval {
            lower: lower.is_finite().then_some(lower),
            upper: upper.is_finite().then_some(upper),
            level: finite(level),
        }
    }
}

/// The evidence behind a verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was estimated, e.g. "rate ratio canary/baseline of errors/requests".
    /// Shared: a test formats it once and every interval's evidence points
    /// at it.
    pub estimand: Arc<str>,
    /// Per-arm totals over the window the test covers.
    pub baseline: ArmCounts,
    pub canary: ArmCounts,
    /// Point estimate of the estimand (0 when there is no data).
    pub estimate: f64,
    /// Anytime-valid interval for the estimand.
    pub interval: Interval,
    /// Natural log of the test's e-value (or e-detector) now.
    pub log_e_value: f64,
    /// The boundary it is compared with: `ln(K / alpha)` plus, for tests with
    /// change detection, nothing more (restarts are paid inside the mixture).
    pub log_boundary: f64,
    /// First and last instant of the data the test has consumed.
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    /// Start of the restart segment carrying most of the evidence (for a
    /// regression that began mid-step, about when it began). The estimate and
    /// interval above still cover the whole window.
    pub evidence_since: Timestamp,
    /// What the numbers above do not say on their own: the test reads
    /// differently from the policy as written (a threshold rounded to a
    /// coarse histogram bucket) or cannot use its data (values above a
    /// histogram's largest bucket). Shown with the status, the incident and
    /// the simulator's trace. Absent in evidence written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caveat: Option<Arc<str>>,
}

impl Evidence {
    /// Makes `self` equal to `src`, as `*self = src.clone()` would, but
    /// clones a shared text only when it is another one: a reading
    /// refreshed every interval from the same test points at the same
    /// texts, and each clone of an `Arc` is an atomic increment (and its
    /// drop a decrement).
    pub fn assign_from(&mut self, src: &Evidence) {
        let Evidence {
            estimand,
            baseline,
            canary,
            estimate,
            interval,
            log_e_value,
            log_boundary,
            window_start,
            window_end,
            evidence_since,
            caveat,
        } = src;
        assign_shared(&mut self.estimand, estimand);
        self.baseline = *baseline;
        self.canary = *canary;
        self.estimate = *estimate;
        self.interval = *interval;
        self.log_e_value = *log_e_value;
        self.log_boundary = *log_boundary;
        self.window_start = *window_start;
        self.window_end = *window_end;
        self.evidence_since = *evidence_since;
        match (&mut self.caveat, caveat) {
            (Some(mine), Some(theirs)) => assign_shared(mine, theirs),
            (mine, theirs) => *mine = theirs.clone(),
        }
    }
}

/// `*dst = src.clone()`, skipped when both already point at one text.
pub fn assign_shared(dst: &mut Arc<str>, src: &Arc<str>) {
    if !Arc::ptr_eq(dst, src) {
        *dst = src.clone();
    }
}

/// A test's answer for one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub status: Status,
    pub evidence: Evidence,
}

impl Verdict {
    pub fn crossed(&self) -> bool {
        self.status == Status::Crossed
    }
}

/// Replaces NaN with 0 and clamps infinities to ±f64::MAX.
pub fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-f64::MAX, f64::MAX)
    }
}

/// serde: omit the `lean` flag while it is off (older checkpoints lack it).
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A verdict's estimand text, formatted once. It depends only on the test's
/// parameters and on `key` (a threshold fixed once, a group count), while a
/// verdict is built every interval. Not state: skipped by serde (rebuilt on
/// first use) and equal to any other cache.
#[derive(Clone, Debug, Default)]
pub(crate) struct Estimand(Option<(Option<u64>, Arc<str>)>);

impl PartialEq for Estimand {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Estimand {
    /// The text for `key`, from `make` when the cache holds another key.
    pub(crate) fn text(&mut self, key: Option<u64>, make: impl FnOnce() -> String) -> Arc<str> {
        match &self.0 {
            Some((k, text)) if *k == key => text.clone(),
            _ => {
                let text: Arc<str> = make().into();
                self.0 = Some((key, text.clone()));
                text
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Span {
    pub(crate) start: Option<Timestamp>,
    pub(crate) end: Timestamp,
}

impl Span {
    pub(crate) fn cover(&mut self, snap: &IntervalSnapshot) {
        if self.start.is_none() {
            self.start = Some(snap.start);
        }
        self.end = self.end.max(snap.end);
    }
}

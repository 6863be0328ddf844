//! The boundary between the state machine and the statistics: what the
//! engine asks of an analysis, and what an analysis reports back.
//!
//! The state machine (`rollout.rs`) decides *what to do* given readings; an
//! [`Analysis`] decides *what the data says*. The daemon and the simulator use
//! the policy-driven analysis in `monitor.rs`; the state machine's own tests
//! script readings directly, so every transition can be pinned exactly.

use std::borrow::Cow;
use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::policy::Weight;
use crate::stats::LatencyReads;
use crate::time::Timestamp;

/// A policy's triggers and gates evaluated over the data seen so far.
pub trait Analysis: Clone + Debug + Serialize + DeserializeOwned {
    /// One analysis interval of data for both arms.
    type Snapshot: Clone + Debug + Serialize + DeserializeOwned;
    /// What a reading carries to justify itself (counts, estimate, interval,
    /// statistic, boundary, window).
    type Evidence: Clone + Debug + PartialEq + Serialize + DeserializeOwned;

    /// The router confirmed a new canary weight at `now`: a new weight step begins
    /// (its sample count restarts; its warm-up starts).
    fn step_started(&mut self, now: Timestamp, weight: Weight);

    /// Feed one interval of data, collected while `weight` was set.
    fn observe(&mut self, snapshot: &Self::Snapshot, weight: Weight);

    /// [`Analysis::observe`], handing the snapshot over: an analysis that
    /// keeps snapshots can store this one instead of cloning it. Same
    /// effect as `observe(&snapshot, weight)`.
    fn observe_owned(&mut self, snapshot: Self::Snapshot, weight: Weight) {
        self.observe(&snapshot, weight);
    }

    /// A snapshot the analysis no longer needs (one it was handed and has
    /// read), for the caller to reset and fill again instead of allocating
    /// a new one. By default, none. (The monitor keeps one only once a
    /// caller has asked: a caller that never asks holds none per rollout.)
    fn take_spare(&mut self) -> Option<Self::Snapshot> {
        None
    }

    /// What the next [`Analysis::observe`] will read of the latency
    /// histograms of `signal`. A simulator samples only that much (see
    /// `stats::LatencyReads`); by default, everything.
    fn latency_reads(&self, _signal: &str) -> Cow<'_, LatencyReads> {
        Cow::Borrowed(&LatencyReads::EVERYTHING)
    }

    /// Readings at `now`, one per policy trigger and gate, in policy order.
    /// A function of what the analysis was fed and of `now`: the engine
    /// keeps the last answer and asks again only at a new instant or after
    /// feeding it (data, a new weight step).
    fn assess(&mut self, now: Timestamp) -> Assessment<Self::Evidence>;

    /// [`Analysis::assess`] written over the previous answer, `out`: the
    /// same result as `*out = self.assess(now)`. An analysis that answers
    /// every interval can refresh its readings in place instead of building
    /// new ones and dropping the old (the engine keeps one assessment and
    /// asks for this).
    fn assess_into(&mut self, now: Timestamp, out: &mut Assessment<Self::Evidence>) {
        *out = self.assess(now);
    }

    /// The instants a snapshot covers, `[start, end)`.
    fn span(snapshot: &Self::Snapshot) -> (Timestamp, Timestamp);
}

/// Everything the state machine needs to know about the data.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(bound = "E: Serialize + DeserializeOwned")]
pub struct Assessment<E> {
    /// One per policy trigger, in policy order.
    pub triggers: Vec<TriggerReading<E>>,
    /// One per policy gate, in policy order.
    pub gates: Vec<GateReading<E>>,
    /// Evidence that the observed split differs from the set weight.
    pub sample_ratio_mismatch: Option<E>,
    /// Canary requests since the current weight step began.
    /// (Serialized under its checkpoint-v1 name.)
    #[serde(rename = "canary_requests_in_stage")]
    pub canary_requests_in_step: u64,
}

impl<E> Assessment<E> {
    pub fn empty(triggers: usize, gates: usize) -> Self {
        Assessment {
            triggers: (0..triggers).map(|_| TriggerReading::default()).collect(),
            gates: (0..gates).map(|_| GateReading::default()).collect(),
            sample_ratio_mismatch: None,
            canary_requests_in_step: 0,
        }
    }
}

/// `ok`: data, no evidence of harm; `inconclusive`: too little data to test
/// (never read as healthy); `fired`: the trigger's condition is met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerVerdict {
    Ok,
    #[default]
    Inconclusive,
    Fired,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(bound = "E: Serialize + DeserializeOwned")]
pub struct TriggerReading<E> {
    pub verdict: TriggerVerdict,
    /// The tested quantity now (rate, ratio, quantile, ...), when there is one.
    pub estimate: Option<f64>,
    /// The boundary the statistic is compared with.
    pub boundary: Option<f64>,
    /// Canary samples behind the reading.
    pub samples: u64,
    pub evidence: Option<E>,
}

impl<E> Default for TriggerReading<E> {
    fn default() -> Self {
        TriggerReading {
            verdict: TriggerVerdict::Inconclusive,
            estimate: None,
            boundary: None,
            samples: 0,
            evidence: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(bound = "E: Serialize + DeserializeOwned")]
pub struct GateReading<E> {
    /// The gate's bound has been shown (at the policy's level).
    pub shown: bool,
    pub evidence: Option<E>,
}

impl<E> Default for GateReading<E> {
    fn default() -> Self {
        GateReading {
            shown: false,
            evidence: None,
        }
    }
}

//! Compiled policy types. These make illegal states unrepresentable where the
//! type system can: a weight is 0-100, a step is one of three kinds, a trigger
//! has exactly one rule. Everything here was checked by `compile.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{GateCheck, TriggerCheck};
use super::written::Metric;
use crate::stats::Overdispersion;

/// A canary traffic share in percent, 0 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Weight(u8);

impl Weight {
    pub const ZERO: Weight = Weight(0);
    pub const FULL: Weight = Weight(100);

    pub fn new(percent: u8) -> Option<Weight> {
        (percent <= 100).then_some(Weight(percent))
    }

    pub fn percent(self) -> u8 {
        self.0
    }

    /// The canary's share of traffic as a fraction in [0, 1].
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

/// A weight above 100%.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("weight must be 0..=100, got {0}")]
pub struct WeightOutOfRange(pub u8);

impl TryFrom<u8> for Weight {
    type Error = WeightOutOfRange;

    fn try_from(v: u8) -> Result<Self, WeightOutOfRange> {
        Weight::new(v).ok_or(WeightOutOfRange(v))
    }
}

impl From<Weight> for u8 {
    fn from(w: Weight) -> u8 {
        w.0
    }
}

/// A compiled policy. Checkpoints hold it in the form of `repr.rs` (the
/// triggers and gates as written), so the serialized form is the same as
/// before triggers were resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "super::repr::PolicyRepr", try_from = "super::repr::PolicyRepr")]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    pub change_type: ChangeType,
    pub analysis: AnalysisSpec,
    pub steps: Vec<Step>,
    pub metrics: BTreeMap<String, Metric>,
    pub triggers: Vec<Trigger>,
    pub gates: Vec<Gate>,
    pub incident: IncidentSpec,
    pub emergency: EmergencySpec,
    pub experiment: Option<ExperimentSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    Standard,
    Emergency,
    Experiment,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Standard => "standard",
            ChangeType::Emergency => "emergency",
            ChangeType::Experiment => "experiment",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeType> {
        match s {
            "standard" => Some(ChangeType::Standard),
            "emergency" => Some(ChangeType::Emergency),
            "experiment" => Some(ChangeType::Experiment),
            _ => None,
        }
    }
}

/// `spec.analysis`: how the data is judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    /// How often the engine evaluates; also the length of one data bucket.
    pub interval: Duration,
    /// False-rollback budget of the statistical triggers over the whole rollout.
    pub alpha: f64,
    /// Canary requests in the current step before it may advance.
    pub min_samples: u64,
    /// Longest a rollout may run, approval waits not counted.
    pub max_duration: Duration,
    /// Pause on evidence that the observed split differs from the set weight.
    pub sample_ratio_check: bool,
    /// Time after each weight change excluded from comparisons.
    pub warmup: Duration,
    /// How the tests account for requests that are not independent
    /// (`spec.analysis.overdispersion`). Always set by the compiler; `None`
    /// only in a policy restored from a checkpoint written before the field
    /// existed (its running tests keep the state they were checkpointed
    /// with, without inflation; a test built anew from it uses `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdispersion: Option<Overdispersion>,
    /// `requireNoHarm`: the implied no-harm gates (see `no_harm.rs`);
    /// `None` when the policy opts out. A checkpoint written before the
    /// field existed has none, so a rollout restored from it continues
    /// under the rules it started with (no implied gates); serialized only
    /// when set, so such a checkpoint re-serializes to the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_no_harm: Option<NoHarm>,
}

/// `spec.analysis.requireNoHarm`: before a step sets `before` or more,
/// each `vsBaseline` trigger's harm must be shown below `margin` × its
/// tolerance (one implied gate per trigger, see `no_harm.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoHarm {
    /// Multiplies each trigger's tolerance; at least 1 (default 2).
    pub margin: f64,
    /// The weight from which the implied gates are needed (default 100).
    pub before: Weight,
}

impl NoHarm {
    pub const DEFAULT_MARGIN: f64 = 2.0;
}

impl Default for NoHarm {
    fn default() -> NoHarm {
        NoHarm {
            margin: NoHarm::DEFAULT_MARGIN,
            before: Weight::FULL,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    SetWeight(Weight),
    Bake(Duration),
    Approval(Approval),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Every listed role must approve.
    pub roles: Vec<String>,
    /// A different actor for each role, none of them the rollout's starter.
    pub distinct: bool,
    pub timeout: Option<Duration>,
    pub on_timeout: OnTimeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    Rollback,
    Pause,
}

/// A trigger: what it checks, resolved against the metrics (see
/// `check.rs`), and what happens when it fires.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub name: String,
    pub check: TriggerCheck,
    pub action: Action,
}

impl Trigger {
    /// Statistical triggers fire only on anytime-valid evidence and share
    /// the policy's `alpha`; objective ones fire exactly as written.
    pub fn is_statistical(&self) -> bool {
        self.check.is_statistical()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Rollback,
    Pause,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub name: String,
    pub check: GateCheck,
    /// Must be shown before any step sets the weight to this or higher.
    pub before: Weight,
    /// The `vsBaseline` trigger whose `requireNoHarm` gate this is; `None`
    /// for a gate written under `spec.gates`.
    pub implied_by: Option<String>,
}

impl Gate {
    /// Derived from `requireNoHarm`, not written under `spec.gates`.
    pub fn is_implied(&self) -> bool {
        self.implied_by.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentSpec {
    pub severity: String,
    pub notify: Vec<Notify>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Notify {
    Webhook(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmergencySpec {
    pub bypass_for: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSpec {
    pub weight: Weight,
    pub duration: Duration,
}

impl Policy {
    /// Sum of the bakes: the fastest a standard rollout can promote.
    pub fn total_bake(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Bake(d) => *d,
                _ => Duration::ZERO,
            })
            .sum()
    }

    /// The statistical triggers, in policy order.
    pub fn statistical_triggers(&self) -> impl Iterator<Item = &Trigger> {
        self.triggers.iter().filter(|t| t.is_statistical())
    }

    /// Each statistical trigger's share of `alpha` (Bonferroni: with K
    /// statistical triggers each fires at e-value ≥ K/alpha, so the union of
    /// their false alarms stays within alpha under any dependence).
    pub fn alpha_per_trigger(&self) -> f64 {
        let k = self.statistical_triggers().count().max(1);
        self.analysis.alpha / k as f64
    }

    /// Each gate's share of the false-promotion budget: `alpha / G` over
    /// all `G` gates, written and implied alike (see `no_harm.rs` for why
    /// the implied ones must share it).
    pub fn alpha_per_gate(&self) -> f64 {
        self.analysis.alpha / self.gates.len().max(1) as f64
    }

    /// The gates `requireNoHarm` implies, in trigger order.
    pub fn implied_gates(&self) -> impl Iterator<Item = &Gate> {
        self.gates.iter().filter(|g| g.is_implied())
    }

    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.get(name)
    }
}

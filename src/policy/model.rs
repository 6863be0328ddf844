//! Compiled policy types. These make illegal states unrepresentable where the
//! type system can: a weight is 0-100, a step is one of three kinds, a trigger
//! has exactly one rule. Everything here was checked by `compile.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

impl TryFrom<u8> for Weight {
    type Error = String;

    fn try_from(v: u8) -> Result<Self, String> {
        Weight::new(v).ok_or_else(|| format!("weight must be 0..=100, got {v}"))
    }
}

impl From<Weight> for u8 {
    fn from(w: Weight) -> u8 {
        w.0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    pub change_type: ChangeType,
    pub analysis: Analysis,
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Metric {
    /// numerator / denominator, e.g. clicks / impressions.
    Ratio {
        numerator: String,
        denominator: String,
        group_by: Option<String>,
    },
    /// A latency distribution (milliseconds), tested at a quantile.
    Latency { signal: String },
    /// The mean of an observed value signal.
    Mean { signal: String },
}

impl Metric {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Metric::Ratio { .. } => "ratio",
            Metric::Latency { .. } => "latency",
            Metric::Mean { .. } => "mean",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub name: String,
    /// The metric tested; `None` only for a `noData` trigger on canary requests.
    pub metric: Option<String>,
    /// For latency metrics: the quantile tested, in (0, 1).
    pub quantile: Option<f64>,
    pub rule: TriggerRule,
    pub action: Action,
}

impl Trigger {
    /// Statistical triggers fire only on anytime-valid evidence and share
    /// the policy's `alpha`; objective ones fire exactly as written.
    pub fn is_statistical(&self) -> bool {
        match &self.rule {
            TriggerRule::VsBaseline(_) | TriggerRule::Disparity { .. } => true,
            TriggerRule::Threshold { sustained_for, .. } => sustained_for.is_none(),
            TriggerRule::BurnRate { .. } | TriggerRule::NoData { .. } => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TriggerRule {
    /// Evidence that the canary is worse than baseline beyond a tolerance.
    VsBaseline(Regression),
    /// The canary's value against a fixed bound: statistical without
    /// `sustained_for`, objective (every interval over the window) with it.
    Threshold {
        bound: Bound,
        sustained_for: Option<Duration>,
    },
    /// Multi-window error-budget burn rate (SRE workbook).
    BurnRate { slo: f64, windows: Vec<BurnWindow> },
    /// Evidence that lowest / highest group rate is below `min_ratio`.
    Disparity { min_ratio: f64 },
    /// No canary data (requests, or the metric's denominator) for this long.
    NoData { for_duration: Duration },
}

/// A regression beyond a relative tolerance (fractions: 0.01 = 1%).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Regression {
    /// Lower is worse (CTR): canary < baseline × (1 − x).
    RelativeDrop(f64),
    /// Higher is worse (errors, latency): canary > baseline × (1 + x).
    RelativeIncrease(f64),
}

/// A threshold in the metric's unit: a fraction for ratios, milliseconds for
/// latency, the signal's unit for means.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Bound {
    Above(f64),
    Below(f64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BurnWindow {
    pub long: Duration,
    pub short: Duration,
    pub factor: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Rollback,
    Pause,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub name: String,
    pub metric: String,
    pub quantile: Option<f64>,
    pub requirement: GateRequirement,
    /// Must be shown before any step sets the weight to this or higher.
    pub before: Weight,
}

/// What a gate must show, as a confidence-sequence bound (fractions).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GateRequirement {
    /// canary ≥ baseline × (1 + x)
    MinGain(f64),
    /// canary < baseline × (1 + x)
    MaxIncrease(f64),
    /// canary > baseline × (1 − x)
    MaxDrop(f64),
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

    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.get(name)
    }
}

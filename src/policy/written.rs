//! A policy's metrics and rules as written: the building blocks the
//! compiler reads from YAML before it resolves each trigger and gate
//! against its metric (`check.rs`), and the form checkpoints keep them in
//! (`repr.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// A trigger's rule as written (one of the five keys). The compiler
/// resolves it with the metric into a [`TriggerCheck`](super::TriggerCheck); checkpoints keep
/// it in this form (see `repr.rs`).
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

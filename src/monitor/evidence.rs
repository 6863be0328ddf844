//! What a monitor's reading rests on: the evidence every trigger reading,
//! gate reading and incident carries.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::stats;

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

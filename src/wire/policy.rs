//! A loaded policy as `GET /v1/policies` lists it.

use serde::{Deserialize, Serialize};

use crate::policy::ChangeType;

/// Fields in the order the API writes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub alpha: f64,
    pub change_type: ChangeType,
    pub description: Option<String>,
    /// The file it was loaded from.
    pub file: String,
    /// Gate names, in the policy's order.
    pub gates: Vec<String>,
    pub interval_s: f64,
    pub name: String,
    /// Trigger names, in the policy's order.
    pub triggers: Vec<String>,
    /// SHA-256 of the file; a rollout is pinned to it.
    pub version: String,
}

//! `POST /v1/rollouts/{id}/observations` (PRODUCT.md section 5): raw events
//! and pre-aggregated counts per arm, and the answer. The daemon validates a
//! batch as a whole (`daemon::push`); these are only its shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationBatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ObservedEvent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<ObservedCounts>,
}

/// `"baseline"` or `"canary"`: the core's own type.
pub use crate::stats::Arm;

/// One request as a client saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedEvent {
    pub arm: Arm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub error: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub impression: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub click: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// RFC 3339; one from before the weight in force took effect is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Counters a client aggregated itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedCounts {
    pub arm: Arm,
    pub counters: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The answer (202): what the batch added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservationsAccepted {
    pub accepted_counts: u64,
    pub accepted_events: u64,
    /// Valid events left out: their `at` is before the canary weight in
    /// force took effect, so they describe another traffic split.
    pub stale_events: u64,
}

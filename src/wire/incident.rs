//! An incident as `GET /v1/incidents[/{id}]` shows it: what fired and on
//! what evidence, the rollout's timeline, the router's answer to the
//! rollback, the post-incident review and every webhook delivery; and the
//! body that reviews one.

use serde::{Deserialize, Serialize};

use super::sorted_keys;
use crate::engine::Event;
use crate::monitor::{ObjectiveEvidence, TriggerEvidence};
use crate::stats::Evidence;
use crate::time::Timestamp;

/// `GET /v1/incidents/{id}`. Fields in the order the API writes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    #[serde(serialize_with = "sorted_keys")]
    pub evidence: EvidenceEntry,
    pub id: String,
    /// Every webhook the incident notifies, with its deliveries.
    pub notifications: Vec<Notification>,
    pub opened_at: String,
    /// The policy version the rollout was pinned to.
    pub policy_version: String,
    /// The post-incident review an emergency change opened, if any.
    pub review: Option<Review>,
    pub review_note: Option<String>,
    pub reviewed_at: Option<String>,
    pub reviewed_by: Option<String>,
    pub rollout_id: String,
    /// The router's answer to weight 0 after the rollback.
    pub router_result: Option<RouterResult>,
    pub service: String,
    pub severity: String,
    pub status: IncidentStatus,
    /// The rollout's events, oldest first; it goes on after the incident
    /// opened, until the rollout ends.
    #[serde(serialize_with = "sorted_keys")]
    pub timeline: Vec<Event>,
    /// The trigger that fired, or `router` for a rollback the router could
    /// not apply.
    pub trigger: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Reviewed,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Reviewed => "reviewed",
        }
    }
}

/// An incident's evidence as the API writes it: the evidence's own fields
/// (tagged by `kind`) and `summary`, the evidence in words with units (the
/// same renderer as notifications and the status, `monitor::words`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceEntry {
    #[serde(flatten)]
    pub evidence: IncidentEvidence,
    /// Absent from daemons before it.
    #[serde(default)]
    pub summary: String,
}

/// What an incident rests on: the fired trigger's evidence (tagged as the
/// engine tags it), or the router's failure to apply the rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum IncidentEvidence {
    /// An anytime-valid test crossed its boundary.
    Statistical(Evidence),
    /// A rule applied exactly as written was broken.
    Objective(ObjectiveEvidence),
    /// The router did not take weight 0.
    Router(RouterFailure),
}

impl From<TriggerEvidence> for IncidentEvidence {
    fn from(e: TriggerEvidence) -> IncidentEvidence {
        match e {
            TriggerEvidence::Statistical(e) => IncidentEvidence::Statistical(e),
            TriggerEvidence::Objective(e) => IncidentEvidence::Objective(e),
        }
    }
}

/// A rollback the router could not apply (the daemon keeps retrying).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterFailure {
    pub attempts: u64,
    pub error: String,
    /// The router, described (`file /path`, `haproxy /socket`, ...).
    pub router: Option<String>,
    pub still_retrying: bool,
    /// In percent.
    pub wanted_weight: u8,
}

/// The router's acknowledgement of weight 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterResult {
    pub at: Timestamp,
    pub error: Option<String>,
    /// In percent.
    pub weight: u8,
}

/// A post-incident review (emergency changes); open until an incident
/// review closes it. Its instants are milliseconds since the epoch, as they
/// always were.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub closed_at: Option<Timestamp>,
    pub closed_by: Option<String>,
    pub id: String,
    pub note: Option<String>,
    pub opened_at: Timestamp,
    pub reason: String,
    pub rollout_id: String,
    pub status: ReviewStatus,
    pub ticket: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Open,
    Closed,
}

/// One webhook an incident notifies, and how its delivery went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub attempts: u32,
    pub delivered_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
    /// The webhook URL.
    pub target: String,
}

/// `POST /v1/incidents/{id}/review`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct ReviewRequest {
    pub note: String,
}

super::body::objects_only!(ReviewRequest);

//! The audit log as `GET /v1/audit` and `GET /v1/audit/verify` show it.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// One entry of the audit log, oldest first. Fields in their declared
/// order, as the API has always written them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// The seq of the first entry of the transaction that wrote this one.
    pub tx: u64,
    pub at: Timestamp,
    pub actor: String,
    /// `rollout.start`, `rollout.event`, `incident.review`, ...
    pub action: String,
    pub rollout_id: Option<String>,
    pub reason: String,
    pub ticket: Option<String>,
    /// What the action carries; its shape depends on the action.
    pub details: serde_json::Value,
    /// Hex HMAC-SHA256 chaining this entry to the one before.
    pub mac: String,
}

/// `GET /v1/audit/verify`: whether the HMAC chain holds, and where it
/// breaks first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Entries past the head file: the last transaction, whose head write
    /// a crash interrupted (the daemon rewrites it on its next start or
    /// commit).
    pub ahead_of_head: u64,
    pub broken: Option<BrokenLink>,
    pub entries: u64,
    /// The log's last entry.
    pub head: AuditHead,
    pub ok: bool,
    /// What an operator should know of a chain that holds: entries that
    /// predate its binding to the store, deliberate restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// State rows (rollouts, incidents, reviews) the chain does not vouch
    /// for: `rollouts ID: outcome is ... but the audit log ...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disagreements: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditHead {
    /// `seq N mac HEX`.
    pub hash: String,
    pub seq: u64,
}

/// The first entry whose link does not verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokenLink {
    pub detail: String,
    pub seq: u64,
}

//! The HTTP API's contract as types (PRODUCT.md section 7): every request
//! and answer body under `/v1`, the events of a rollout's stream, and the
//! error body with its typed [`Refusal`]. The daemon builds and serializes
//! these; the CLI, the demo and the web UI deserialize them and read fields.
//! This module knows no store, no daemon and no socket: only serde, and the
//! core's own serde types where an answer carries them (phases, verdicts,
//! trigger evidence, timeline events).
//!
//! The bytes are the API's as they always were. The answers that were built
//! with `json!` had their keys sorted (serde_json's map keeps keys in
//! order), so the structs that replace them declare their fields in that
//! order, and the core types embedded in them are written through
//! [`sorted_keys`]. Audit entries were always written in their declared
//! order and still are. Request bodies keep the order the daemon's errors
//! depend on (serde names the first missing field). `tests.rs` pins real
//! answers of a running daemon byte for byte.
//!
//! Behind the `daemon` feature only because two answers carry free-form
//! JSON (an audit entry's `details`, a registry watcher's status) and
//! serde_json is one of that feature's dependencies; nothing else here needs
//! the shell.

mod audit;
pub mod body;
mod incident;
mod observation;
mod policy;
mod refusal;
mod rollout;
mod stream;
#[cfg(test)]
mod tests;

use serde::{Serialize, Serializer};

pub use audit::{AuditEntry, AuditHead, AuditVerification, BrokenLink};
pub use incident::{
    EvidenceEntry, Incident, IncidentEvidence, IncidentStatus, Notification, Review, ReviewRequest,
    ReviewStatus, RouterFailure, RouterResult,
};
pub use observation::{
    Arm, BatchLimit, MAX_BATCH_ITEMS, MAX_COUNTER_ENTRIES, MAX_NAMES_PER_BATCH, ObservationBatch,
    ObservationsAccepted, ObservedCounts, ObservedEvent, decode_batch,
};
pub use policy::PolicySummary;
pub use refusal::{ErrorBody, ErrorDetail, Refusal, RefusalKind};
pub use rollout::{
    ApprovalGiven, Approvals, ApproveRequest, CommandRequest, EvidenceState, GateView,
    MAX_VERSION_LEN, NotificationStatus, PromoteRequest, Rollout, RolloutPage, SourceHealth,
    StartRequest, TriggerKind, TriggerView, check_version,
};
pub use stream::{SseError, SseFrame, SseReader, StreamEvent, StreamEventError};

use crate::time::Timestamp;

/// Where the daemon keeps its state unless told otherwise; a CLI on the same
/// machine looks for the admin token there.
pub const DEFAULT_DATA_DIR: &str = "./canaryd-data";

/// The file in the data dir that holds the admin token when no tokens are
/// configured (the daemon writes it, a local CLI reads it).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Write `value` through `serde_json::Value`, whose map writes its keys
/// sorted: the API has always written the core's evidence and timeline
/// events that way, while the core types declare their fields in another
/// order.
pub fn sorted_keys<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// The last instant the API writes as RFC 3339 (9999-12-30T22:00:00.000Z,
/// the end of the time library it was first written with); later ones, as
/// milliseconds.
const MAX_RFC3339_MS: u64 = 253_402_207_200_000;

/// An instant as the API writes it: RFC 3339, UTC, millisecond precision
/// (`2000-02-29T00:00:00.123Z`); past year 9999 as its milliseconds
/// (`253402207200001ms`).
pub fn rfc3339(t: Timestamp) -> String {
    let ms = t.as_millis();
    if ms > MAX_RFC3339_MS {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

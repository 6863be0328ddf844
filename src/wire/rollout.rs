//! A rollout as `GET /v1/rollouts[/{id}]` and every command answer show it
//! (one shape in single and list answers), and the bodies that start and
//! steer one.

use serde::{Deserialize, Serialize};

use super::body::objects_only;

use crate::engine::{Phase, TriggerVerdict};
pub use crate::monitor::words::EvidenceState;
use crate::policy::ChangeType;

/// `GET /v1/rollouts/{id}`; also the answer to a start and to a command.
/// Instants are RFC 3339 strings ([`super::rfc3339`]). Fields in the order
/// the API writes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// While an approval step waits: who must approve, who has.
    pub approvals: Option<Approvals>,
    pub baseline: String,
    pub canary: String,
    /// Canary requests counted since the current step began.
    pub canary_requests_in_step: u64,
    pub change_type: ChangeType,
    /// Decides everything, moves no traffic.
    pub dry_run: bool,
    /// The trigger that fired, once one has.
    pub fired: Option<String>,
    pub gates: Vec<GateView>,
    pub id: String,
    /// The rollout's incident (a trigger's before the router's).
    pub incident: Option<String>,
    /// The final phase once the rollout has ended; `None` while it runs.
    pub outcome: Option<Phase>,
    /// A weight asked of the router and not yet confirmed.
    pub pending_weight: Option<u8>,
    /// Where its notifications stand, per receiver (`GET
    /// /v1/rollouts[/{id}]`; absent when it has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationStatus>,
    /// The policy's `metadata.name`.
    pub policy: String,
    /// The SHA-256 of the policy file the rollout is pinned to.
    pub policy_version: String,
    /// Why the rollout is where it is, in words.
    pub reason: String,
    /// The router's last error while a weight is not yet applied.
    pub router_error: Option<String>,
    pub service: String,
    /// Where the service's data comes from; `None` once the rollout ended.
    pub source: Option<SourceHealth>,
    pub started_at: String,
    pub started_by: String,
    pub state: Phase,
    /// Index of the current step of the policy's `steps`.
    pub step: usize,
    /// How many steps the policy has.
    pub steps: usize,
    pub ticket: Option<String>,
    pub time_in_step_s: u64,
    pub triggers: Vec<TriggerView>,
    pub updated_at: String,
    /// What the rollout is waiting for (bake, samples, approvals, ...);
    /// `None` once it ended.
    pub waiting_for: Option<String>,
    /// The canary's share of traffic, in percent.
    pub weight: u8,
}

/// `GET /v1/rollouts?limit=&cursor=` (with `service`, `state`): one page,
/// newest first. `next` is the `cursor` of the page after this one, `None`
/// on the last. Without `limit` and `cursor` the list is the plain array of
/// rollouts, oldest first, as it always was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutPage {
    pub items: Vec<Rollout>,
    pub next: Option<String>,
}

/// A rollout's deliveries to one receiver (or one incident webhook URL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotificationStatus {
    /// The `notifications.receivers` name; `incident-webhook` for a
    /// policy's `incident.notify` URL.
    pub receiver: String,
    /// The URL deliveries went to.
    pub target: String,
    /// Still being tried.
    pub pending: u32,
    pub delivered: u32,
    /// Given up after their retry time.
    pub failed: u32,
    /// The last failed attempt's error, while one is pending or failed.
    pub last_error: Option<String>,
    pub last_attempt_at: Option<String>,
    /// When the oldest pending one is tried next.
    pub next_attempt_at: Option<String>,
    pub last_delivered_at: Option<String>,
}

/// One trigger of the policy against its boundary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerView {
    /// What `statistic` is compared with: the log boundary `ln(K/alpha)`
    /// for a statistical trigger, the rule's limit for an objective one.
    pub boundary: Option<f64>,
    /// The tested quantity in `unit` (a rate in percent, a ratio to the
    /// baseline, a quantile in ms, seconds without data, ...).
    pub estimate: Option<f64>,
    /// The anytime-valid interval of `estimate`, `[lower, upper]`, in
    /// `unit` (statistical triggers).
    pub interval: Option<(Option<f64>, Option<f64>)>,
    pub kind: TriggerKind,
    pub name: String,
    /// The share of the way from no evidence to the rollback boundary, in
    /// [0, 1] (`max(0, statistic) / boundary` for a statistical trigger,
    /// measured/limit in the rule's direction for an objective one); `None`
    /// without data.
    #[serde(default)]
    pub progress: Option<f64>,
    pub samples: u64,
    /// Where the evidence stands: `no_data`, `gathering`, `shown`, `fired`
    /// or `stopped` (absent from daemons before it: read as `no_data`).
    #[serde(default)]
    pub state: EvidenceState,
    /// The log e-value for a statistical trigger, the measured value for an
    /// objective one: the trigger fires when it reaches `boundary`.
    pub statistic: Option<f64>,
    /// The state in words with units, one line; never a bare "ok".
    #[serde(default)]
    pub summary: String,
    /// What the policy tolerates, on the scale and in the unit of
    /// `estimate` and `interval` (a factor of the baseline, a limit).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// How to read `estimate`, `interval` and `tolerance`: `× baseline`,
    /// `ms`, `%` (then all three are percentages), `s`, or a signal's name.
    #[serde(default)]
    pub unit: Option<String>,
    pub verdict: TriggerVerdict,
    /// What the numbers do not say on their own (the evidence's caveat: a
    /// threshold rounded to a coarse bucket, a test stopped by values
    /// above a histogram's largest bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// An anytime-valid test.
    Statistical,
    /// A rule applied exactly as written.
    Objective,
}

/// One promotion gate (written, or implied by `requireNoHarm`:
/// `no-harm:<trigger>`): shown as of the latest assessment (gates are not
/// latched), and the weight it must be shown before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateView {
    /// In percent.
    pub before: u8,
    pub name: String,
    pub shown: bool,
    /// `no_data`, `gathering` or `shown` (absent from daemons before it).
    #[serde(default)]
    pub state: EvidenceState,
    /// The gate's evidence in words with units, one line.
    #[serde(default)]
    pub summary: String,
}

/// The approval step a rollout waits at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approvals {
    pub deadline: Option<String>,
    pub given: Vec<ApprovalGiven>,
    /// The roles the step needs.
    pub roles: Vec<String>,
    pub since: String,
    pub step: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalGiven {
    pub actor: String,
    pub at: String,
    pub reason: String,
    pub role: String,
    pub ticket: Option<String>,
}

/// Where a service's data comes from right now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
    /// `push`, `prometheusQuery http://...`, `builtin 127.0.0.1:8080`, ...
    pub sources: Vec<String>,
    /// `ok`, `failing` or `unknown` (nothing pulled yet).
    pub status: String,
}

/// The longest version string the daemon takes.
pub const MAX_VERSION_LEN: usize = 128;

/// Whether `v` may be a version (a rollout's `canary` or `baseline`, a
/// registry's model version): 1 to [`MAX_VERSION_LEN`] characters from
/// `A-Z a-z 0-9 . _ + -`, the first a letter or a digit. That covers OCI
/// image tags, SemVer (with pre-release and build metadata), git hashes and
/// MLflow version numbers; it keeps out spaces, quotes, control and
/// non-ASCII characters, which a version would carry into router files,
/// hook arguments, HTTP headers and HAProxy commands, and a leading `-`,
/// which a hook's program could read as an option. The error says what is
/// wrong, for a 422 naming the field.
pub fn check_version(v: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > MAX_VERSION_LEN {
        return Err(format!(
            "a version has at most {MAX_VERSION_LEN} characters, found {}",
            v.len()
        ));
    }
    if let Some((i, c)) = v.char_indices().find(|&(_, c)| !allowed(c)) {
        return Err(format!(
            "expected a version of letters, digits, `.`, `_`, `+` and `-`, found {c:?} at byte {i} of {v:?}"
        ));
    }
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "a version starts with a letter or a digit, found {v:?}"
        ));
    }
    Ok(())
}

/// `POST /v1/rollouts`: idempotent (the same request returns the same
/// rollout). `change_type` stays text so that a wrong one is refused with
/// the values it may take, naming the field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct StartRequest {
    pub service: String,
    pub canary: String,
    pub baseline: String,
    /// The policy's `metadata.name`.
    pub policy: String,
    /// `standard`, `emergency` or `experiment`; the policy's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/rollouts/{id}/pause`, `/resume` and `/abort`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct CommandRequest {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// `POST /v1/rollouts/{id}/promote`: skip the rest of the bake (`full`:
/// straight to 100%); `override_gates` is for admins, with a ticket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct PromoteRequest {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub override_gates: bool,
}

/// `POST /v1/rollouts/{id}/approve`: the caller approves as `role`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct ApproveRequest {
    pub role: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

objects_only!(StartRequest, CommandRequest, PromoteRequest, ApproveRequest);

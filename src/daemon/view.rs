//! The JSON objects the API and the CLI's `--json` print (PRODUCT.md
//! section 7): one shape per resource, the same in single and list answers.

use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Monitor, Rollout, TriggerVerdict};
use crate::store::{Incident, RolloutRow};
use crate::time::Timestamp;

/// RFC 3339, UTC, millisecond precision.
pub fn rfc3339(t: Timestamp) -> String {
    let ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => format!("{}ms", t.as_millis()),
    }
}

/// Where a service's data comes from right now.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SourceHealth {
    /// `push`, `prometheusQuery http://...`, `builtin 127.0.0.1:8080`, ...
    pub sources: Vec<String>,
    /// `ok`, `failing` or `unknown` (nothing pulled yet).
    pub status: String,
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
}

/// What the driver knows that the engine does not.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DriverStatus {
    pub source: SourceHealth,
    /// The last router error, while a weight is not yet applied.
    pub router_error: Option<String>,
    /// A weight asked of the router and not yet confirmed.
    pub pending_weight: Option<u8>,
    /// What the rollout is waiting for (bake, samples, approvals, ...).
    pub waiting_for: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TriggerView {
    pub name: String,
    pub verdict: TriggerVerdict,
    pub estimate: Option<f64>,
    pub boundary: Option<f64>,
    pub samples: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GateView {
    pub name: String,
    pub shown: bool,
    pub before: u8,
}

/// `GET /v1/rollouts/{id}`.
pub fn rollout_view(
    row: &RolloutRow,
    rollout: &Rollout<Monitor>,
    incident: Option<&str>,
    driver: Option<&DriverStatus>,
    now: Timestamp,
) -> Value {
    let policy = rollout.policy();
    let latest = rollout.latest();
    let triggers: Vec<TriggerView> = policy
        .triggers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let r = latest.triggers.get(i);
            TriggerView {
                name: t.name.clone(),
                verdict: r.map(|r| r.verdict).unwrap_or_default(),
                estimate: r.and_then(|r| r.estimate).filter(|x| x.is_finite()),
                boundary: r.and_then(|r| r.boundary).filter(|x| x.is_finite()),
                samples: r.map(|r| r.samples).unwrap_or(0),
            }
        })
        .collect();
    let gates: Vec<GateView> = policy
        .gates
        .iter()
        .map(|g| GateView {
            name: g.name.clone(),
            shown: rollout.gates_shown().contains(&g.name),
            before: g.before.percent(),
        })
        .collect();
    let approvals = match rollout.approval() {
        Some(wait) => {
            let roles = match policy.steps.get(wait.step) {
                Some(crate::policy::Step::Approval(a)) => a.roles.clone(),
                _ => Vec::new(),
            };
            json!({
                "step": wait.step,
                "since": rfc3339(wait.since),
                "deadline": wait.deadline.map(rfc3339),
                "roles": roles,
                "given": wait.given.iter().map(|(role, a)| json!({
                    "role": role, "actor": a.actor, "at": rfc3339(a.at),
                    "reason": a.reason, "ticket": a.ticket,
                })).collect::<Vec<_>>(),
            })
        }
        None => Value::Null,
    };
    let spec = rollout.spec();
    let phase = rollout.phase();
    json!({
        "id": spec.id,
        "service": spec.service,
        "policy": policy.name,
        "policy_version": row.policy_version,
        "baseline": spec.baseline,
        "canary": spec.canary,
        "change_type": spec.change_type.as_str(),
        "dry_run": spec.dry_run,
        "state": phase.as_str(),
        "outcome": phase.is_terminal().then(|| phase.as_str()),
        "reason": rollout.reason(),
        "step": rollout.step(),
        "steps": policy.steps.len(),
        "weight": rollout.weight().percent(),
        "started_at": rfc3339(rollout.started_at()),
        "started_by": spec.started_by,
        "ticket": spec.ticket,
        "updated_at": rfc3339(row.updated_at),
        "time_in_state_s": now.saturating_since(row.updated_at).as_secs(),
        "triggers": triggers,
        "gates": gates,
        "approvals": approvals,
        "canary_requests_in_step": latest.canary_requests_in_stage,
        "fired": rollout.fired().map(|(name, _)| name.clone()),
        "incident": incident,
        "waiting_for": (!phase.is_terminal()).then(|| rollout.waiting_for(now)),
        "source": driver.map(|d| &d.source),
        "router_error": driver.and_then(|d| d.router_error.clone()),
        "pending_weight": driver.and_then(|d| d.pending_weight),
    })
}

/// `GET /v1/incidents/{id}`.
pub fn incident_view(i: &Incident, review: Option<Value>) -> Value {
    json!({
        "id": i.id,
        "rollout_id": i.rollout_id,
        "service": i.service,
        "trigger": i.trigger,
        "severity": i.severity,
        "opened_at": rfc3339(i.opened_at),
        "policy_version": i.policy_version,
        "evidence": i.evidence,
        "timeline": i.timeline,
        "router_result": i.router_result,
        "status": i.status.as_str(),
        "review_note": i.review_note,
        "reviewed_by": i.reviewed_by,
        "reviewed_at": i.reviewed_at.map(rfc3339),
        "review": review,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_render_as_rfc3339_utc() {
        assert_eq!(
            rfc3339(Timestamp::from_millis(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
    }
}

//! The JSON objects the API and the CLI's `--json` print (PRODUCT.md
//! section 7): one shape per resource, the same in single and list answers.

use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Rollout, TriggerVerdict};
use crate::monitor::{Monitor, TriggerEvidence};
use crate::store::{Incident, Notification, RolloutRow};
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
    /// When the current (phase, step) began, as this daemon saw it.
    pub step_since: Option<Timestamp>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TriggerView {
    pub name: String,
    /// `statistical` (an anytime-valid test) or `objective` (a rule).
    pub kind: &'static str,
    pub verdict: TriggerVerdict,
    /// The tested quantity (a rate, a ratio, a quantile in ms, seconds
    /// without data, ...).
    pub estimate: Option<f64>,
    /// What `statistic` is compared with: the log boundary `ln(K/alpha)`
    /// for a statistical trigger, the rule's limit for an objective one.
    pub boundary: Option<f64>,
    /// The log e-value for a statistical trigger, the measured value for
    /// an objective one: the trigger fires when it reaches `boundary`.
    pub statistic: Option<f64>,
    /// The anytime-valid interval of `estimate` (statistical triggers).
    pub interval: Option<(Option<f64>, Option<f64>)>,
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
            let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
            let (kind, statistic, interval) = match r.and_then(|r| r.evidence.as_ref()) {
                Some(TriggerEvidence::Statistical(e)) => (
                    "statistical",
                    finite(Some(e.log_e_value)),
                    Some((finite(e.interval.lower), finite(e.interval.upper))),
                ),
                Some(TriggerEvidence::Objective(o)) => {
                    ("objective", finite(Some(o.verdict.observed)), None)
                }
                None => (
                    if t.is_statistical() {
                        "statistical"
                    } else {
                        "objective"
                    },
                    None,
                    None,
                ),
            };
            TriggerView {
                name: t.name.clone(),
                kind,
                verdict: r.map(|r| r.verdict).unwrap_or_default(),
                estimate: finite(r.and_then(|r| r.estimate)),
                boundary: finite(r.and_then(|r| r.boundary)),
                statistic,
                interval,
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
        "time_in_step_s": now
            .saturating_since(driver.and_then(|d| d.step_since).unwrap_or(row.updated_at))
            .as_secs(),
        "triggers": triggers,
        "gates": gates,
        "approvals": approvals,
        "canary_requests_in_step": latest.canary_requests_in_step,
        "fired": rollout.fired().map(|(name, _)| name.clone()),
        "incident": incident,
        "waiting_for": (!phase.is_terminal()).then(|| rollout.waiting_for(now)),
        "source": driver.map(|d| &d.source),
        "router_error": driver.and_then(|d| d.router_error.clone()),
        "pending_weight": driver.and_then(|d| d.pending_weight),
    })
}

/// `GET /v1/incidents/{id}`: with the post-incident review (emergency
/// changes) and every notification with its delivery attempts.
pub fn incident_view(i: &Incident, review: Option<Value>, notifications: &[Notification]) -> Value {
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
        "notifications": notifications.iter().map(|n| json!({
            "target": n.target,
            "attempts": n.attempts,
            "delivered_at": n.delivered_at.map(rfc3339),
            "last_error": n.last_error,
            "last_attempt_at": n.last_attempt_at.map(rfc3339),
        })).collect::<Vec<_>>(),
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

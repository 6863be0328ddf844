//! The API's objects (`crate::wire`) built from the daemon's state: a
//! rollout from its engine state, row and driver status; an incident with
//! its review and deliveries, and the audit answers, from the store. The API
//! serves them, and the command line reads a data dir through the same
//! functions. No JSON is built here: the wire types write it.

use std::sync::Arc;

use crate::engine::{Assessment, Rollout, TriggerReading};
use crate::monitor::words::{evidence_line, gate_status, shown_by_gate, trigger_status};
use crate::monitor::{Monitor, TriggerEvidence};
use crate::policy::no_harm::IMPLIED_PREFIX;
use crate::policy::{Gate, Trigger};
use crate::store::{self, RolloutRow, Store};
use crate::time::Timestamp;
use crate::wire::{
    self, ApprovalGiven, Approvals, GateView, Refusal, SourceHealth, TriggerKind, TriggerView,
    rfc3339,
};

/// What the driver knows that the engine does not.
#[derive(Clone, Debug, Default, PartialEq)]
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

/// `GET /v1/rollouts/{id}`, for a rollout read from the store.
pub fn rollout_view(
    row: &RolloutRow,
    rollout: &Rollout<Monitor>,
    incident: Option<&str>,
    driver: Option<&DriverStatus>,
    now: Timestamp,
) -> wire::Rollout {
    let policy = rollout.policy();
    let mut view = rollout_facts(row, rollout, incident, driver, now);
    add_words(&mut view, &policy.triggers, &policy.gates, rollout.latest());
    view
}

/// A live rollout as its driver last published it, after every step: the
/// view without its triggers' and gates' states and summaries, and the
/// readings they are written from. The words are written when the view
/// is read ([`LiveView::render`]), on the reader's thread: written after
/// every window, they were about two thirds of the cost of publishing a
/// step (issue #19), for views that are read far less often than that.
#[derive(Clone, Debug)]
pub struct LiveView {
    facts: wire::Rollout,
    checks: Arc<Checks>,
    latest: Assessment<TriggerEvidence>,
}

/// A rollout's triggers and gates, as its policy has them, shared by its
/// driver's views (a rollout's policy does not change while it runs).
#[derive(Debug)]
pub struct Checks {
    triggers: Vec<Trigger>,
    gates: Vec<Gate>,
}

impl Checks {
    pub fn of(rollout: &Rollout<Monitor>) -> Arc<Checks> {
        let policy = rollout.policy();
        Arc::new(Checks {
            triggers: policy.triggers.clone(),
            gates: policy.gates.clone(),
        })
    }
}

impl LiveView {
    /// `checks` are [`Checks::of`] the same rollout.
    pub fn new(
        row: &RolloutRow,
        rollout: &Rollout<Monitor>,
        checks: &Arc<Checks>,
        incident: Option<&str>,
        driver: Option<&DriverStatus>,
        now: Timestamp,
    ) -> LiveView {
        LiveView {
            facts: rollout_facts(row, rollout, incident, driver, now),
            checks: checks.clone(),
            latest: rollout.latest().clone(),
        }
    }

    /// The view without its triggers and gates (those are empty), for
    /// readers of a field or two.
    pub fn facts(&self) -> &wire::Rollout {
        &self.facts
    }

    /// The view the API serves: what [`rollout_view`] gives for the same
    /// rollout at the same moment.
    pub fn render(&self) -> wire::Rollout {
        let mut view = self.facts.clone();
        add_words(
            &mut view,
            &self.checks.triggers,
            &self.checks.gates,
            &self.latest,
        );
        view
    }
}

/// Everything of the view but its triggers and gates.
fn rollout_facts(
    row: &RolloutRow,
    rollout: &Rollout<Monitor>,
    incident: Option<&str>,
    driver: Option<&DriverStatus>,
    now: Timestamp,
) -> wire::Rollout {
    let policy = rollout.policy();
    let spec = rollout.spec();
    let phase = rollout.phase();
    let latest = rollout.latest();
    wire::Rollout {
        approvals: approvals(rollout),
        baseline: spec.baseline.clone(),
        canary: spec.canary.clone(),
        canary_requests_in_step: latest.canary_requests_in_step,
        change_type: spec.change_type,
        dry_run: spec.dry_run,
        fired: rollout.fired().map(|(name, _)| name.clone()),
        gates: Vec::new(),
        id: spec.id.clone(),
        incident: incident.map(str::to_string),
        // Filled from the store by `notifications` where it is read.
        notifications: Vec::new(),
        outcome: phase.is_terminal().then_some(phase),
        pending_weight: driver.and_then(|d| d.pending_weight),
        policy: policy.name.clone(),
        policy_version: row.policy_version.clone(),
        reason: rollout.reason().to_string(),
        router_error: driver.and_then(|d| d.router_error.clone()),
        service: spec.service.clone(),
        source: driver.map(|d| d.source.clone()),
        started_at: rfc3339(rollout.started_at()),
        started_by: spec.started_by.clone(),
        state: phase,
        step: rollout.step(),
        steps: policy.steps.len(),
        ticket: spec.ticket.clone(),
        time_in_step_s: now
            .saturating_since(driver.and_then(|d| d.step_since).unwrap_or(row.updated_at))
            .as_secs(),
        triggers: Vec::new(),
        updated_at: rfc3339(row.updated_at),
        waiting_for: (!phase.is_terminal()).then(|| rollout.waiting_for(now)),
        weight: rollout.weight().percent(),
    }
}

/// Each gate and trigger in words, from the latest readings.
fn add_words(
    view: &mut wire::Rollout,
    triggers: &[Trigger],
    gates: &[Gate],
    latest: &Assessment<TriggerEvidence>,
) {
    view.gates = gates
        .iter()
        .enumerate()
        .map(|(i, g)| {
            // As of the latest assessment: gates are not latched.
            let reading = latest.gates.get(i).cloned().unwrap_or_default();
            let words = gate_status(g, &reading);
            GateView {
                before: g.before.percent(),
                name: g.name.clone(),
                shown: reading.shown,
                state: words.state,
                summary: words.summary,
            }
        })
        .collect();
    view.triggers = trigger_views(triggers, latest, &view.gates);
}

/// Each trigger of the policy against its boundary, from the latest
/// readings; a trigger whose implied `no-harm:` gate is shown says so
/// (see [`shown_by_gate`]).
fn trigger_views(
    triggers: &[Trigger],
    latest: &Assessment<TriggerEvidence>,
    gates: &[GateView],
) -> Vec<TriggerView> {
    triggers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut view = trigger_view(t, latest.triggers.get(i));
            let implied = gates.iter().find(|g| {
                g.name
                    .strip_prefix(IMPLIED_PREFIX)
                    .is_some_and(|n| n == t.name)
            });
            if let Some(g) = implied {
                shown_by_gate(
                    &mut view.state,
                    &mut view.summary,
                    &g.name,
                    g.state,
                    &g.summary,
                );
            }
            view
        })
        .collect()
}

/// One trigger against its boundary, from its latest reading (none yet:
/// no data). Non-finite numbers are shown as absent.
pub fn trigger_view(t: &Trigger, r: Option<&TriggerReading<TriggerEvidence>>) -> TriggerView {
    let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
    let (kind, statistic) = match r.and_then(|r| r.evidence.as_ref()) {
        Some(TriggerEvidence::Statistical(e)) => {
            (TriggerKind::Statistical, finite(Some(e.log_e_value)))
        }
        Some(TriggerEvidence::Objective(o)) => {
            (TriggerKind::Objective, finite(Some(o.verdict.observed)))
        }
        None if t.is_statistical() => (TriggerKind::Statistical, None),
        None => (TriggerKind::Objective, None),
    };
    let status = trigger_status(t, r.unwrap_or(&TriggerReading::default()));
    TriggerView {
        boundary: finite(r.and_then(|r| r.boundary)),
        // On the scale and in the unit of `tolerance`.
        estimate: finite(status.estimate),
        interval: status.interval,
        kind,
        name: t.name.clone(),
        progress: finite(status.progress),
        samples: r.map(|r| r.samples).unwrap_or(0),
        state: status.state,
        statistic,
        summary: status.summary,
        tolerance: finite(status.tolerance),
        unit: Some(status.unit),
        verdict: r.map(|r| r.verdict).unwrap_or_default(),
        note: match r.and_then(|r| r.evidence.as_ref()) {
            Some(TriggerEvidence::Statistical(e)) => e.caveat.as_deref().map(str::to_owned),
            _ => None,
        },
    }
}

/// The approval step the rollout waits at, if it does.
fn approvals(rollout: &Rollout<Monitor>) -> Option<Approvals> {
    let wait = rollout.approval()?;
    let roles = match rollout.policy().steps.get(wait.step) {
        Some(crate::policy::Step::Approval(a)) => a.roles.clone(),
        _ => Vec::new(),
    };
    Some(Approvals {
        deadline: wait.deadline.map(rfc3339),
        given: wait
            .given
            .iter()
            .map(|(role, a)| ApprovalGiven {
                actor: a.actor.clone(),
                at: rfc3339(a.at),
                reason: a.reason.clone(),
                role: role.clone(),
                ticket: a.ticket.clone(),
            })
            .collect(),
        roles,
        since: rfc3339(wait.since),
        step: wait.step,
    })
}

/// Every incident, oldest first, as the API shows it.
pub fn incidents(store: &Store) -> Result<Vec<wire::Incident>, Refusal> {
    store
        .incidents()?
        .iter()
        .map(|i| incident(store, &i.id))
        .collect()
}

/// A rollout's deliveries per receiver (or incident webhook URL), in the
/// order each was first queued: the `notifications` of its view.
pub fn notifications(
    store: &Store,
    rollout_id: &str,
) -> Result<Vec<wire::NotificationStatus>, Refusal> {
    let mut out: Vec<wire::NotificationStatus> = Vec::new();
    for n in store.notifications_for_rollout(rollout_id)? {
        let receiver = n
            .receiver
            .clone()
            .unwrap_or_else(|| "incident-webhook".into());
        let at = match out
            .iter()
            .position(|s| s.receiver == receiver && s.target == n.target)
        {
            Some(i) => i,
            None => {
                out.push(wire::NotificationStatus {
                    receiver,
                    target: n.target.clone(),
                    pending: 0,
                    delivered: 0,
                    failed: 0,
                    last_error: None,
                    last_attempt_at: None,
                    next_attempt_at: None,
                    last_delivered_at: None,
                });
                out.len() - 1
            }
        };
        let s = &mut out[at];
        if n.delivered() {
            s.delivered += 1;
            s.last_delivered_at = n.delivered_at.map(rfc3339);
        } else if n.failed() {
            s.failed += 1;
            s.last_error = n.last_error.clone();
        } else {
            s.pending += 1;
            if n.last_error.is_some() {
                s.last_error = n.last_error.clone();
            }
            if s.next_attempt_at.is_none() {
                s.next_attempt_at = n.next_attempt_at.map(rfc3339);
            }
        }
        if n.last_attempt_at.is_some() {
            s.last_attempt_at = n.last_attempt_at.map(rfc3339);
        }
    }
    // A line whose deliveries all went through carries no stale error.
    for s in &mut out {
        if s.pending == 0 && s.failed == 0 {
            s.last_error = None;
        }
    }
    Ok(out)
}

/// `GET /v1/incidents/{id}`: with the rollout's latest post-incident review
/// (emergency changes) and every notification of this incident with its
/// delivery attempts.
pub fn incident(store: &Store, id: &str) -> Result<wire::Incident, Refusal> {
    let i = store
        .incident(id)?
        .ok_or_else(|| Refusal::not_found(format!("incident {id} not found")))?;
    let review = store
        .reviews_for_rollout(&i.rollout_id)?
        .into_iter()
        .last()
        .map(review_view);
    let notifications = store
        .notifications_for_rollout(&i.rollout_id)?
        .into_iter()
        .filter(|n| n.incident_id.as_deref() == Some(id))
        .map(|n| wire::Notification {
            attempts: n.attempts,
            delivered_at: n.delivered_at.map(rfc3339),
            last_attempt_at: n.last_attempt_at.map(rfc3339),
            last_error: n.last_error,
            target: n.target,
        })
        .collect();
    // The fired trigger as the rollout's policy wrote it, for the evidence
    // in words; a checkpoint that no longer reads leaves the words plainer.
    let trigger = store
        .checkpoint::<Monitor>(&i.rollout_id)
        .ok()
        .and_then(|c| {
            c.rollout
                .policy()
                .triggers
                .iter()
                .find(|t| t.name == i.trigger)
                .cloned()
        });
    incident_view(i, review, notifications, trigger.as_ref())
}

/// An incident's evidence in one line: the renderer of
/// `monitor::words` for a trigger's, the router's failure in words.
fn evidence_summary(evidence: &wire::IncidentEvidence, trigger: Option<&Trigger>) -> String {
    match evidence {
        wire::IncidentEvidence::Statistical(e) => format!(
            "fired: {}",
            evidence_line(trigger, Some(&TriggerEvidence::Statistical(e.clone())))
        ),
        wire::IncidentEvidence::Objective(o) => format!(
            "fired: {}",
            evidence_line(trigger, Some(&TriggerEvidence::Objective(o.clone())))
        ),
        wire::IncidentEvidence::Router(f) => format!(
            "the router did not set the canary weight to {}%{} after {} attempt{}: {}{}",
            f.wanted_weight,
            f.router
                .as_deref()
                .map_or(String::new(), |r| format!(" ({r})")),
            f.attempts,
            if f.attempts == 1 { "" } else { "s" },
            f.error,
            if f.still_retrying {
                "; still retrying"
            } else {
                ""
            }
        ),
    }
}

/// The stored incident's JSON columns (evidence, timeline, router result)
/// read into their wire types; one that does not read is an internal error
/// naming the incident.
fn incident_view(
    i: store::Incident,
    review: Option<wire::Review>,
    notifications: Vec<wire::Notification>,
    trigger: Option<&Trigger>,
) -> Result<wire::Incident, Refusal> {
    fn column<T: serde::de::DeserializeOwned>(
        id: &str,
        name: &str,
        v: serde_json::Value,
    ) -> Result<T, Refusal> {
        serde_json::from_value(v).map_err(|e| {
            Refusal::internal(format!(
                "incident {id}: its stored {name} does not read: {e}"
            ))
        })
    }
    let router_result = match i.router_result {
        Some(v) => Some(column(&i.id, "router result", v)?),
        None => None,
    };
    let evidence: wire::IncidentEvidence = column(&i.id, "evidence", i.evidence)?;
    Ok(wire::Incident {
        evidence: wire::EvidenceEntry {
            summary: evidence_summary(&evidence, trigger),
            evidence,
        },
        notifications,
        opened_at: rfc3339(i.opened_at),
        policy_version: i.policy_version,
        review,
        review_note: i.review_note,
        reviewed_at: i.reviewed_at.map(rfc3339),
        reviewed_by: i.reviewed_by,
        rollout_id: i.rollout_id,
        router_result,
        service: i.service,
        severity: i.severity,
        status: match i.status {
            store::IncidentStatus::Open => wire::IncidentStatus::Open,
            store::IncidentStatus::Reviewed => wire::IncidentStatus::Reviewed,
        },
        timeline: column(&i.id, "timeline", i.timeline)?,
        trigger: i.trigger,
        id: i.id,
    })
}

fn review_view(r: store::Review) -> wire::Review {
    wire::Review {
        closed_at: r.closed_at,
        closed_by: r.closed_by,
        id: r.id,
        note: r.note,
        opened_at: r.opened_at,
        reason: r.reason,
        rollout_id: r.rollout_id,
        status: match r.status {
            store::ReviewStatus::Open => wire::ReviewStatus::Open,
            store::ReviewStatus::Closed => wire::ReviewStatus::Closed,
        },
        ticket: r.ticket,
    }
}

/// `GET /v1/audit`: the whole log, oldest first.
pub fn audit_log(store: &Store) -> Result<Vec<wire::AuditEntry>, store::StoreError> {
    Ok(store
        .audit_log()?
        .into_iter()
        .map(|e| wire::AuditEntry {
            seq: e.seq,
            tx: e.tx,
            at: e.at,
            actor: e.actor,
            action: e.action,
            rollout_id: e.rollout_id,
            reason: e.reason,
            ticket: e.ticket,
            details: e.details,
            mac: e.mac,
        })
        .collect())
}

/// `GET /v1/audit/verify`: the chain checked from the first entry.
pub fn audit_verification(store: &Store) -> Result<wire::AuditVerification, store::StoreError> {
    let v = store.verify()?;
    let ok = v.is_ok();
    Ok(wire::AuditVerification {
        ahead_of_head: v.ahead_of_head,
        broken: v.broken.map(|b| wire::BrokenLink {
            detail: b.detail,
            seq: b.seq,
        }),
        entries: v.entries,
        head: wire::AuditHead {
            hash: v.last.to_string(),
            seq: v.last.seq,
        },
        ok,
        notes: v.notes,
        disagreements: v.disagreements.iter().map(ToString::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire's own RFC 3339 writer against jiff's, which the API used
    /// before: spread over the range a timestamp can take, every day
    /// boundary of the leap years around 2000, and the last second jiff
    /// writes.
    #[test]
    fn instants_render_as_jiff_renders_them() {
        let jiff = |ms: u64| match jiff::Timestamp::from_millisecond(ms as i64) {
            Ok(ts) => format!("{ts:.3}"),
            Err(_) => format!("{ms}ms"),
        };
        let last = jiff::Timestamp::MAX.as_millisecond() as u64;
        let spread = (0..20_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % (last + 1000));
        let days = (10_900..11_700u64).map(|d| d * 86_400_000 + d % 1000);
        let edge = last - 1002..last + 3;
        for ms in spread.chain(days).chain(edge) {
            assert_eq!(rfc3339(Timestamp::from_millis(ms)), jiff(ms), "{ms}");
        }
    }

    /// A live rollout's view, its words written when it is read, is the
    /// view written at once from the same state: the PRODUCT.md example
    /// policy (every trigger kind, gates written and implied) through
    /// 600 windows of 30 s in which the canary's errors climb until a
    /// trigger fires, compared at every step, from gathering to fired.
    #[test]
    fn a_live_view_renders_as_the_view_written_at_once() {
        use crate::engine::{Effect, Input};
        use crate::policy::{Weight, parse_policy};
        use crate::stats::IntervalSnapshot;

        let text = include_str!("../../simulator/policies/product-example.yaml");
        let policy = parse_policy("product-example.yaml", text.as_bytes()).unwrap();
        let monitor = Monitor::new(&policy).unwrap();
        let spec = super::super::tests::web_spec();
        let mut now = Timestamp::from_millis(1_900_000_000_000);
        let mut rollout = Rollout::new(spec.clone(), policy, monitor, now).unwrap();
        let row = RolloutRow {
            id: spec.id.clone(),
            service: spec.service.clone(),
            policy_name: "recommender-ctr".into(),
            policy_version: "v-hash".into(),
            spec,
            phase: rollout.phase(),
            outcome: None,
            reason: String::new(),
            step: 0,
            weight: Weight::ZERO,
            created_at: now,
            updated_at: now,
            checkpoint_seq: 0,
            journal_len: 0,
        };
        let checks = Checks::of(&rollout);
        let status = DriverStatus::default();
        let mut states = std::collections::BTreeSet::new();
        let mut input = Input::Tick;
        for i in 0..600u64 {
            rollout.handle(now, input).unwrap();
            while let Some(e) = rollout.poll_effect() {
                if let Effect::SetWeight { weight, .. } = e {
                    rollout
                        .handle(
                            now,
                            Input::RouterAck {
                                weight,
                                error: None,
                            },
                        )
                        .unwrap();
                }
            }
            let live = LiveView::new(&row, &rollout, &checks, Some("inc-1"), Some(&status), now);
            let at_once = rollout_view(&row, &rollout, Some("inc-1"), Some(&status), now);
            assert_eq!(live.render(), at_once, "window {i}");
            states.extend(at_once.triggers.iter().map(|t| format!("{:?}", t.state)));
            states.extend(at_once.gates.iter().map(|g| format!("{:?}", g.state)));
            if rollout.phase().is_terminal() {
                break;
            }
            let end = now + std::time::Duration::from_secs(30);
            let mut snapshot = IntervalSnapshot::new(now, end);
            for (arm, errors) in [(&mut snapshot.baseline, 10), (&mut snapshot.canary, 10 + i)] {
                arm.add("requests", 2_000);
                arm.add("errors", errors);
                arm.add("impressions", 2_000);
                arm.add("clicks", 100);
                arm.add_group("requests", "a", 1_000);
                arm.add_group("requests", "b", 1_000);
                arm.add_group("approvals", "a", 500);
                arm.add_group("approvals", "b", 500);
                arm.add("approvals", 1_000);
                for ms in [20.0, 40.0, 80.0, 120.0] {
                    arm.latency_mut("latency_ms").record_ms(ms);
                }
            }
            now = end;
            input = Input::Data { snapshot };
        }
        assert!(rollout.fired().is_some(), "no trigger fired");
        assert!(states.len() >= 3, "states seen: {states:?}");
    }

    /// What the daemon writes and what a local CLI looks for.
    #[test]
    fn the_local_contract_matches_the_daemons_files() {
        assert_eq!(
            super::super::config::DEFAULT_DATA_DIR,
            wire::DEFAULT_DATA_DIR
        );
        assert_eq!(super::super::auth::ADMIN_TOKEN_FILE, wire::ADMIN_TOKEN_FILE);
    }
}

//! Everything that writes, except outbox attempts (`outbox.rs`): creating a
//! rollout, committing one engine step (its outbox rows included), reviews
//! and standalone audit entries. Each public call is one SQLite transaction
//! that also appends its audit entries to the chain; the head file is
//! replaced after the commit (see `audit.rs` for the crash window). Nothing
//! returned from here has been acted on yet: the caller acts only after
//! the call returns `Ok`.

use serde_json::json;

use super::audit::{self, AuditKey, Breakage, BrokenLink, Head, NewAudit, RawEntry};
use super::db::{Begin, Dialect, Sql, Tx, params, unique_violation};
use super::outbox::{NewNotice, queue_delivery, queue_hook, queue_notice};
use super::records::{IncidentStatus, Review, ReviewStatus, RolloutRow, event_of_notify, ms};
use super::{IdGen, Incident, Place, Result, Store, StoreError};
use crate::engine::{Analysis, ENGINE, Effect, Input, Rollout};
use crate::policy::{Notify, Weight};
use crate::routers::hooks::HookEvent;
use crate::time::Timestamp;

/// One engine step, after the rollout handled `input` at `at` and the
/// caller drained every effect with `poll_effect`.
#[derive(Debug)]
pub struct EngineStep<'a, A: Analysis> {
    pub at: Timestamp,
    pub input: &'a Input<A::Snapshot>,
    pub effects: &'a [Effect<A::Evidence>],
    /// The rollout after the step: its phase, reason, step and weight are
    /// stored, and with `checkpoint` its whole state.
    pub rollout: &'a Rollout<A>,
    /// Store the rollout as the new checkpoint (e.g. when the effects hold
    /// `Effect::Checkpoint`). Restore replays the inputs after it.
    pub checkpoint: bool,
    /// Audit entries beyond the ones the store derives from the step.
    pub audit: &'a [NewAudit],
}

/// What a committed step wrote; the caller may now act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The journal seq of the step's input; its effects follow it.
    pub input_seq: u64,
    pub last_seq: u64,
    /// Incidents opened (one per `OpenIncident` effect, in order).
    pub incidents: Vec<String>,
    /// Reviews opened (one per `OpenReview` effect, in order).
    pub reviews: Vec<String>,
    /// Webhook deliveries to make: incidents' policy webhooks, then the
    /// lifecycle events' deliveries.
    pub notifications: Vec<i64>,
    /// Lifecycle hooks queued (the step ended the rollout).
    pub hooks: Vec<i64>,
    /// The audit chain's end after the commit.
    pub audit_head: Head,
    /// False when `audit.head` could not be written after the commit: the
    /// step is committed, but no further commit starts until it is.
    pub head_written: bool,
}

/// The audit entries the store writes for a step, so that every command,
/// decision and event is in the log without the caller remembering to.
fn derived_audit<A: Analysis>(
    rollout_id: &str,
    at: Timestamp,
    input: &Input<A::Snapshot>,
    effects: &[Effect<A::Evidence>],
) -> Result<Vec<NewAudit>> {
    let mut out = Vec::new();
    let entry =
        |actor: &str, action: &str, reason: String, ticket: Option<String>, details| NewAudit {
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            rollout_id: Some(rollout_id.to_string()),
            reason,
            ticket,
            details,
        };
    if let Input::Command { command } = input {
        let by = command.actor();
        out.push(entry(
            &by.name,
            &format!("rollout.{}", command.name()),
            by.reason.clone(),
            by.ticket.clone(),
            serde_json::to_value(command)?,
        ));
    }
    for effect in effects {
        match effect {
            Effect::Rollback {
                trigger, dry_run, ..
            } => out.push(entry(
                ENGINE,
                "rollout.rollback",
                format!("trigger {trigger} fired"),
                None,
                json!({ "trigger": trigger, "dry_run": dry_run }),
            )),
            Effect::Notify(event) => out.push(entry(
                &event.actor,
                "rollout.event",
                event.message.clone(),
                event.ticket.clone(),
                serde_json::to_value(event)?,
            )),
            // Incidents and reviews get their entries once their ids exist.
            _ => {}
        }
    }
    Ok(out)
}

impl Store {
    /// Store a new rollout (before its first step) with its initial
    /// checkpoint, and audit who started it. Refuses a second active rollout
    /// of the same service.
    pub fn create_rollout<A: Analysis>(
        &mut self,
        rollout: &Rollout<A>,
        policy_version: &str,
        at: Timestamp,
    ) -> Result<RolloutRow> {
        self.create_rollout_with(rollout, policy_version, at, None)
            .map(|(row, _)| row)
    }

    /// [`Store::create_rollout`], and with `lease` (owner, duration) the
    /// rollout's lease taken in the same transaction: no other daemon can
    /// claim it between its creation and its first step. Returns the
    /// lease's epoch with it.
    pub(super) fn create_rollout_with<A: Analysis>(
        &mut self,
        rollout: &Rollout<A>,
        policy_version: &str,
        at: Timestamp,
        lease: Option<(&str, std::time::Duration)>,
    ) -> Result<(RolloutRow, Option<u64>)> {
        let spec = rollout.spec();
        if spec.id.is_empty() {
            return Err(StoreError::Invalid("rollout id: must not be empty".into()));
        }
        if spec.service.is_empty() {
            return Err(StoreError::Invalid("service: must not be empty".into()));
        }
        if let Some(active) = self.active_rollout(&spec.service)? {
            return Err(StoreError::ServiceBusy {
                service: spec.service.clone(),
                rollout_id: active.id,
            });
        }
        if self.rollout(&spec.id)?.is_some() {
            return Err(StoreError::Invalid(format!(
                "rollout id: {} already exists",
                spec.id
            )));
        }
        let spec_json = serde_json::to_string(spec)?;
        let checkpoint = serde_json::to_string(&rollout.checkpoint())?;
        let outcome = rollout
            .phase()
            .is_terminal()
            .then(|| rollout.phase().as_str());
        let audit = vec![NewAudit {
            at,
            actor: spec.started_by.clone(),
            action: "rollout.start".into(),
            rollout_id: Some(spec.id.clone()),
            reason: spec.reason.clone().unwrap_or_default(),
            ticket: spec.ticket.clone(),
            details: json!({
                "service": spec.service,
                "baseline": spec.baseline,
                "canary": spec.canary,
                "policy": rollout.policy().name,
                "policy_version": policy_version,
                "change_type": spec.change_type,
                "dry_run": spec.dry_run,
            }),
        }];
        let written = self.write(|tx, _ids| {
            tx.execute(
                "INSERT INTO rollouts (id, service, policy_name, policy_version, spec, phase, outcome,
                    reason, step, weight, created_at, updated_at, checkpoint_seq, journal_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, 0, 0)",
                params![
                    spec.id,
                    spec.service,
                    rollout.policy().name,
                    policy_version,
                    spec_json,
                    rollout.phase().as_str(),
                    outcome,
                    rollout.reason(),
                    rollout.step(),
                    rollout.weight().percent(),
                    ms(at),
                ],
            )?;
            tx.execute(
                "INSERT INTO checkpoints (rollout_id, checkpoint) VALUES (?1, ?2)",
                params![spec.id, checkpoint],
            )?;
            queue_hook(tx, &spec.id, HookEvent::OnStart, ms(at))?;
            if let Some(event) = HookEvent::ending(rollout.phase()) {
                queue_hook(tx, &spec.id, event, ms(at))?;
            }
            let epoch = match lease {
                Some((owner, duration)) => super::leases::acquire(tx, &spec.id, owner, duration)?,
                None => None,
            };
            Ok((epoch, audit))
        });
        let epoch = match written {
            Ok((epoch, _)) => {
                self.rollout_created();
                epoch
            }
            // Another daemon on the same database inserted the service's
            // active rollout (or this id) after the checks above: the
            // unique index refused ours. Say so as the checks do.
            Err(e) if unique_violation(&e) => {
                let active: Option<String> = self.db.query_opt(
                    "SELECT id FROM rollouts WHERE service = ?1 AND outcome IS NULL",
                    params![spec.service],
                    |r| r.get(0),
                )?;
                if let Some(rollout_id) = active {
                    return Err(StoreError::ServiceBusy {
                        service: spec.service.clone(),
                        rollout_id,
                    });
                }
                if self.rollout(&spec.id)?.is_some() {
                    return Err(StoreError::Invalid(format!(
                        "rollout id: {} already exists",
                        spec.id
                    )));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let row = self
            .rollout(&spec.id)?
            .ok_or_else(|| StoreError::NotFound {
                what: "rollout",
                id: spec.id.clone(),
            })?;
        Ok((row, epoch))
    }

    /// Persist one engine step in one transaction: the input and every
    /// effect in the journal, the rollout's new state (and checkpoint when
    /// asked), incidents and reviews the effects open, webhook deliveries
    /// to make, the incident timeline and router result, and the audit
    /// entries. Act on the effects only after this returns `Ok`.
    pub fn commit_step<A: Analysis>(&mut self, step: &EngineStep<'_, A>) -> Result<Committed> {
        let prepared = step.prepare()?;
        let mut all = self.commit_prepared(std::slice::from_ref(&prepared))?;
        Ok(all.pop().expect("one step in, one committed out"))
    }

    /// Group commit: several prepared steps (of any rollouts) in one
    /// transaction and one fsync, in order. All or none are committed.
    pub fn commit_prepared(&mut self, steps: &[PreparedStep]) -> Result<Vec<Committed>> {
        let (mut committed, head_written) = self.write(|tx, ids| {
            let mut out = Vec::with_capacity(steps.len());
            let mut audit = Vec::new();
            for step in steps {
                let (c, a) = apply_prepared(tx, ids, step)?;
                out.push(c);
                audit.extend(a);
            }
            Ok((out, audit))
        })?;
        for c in &mut committed {
            c.audit_head = self.head;
            c.head_written = head_written;
        }
        Ok(committed)
    }

    /// An incident of its own for a rollback the router could not apply
    /// (the daemon keeps retrying): trigger `router`, the router's error as
    /// evidence, the rollout's timeline so far, and its webhooks queued.
    /// Returns the incident's id and the notifications to deliver.
    pub fn open_router_incident(
        &mut self,
        rollout_id: &str,
        severity: &str,
        notify: &[String],
        evidence: serde_json::Value,
        at: Timestamp,
    ) -> Result<(String, Vec<i64>)> {
        let id = rollout_id.to_string();
        let (out, _) = self.write(|tx, ids| {
            let (service, policy_version): (String, String) = tx
                .query_opt(
                    "SELECT service, policy_version FROM rollouts WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .ok_or_else(|| StoreError::NotFound {
                    what: "rollout",
                    id: id.clone(),
                })?;
            let incident = PreparedIncident {
                trigger: "router".into(),
                severity: severity.into(),
                notify: notify.to_vec(),
                evidence: evidence.clone(),
                opened_at: at,
            };
            let (incident_id, notifications) =
                insert_incident(tx, ids, &id, &service, &policy_version, &incident, ms(at))?;
            let audit = vec![NewAudit {
                at,
                actor: ENGINE.into(),
                action: "incident.open".into(),
                rollout_id: Some(id.clone()),
                reason: "the rollback could not be applied by the router".into(),
                ticket: None,
                details: json!({ "incident": incident_id, "trigger": "router", "evidence": evidence }),
            }];
            Ok(((incident_id, notifications), audit))
        })?;
        Ok(out)
    }

    /// Audit entries that belong to no engine step (a refused command, a
    /// policy reload, a token created), in one transaction.
    pub fn append_audit(&mut self, entries: &[NewAudit]) -> Result<Head> {
        let entries = entries.to_vec();
        self.write(|_tx, _ids| Ok(((), entries)))?;
        Ok(self.head)
    }

    /// Mark an incident reviewed with a note (`incident review ID --note N`).
    pub fn review_incident(
        &mut self,
        id: &str,
        actor: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<Incident> {
        if note.trim().is_empty() {
            return Err(StoreError::Invalid("note: must not be empty".into()));
        }
        let incident = self.incident(id)?.ok_or_else(|| StoreError::NotFound {
            what: "incident",
            id: id.into(),
        })?;
        if incident.status != IncidentStatus::Open {
            return Err(StoreError::Invalid(format!(
                "incident {id} was already reviewed"
            )));
        }
        let audit = vec![NewAudit {
            at,
            actor: actor.into(),
            action: "incident.review".into(),
            rollout_id: Some(incident.rollout_id.clone()),
            reason: note.into(),
            ticket: None,
            details: json!({ "incident": id }),
        }];
        self.write(|tx, _| {
            tx.execute(
                "UPDATE incidents SET status = 'reviewed', review_note = ?2, reviewed_by = ?3, reviewed_at = ?4
                 WHERE id = ?1",
                params![id, note, actor, ms(at)],
            )?;
            Ok(((), audit))
        })?;
        self.incident(id)?.ok_or_else(|| StoreError::NotFound {
            what: "incident",
            id: id.into(),
        })
    }

    /// Close an emergency change's post-incident review with a note.
    pub fn close_review(
        &mut self,
        id: &str,
        actor: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<Review> {
        if note.trim().is_empty() {
            return Err(StoreError::Invalid("note: must not be empty".into()));
        }
        let review = self.review(id)?.ok_or_else(|| StoreError::NotFound {
            what: "review",
            id: id.into(),
        })?;
        if review.status != ReviewStatus::Open {
            return Err(StoreError::Invalid(format!(
                "review {id} is already closed"
            )));
        }
        let audit = vec![NewAudit {
            at,
            actor: actor.into(),
            action: "review.close".into(),
            rollout_id: Some(review.rollout_id.clone()),
            reason: note.into(),
            ticket: Some(review.ticket.clone()),
            details: json!({ "review": id }),
        }];
        self.write(|tx, _| {
            tx.execute(
                "UPDATE reviews SET status = 'closed', note = ?2, closed_by = ?3, closed_at = ?4
                 WHERE id = ?1",
                params![id, note, actor, ms(at)],
            )?;
            Ok(((), audit))
        })?;
        self.review(id)?.ok_or_else(|| StoreError::NotFound {
            what: "review",
            id: id.into(),
        })
    }

    /// One write transaction: `work` changes tables and returns the audit
    /// entries to chain; they are appended, the transaction commits, and
    /// then the head file is replaced. Returns whether that write worked.
    pub(super) fn write<T>(
        &mut self,
        work: impl FnOnce(&Tx<'_>, &mut IdGen) -> Result<(T, Vec<NewAudit>)>,
    ) -> Result<(T, bool)> {
        self.writable()?;
        // Keep "the head file lags by at most one transaction" true: the
        // previous commit's head must be on disk before the next commit.
        if self.head_unwritten {
            self.write_head_mark()?;
            self.head_unwritten = false;
        }
        let key = self.key.as_ref().ok_or(StoreError::ReadOnly)?;
        let tx = self.db.begin(Begin::Write)?;
        let (value, entries) = work(&tx, &mut self.ids)?;
        let head = append_audit(&tx, key, self.head, &entries, &self.place)?;
        if head != self.head && tx.dialect() == Dialect::Postgres {
            // PostgreSQL keeps the head with the entries (`postgres.rs`).
            super::postgres::write_head_row(&tx, &head)?;
        }
        tx.commit()?;
        if head == self.head {
            return Ok((value, true));
        }
        self.head = head;
        if self.db.dialect() == Dialect::Postgres {
            // Written in the transaction, above.
            return Ok((value, true));
        }
        let written = self.write_head_mark().is_ok();
        self.head_unwritten = !written;
        Ok((value, written))
    }
}

/// An engine step turned into owned rows (JSON text), so it can wait for a
/// group commit on another thread while the driver holds nothing.
#[derive(Clone, Debug)]
pub struct PreparedStep {
    rollout_id: String,
    at: Timestamp,
    input_json: String,
    effect_json: Vec<String>,
    /// `Notify` events, for the timelines of the rollout's incidents.
    events: Vec<String>,
    /// The router's answer to weight 0, for the incident's router result.
    router_zero: Option<String>,
    incidents: Vec<PreparedIncident>,
    reviews: Vec<(String, String, Timestamp)>,
    phase: &'static str,
    outcome: Option<&'static str>,
    /// The lifecycle hook the step's end queues, if it ends the rollout.
    ending: Option<HookEvent>,
    reason: String,
    step: usize,
    weight: u8,
    checkpoint: Option<String>,
    audit: Vec<NewAudit>,
    /// Lifecycle events' deliveries to queue with the step.
    notices: Vec<NewNotice>,
    /// The lease the step commits under (several daemons on one database).
    fence: Option<super::leases::Fence>,
    /// The queued command this step applies (`leases.rs`).
    command: Option<i64>,
    /// Relayed observations this step's window took in (`leases.rs`).
    relayed: Vec<i64>,
}

impl PreparedStep {
    /// Queue these lifecycle deliveries in the step's transaction.
    pub fn with_notices(mut self, notices: Vec<NewNotice>) -> PreparedStep {
        self.notices.extend(notices);
        self
    }

    /// Commit only while `fence` still holds the rollout's lease: checked
    /// in the step's transaction, so a daemon that lost the rollout to
    /// another commits nothing (`StoreError::Fenced`).
    pub fn with_fence(mut self, fence: Option<super::leases::Fence>) -> PreparedStep {
        self.fence = fence;
        self
    }

    pub fn rollout_id(&self) -> &str {
        &self.rollout_id
    }

    /// This step's window took in the relayed observations `ids`: they
    /// are deleted in the step's transaction.
    pub fn with_relayed(mut self, ids: Vec<i64>) -> PreparedStep {
        self.relayed = ids;
        self
    }

    /// This step applies the queued command `id`: it is marked applied in
    /// the step's transaction.
    pub fn with_command(mut self, id: Option<i64>) -> PreparedStep {
        self.command = id;
        self
    }
}

#[derive(Clone, Debug)]
struct PreparedIncident {
    trigger: String,
    severity: String,
    notify: Vec<String>,
    evidence: serde_json::Value,
    opened_at: Timestamp,
}

impl<A: Analysis> EngineStep<'_, A> {
    /// Serialize the step: everything `commit_prepared` needs, owned.
    pub fn prepare(&self) -> Result<PreparedStep> {
        let rollout = self.rollout;
        let id = rollout.spec().id.clone();
        let mut audit = derived_audit::<A>(&id, self.at, self.input, self.effects)?;
        audit.extend_from_slice(self.audit);
        let mut events = Vec::new();
        let mut incidents = Vec::new();
        let mut reviews = Vec::new();
        for effect in self.effects {
            match effect {
                Effect::Notify(event) => events.push(serde_json::to_string(event)?),
                Effect::OpenIncident {
                    trigger,
                    severity,
                    notify,
                    evidence,
                    at,
                } => incidents.push(PreparedIncident {
                    trigger: trigger.clone(),
                    severity: severity.clone(),
                    notify: notify
                        .iter()
                        .map(|n| {
                            let Notify::Webhook(url) = n;
                            url.clone()
                        })
                        .collect(),
                    evidence: serde_json::to_value(evidence)?,
                    opened_at: *at,
                }),
                Effect::OpenReview { reason, ticket, at } => {
                    reviews.push((reason.clone(), ticket.clone(), *at))
                }
                _ => {}
            }
        }
        let router_zero = match self.input {
            Input::RouterAck { weight, error } if *weight == Weight::ZERO => {
                Some(json!({ "weight": weight, "error": error, "at": self.at }).to_string())
            }
            _ => None,
        };
        let phase = rollout.phase();
        Ok(PreparedStep {
            rollout_id: id,
            at: self.at,
            input_json: serde_json::to_string(self.input)?,
            effect_json: self
                .effects
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()?,
            events,
            router_zero,
            incidents,
            reviews,
            phase: phase.as_str(),
            outcome: phase.is_terminal().then(|| phase.as_str()),
            ending: HookEvent::ending(phase),
            reason: rollout.reason().to_string(),
            step: rollout.step(),
            weight: rollout.weight().percent(),
            checkpoint: if self.checkpoint {
                Some(serde_json::to_string(&rollout.checkpoint())?)
            } else {
                None
            },
            audit,
            notices: Vec::new(),
            fence: None,
            command: None,
            relayed: Vec::new(),
        })
    }
}

/// Write one prepared step inside an open transaction; returns what it
/// wrote and the audit entries to chain.
fn apply_prepared(
    tx: &Tx<'_>,
    ids: &mut IdGen,
    step: &PreparedStep,
) -> Result<(Committed, Vec<NewAudit>)> {
    let id = step.rollout_id.clone();
    let at = ms(step.at);
    if let Some(fence) = &step.fence {
        super::leases::check(tx, &id, fence)?;
    }
    if let Some(command) = step.command {
        super::leases::mark_applied(tx, command, at)?;
    }
    if !step.relayed.is_empty() {
        super::leases::consume_relayed(tx, &id, &step.relayed)?;
    }
    // Every step runs these two statements: parsed once per connection.
    let found: Option<(String, String, u64, Option<String>)> = tx.query_opt(
        "SELECT service, policy_version, journal_len, outcome FROM rollouts WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let (service, policy_version, journal_len, outcome_before) =
        found.ok_or_else(|| StoreError::NotFound {
            what: "rollout",
            id: id.clone(),
        })?;

    let input_seq = journal_len + 1;
    const INSERT: &str = "INSERT INTO journal (rollout_id, seq, input_seq, at, kind, effects, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    tx.execute(
        INSERT,
        params![
            id,
            input_seq,
            input_seq,
            at,
            "input",
            step.effect_json.len(),
            step.input_json
        ],
    )?;
    for (i, body) in step.effect_json.iter().enumerate() {
        tx.execute(
            INSERT,
            params![
                id,
                input_seq + 1 + i as u64,
                input_seq,
                at,
                "effect",
                0,
                body
            ],
        )?;
    }
    let last_seq = input_seq + step.effect_json.len() as u64;

    // Earlier incidents of this rollout: their timeline goes on, and the
    // router's answer to the rollback (weight 0) is recorded once.
    if !step.events.is_empty() {
        let open: Vec<(String, String)> = tx.query_all(
            "SELECT id, timeline FROM incidents WHERE rollout_id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (incident, timeline) in open {
            let mut timeline: Vec<serde_json::Value> = serde_json::from_str(&timeline)?;
            for event in &step.events {
                timeline.push(serde_json::from_str(event)?);
            }
            tx.execute(
                "UPDATE incidents SET timeline = ?2 WHERE id = ?1",
                params![incident, serde_json::to_string(&timeline)?],
            )?;
        }
    }
    if let Some(result) = &step.router_zero {
        tx.execute(
            "UPDATE incidents SET router_result = ?2
             WHERE rollout_id = ?1 AND router_result IS NULL",
            params![id, result],
        )?;
    }

    let mut incidents = Vec::new();
    let mut reviews = Vec::new();
    let mut notifications = Vec::new();
    let mut audit = step.audit.clone();
    for inc in &step.incidents {
        let (incident_id, queued) =
            insert_incident(tx, ids, &id, &service, &policy_version, inc, at)?;
        notifications.extend(queued);
        audit.push(NewAudit {
            at: step.at,
            actor: ENGINE.into(),
            action: "incident.open".into(),
            rollout_id: Some(id.clone()),
            reason: format!("trigger {} fired", inc.trigger),
            ticket: None,
            details: json!({ "incident": incident_id, "trigger": inc.trigger, "severity": inc.severity }),
        });
        incidents.push(incident_id);
    }
    for notice in &step.notices {
        notifications.push(queue_notice(tx, &id, notice, at)?);
    }
    for (reason, ticket, opened_at) in step.reviews.iter().cloned() {
        let review_id = ids.next("rev", opened_at);
        tx.execute(
            "INSERT INTO reviews (id, rollout_id, reason, ticket, opened_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, 'open')",
            params![review_id, id, reason, ticket, ms(opened_at)],
        )?;
        audit.push(NewAudit {
            at: step.at,
            actor: ENGINE.into(),
            action: "review.open".into(),
            rollout_id: Some(id.clone()),
            reason,
            ticket: Some(ticket),
            details: json!({ "review": review_id }),
        });
        reviews.push(review_id);
    }

    tx.execute(
        "UPDATE rollouts SET phase = ?2, outcome = ?3, reason = ?4, step = ?5, weight = ?6,
            updated_at = CASE WHEN updated_at > ?7 THEN updated_at ELSE ?7 END, journal_len = ?8,
            checkpoint_seq = CASE WHEN ?9 = 1 THEN ?8 ELSE checkpoint_seq END
         WHERE id = ?1",
        params![
            id,
            step.phase,
            step.outcome,
            step.reason,
            step.step,
            step.weight,
            at,
            last_seq,
            step.checkpoint.is_some()
        ],
    )?;
    // The checkpoint's own row (migration 7): written only when one is taken.
    // Its row exists from the start; without it `checkpoint_seq` would move
    // past a journal no checkpoint covers, so the step fails instead.
    if let Some(checkpoint) = &step.checkpoint {
        let changed = tx.execute(
            "UPDATE checkpoints SET checkpoint = ?2 WHERE rollout_id = ?1",
            params![id, checkpoint],
        )?;
        if changed != 1 {
            return Err(StoreError::NotFound {
                what: "checkpoint of rollout",
                id: id.clone(),
            });
        }
    }
    // The step that ends the rollout queues its lifecycle hook.
    let mut hooks = Vec::new();
    if outcome_before.is_none()
        && let Some(event) = step.ending
    {
        hooks.push(queue_hook(tx, &id, event, at)?);
    }
    Ok((
        Committed {
            input_seq,
            last_seq,
            incidents,
            reviews,
            notifications,
            hooks,
            audit_head: Head::EMPTY,
            head_written: true,
        },
        audit,
    ))
}

/// Open an incident with the rollout's timeline so far and queue its
/// webhooks (created at `queued_at`, ms); returns its id and the
/// deliveries.
fn insert_incident(
    tx: &Tx<'_>,
    ids: &mut IdGen,
    rollout_id: &str,
    service: &str,
    policy_version: &str,
    inc: &PreparedIncident,
    queued_at: i64,
) -> Result<(String, Vec<i64>)> {
    let incident_id = ids.next("inc", inc.opened_at);
    let timeline = timeline_so_far(tx, rollout_id)?;
    tx.execute(
        "INSERT INTO incidents (id, rollout_id, service, trigger_name, severity,
            opened_at, evidence, timeline, router_result, status, policy_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, 'open', ?9)",
        params![
            incident_id,
            rollout_id,
            service,
            inc.trigger,
            inc.severity,
            ms(inc.opened_at),
            inc.evidence.to_string(),
            timeline,
            policy_version
        ],
    )?;
    let payload = json!({
        "incident": incident_id,
        "rollout_id": rollout_id,
        "service": service,
        "trigger": inc.trigger,
        "severity": inc.severity,
        "opened_at": inc.opened_at,
        "evidence": inc.evidence,
    })
    .to_string();
    let notifications = inc
        .notify
        .iter()
        .map(|url| queue_delivery(tx, rollout_id, &incident_id, url, &payload, queued_at))
        .collect::<Result<Vec<_>>>()?;
    Ok((incident_id, notifications))
}

/// The rollout's events so far, from its journal's `notify` effects.
fn timeline_so_far(tx: &Tx<'_>, rollout_id: &str) -> Result<String> {
    let bodies: Vec<String> = tx.query_all(
        &format!(
            "SELECT body FROM journal
             WHERE rollout_id = ?1 AND kind = 'effect' AND {} = 'notify'
             ORDER BY seq",
            tx.dialect().json_field("body", "effect")
        ),
        params![rollout_id],
        |r| r.get(0),
    )?;
    let events = bodies
        .iter()
        .map(|body| event_of_notify(body))
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::to_string(&events)?)
}

/// Chain `entries` onto `head` inside `tx`. This store's last entry must
/// still be in the log as it wrote it (its mac recomputed from the entry
/// before it, so an edit of its contents is caught, not only of its mac);
/// after it, on SQLite nothing (one daemon per data dir), on PostgreSQL
/// only entries other daemons appended, each chaining from the one before.
/// Otherwise the log changed under a running daemon, and appending would
/// bury the evidence.
fn append_audit(
    tx: &Tx<'_>,
    key: &AuditKey,
    head: Head,
    entries: &[NewAudit],
    place: &Place,
) -> Result<Head> {
    if entries.is_empty() {
        return Ok(head);
    }
    if tx.dialect() == Dialect::Postgres {
        // Several daemons append to one chain: one at a time, each after
        // whatever the others appended (`postgres.rs`).
        super::postgres::lock_chain(tx)?;
    }
    let broken = |seq: u64, kind: Breakage, detail: String| StoreError::AuditBroken {
        place: place.clone(),
        link: BrokenLink { seq, kind, detail },
    };
    let rows = super::raw_audit_rows_from(tx, head.seq.saturating_sub(1))?;
    let stored = |row: &RawEntry| audit::mac_from_hex(&row.mac).unwrap_or([0; 32]);
    let at_seq = |seq: u64| rows.iter().find(|r| r.seq == seq as i64);
    let last = rows.last().map_or(Head::EMPTY, |r| Head {
        seq: u64::try_from(r.seq).unwrap_or(0),
        mac: stored(r),
    });
    let mut tail = Head::EMPTY;
    if head.seq > 0 {
        let Some(own) = at_seq(head.seq).filter(|r| stored(r) == head.mac) else {
            return Err(broken(
                last.seq.min(head.seq) + 1,
                Breakage::Forged,
                format!(
                    "the log ends at {last} but this daemon last wrote {head}: it was changed while the daemon ran"
                ),
            ));
        };
        // The entry before it: gone only when retention pruned it, and
        // then its mac is not at hand (the store's open checked it).
        let before = if head.seq == 1 {
            Some([0; 32])
        } else {
            at_seq(head.seq - 1).map(stored)
        };
        if before.is_some_and(|before| key.mac(&before, own) != head.mac) {
            return Err(broken(
                head.seq,
                Breakage::Edited,
                "edited while the daemon ran: its contents no longer match the mac this daemon wrote".into(),
            ));
        }
        tail = head;
    }
    for row in rows.iter().filter(|r| r.seq > head.seq as i64) {
        let chains = row.seq == tail.seq as i64 + 1 && key.mac(&tail.mac, row) == stored(row);
        if tx.dialect() == Dialect::Sqlite || !chains {
            return Err(broken(
                tail.seq + 1,
                Breakage::Forged,
                format!(
                    "the log ends at {last} but this daemon last wrote {head}, and entry {} does not chain from entry {}: it was changed while the daemon ran",
                    row.seq, tail.seq
                ),
            ));
        }
        tail = Head {
            seq: tail.seq + 1,
            mac: stored(row),
        };
    }
    let head = tail;
    let tx_id = head.seq as i64 + 1;
    const INSERT: &str =
        "INSERT INTO audit (seq, tx, at, actor, action, rollout_id, reason, ticket, details, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    let mut prev = head;
    for e in entries {
        let seq = prev.seq + 1;
        let mut raw = RawEntry {
            seq: seq as i64,
            tx: tx_id,
            at: ms(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            rollout_id: e.rollout_id.clone(),
            reason: e.reason.clone(),
            ticket: e.ticket.clone(),
            details: serde_json::to_string(&e.details)?,
            mac: String::new(),
        };
        let mac = key.mac(&prev.mac, &raw);
        raw.mac = audit::to_hex(&mac);
        tx.execute(
            INSERT,
            params![
                raw.seq,
                raw.tx,
                raw.at,
                raw.actor,
                raw.action,
                raw.rollout_id,
                raw.reason,
                raw.ticket,
                raw.details,
                raw.mac
            ],
        )?;
        prev = Head { seq, mac };
    }
    Ok(prev)
}

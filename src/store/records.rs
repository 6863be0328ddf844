//! The typed rows the store hands out, and the read-only queries that build
//! them. Nothing here writes; a read-only store can serve all of it.

use super::db::{Row, Sql, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{AuditEntry, Result, Store, StoreError};
use crate::engine::{Analysis, Checkpoint, Effect, Input, Phase, RolloutSpec};
use crate::policy::Weight;
use crate::time::Timestamp;

/// A rollout as stored: identity, pinned policy, and its state after the
/// last committed step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutRow {
    pub id: String,
    pub service: String,
    pub policy_name: String,
    /// The policy version (hash) the rollout is pinned to.
    pub policy_version: String,
    pub spec: RolloutSpec,
    pub phase: Phase,
    /// The terminal phase once the rollout has ended.
    pub outcome: Option<Phase>,
    pub reason: String,
    pub step: usize,
    pub weight: Weight,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The last journal seq the stored checkpoint includes.
    pub checkpoint_seq: u64,
    /// Journal entries so far (the journal's seqs are 1..=journal_len).
    pub journal_len: u64,
}

impl RolloutRow {
    /// Whether the rollout is open: active, or ended with canary traffic
    /// the router has not yet confirmed back at 0 (what a restart or a
    /// takeover resumes; `open_rollouts` selects the same in SQL).
    pub fn is_open(&self) -> bool {
        self.outcome.is_none()
            || (self.outcome != Some(Phase::Promoted) && self.weight.percent() > 0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalKind {
    Input,
    Effect,
}

/// One journaled engine input or effect, its JSON as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub rollout_id: String,
    pub seq: u64,
    /// The seq of the input whose step produced this entry.
    pub input_seq: u64,
    pub at: Timestamp,
    pub kind: JournalKind,
    /// For an input, how many effects its step produced.
    pub effects: u32,
    pub body: String,
}

impl JournalEntry {
    pub fn decode_input<S: Serialize + DeserializeOwned>(&self) -> Result<Input<S>> {
        self.expect_kind(JournalKind::Input)?;
        Ok(serde_json::from_str(&self.body)?)
    }

    pub fn decode_effect<E: Serialize + DeserializeOwned>(&self) -> Result<Effect<E>> {
        self.expect_kind(JournalKind::Effect)?;
        Ok(serde_json::from_str(&self.body)?)
    }

    fn expect_kind(&self, kind: JournalKind) -> Result<()> {
        if self.kind != kind {
            return Err(StoreError::Invalid(format!(
                "journal entry {}/{} is an {:?}, not an {kind:?}",
                self.rollout_id, self.seq, self.kind
            )));
        }
        Ok(())
    }
}

/// What the daemon needs to resume one active rollout: restore the
/// checkpoint, then replay [`OpenRollout::inputs_to_replay`] in order.
#[derive(Clone, Debug)]
pub struct OpenRollout<A: Analysis> {
    pub row: RolloutRow,
    pub checkpoint: Checkpoint<A>,
    /// Journal entries after the checkpoint: inputs and the effects that
    /// were already committed (and possibly carried out) for them.
    pub after_checkpoint: Vec<JournalEntry>,
}

impl<A: Analysis> OpenRollout<A> {
    pub fn inputs_to_replay(&self) -> Result<Vec<(Timestamp, Input<A::Snapshot>)>> {
        self.after_checkpoint
            .iter()
            .filter(|e| e.kind == JournalKind::Input)
            .map(|e| Ok((e.at, e.decode_input()?)))
            .collect()
    }
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

/// An incident: opened by the engine's `OpenIncident` effect, with the
/// rollout's timeline, and the router's answer to the rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub rollout_id: String,
    pub service: String,
    pub trigger: String,
    pub severity: String,
    pub opened_at: Timestamp,
    pub evidence: serde_json::Value,
    /// The rollout's events (engine `Notify` effects), oldest first.
    pub timeline: serde_json::Value,
    /// The router's acknowledgement of weight 0 after the rollback.
    pub router_result: Option<serde_json::Value>,
    pub status: IncidentStatus,
    /// The policy version the rollout was pinned to.
    pub policy_version: String,
    pub review_note: Option<String>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Open,
    Closed,
}

/// A post-incident review an emergency change opened; open until closed
/// with a note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub id: String,
    pub rollout_id: String,
    pub reason: String,
    pub ticket: String,
    pub opened_at: Timestamp,
    pub status: ReviewStatus,
    pub note: Option<String>,
    pub closed_by: Option<String>,
    pub closed_at: Option<Timestamp>,
}

pub(crate) fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

fn json_err(idx: usize, e: serde_json::Error) -> StoreError {
    StoreError::Decode(format!("column {idx}: {e}"))
}

pub(super) fn json_col<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> Result<T> {
    let text: String = r.get(idx)?;
    serde_json::from_str(&text).map_err(|e| json_err(idx, e))
}

fn opt_json_col<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> Result<Option<T>> {
    let text: Option<String> = r.get(idx)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| json_err(idx, e)))
        .transpose()
}

/// A kebab-case enum stored as its serde name.
pub(super) fn enum_col<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> Result<T> {
    let text: String = r.get(idx)?;
    serde_json::from_value(serde_json::Value::String(text)).map_err(|e| json_err(idx, e))
}

fn opt_enum_col<T: DeserializeOwned>(r: &Row<'_>, idx: usize) -> Result<Option<T>> {
    let text: Option<String> = r.get(idx)?;
    text.map(|t| serde_json::from_value(serde_json::Value::String(t)).map_err(|e| json_err(idx, e)))
        .transpose()
}

/// A journaled `notify` effect's event: its body without the effect's tag.
pub(super) fn event_of_notify(body: &str) -> Result<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_str(body)?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("effect");
    }
    Ok(value)
}

const ROLLOUT_COLS: &str = "id, service, policy_name, policy_version, spec, phase, outcome, reason, step, weight, created_at, updated_at, checkpoint_seq, journal_len";

fn rollout_row(r: &Row<'_>) -> Result<RolloutRow> {
    let weight: u8 = r.get(9)?;
    Ok(RolloutRow {
        id: r.get(0)?,
        service: r.get(1)?,
        policy_name: r.get(2)?,
        policy_version: r.get(3)?,
        spec: json_col(r, 4)?,
        phase: enum_col(r, 5)?,
        outcome: opt_enum_col(r, 6)?,
        reason: r.get(7)?,
        step: r.get(8)?,
        weight: Weight::new(weight).ok_or_else(|| {
            StoreError::Decode(format!("column 9 (weight): {weight} is not a weight"))
        })?,
        created_at: ts(r.get(10)?),
        updated_at: ts(r.get(11)?),
        checkpoint_seq: r.get(12)?,
        journal_len: r.get(13)?,
    })
}

const JOURNAL_COLS: &str = "rollout_id, seq, input_seq, at, kind, effects, body";

fn journal_row(r: &Row<'_>) -> Result<JournalEntry> {
    Ok(JournalEntry {
        rollout_id: r.get(0)?,
        seq: r.get(1)?,
        input_seq: r.get(2)?,
        at: ts(r.get(3)?),
        kind: enum_col(r, 4)?,
        effects: r.get(5)?,
        body: r.get(6)?,
    })
}

const INCIDENT_COLS: &str = "id, rollout_id, service, trigger_name, severity, opened_at, evidence, timeline, router_result, status, policy_version, review_note, reviewed_by, reviewed_at";

fn incident_row(r: &Row<'_>) -> Result<Incident> {
    Ok(Incident {
        id: r.get(0)?,
        rollout_id: r.get(1)?,
        service: r.get(2)?,
        trigger: r.get(3)?,
        severity: r.get(4)?,
        opened_at: ts(r.get(5)?),
        evidence: json_col(r, 6)?,
        timeline: json_col(r, 7)?,
        router_result: opt_json_col(r, 8)?,
        status: enum_col(r, 9)?,
        policy_version: r.get(10)?,
        review_note: r.get(11)?,
        reviewed_by: r.get(12)?,
        reviewed_at: r.get::<Option<i64>>(13)?.map(ts),
    })
}

const REVIEW_COLS: &str =
    "id, rollout_id, reason, ticket, opened_at, status, note, closed_by, closed_at";

fn review_row(r: &Row<'_>) -> Result<Review> {
    Ok(Review {
        id: r.get(0)?,
        rollout_id: r.get(1)?,
        reason: r.get(2)?,
        ticket: r.get(3)?,
        opened_at: ts(r.get(4)?),
        status: enum_col(r, 5)?,
        note: r.get(6)?,
        closed_by: r.get(7)?,
        closed_at: r.get::<Option<i64>>(8)?.map(ts),
    })
}

fn audit_row(r: &Row<'_>) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        tx: r.get(1)?,
        at: ts(r.get(2)?),
        actor: r.get(3)?,
        action: r.get(4)?,
        rollout_id: r.get(5)?,
        reason: r.get(6)?,
        ticket: r.get(7)?,
        details: json_col(r, 8)?,
        mac: r.get(9)?,
    })
}

impl Store {
    pub(super) fn query_all<T>(
        &self,
        sql: &str,
        params: &[super::db::Value<'_>],
        f: fn(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.db.query_all(sql, params, f)
    }

    pub(super) fn query_one<T>(
        &self,
        sql: &str,
        params: &[super::db::Value<'_>],
        f: fn(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        self.db.query_opt(sql, params, f)
    }

    pub fn rollout(&self, id: &str) -> Result<Option<RolloutRow>> {
        self.query_one(
            &format!("SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = ?1"),
            params![id],
            rollout_row,
        )
    }

    /// All rollouts, oldest first.
    pub fn rollouts(&self) -> Result<Vec<RolloutRow>> {
        self.query_all(
            &format!("SELECT {ROLLOUT_COLS} FROM rollouts ORDER BY created_at, id"),
            params![],
            rollout_row,
        )
    }

    /// One page of rollouts, newest first (`GET /v1/rollouts?limit=`):
    /// those of `service` and in `phase` when given, after the `(created_at,
    /// id)` key `after` (the previous page's last row), at most `limit`.
    /// Keyed, not offset: rollouts started meanwhile do not shift a page.
    pub fn rollouts_page(
        &self,
        service: Option<&str>,
        phase: Option<&str>,
        after: Option<(Timestamp, &str)>,
        limit: usize,
    ) -> Result<Vec<RolloutRow>> {
        let (after_at, after_id) = after.map_or((i64::MAX, ""), |(at, id)| {
            (i64::try_from(at.as_millis()).unwrap_or(i64::MAX), id)
        });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_all(
            &format!(
                "SELECT {ROLLOUT_COLS} FROM rollouts
                 WHERE (CAST(?1 AS TEXT) IS NULL OR service = ?1)
                   AND (CAST(?2 AS TEXT) IS NULL OR phase = ?2)
                   AND (created_at < ?3 OR (created_at = ?3 AND (?4 = '' OR id < ?4)))
                 ORDER BY created_at DESC, id DESC LIMIT ?5"
            ),
            params![service, phase, after_at, after_id, limit],
            rollout_row,
        )
    }

    /// The rollout's timeline events (its journal's `notify` effects) with
    /// journal seq in `(after_seq, up_to]`, oldest first, each with its seq:
    /// what an event stream replays after `Last-Event-ID`.
    pub fn events_between(
        &self,
        rollout_id: &str,
        after_seq: u64,
        up_to: u64,
    ) -> Result<Vec<(u64, crate::engine::Event)>> {
        let rows: Vec<(u64, String)> = self.db.query_all(
            &format!(
                "SELECT seq, body FROM journal
                 WHERE rollout_id = ?1 AND seq > ?2 AND seq <= ?3 AND kind = 'effect'
                   AND {} = 'notify'
                 ORDER BY seq",
                self.db.dialect().json_field("body", "effect")
            ),
            params![rollout_id, after_seq, up_to],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.into_iter()
            .map(|(seq, body)| Ok((seq, serde_json::from_value(event_of_notify(&body)?)?)))
            .collect()
    }

    /// The service's rollout that has not ended, if any (there is at most one).
    pub fn active_rollout(&self, service: &str) -> Result<Option<RolloutRow>> {
        self.query_one(
            &format!("SELECT {ROLLOUT_COLS} FROM rollouts WHERE service = ?1 AND outcome IS NULL"),
            params![service],
            rollout_row,
        )
    }

    /// Every active rollout, and every ended one whose traffic is not yet
    /// back (aborted, inconclusive or concluded with a canary weight the
    /// router never confirmed at 0), with its latest checkpoint and the
    /// journal entries after it: what a restarted daemon resumes from.
    pub fn open_rollouts<A: Analysis>(&self) -> Result<Vec<OpenRollout<A>>> {
        let rows = self.query_all(
            &format!(
                "SELECT {ROLLOUT_COLS} FROM rollouts
                 WHERE outcome IS NULL OR (outcome <> 'promoted' AND weight > 0)
                 ORDER BY created_at, id"
            ),
            params![],
            rollout_row,
        )?;
        rows.into_iter()
            .map(|row| {
                let checkpoint = self.checkpoint(&row.id)?;
                let after_checkpoint = self.journal_after(&row.id, row.checkpoint_seq)?;
                Ok(OpenRollout {
                    row,
                    checkpoint,
                    after_checkpoint,
                })
            })
            .collect()
    }

    /// The stored checkpoint of a rollout, active or not.
    pub fn checkpoint<A: Analysis>(&self, rollout_id: &str) -> Result<Checkpoint<A>> {
        let text: Option<String> = self.db.query_opt(
            "SELECT checkpoint FROM checkpoints WHERE rollout_id = ?1",
            params![rollout_id],
            |r| r.get(0),
        )?;
        let text = text.ok_or_else(|| StoreError::NotFound {
            what: "rollout",
            id: rollout_id.to_string(),
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn journal(&self, rollout_id: &str) -> Result<Vec<JournalEntry>> {
        self.journal_after(rollout_id, 0)
    }

    /// Journal entries with seq > `after_seq`, in order.
    pub fn journal_after(&self, rollout_id: &str, after_seq: u64) -> Result<Vec<JournalEntry>> {
        self.query_all(
            &format!(
                "SELECT {JOURNAL_COLS} FROM journal WHERE rollout_id = ?1 AND seq > ?2 ORDER BY seq"
            ),
            params![rollout_id, after_seq],
            journal_row,
        )
    }

    /// The newest `limit` journaled inputs of one kind (`data`,
    /// `router-ack`, ... as `Input` names them) journaled at or after
    /// `since`, newest first: a bounded read of a long rollout's journal
    /// (the dashboard's series, `src/daemon/series.rs`).
    pub fn journal_inputs_newest(
        &self,
        rollout_id: &str,
        input: &str,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<JournalEntry>> {
        // An input's body starts with its tag (`Input` is internally
        // tagged and serde writes the tag first).
        let prefix = format!("{{\"input\":\"{input}\"");
        self.query_all(
            &format!(
                "SELECT {JOURNAL_COLS} FROM journal
                 WHERE rollout_id = ?1 AND kind = 'input' AND at >= ?2
                   AND substr(body, 1, length(?3)) = ?3
                 ORDER BY seq DESC LIMIT ?4"
            ),
            params![
                rollout_id,
                since.as_millis(),
                prefix,
                u64::try_from(limit).unwrap_or(u64::MAX)
            ],
            journal_row,
        )
    }

    pub fn incident(&self, id: &str) -> Result<Option<Incident>> {
        self.query_one(
            &format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = ?1"),
            params![id],
            incident_row,
        )
    }

    /// All incidents, oldest first.
    pub fn incidents(&self) -> Result<Vec<Incident>> {
        self.query_all(
            &format!("SELECT {INCIDENT_COLS} FROM incidents ORDER BY opened_at, id"),
            params![],
            incident_row,
        )
    }

    pub fn incidents_for_rollout(&self, rollout_id: &str) -> Result<Vec<Incident>> {
        self.query_all(
            &format!(
                "SELECT {INCIDENT_COLS} FROM incidents WHERE rollout_id = ?1 ORDER BY opened_at, id"
            ),
            params![rollout_id],
            incident_row,
        )
    }

    pub fn review(&self, id: &str) -> Result<Option<Review>> {
        self.query_one(
            &format!("SELECT {REVIEW_COLS} FROM reviews WHERE id = ?1"),
            params![id],
            review_row,
        )
    }

    pub fn reviews_for_rollout(&self, rollout_id: &str) -> Result<Vec<Review>> {
        self.query_all(
            &format!(
                "SELECT {REVIEW_COLS} FROM reviews WHERE rollout_id = ?1 ORDER BY opened_at, id"
            ),
            params![rollout_id],
            review_row,
        )
    }

    /// Reviews not yet closed, oldest first.
    pub fn open_reviews(&self) -> Result<Vec<Review>> {
        self.query_all(
            &format!(
                "SELECT {REVIEW_COLS} FROM reviews WHERE status = 'open' ORDER BY opened_at, id"
            ),
            params![],
            review_row,
        )
    }

    /// The whole audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>> {
        self.query_all(
            "SELECT seq, tx, at, actor, action, rollout_id, reason, ticket, details, mac FROM audit ORDER BY seq",
            params![],
            audit_row,
        )
    }

    pub fn audit_for_rollout(&self, rollout_id: &str) -> Result<Vec<AuditEntry>> {
        self.query_all(
            "SELECT seq, tx, at, actor, action, rollout_id, reason, ticket, details, mac FROM audit WHERE rollout_id = ?1 ORDER BY seq",
            params![rollout_id],
            audit_row,
        )
    }
}

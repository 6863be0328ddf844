//! The outbox: what the daemon sends out after a commit, kept in the same
//! transaction as the state it reports so that a crash cannot lose it.
//! Two kinds, two tables: webhook deliveries (`notifications`: an
//! incident's policy webhooks, and since migration 5 the lifecycle events
//! routed to the config's named receivers) and lifecycle hook runs
//! (`hook_runs`, migration 3). [`OutboxItem`] and
//! [`OutboxRow`] put both behind one interface: one pending scan
//! ([`Store::pending_outbox`]) and one way to record an attempt
//! ([`Store::record_outbox_attempt`]).
//!
//! They stay two tables. A delivery carries its target and its payload,
//! frozen when the incident opened; a hook run carries only its event, its
//! command or URL looked up in the config when it runs. And the ids are
//! referenced from the audit log (`"hook_run": id` in `hook.*` entries),
//! which can never be rewritten, so merging the tables would have to keep
//! both id spaces anyway.
//!
//! A delivery is tried until it succeeds or its time is spent: each
//! attempt records when the next one is due (`next_attempt_at`), so a
//! restart waits where the last run left off, and giving up is a state of
//! its own (`failed_at`), no longer retried.
//!
//! Rows are written by `step.rs` (in the step's transaction, through
//! `queue_delivery`, `queue_notice` and `queue_hook`); attempts are
//! recorded here.

use super::db::{Row, Sql, Tx, Value, params};
use serde::{Deserialize, Serialize};

use super::records::{enum_col, json_col, ms, ts};
use super::{Result, Store, StoreError};
use crate::routers::hooks::HookEvent;
use crate::time::Timestamp;

/// One row of the outbox: its table and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutboxItem {
    /// A `notifications` row: an incident's webhook delivery.
    Delivery(i64),
    /// A `hook_runs` row: a lifecycle hook to run.
    Hook(i64),
}

/// An outbox row as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum OutboxRow {
    Delivery(Notification),
    Hook(HookRun),
}

impl OutboxRow {
    pub fn item(&self) -> OutboxItem {
        match self {
            OutboxRow::Delivery(n) => OutboxItem::Delivery(n.id),
            OutboxRow::Hook(h) => OutboxItem::Hook(h.id),
        }
    }

    pub fn rollout_id(&self) -> &str {
        match self {
            OutboxRow::Delivery(n) => &n.rollout_id,
            OutboxRow::Hook(h) => &h.rollout_id,
        }
    }

    /// Attempts made so far, across restarts.
    pub fn attempts(&self) -> u32 {
        match self {
            OutboxRow::Delivery(n) => n.attempts,
            OutboxRow::Hook(h) => h.attempts,
        }
    }

    /// Still to send: a delivery not yet delivered, a hook run not closed.
    pub fn is_pending(&self) -> bool {
        match self {
            OutboxRow::Delivery(n) => !n.delivered() && !n.failed(),
            OutboxRow::Hook(h) => h.status == HookStatus::Pending,
        }
    }
}

/// One webhook delivery, recorded with the step that caused it (an outbox):
/// the daemon sends pending ones and records every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: i64,
    pub rollout_id: String,
    pub incident_id: Option<String>,
    /// The webhook URL (a receiver's, as configured when it was queued).
    pub target: String,
    /// For an incident: the body as sent. For a lifecycle event: the
    /// event's document, which the receiver's format renders.
    pub payload: serde_json::Value,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub last_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
    /// The `notifications.receivers` entry; `None` for an incident's
    /// policy webhook.
    pub receiver: Option<String>,
    /// The lifecycle event's kind (`rolled-back`, ...); `None` for an
    /// incident.
    pub event: Option<String>,
    /// When the next attempt is due, after a failed one.
    pub next_attempt_at: Option<Timestamp>,
    /// Delivery was given up (its retry time spent); not tried again.
    pub failed_at: Option<Timestamp>,
}

/// A lifecycle event's delivery to one receiver, to queue with a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotice {
    pub receiver: String,
    /// The receiver's URL now (shown in the rollout's status).
    pub target: String,
    pub event: String,
    /// The event's document, JSON.
    pub payload: String,
}

/// After a failed delivery attempt: when to try again, or give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextAttempt {
    At(Timestamp),
    GiveUp,
}

/// One lifecycle event's hook, queued with the commit of the state it
/// reports (an outbox); the daemon runs pending ones, also after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    pub id: i64,
    pub rollout_id: String,
    pub event: HookEvent,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub last_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub status: HookStatus,
    pub done_at: Option<Timestamp>,
}

/// Where a hook run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookStatus {
    Pending,
    /// The hook succeeded.
    Ran,
    /// Every attempt failed; not retried again.
    Failed,
    /// The service has no hook for the event.
    None,
}

impl HookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HookStatus::Pending => "pending",
            HookStatus::Ran => "ran",
            HookStatus::Failed => "failed",
            HookStatus::None => "none",
        }
    }
}

impl Notification {
    pub fn delivered(&self) -> bool {
        self.delivered_at.is_some()
    }

    /// Given up: every attempt of its retry time failed.
    pub fn failed(&self) -> bool {
        self.failed_at.is_some()
    }
}

const NOTIFICATION_COLS: &str = "id, rollout_id, incident_id, target, payload, created_at, attempts, last_attempt_at, last_error, delivered_at, receiver, event, next_attempt_at, failed_at";

fn notification_row(r: &Row<'_>) -> Result<Notification> {
    Ok(Notification {
        id: r.get(0)?,
        rollout_id: r.get(1)?,
        incident_id: r.get(2)?,
        target: r.get(3)?,
        payload: json_col(r, 4)?,
        created_at: ts(r.get(5)?),
        attempts: r.get(6)?,
        last_attempt_at: r.get::<Option<i64>>(7)?.map(ts),
        last_error: r.get(8)?,
        delivered_at: r.get::<Option<i64>>(9)?.map(ts),
        receiver: r.get(10)?,
        event: r.get(11)?,
        next_attempt_at: r.get::<Option<i64>>(12)?.map(ts),
        failed_at: r.get::<Option<i64>>(13)?.map(ts),
    })
}

const HOOK_RUN_COLS: &str =
    "id, rollout_id, event, created_at, attempts, last_attempt_at, last_error, status, done_at";

fn hook_run_row(r: &Row<'_>) -> Result<HookRun> {
    Ok(HookRun {
        id: r.get(0)?,
        rollout_id: r.get(1)?,
        event: enum_col(r, 2)?,
        created_at: ts(r.get(3)?),
        attempts: r.get(4)?,
        last_attempt_at: r.get::<Option<i64>>(5)?.map(ts),
        last_error: r.get(6)?,
        status: enum_col(r, 7)?,
        done_at: r.get::<Option<i64>>(8)?.map(ts),
    })
}

impl Store {
    /// One outbox row, from whichever table `item` names.
    pub fn outbox_row(&self, item: OutboxItem) -> Result<Option<OutboxRow>> {
        Ok(match item {
            OutboxItem::Delivery(id) => self.notification(id)?.map(OutboxRow::Delivery),
            OutboxItem::Hook(id) => self.hook_run(id)?.map(OutboxRow::Hook),
        })
    }

    /// Every row still to send, deliveries then hook runs, each oldest
    /// first: what a daemon picks up at its start.
    pub fn pending_outbox(&self) -> Result<Vec<OutboxRow>> {
        let mut rows: Vec<OutboxRow> = self
            .pending_notifications()?
            .into_iter()
            .map(OutboxRow::Delivery)
            .collect();
        rows.extend(self.pending_hook_runs()?.into_iter().map(OutboxRow::Hook));
        Ok(rows)
    }

    /// Record one attempt at sending `item`: `Ok(())` sent it,
    /// `Err(message)` failed. `last`: no attempt follows, so a hook run that
    /// failed is closed as failed. A delivery has no such state and stays
    /// pending, so each start tries it again.
    pub fn record_outbox_attempt(
        &mut self,
        item: OutboxItem,
        at: Timestamp,
        outcome: std::result::Result<(), String>,
        last: bool,
    ) -> Result<OutboxRow> {
        Ok(match item {
            OutboxItem::Delivery(id) => OutboxRow::Delivery(self.record_delivery(id, at, outcome)?),
            OutboxItem::Hook(id) => {
                OutboxRow::Hook(self.record_hook_attempt(id, at, outcome, last)?)
            }
        })
    }

    pub fn notification(&self, id: i64) -> Result<Option<Notification>> {
        self.query_one(
            &format!("SELECT {NOTIFICATION_COLS} FROM notifications WHERE id = ?1"),
            params![id],
            notification_row,
        )
    }

    /// Deliveries neither made nor given up, oldest first.
    pub fn pending_notifications(&self) -> Result<Vec<Notification>> {
        self.query_all(
            &format!(
                "SELECT {NOTIFICATION_COLS} FROM notifications
                 WHERE delivered_at IS NULL AND failed_at IS NULL ORDER BY id"
            ),
            params![],
            notification_row,
        )
    }

    pub fn notifications_for_rollout(&self, rollout_id: &str) -> Result<Vec<Notification>> {
        self.query_all(
            &format!(
                "SELECT {NOTIFICATION_COLS} FROM notifications WHERE rollout_id = ?1 ORDER BY id"
            ),
            params![rollout_id],
            notification_row,
        )
    }

    pub fn hook_run(&self, id: i64) -> Result<Option<HookRun>> {
        self.query_one(
            &format!("SELECT {HOOK_RUN_COLS} FROM hook_runs WHERE id = ?1"),
            params![id],
            hook_run_row,
        )
    }

    /// Hook runs not yet done, oldest first.
    pub fn pending_hook_runs(&self) -> Result<Vec<HookRun>> {
        self.query_all(
            &format!("SELECT {HOOK_RUN_COLS} FROM hook_runs WHERE status = 'pending' ORDER BY id"),
            params![],
            hook_run_row,
        )
    }

    pub fn hook_runs_for_rollout(&self, rollout_id: &str) -> Result<Vec<HookRun>> {
        self.query_all(
            &format!("SELECT {HOOK_RUN_COLS} FROM hook_runs WHERE rollout_id = ?1 ORDER BY id"),
            params![rollout_id],
            hook_run_row,
        )
    }

    /// The lifecycle event kind last queued for `rollout_id` among
    /// `kinds` (the source's edges, so a restart does not report the same
    /// edge twice).
    pub fn last_notice_of(&self, rollout_id: &str, kinds: &[&str]) -> Result<Option<String>> {
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("?{}", i + 2)).collect();
        let sql = format!(
            "SELECT event FROM notifications WHERE rollout_id = ?1 AND event IN ({})
             ORDER BY id DESC LIMIT 1",
            marks.join(", ")
        );
        let values: Vec<Value<'_>> = std::iter::once(rollout_id)
            .chain(kinds.iter().copied())
            .map(Value::Text)
            .collect();
        let rows: Vec<String> = self.query_all(&sql, &values, |r| r.get(0))?;
        Ok(rows.into_iter().next())
    }

    /// Record one delivery attempt of a webhook: `Ok(())` delivered it,
    /// `Err(message)` failed and stays pending.
    pub fn record_delivery(
        &mut self,
        id: i64,
        at: Timestamp,
        outcome: std::result::Result<(), String>,
    ) -> Result<Notification> {
        self.record_delivery_attempt(id, at, outcome, None)
    }

    /// Record one delivery attempt: `Ok(())` delivered it; `Err(message)`
    /// failed, and `next` says when the next attempt is due or that
    /// delivery is given up (`None`: pending, no time set).
    pub fn record_delivery_attempt(
        &mut self,
        id: i64,
        at: Timestamp,
        outcome: std::result::Result<(), String>,
        next: Option<NextAttempt>,
    ) -> Result<Notification> {
        let (error, delivered_at) = match &outcome {
            Ok(()) => (None, Some(ms(at))),
            Err(e) => (Some(e.as_str()), None),
        };
        let (next_at, failed_at) = match (&outcome, next) {
            (Err(_), Some(NextAttempt::At(t))) => (Some(ms(t)), None),
            (Err(_), Some(NextAttempt::GiveUp)) => (None, Some(ms(at))),
            _ => (None, None),
        };
        self.write(|tx, _| {
            let n = tx.execute(
                "UPDATE notifications SET attempts = attempts + 1, last_attempt_at = ?2,
                    last_error = ?3, delivered_at = coalesce(delivered_at, ?4),
                    next_attempt_at = ?5, failed_at = coalesce(failed_at, ?6)
                 WHERE id = ?1",
                params![id, ms(at), error, delivered_at, next_at, failed_at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "notification",
                    id: id.to_string(),
                });
            }
            Ok(((), Vec::new()))
        })?;
        self.notification(id)?.ok_or_else(|| StoreError::NotFound {
            what: "notification",
            id: id.to_string(),
        })
    }

    /// Record one attempt of a hook run: `Ok(())` ran it, `Err(message)`
    /// failed; `last` marks the run failed for good after a failed attempt.
    pub fn record_hook_attempt(
        &mut self,
        id: i64,
        at: Timestamp,
        outcome: std::result::Result<(), String>,
        last: bool,
    ) -> Result<HookRun> {
        let (error, status) = match &outcome {
            Ok(()) => (None, HookStatus::Ran),
            Err(e) if last => (Some(e.as_str()), HookStatus::Failed),
            Err(e) => (Some(e.as_str()), HookStatus::Pending),
        };
        let done_at = (status != HookStatus::Pending).then(|| ms(at));
        self.write(|tx, _| {
            let n = tx.execute(
                "UPDATE hook_runs SET attempts = attempts + 1, last_attempt_at = ?2,
                    last_error = ?3, status = ?4, done_at = ?5
                 WHERE id = ?1 AND status = 'pending'",
                params![id, ms(at), error, status.as_str(), done_at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "pending hook run",
                    id: id.to_string(),
                });
            }
            Ok(((), Vec::new()))
        })?;
        self.hook_run_done(id)
    }

    /// Close a hook run whose service has no hook for its event.
    pub fn skip_hook_run(&mut self, id: i64, at: Timestamp) -> Result<HookRun> {
        self.write(|tx, _| {
            tx.execute(
                "UPDATE hook_runs SET status = 'none', done_at = ?2
                 WHERE id = ?1 AND status = 'pending'",
                params![id, ms(at)],
            )?;
            Ok(((), Vec::new()))
        })?;
        self.hook_run_done(id)
    }

    fn hook_run_done(&self, id: i64) -> Result<HookRun> {
        self.hook_run(id)?.ok_or_else(|| StoreError::NotFound {
            what: "hook run",
            id: id.to_string(),
        })
    }
}

/// Queue one webhook delivery of incident `incident_id` inside `tx`
/// (created at `at`, ms); returns its id.
pub(super) fn queue_delivery(
    tx: &Tx<'_>,
    rollout_id: &str,
    incident_id: &str,
    target: &str,
    payload: &str,
    at: i64,
) -> Result<i64> {
    tx.query_one(
        "INSERT INTO notifications (rollout_id, incident_id, target, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        params![rollout_id, incident_id, target, payload, at],
        |r| r.get(0),
    )
}

/// Queue one lifecycle event's delivery to a named receiver inside `tx`
/// (created at `at`, ms); returns its id.
pub(super) fn queue_notice(
    tx: &Tx<'_>,
    rollout_id: &str,
    notice: &NewNotice,
    at: i64,
) -> Result<i64> {
    tx.query_one(
        "INSERT INTO notifications (rollout_id, incident_id, target, payload, created_at, receiver, event)
         VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        params![
            rollout_id,
            notice.target,
            notice.payload,
            at,
            notice.receiver,
            notice.event
        ],
        |r| r.get(0),
    )
}

/// Queue the hook run of `event` inside `tx` (created at `at`, ms);
/// returns its id.
pub(super) fn queue_hook(tx: &Tx<'_>, rollout_id: &str, event: HookEvent, at: i64) -> Result<i64> {
    tx.query_one(
        "INSERT INTO hook_runs (rollout_id, event, created_at) VALUES (?1, ?2, ?3) RETURNING id",
        params![rollout_id, event.as_str(), at],
        |r| r.get(0),
    )
}

//! The outbox: what the daemon sends out once it is committed, webhook
//! deliveries of incidents (`notify`) and lifecycle hook runs. The store
//! writes each row in the transaction that committed what it reports
//! (`store/outbox.rs`); this module sends them, both kinds the same way:
//!
//! - one worker task takes rows (by id) from one queue and sends each in a
//!   task of its own, at most [`MAX_IN_FLIGHT`] at once. A rollout's rows go
//!   one at a time, in the order they were queued, so its hooks report its
//!   events in order; rows of different rollouts go side by side, and a
//!   row queued twice is sent once.
//! - one attempt policy, the daemon's [`crate::retry::RetryPolicy`]:
//!   attempts already recorded for the row (before a restart) count against
//!   the budget, the first attempt after a start is always made, and every
//!   attempt is recorded before the next one.
//! - one pending scan at start ([`Shared::pending_outbox`], before the
//!   rollouts are resumed, then [`Shared::resume_outbox`]), so a row pending
//!   before a crash or a stop is sent after the restart (at least once: an
//!   attempt cut off mid-way is made again).
//!
//! When the daemon drains, attempts under way finish and are recorded;
//! no new one starts, and what is left stays pending for the next start.
//!
//! A failure never blocks or reverses a rollout. What differs by kind is
//! only what one attempt does and what is recorded: a delivery POSTs its
//! stored payload (10 s timeout, 2xx succeeds) and counts every failed
//! attempt in `canaryd_notification_failures_total`; a hook runs the
//! service's hook for its event ([`crate::routers::hooks`]), counts a run
//! that failed every attempt, and audits its end (`hook.<event>`). A hook
//! run whose service has no hook for the event is closed as such.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinSet};

use super::Shared;
use super::metrics::ServiceLabels;
use crate::retry::{self, Try};
use crate::routers::HookConfig;
use crate::routers::hooks::{self, HookContext, HookEvent};
use crate::store::{
    HookRun, NewAudit, Notification, OutboxItem, OutboxRow, RolloutRow, StoreError,
};

/// The most rows being sent at once.
pub(super) const MAX_IN_FLIGHT: usize = 64;
/// How long one webhook delivery attempt may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A row to send, and the rollout whose line it joins.
#[derive(Debug)]
pub(super) struct Queued {
    rollout_id: String,
    item: OutboxItem,
}

/// The outbox's side of [`Shared`]: the queue into the worker. It is not
/// bounded by itself; what bounds it is the store: it only ever holds ids
/// of rows committed and not yet sent.
pub(super) struct Outbox {
    queue: mpsc::UnboundedSender<Queued>,
}

/// The outbox and the worker's end of its queue ([`run`]).
pub(super) fn queue() -> (Outbox, mpsc::UnboundedReceiver<Queued>) {
    let (queue, rx) = mpsc::unbounded_channel();
    (Outbox { queue }, rx)
}

impl Shared {
    /// Send the webhook deliveries a commit of `rollout_id` queued.
    pub fn send_notifications(&self, rollout_id: &str, ids: &[i64]) {
        for &id in ids {
            self.queue_outbox(rollout_id, OutboxItem::Delivery(id));
        }
    }

    /// Run a rollout's pending lifecycle hooks: `onStart` after its first
    /// step, the end's hook once its traffic is back where it belongs.
    pub fn run_hooks_of(&self, rollout_id: &str) {
        match self.with_store(|s| s.hook_runs_for_rollout(rollout_id)) {
            Ok(runs) => {
                for run in runs.iter().map(|r| OutboxRow::Hook(r.clone())) {
                    if run.is_pending() {
                        self.queue_outbox(rollout_id, run.item());
                    }
                }
            }
            Err(e) => {
                tracing::error!(rollout = rollout_id, error = %e, "cannot read queued hooks")
            }
        }
    }

    fn queue_outbox(&self, rollout_id: &str, item: OutboxItem) {
        let queued = Queued {
            rollout_id: rollout_id.to_string(),
            item,
        };
        // Fails only once the worker has stopped (draining): the row stays
        // pending for the next start.
        let _ = self.outbox.queue.send(queued);
    }

    /// The rows a previous run left pending. Read before the open rollouts
    /// are resumed, which may queue and send new ones.
    pub(super) fn pending_outbox(&self) -> Vec<OutboxRow> {
        self.with_store(|s| s.pending_outbox())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the outbox; its pending rows wait for the next start");
                Vec::new()
            })
    }

    /// Send what [`Self::pending_outbox`] found, once the open rollouts
    /// are resumed. A rollout resumed because its traffic is not yet back
    /// runs its end's hook when it is, not now.
    pub(super) fn resume_outbox(&self, pending: Vec<OutboxRow>) {
        for row in pending {
            let waits = matches!(&row, OutboxRow::Hook(run) if run.event != HookEvent::OnStart)
                && self.driver(row.rollout_id()).is_some();
            if !waits {
                self.queue_outbox(row.rollout_id(), row.item());
            }
        }
    }
}

/// The worker: until the daemon drains, take queued rows and send them,
/// one line per rollout, at most [`MAX_IN_FLIGHT`] at once.
pub(super) async fn run(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut stop = shared.shutdown.subscribe();
    let mut lines = Lines::default();
    let mut sending: JoinSet<()> = JoinSet::new();
    let mut line_of: HashMap<Id, String> = HashMap::new();
    let start = |sending: &mut JoinSet<()>,
                 line_of: &mut HashMap<Id, String>,
                 rollout_id: String,
                 item: OutboxItem| {
        let task = sending.spawn(send(shared.clone(), item));
        line_of.insert(task.id(), rollout_id);
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            Some(done) = sending.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "an outbox row's task failed; the row stays pending");
                        e.id()
                    }
                };
                if let Some(rollout_id) = line_of.remove(&id)
                    && let Some(next) = lines.done(&rollout_id)
                {
                    start(&mut sending, &mut line_of, rollout_id, next);
                }
            }
            Some(q) = queue.recv(), if sending.len() < MAX_IN_FLIGHT => {
                if lines.push(&q.rollout_id, q.item) {
                    start(&mut sending, &mut line_of, q.rollout_id, q.item);
                }
            }
        }
    }
    // Draining: sends under way end after the attempt they are in.
    while sending.join_next().await.is_some() {}
}

/// The worker's lines: per rollout, the rows queued in order; the first
/// one is being sent.
#[derive(Debug, Default)]
struct Lines {
    by_rollout: HashMap<String, VecDeque<OutboxItem>>,
}

impl Lines {
    /// Queue `item` in its rollout's line; true when it starts now (the
    /// line was empty). A row already in its line is not queued again.
    fn push(&mut self, rollout_id: &str, item: OutboxItem) -> bool {
        let line = self.by_rollout.entry(rollout_id.to_string()).or_default();
        if line.contains(&item) {
            return false;
        }
        line.push_back(item);
        line.len() == 1
    }

    /// The row at the head of `rollout_id`'s line is done: the next one
    /// to start, if any.
    fn done(&mut self, rollout_id: &str) -> Option<OutboxItem> {
        let line = self.by_rollout.get_mut(rollout_id)?;
        line.pop_front();
        let next = line.front().copied();
        if next.is_none() {
            self.by_rollout.remove(rollout_id);
        }
        next
    }
}

/// Why a run of attempts ended without success.
enum Halt {
    /// The attempt failed (and is recorded).
    Failed(String),
    /// The daemon is draining: no attempt was made.
    Draining,
    /// The attempt could not be recorded.
    Unrecorded(StoreError),
}

/// Send one row: its attempts, each recorded, then its end.
async fn send(shared: Arc<Shared>, item: OutboxItem) {
    let parcel = match Parcel::load(&shared, item) {
        Ok(Some(parcel)) => parcel,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(row = ?item, error = %e, "cannot read a queued outbox row; it stays pending");
            return;
        }
    };
    let shared = &*shared;
    let parcel = &parcel;
    let stop = &shared.shutdown.subscribe();
    let run = shared
        .retry
        .run(
            parcel.attempts_made(),
            retry::jitter,
            |pause| until_drained(stop.clone(), pause),
            |t| async move {
                if *stop.borrow() {
                    return Err(Halt::Draining);
                }
                let outcome = parcel.attempt(&shared.http).await;
                parcel
                    .record(shared, t, outcome.clone())
                    .map_err(Halt::Unrecorded)?;
                outcome.map_err(Halt::Failed)
            },
            |_, halt| matches!(halt, Halt::Failed(_)),
        )
        .await;
    match run.result {
        Ok(()) => parcel.finish(shared, run.attempts, None),
        Err(Halt::Failed(e)) => parcel.finish(shared, run.attempts, Some(e)),
        // Still pending in the store: the next start sends it.
        Err(Halt::Draining) => {}
        Err(Halt::Unrecorded(e)) => {
            tracing::error!(row = ?item, error = %e, "cannot record an outbox attempt; the row stays pending");
        }
    }
}

/// Sleep `pause`, or less if the daemon starts draining meanwhile.
async fn until_drained(mut stop: watch::Receiver<bool>, pause: Duration) {
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// A pending row with what its attempts need.
enum Parcel {
    Delivery {
        notification: Notification,
        /// For the failure metric's label.
        service: String,
    },
    Hook {
        run: HookRun,
        hook: HookConfig,
        context: HookContext,
    },
}

impl Parcel {
    /// The row, if it still has to be sent. A hook run whose service has
    /// no hook for its event is closed here.
    fn load(shared: &Shared, item: OutboxItem) -> Result<Option<Parcel>, StoreError> {
        let found = shared.with_store(|s| -> Result<_, StoreError> {
            let Some(row) = s.outbox_row(item)?.filter(OutboxRow::is_pending) else {
                return Ok(None);
            };
            Ok(s.rollout(row.rollout_id())?.map(|rollout| (row, rollout)))
        })?;
        let Some((row, rollout)) = found else {
            return Ok(None);
        };
        Ok(match row {
            OutboxRow::Delivery(notification) => {
                let service = notification
                    .payload
                    .get("service")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                Some(Parcel::Delivery {
                    notification,
                    service,
                })
            }
            OutboxRow::Hook(run) => {
                let hook = shared
                    .services
                    .get(&rollout.service)
                    .and_then(|s| s.hooks.get(run.event))
                    .cloned();
                match hook {
                    Some(hook) => Some(Parcel::Hook {
                        context: hook_context(run.event, &rollout),
                        run,
                        hook,
                    }),
                    None => {
                        let now = shared.clock.now();
                        shared.with_store(|s| s.skip_hook_run(run.id, now))?;
                        None
                    }
                }
            }
        })
    }

    fn item(&self) -> OutboxItem {
        match self {
            Parcel::Delivery { notification, .. } => OutboxItem::Delivery(notification.id),
            Parcel::Hook { run, .. } => OutboxItem::Hook(run.id),
        }
    }

    fn attempts_made(&self) -> u32 {
        match self {
            Parcel::Delivery { notification, .. } => notification.attempts,
            Parcel::Hook { run, .. } => run.attempts,
        }
    }

    /// One attempt.
    async fn attempt(&self, http: &reqwest::Client) -> Result<(), String> {
        match self {
            Parcel::Delivery { notification, .. } => {
                let sent = http
                    .post(&notification.target)
                    .timeout(DELIVERY_TIMEOUT)
                    .json(&notification.payload)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(format!("{e}")),
                }
            }
            Parcel::Hook { hook, context, .. } => hooks::run_hook(hook, context)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Record attempt `t`, before any other is made.
    fn record(
        &self,
        shared: &Shared,
        t: Try,
        outcome: Result<(), String>,
    ) -> Result<(), StoreError> {
        if let (
            Parcel::Delivery {
                notification,
                service,
            },
            Err(e),
        ) = (self, &outcome)
        {
            shared
                .metrics
                .notification_failures
                .get_or_create(&ServiceLabels {
                    service: service.clone(),
                })
                .inc();
            tracing::warn!(notification = notification.id, target = %notification.target, error = %e, "webhook delivery failed");
        }
        let (item, now) = (self.item(), shared.clock.now());
        shared
            .with_store(|s| s.record_outbox_attempt(item, now, outcome, t.last))
            .map(|_| ())
    }

    /// The run of attempts ended: `attempts` made in all, `error` the last
    /// one's if it failed.
    fn finish(&self, shared: &Shared, attempts: u32, error: Option<String>) {
        let Parcel::Hook { run, hook, context } = self else {
            return;
        };
        let event = run.event;
        if error.is_some() {
            shared
                .metrics
                .notification_failures
                .get_or_create(&ServiceLabels {
                    service: context.service.clone(),
                })
                .inc();
        }
        let _ = shared.audit(NewAudit {
            at: shared.clock.now(),
            actor: crate::engine::ENGINE.into(),
            action: format!("hook.{event}"),
            rollout_id: Some(context.rollout_id.clone()),
            reason: match &error {
                None => format!("hook {event} ran"),
                Some(e) => format!("hook {event} failed after {attempts} attempts: {e}"),
            },
            ticket: None,
            details: json!({
                "hook": hook_name(hook),
                "hook_run": run.id,
                "attempts": attempts,
                "error": error,
            }),
        });
    }
}

/// What the hook of `event` reports about `rollout`.
fn hook_context(event: HookEvent, rollout: &RolloutRow) -> HookContext {
    HookContext {
        event,
        service: rollout.service.clone(),
        baseline: rollout.spec.baseline.clone(),
        canary: rollout.spec.canary.clone(),
        rollout_id: rollout.id.clone(),
        outcome: (event != HookEvent::OnStart)
            .then(|| rollout.outcome.map(|p| p.as_str().to_string()))
            .flatten(),
        reason: Some(if event == HookEvent::OnStart {
            "started".to_string()
        } else {
            rollout.reason.clone()
        }),
    }
}

fn hook_name(h: &HookConfig) -> String {
    match h {
        HookConfig::Command(c) => format!("command {}", c.program.display()),
        HookConfig::Webhook(w) => format!("webhook {}", w.url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollouts_rows_go_one_at_a_time_in_order_and_once() {
        let mut lines = Lines::default();
        let (d1, h1, h2) = (
            OutboxItem::Delivery(1),
            OutboxItem::Hook(1),
            OutboxItem::Hook(2),
        );
        assert!(lines.push("r-a", h1), "an empty line starts at once");
        assert!(!lines.push("r-a", d1), "behind the row being sent");
        assert!(!lines.push("r-a", h1), "being sent: not queued again");
        assert!(!lines.push("r-a", d1), "queued: not queued again");
        assert!(lines.push("r-b", h2), "another rollout's line is apart");
        assert_eq!(lines.done("r-a"), Some(d1));
        assert_eq!(lines.done("r-b"), None);
        assert_eq!(lines.done("r-a"), None);
        assert!(lines.by_rollout.is_empty(), "{lines:?}");
        assert_eq!(lines.done("r-a"), None, "an unknown line");
        assert!(lines.push("r-a", h1), "done, so it may be queued again");
    }
}

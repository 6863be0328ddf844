//! The outbox: what the daemon sends out once it is committed, webhook
//! deliveries (incidents' policy webhooks, and lifecycle notifications to
//! the config's receivers, `notify/`) and lifecycle hook runs. The store
//! writes each row in the transaction that committed what it reports
//! (`store/outbox.rs`); this module sends them:
//!
//! - one worker task takes rows (by id) from one queue and sends each in a
//!   task of its own, at most [`MAX_IN_FLIGHT`] at once. Rows go in lines:
//!   a rollout's hooks in one, its deliveries one line per receiver (or
//!   incident webhook URL). A line's rows go one at a time, in the order
//!   they were queued, so a receiver hears a rollout's events in order;
//!   lines go side by side, so a receiver that is down holds up neither
//!   the hooks nor the other receivers; a row queued twice is sent once.
//! - deliveries are tried on the notification schedule
//!   ([`DeliverySchedule`]): exponential backoff with full jitter, capped,
//!   until `retryFor` (default 6 h) has passed since the row was queued;
//!   each failed attempt records when the next is due, so a restart waits
//!   out the same pause, and then the row is given up (failed, shown as
//!   such). Hooks keep the daemon's [`crate::retry::RetryPolicy`]:
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
//! what one attempt does and what is recorded: an incident's delivery
//! POSTs its stored payload, a notification renders its stored event
//! document in its receiver's format (signed, for a generic webhook), both
//! with a 10 s timeout, 2xx succeeding; every failed attempt counts in
//! `canaryd_notification_failures_total`, each delivery in
//! `canaryd_notifications_delivered_total`, each one given up in
//! `canaryd_notifications_given_up_total`, and each row from its queueing
//! to its end in `canaryd_notifications_pending` (with the oldest one's
//! age, `docs/metrics.md`); a hook runs the
//! service's hook for its event ([`crate::routers::hooks`]), counts a run
//! that failed every attempt, and audits its end (`hook.<event>`). A hook
//! run whose service has no hook for the event is closed as such.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinSet};

use super::Shared;
use super::metrics::{ReceiverLabels, ServiceLabels};
use super::notify::event::EventDocument;
use super::notify::sign::{SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};
use super::notify::{DeliverySchedule, Format, NotificationsConfig, Receiver, format};
use crate::retry::{self, Try};
use crate::routers::HookConfig;
use crate::routers::hooks::{self, HookContext, HookEvent};
use crate::store::{
    HookRun, NewAudit, NextAttempt, Notification, OutboxItem, OutboxRow, RolloutRow, StoreError,
};
use crate::time::Timestamp;

/// The most rows being sent at once.
pub(super) const MAX_IN_FLIGHT: usize = 64;
/// How long one webhook delivery attempt may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The line incident webhooks' and receivers' metric label for a delivery
/// without a receiver.
const INCIDENT_WEBHOOK: &str = "incident-webhook";

/// Which line a row waits in: its rollout's, and within it the hooks or
/// one receiver (or incident webhook URL).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Line {
    rollout_id: String,
    channel: String,
}

impl Line {
    fn of(row: &OutboxRow) -> Line {
        let channel = match row {
            OutboxRow::Hook(_) => "hooks".to_string(),
            OutboxRow::Delivery(n) => match &n.receiver {
                Some(r) => format!("receiver {r}"),
                None => format!("webhook {}", n.target),
            },
        };
        Line {
            rollout_id: row.rollout_id().to_string(),
            channel,
        }
    }
}

/// A row to send, and the line it joins.
#[derive(Debug)]
pub(super) struct Queued {
    line: Line,
    item: OutboxItem,
}

/// The outbox's side of [`Shared`]: the queue into the worker, and the
/// configured receivers with their schedule. The queue is not bounded by
/// itself; what bounds it is the store: it only ever holds ids of rows
/// committed and not yet sent.
pub(super) struct Outbox {
    queue: mpsc::UnboundedSender<Queued>,
    receivers: BTreeMap<String, Target>,
    schedule: DeliverySchedule,
}

/// A configured receiver and the client that reaches it.
struct Target {
    receiver: Receiver,
    http: reqwest::Client,
}

/// The outbox for `config`'s receivers, and the worker's end of its queue
/// ([`run`]).
pub(super) fn queue(
    config: &NotificationsConfig,
) -> anyhow::Result<(Outbox, mpsc::UnboundedReceiver<Queued>)> {
    let mut receivers = BTreeMap::new();
    for (name, receiver) in &config.receivers {
        let http = receiver
            .tls
            .http_client_builder()
            .map_err(|e| anyhow::anyhow!("notifications.receivers.{name}: {e}"))?
            .build()
            .map_err(|e| {
                anyhow::anyhow!(
                    "notifications.receivers.{name}: {}",
                    crate::causes::with_causes(&e)
                )
            })?;
        receivers.insert(
            name.clone(),
            Target {
                receiver: receiver.clone(),
                http,
            },
        );
    }
    let (queue, rx) = mpsc::unbounded_channel();
    Ok((
        Outbox {
            queue,
            receivers,
            schedule: config.schedule,
        },
        rx,
    ))
}

impl Shared {
    /// Send the webhook deliveries a commit of `rollout_id` queued.
    pub fn send_notifications(&self, rollout_id: &str, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let rows = self.with_store(|s| {
            ids.iter()
                .map(|&id| s.outbox_row(OutboxItem::Delivery(id)))
                .collect::<Result<Vec<_>, _>>()
        });
        match rows {
            Ok(rows) => {
                for row in rows.into_iter().flatten() {
                    self.queue_row(&row);
                }
            }
            Err(e) => {
                tracing::error!(rollout = rollout_id, error = %e, "cannot read queued deliveries; they are sent at the next start")
            }
        }
    }

    /// Run a rollout's pending lifecycle hooks: `onStart` after its first
    /// step, the end's hook once its traffic is back where it belongs.
    pub fn run_hooks_of(&self, rollout_id: &str) {
        match self.with_store(|s| s.hook_runs_for_rollout(rollout_id)) {
            Ok(runs) => {
                for run in runs.iter().map(|r| OutboxRow::Hook(r.clone())) {
                    if run.is_pending() {
                        self.queue_row(&run);
                    }
                }
            }
            Err(e) => {
                tracing::error!(rollout = rollout_id, error = %e, "cannot read queued hooks")
            }
        }
    }

    fn queue_row(&self, row: &OutboxRow) {
        let created_at = match row {
            OutboxRow::Delivery(n) => n.created_at,
            OutboxRow::Hook(h) => h.created_at,
        };
        self.metrics.outbox_queued(row.item(), created_at);
        let queued = Queued {
            line: Line::of(row),
            item: row.item(),
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
                self.queue_row(&row);
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
    let mut line_of: HashMap<Id, Line> = HashMap::new();
    let start = |sending: &mut JoinSet<()>,
                 line_of: &mut HashMap<Id, Line>,
                 line: Line,
                 item: OutboxItem| {
        let task = sending.spawn(send(shared.clone(), item));
        line_of.insert(task.id(), line);
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
                if let Some(line) = line_of.remove(&id)
                    && let Some(next) = lines.done(&line)
                {
                    start(&mut sending, &mut line_of, line, next);
                }
            }
            Some(q) = queue.recv(), if sending.len() < MAX_IN_FLIGHT => {
                if lines.push(&q.line, q.item) {
                    start(&mut sending, &mut line_of, q.line, q.item);
                }
            }
        }
    }
    // Draining: sends under way end after the attempt they are in.
    while sending.join_next().await.is_some() {}
}

/// The worker's lines: per line, the rows queued in order; the first one
/// is being sent.
#[derive(Debug, Default)]
struct Lines {
    by_line: HashMap<Line, VecDeque<OutboxItem>>,
}

impl Lines {
    /// Queue `item` in `line`; true when it starts now (the line was
    /// empty). A row already in its line is not queued again.
    fn push(&mut self, line: &Line, item: OutboxItem) -> bool {
        let rows = self.by_line.entry(line.clone()).or_default();
        if rows.contains(&item) {
            return false;
        }
        rows.push_back(item);
        rows.len() == 1
    }

    /// The row at the head of `line` is done: the next one to start, if
    /// any.
    fn done(&mut self, line: &Line) -> Option<OutboxItem> {
        let rows = self.by_line.get_mut(line)?;
        rows.pop_front();
        let next = rows.front().copied();
        if next.is_none() {
            self.by_line.remove(line);
        }
        next
    }
}

/// Why a run of hook attempts ended without success.
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
    match parcel {
        Parcel::Delivery {
            notification,
            service,
        } => deliver(&shared, notification, &service).await,
        Parcel::Hook { run, hook, context } => run_hook(&shared, &run, &hook, &context).await,
    }
}

/// Deliver one webhook row on the notification schedule: attempt, record
/// (with the next attempt's time, or the end), pause, until delivered,
/// given up, or the daemon drains (the row stays pending; the next start
/// waits until its recorded next attempt).
async fn deliver(shared: &Shared, mut row: Notification, service: &str) {
    let schedule = shared.outbox.schedule;
    let give_up_at = row.created_at + schedule.retry_for;
    let receiver = row
        .receiver
        .clone()
        .unwrap_or_else(|| INCIDENT_WEBHOOK.into());
    let labels = ReceiverLabels {
        service: service.to_string(),
        receiver: receiver.clone(),
    };
    let mut stop = shared.shutdown.subscribe();
    loop {
        if let Some(due) = row.next_attempt_at {
            let wait = due.saturating_since(shared.clock.now());
            if !wait.is_zero() {
                until_drained(stop.clone(), wait).await;
            }
        }
        if *stop.borrow_and_update() {
            return;
        }
        let now = shared.clock.now();
        let outcome = match delivery_attempt(shared, &row, now).await {
            Attempt::Sent => Ok(()),
            Attempt::Failed(e) => Err((e, false)),
            // Nothing later can succeed (a receiver no longer configured, a
            // document that does not read): give up now.
            Attempt::Hopeless(e) => Err((e, true)),
        };
        let done = shared.clock.now();
        let next = match &outcome {
            Ok(()) => None,
            Err((_, true)) => Some(NextAttempt::GiveUp),
            Err(_) if done >= give_up_at => Some(NextAttempt::GiveUp),
            Err(_) => {
                let pause = schedule.pause(row.attempts + 1, retry::jitter());
                Some(NextAttempt::At((done + pause).min(give_up_at)))
            }
        };
        if let Err((e, _)) = &outcome {
            shared
                .metrics
                .notification_failures
                .get_or_create(&ServiceLabels {
                    service: service.to_string(),
                })
                .inc();
            tracing::warn!(notification = row.id, receiver = %receiver, target = %row.target, attempt = row.attempts + 1, error = %e, "delivery failed");
        }
        let recorded = shared.with_store(|s| {
            s.record_delivery_attempt(row.id, done, outcome.clone().map_err(|(e, _)| e), next)
        });
        row = match recorded {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(notification = row.id, error = %e, "cannot record a delivery attempt; the row stays pending");
                return;
            }
        };
        match (&outcome, next) {
            (Ok(()), _) => {
                shared.metrics.outbox_settled(OutboxItem::Delivery(row.id));
                shared
                    .metrics
                    .notifications_delivered
                    .get_or_create(&labels)
                    .inc();
                return;
            }
            (Err((e, _)), Some(NextAttempt::GiveUp)) => {
                shared.metrics.outbox_settled(OutboxItem::Delivery(row.id));
                shared
                    .metrics
                    .notifications_given_up
                    .get_or_create(&labels)
                    .inc();
                tracing::error!(notification = row.id, receiver = %receiver, attempts = row.attempts, error = %e, "delivery given up");
                return;
            }
            _ => {}
        }
    }
}

/// What one delivery attempt came to.
enum Attempt {
    Sent,
    Failed(String),
    Hopeless(String),
}

/// One attempt at `row`: an incident's payload as stored, or an event
/// document in its receiver's format (signed for a generic webhook).
async fn delivery_attempt(shared: &Shared, row: &Notification, now: Timestamp) -> Attempt {
    let Some(name) = &row.receiver else {
        let sent = shared
            .http
            .post(&row.target)
            .timeout(DELIVERY_TIMEOUT)
            .json(&row.payload)
            .send()
            .await;
        return answered(sent).await;
    };
    let Some(target) = shared.outbox.receivers.get(name) else {
        return Attempt::Hopeless(format!(
            "receiver `{name}` is no longer in the config's notifications.receivers"
        ));
    };
    let doc: EventDocument = match serde_json::from_value(row.payload.clone()) {
        Ok(d) => d,
        Err(e) => return Attempt::Hopeless(format!("the stored event does not read: {e}")),
    };
    let body = format::body(target.receiver.format, &doc);
    let bytes = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => return Attempt::Hopeless(format!("the body does not serialize: {e}")),
    };
    let mut request = target
        .http
        .post(&target.receiver.url)
        .timeout(DELIVERY_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-canaryd-event", doc.kind.as_str())
        .header("x-canaryd-rollout", &doc.rollout_id)
        .header("x-canaryd-delivery", row.id.to_string());
    if target.receiver.format == Format::Webhook
        && let Some(secret) = &target.receiver.secret
    {
        let secs = now.as_millis() / 1000;
        request = request
            .header(TIMESTAMP_HEADER, secs.to_string())
            .header(SIGNATURE_HEADER, signature(&secret.0, secs, &bytes));
    }
    answered(request.body(bytes).send().await).await
}

/// A 2xx is sent; anything else failed, with the status and the start of
/// the answer (Slack and Teams say what they refused), or the error and
/// its causes (a refused certificate says why).
async fn answered(sent: Result<reqwest::Response, reqwest::Error>) -> Attempt {
    match sent {
        Ok(r) if r.status().is_success() => Attempt::Sent,
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            let text: String = text.trim().chars().take(200).collect();
            if text.is_empty() {
                Attempt::Failed(format!("HTTP {status}"))
            } else {
                Attempt::Failed(format!("HTTP {status}: {text}"))
            }
        }
        Err(e) => Attempt::Failed(crate::causes::with_causes(&e)),
    }
}

/// Run one hook row with the daemon's retry policy, each attempt
/// recorded, then audit its end.
async fn run_hook(shared: &Shared, run: &HookRun, hook: &HookConfig, context: &HookContext) {
    let stop = &shared.shutdown.subscribe();
    let item = OutboxItem::Hook(run.id);
    let attempts = shared
        .retry
        .run(
            run.attempts,
            retry::jitter,
            |pause| until_drained(stop.clone(), pause),
            |t: Try| async move {
                if *stop.borrow() {
                    return Err(Halt::Draining);
                }
                let outcome = hooks::run_hook(hook, context)
                    .await
                    .map_err(|e| e.to_string());
                let now = shared.clock.now();
                shared
                    .with_store(|s| s.record_outbox_attempt(item, now, outcome.clone(), t.last))
                    .map_err(Halt::Unrecorded)?;
                outcome.map_err(Halt::Failed)
            },
            |_, halt| matches!(halt, Halt::Failed(_)),
        )
        .await;
    match attempts.result {
        Ok(()) => finish_hook(shared, run, hook, context, attempts.attempts, None),
        Err(Halt::Failed(e)) => finish_hook(shared, run, hook, context, attempts.attempts, Some(e)),
        // Still pending in the store: the next start runs it.
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
        /// For the metrics' label.
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
                shared.metrics.outbox_settled(item);
                return Ok(None);
            };
            Ok(s.rollout(row.rollout_id())?.map(|rollout| (row, rollout)))
        })?;
        let Some((row, rollout)) = found else {
            return Ok(None);
        };
        Ok(match row {
            OutboxRow::Delivery(notification) => Some(Parcel::Delivery {
                notification,
                service: rollout.service.clone(),
            }),
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
                        shared.metrics.outbox_settled(item);
                        None
                    }
                }
            }
        })
    }
}

/// A hook run's attempts ended: `attempts` made in all, `error` the last
/// one's if it failed. Counted when it failed, and audited.
fn finish_hook(
    shared: &Shared,
    run: &HookRun,
    hook: &HookConfig,
    context: &HookContext,
    attempts: u32,
    error: Option<String>,
) {
    let event = run.event;
    shared.metrics.outbox_settled(OutboxItem::Hook(run.id));
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

    fn line(rollout: &str, channel: &str) -> Line {
        Line {
            rollout_id: rollout.into(),
            channel: channel.into(),
        }
    }

    #[test]
    fn a_lines_rows_go_one_at_a_time_in_order_and_once() {
        let mut lines = Lines::default();
        let (d1, h1, h2) = (
            OutboxItem::Delivery(1),
            OutboxItem::Hook(1),
            OutboxItem::Hook(2),
        );
        let (a, b) = (line("r-a", "hooks"), line("r-b", "hooks"));
        assert!(lines.push(&a, h1), "an empty line starts at once");
        assert!(!lines.push(&a, d1), "behind the row being sent");
        assert!(!lines.push(&a, h1), "being sent: not queued again");
        assert!(!lines.push(&a, d1), "queued: not queued again");
        assert!(lines.push(&b, h2), "another rollout's line is apart");
        assert_eq!(lines.done(&a), Some(d1));
        assert_eq!(lines.done(&b), None);
        assert_eq!(lines.done(&a), None);
        assert!(lines.by_line.is_empty(), "{lines:?}");
        assert_eq!(lines.done(&a), None, "an unknown line");
        assert!(lines.push(&a, h1), "done, so it may be queued again");
    }

    #[test]
    fn a_receiver_that_is_down_holds_up_only_its_own_line() {
        let mut lines = Lines::default();
        let (slack, teams) = (line("r-a", "receiver slack"), line("r-a", "receiver teams"));
        assert!(lines.push(&slack, OutboxItem::Delivery(1)));
        assert!(
            !lines.push(&slack, OutboxItem::Delivery(3)),
            "in order behind it"
        );
        assert!(
            lines.push(&teams, OutboxItem::Delivery(2)),
            "not behind slack"
        );
        assert!(
            lines.push(&line("r-a", "hooks"), OutboxItem::Hook(1)),
            "nor the hooks"
        );
    }
}

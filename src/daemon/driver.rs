//! One task per active rollout: it owns the engine's `Rollout`, closes an
//! analysis window every interval (pushed data plus pulled sources), feeds
//! the engine, commits each step, and only then carries out the effects.
//!
//! Order, for every input: `Rollout::handle` → drain effects →
//! `Store::commit_step` (journal, state, incidents, outbox, audit in one
//! transaction) → act (router, webhooks, stream). A crash before the commit
//! loses an input nobody acted on; a crash after it is recovered by replaying
//! the journal and reconciling with the router's real weights.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::committer::CommitError;
use super::metrics::{RolloutSample, WindowSample};
use super::notify::EventKind;
use super::notify::event::{EventDocument, source_event, step_events};
use super::view::{Checks, DriverStatus, LiveView};
use super::{ServiceRuntime, Shared, StreamEvent};
use crate::engine::{Command, Effect, Input, Phase, Rejected, Rollout};
use crate::monitor::Monitor;
use crate::policy::Weight;
use crate::retry;
use crate::routers::{Target, apply_with_retries};
use crate::sources::{Collected, Window};
use crate::stats::{ArmData, IntervalSnapshot};
use crate::store::leases::Fence;
use crate::store::{Committed, EngineStep, NewAudit, NewNotice, OpenRollout, RolloutRow};
use crate::time::Timestamp;
use crate::wire::{self, SourceHealth, rfc3339};

/// Checkpoint at least this often (in steps), so a restart replays little.
const CHECKPOINT_EVERY: u32 = 20;

/// Where in its [`CHECKPOINT_EVERY`] cycle a rollout's driver starts,
/// spread over the cycle by the rollout's id: rollouts started (or
/// restored) together would otherwise write their periodic checkpoints in
/// the same step, and each is tens of KiB of JSON held until its group
/// commits (1,000 rollouts at once: about 25 MiB at one moment, which the
/// allocator keeps after it is freed).
fn checkpoint_phase(id: &str) -> u32 {
    // FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
    let hash = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % CHECKPOINT_EVERY
}

/// Steps with a checkpoint serialized and not yet committed, all rollouts
/// together. A checkpoint is tens of KiB of JSON (about 26 KiB for the
/// PRODUCT.md example at 30 s, 97 KiB at 1 s), and rollouts that step
/// together (started, restored, or moved to a new step at the same
/// moment) would otherwise each hold one until their group commits:
/// 10,000 of them at 1 s, about 1 GB at once, which the allocator keeps
/// after it is freed. A group commit takes up to 128 of them; the rest
/// wait for the next (periodic checkpoints of 10,000 rollouts at 1 s are
/// about 500 a second).
pub(super) const CHECKPOINTS_IN_FLIGHT: usize = 128;

/// Inputs one external input may cause (router acknowledgements).
const MAX_CHAINED_INPUTS: usize = 64;

/// A message to a driver. Small on purpose: a driver's channel allocates
/// room for 32 messages when it is made, so a `Command` held inline (its
/// actor's strings) cost about 3.5 KiB per live rollout; boxed, 0.5 KiB.
pub enum DriverMsg {
    Command {
        order: Box<Order>,
        reply: oneshot::Sender<Result<wire::Rollout, Rejected>>,
    },
}

/// A command for the driver.
pub struct Order {
    pub command: Command,
    /// The command's row in the queue when another daemon's API took it
    /// (`lease.rs`): marked applied with the step it causes.
    pub queued: Option<i64>,
}

/// A lease this daemon holds (`lease.rs`), as its driver keeps it.
#[derive(Clone)]
pub(super) struct HeldLease {
    pub fence: Fence,
    /// Set when the lease was lost: the driver stops.
    pub lost: Arc<AtomicBool>,
}

impl HeldLease {
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Both arms of relayed observations, as the `relayed` rows keep them.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RelayedData {
    pub baseline: crate::stats::ArmData,
    pub canary: crate::stats::ArmData,
}

/// The view last published in `view`, written out: the lock is held only
/// to take the published view, not while its words are written.
pub(super) fn live_view(view: &Mutex<Arc<LiveView>>) -> wire::Rollout {
    let published = view.lock().unwrap_or_else(|e| e.into_inner()).clone();
    published.render()
}

/// What the rest of the daemon holds of a running driver.
#[derive(Clone)]
pub struct DriverHandle {
    pub tx: mpsc::Sender<DriverMsg>,
    pub push: Arc<Mutex<Collected>>,
    /// The rollout as the API shows it, written out by [`live_view`].
    pub view: Arc<Mutex<Arc<LiveView>>>,
    pub service: String,
    pub started_at: Timestamp,
    /// When the canary weight in force took effect (ms since the epoch):
    /// pushed events from before it are stale.
    pub weight_since: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the rollout may have webhook deliveries in the store: set
    /// before the commit that queues its first one (and from the start for
    /// a restored rollout). While it is false the rollout's view has no
    /// notifications to read, so `GET /v1/rollouts/{id}` answers from
    /// `view` without waiting for the store (which a group commit holds
    /// through its fsync).
    pub deliveries: Arc<AtomicBool>,
}

pub struct Driver {
    shared: Arc<Shared>,
    service: Arc<ServiceRuntime>,
    rollout: Rollout<Monitor>,
    row: RolloutRow,
    push: Arc<Mutex<Collected>>,
    /// The rollout as the API shows it, refreshed after every step.
    view: Arc<Mutex<Arc<LiveView>>>,
    /// The policy's triggers and gates, which every view reads.
    checks: Arc<Checks>,
    status: DriverStatus,
    interval: Duration,
    window_start: Timestamp,
    /// Pushed data of windows whose pull failed: kept for the next window.
    carry: Collected,
    router_retry_at: Option<Timestamp>,
    router_failures: u32,
    incident: Option<String>,
    steps_since_checkpoint: u32,
    /// The (phase, step) last published, to time the current step.
    last_step: Option<(Phase, usize)>,
    /// A failed rollback already raised its incident.
    rollback_incident: bool,
    /// When the weight in force took effect, shared with pushes; and that
    /// weight (`None` until first published; after a restart the time is
    /// unknown, so it stays at the start and no event is left out).
    weight_since: Arc<std::sync::atomic::AtomicU64>,
    /// Shared with the handle (`DriverHandle::deliveries`).
    deliveries: Arc<AtomicBool>,
    last_weight: Option<Weight>,
    /// The source's last edge notified (`source-failing` or
    /// `source-recovered`), so each edge is told once, also across restarts.
    source_edge: Option<EventKind>,
    /// Events seen outside an engine step (the source's edges), queued
    /// with the next step's commit.
    notices: Vec<EventDocument>,
    /// The lease this driver commits under (`storage.postgres`; `lease.rs`).
    lease: Option<HeldLease>,
    /// The queued command the next step applies, if it came from the queue.
    queued_command: Option<i64>,
    /// Relayed observations in the window being closed, deleted with the
    /// step that feeds it.
    relayed: Vec<i64>,
}

impl Driver {
    pub fn new(
        shared: Arc<Shared>,
        service: Arc<ServiceRuntime>,
        rollout: Rollout<Monitor>,
        row: RolloutRow,
        now: Timestamp,
    ) -> Driver {
        let interval = rollout
            .policy()
            .analysis
            .interval
            .max(Duration::from_millis(100));
        let started_ms = rollout.started_at().as_millis();
        let status = DriverStatus {
            source: SourceHealth {
                sources: service.source_names(),
                status: "unknown".into(),
                last_error: None,
                last_success_at: None,
            },
            ..DriverStatus::default()
        };
        let checks = Checks::of(&rollout);
        let view = LiveView::new(&row, &rollout, &checks, None, Some(&status), now);
        // The first window starts now: nothing recorded before it is this
        // rollout's.
        for source in &service.pull {
            source.start_fresh();
        }
        let steps_since_checkpoint = checkpoint_phase(&rollout.spec().id);
        Driver {
            shared,
            service,
            rollout,
            row,
            push: Arc::new(Mutex::new(Collected::default())),
            view: Arc::new(Mutex::new(Arc::new(view))),
            checks,
            status,
            interval,
            window_start: now,
            carry: Collected::default(),
            router_retry_at: None,
            router_failures: 0,
            incident: None,
            steps_since_checkpoint,
            last_step: None,
            rollback_incident: false,
            weight_since: Arc::new(std::sync::atomic::AtomicU64::new(started_ms)),
            deliveries: Arc::new(AtomicBool::new(false)),
            last_weight: None,
            source_edge: None,
            notices: Vec::new(),
            lease: None,
            queued_command: None,
            relayed: Vec::new(),
        }
    }

    /// Commit every step under `lease`, and stop once it is lost.
    pub(super) fn with_lease(mut self, lease: HeldLease) -> Driver {
        self.lease = Some(lease);
        self
    }

    /// Observations other daemons relayed for this rollout (`lease.rs`),
    /// into `into`; their rows go with the step this window feeds.
    fn take_relayed(&mut self, into: &mut Collected) {
        let id = self.id().to_string();
        let rows = match self.shared.with_store(|s| s.relayed_for(&id)) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(rollout = %id, error = %e, "cannot read relayed observations; they join a later window");
                return;
            }
        };
        for (row, data) in rows {
            if self.relayed.contains(&row) {
                continue; // Already in the carried-over window.
            }
            match serde_json::from_str::<RelayedData>(&data) {
                Ok(d) => {
                    let c = Collected {
                        baseline: d.baseline,
                        canary: d.canary,
                    };
                    self.count_observations(&c);
                    merge(into, &c);
                }
                Err(e) => {
                    tracing::error!(rollout = %id, row, error = %e, "unreadable relayed observations; dropped");
                }
            }
            self.relayed.push(row);
        }
    }

    /// Another daemon holds the rollout now: log it, and stop without
    /// acting on anything more.
    fn lease_gone(&self) -> bool {
        let Some(lease) = &self.lease else {
            return false;
        };
        if !lease.is_lost() {
            return false;
        }
        tracing::info!(rollout = %self.id(), epoch = lease.fence.epoch, "driver stopped: this daemon commits nothing more for the rollout and moves no traffic for it");
        self.shared.finished(self.id());
        true
    }

    pub fn handle(&self, tx: mpsc::Sender<DriverMsg>) -> DriverHandle {
        DriverHandle {
            tx,
            push: self.push.clone(),
            view: self.view.clone(),
            service: self.rollout.spec().service.clone(),
            started_at: self.rollout.started_at(),
            weight_since: self.weight_since.clone(),
            deliveries: self.deliveries.clone(),
        }
    }

    pub fn id(&self) -> &str {
        &self.rollout.spec().id
    }

    pub fn view(&self) -> wire::Rollout {
        live_view(&self.view)
    }

    /// Rebuild a rollout from its checkpoint and the journal after it. The
    /// replayed inputs' effects were committed before; whatever of them was
    /// not carried out is recovered by [`Driver::reconcile`].
    pub fn restore(
        shared: Arc<Shared>,
        service: Arc<ServiceRuntime>,
        open: OpenRollout<Monitor>,
        now: Timestamp,
    ) -> Result<Driver, String> {
        let inputs = open
            .inputs_to_replay()
            .map_err(|e| format!("cannot read the journal: {e}"))?;
        let mut rollout = Rollout::restore(open.checkpoint.clone()).map_err(|e| e.to_string())?;
        for (at, input) in inputs {
            // Committed inputs were accepted when they were first handled.
            let _ = rollout.handle(at, input);
            while rollout.poll_effect().is_some() {}
        }
        let mut d = Driver::new(shared, service, rollout, open.row.clone(), now);
        // What it queued before the restart is in the store.
        d.deliveries.store(true, Ordering::SeqCst);
        let incidents = d
            .shared
            .with_store(|s| s.incidents_for_rollout(&open.row.id))
            .unwrap_or_default();
        d.rollback_incident = incidents.iter().any(|i| i.trigger == "router");
        let edges = [
            EventKind::SourceFailing.as_str(),
            EventKind::SourceRecovered.as_str(),
        ];
        d.source_edge = d
            .shared
            .with_store(|s| s.last_notice_of(&open.row.id, &edges))
            .ok()
            .flatten()
            .and_then(|k| EventKind::parse(&k));
        d.incident = incidents
            .iter()
            .rfind(|i| i.trigger != "router")
            .or(incidents.last())
            .map(|i| i.id.clone());
        d.publish(now);
        Ok(d)
    }

    /// After a restart: make the router match the committed state. A weight
    /// asked and not confirmed is asked again; a router that drifted from
    /// the confirmed weight is moved back, and both are audited.
    pub async fn reconcile(&mut self) -> Result<(), String> {
        let spec = self.rollout.spec().clone();
        let target_weight = self
            .rollout
            .pending_weight()
            .unwrap_or(self.rollout.weight());
        let Some(router) = self.service.router.clone() else {
            return self.settle_pending_dry(target_weight).await;
        };
        if spec.dry_run {
            return self.settle_pending_dry(target_weight).await;
        }
        let seen = router.read_weights().await;
        let now = self.shared.clock.now();
        let seen_text = match &seen {
            Ok(Some(w)) => format!("{}%", w.canary.percent()),
            Ok(None) => "nothing set".into(),
            Err(e) => format!("unreadable ({e})"),
        };
        let matches = matches!(&seen, Ok(Some(w)) if w.canary == target_weight);
        self.shared
            .audit(NewAudit {
                at: now,
                actor: crate::engine::ENGINE.into(),
                action: "router.reconcile".into(),
                rollout_id: Some(spec.id.clone()),
                reason: if matches {
                    format!("after restart the router applies {seen_text}, as committed")
                } else {
                    format!(
                        "after restart the router applies {seen_text}; setting the committed {}%",
                        target_weight.percent()
                    )
                },
                ticket: None,
                details: json!({ "router": router.describe(), "seen": seen_text, "target": target_weight.percent() }),
            })
            .map_err(|e| e.to_string())?;
        if matches {
            if self.rollout.pending_weight() == Some(target_weight) {
                self.run(Input::RouterAck {
                    weight: target_weight,
                    error: None,
                })
                .await
                .map_err(|e| e.message)?;
            }
            return Ok(());
        }
        self.apply_weight(target_weight)
            .await
            .map_err(|e| e.message)
    }

    async fn settle_pending_dry(&mut self, weight: Weight) -> Result<(), String> {
        if self.rollout.pending_weight().is_some() {
            self.run(Input::RouterAck {
                weight,
                error: None,
            })
            .await
            .map_err(|e| e.message)?;
        }
        Ok(())
    }

    /// The driver's loop: until the rollout ends or the daemon drains.
    ///
    /// The driver comes boxed: an `async fn` keeps a by-value argument
    /// twice in its future (the argument and the local it is moved to).
    /// With the steps boxed too, an idle rollout's task is about 0.5 KiB
    /// beside its 3.5 KiB driver, against 10.6 KiB before.
    pub async fn run_loop(mut self: Box<Self>, mut rx: mpsc::Receiver<DriverMsg>) {
        let mut shutdown = self.shared.shutdown.subscribe();
        // A clock moved by hand (tests, benches) wakes the driver when it
        // moves; the wall clock moves with the sleep below.
        let mut moved = self.shared.clock.moved();
        // Bounded by the rollout's own end (maxDuration) or the daemon's.
        // An ended rollout whose traffic is not yet back keeps its driver
        // until the router confirms 0.
        loop {
            if self.lease_gone() {
                return;
            }
            let ended = self.rollout.phase().is_terminal();
            if ended && self.rollout.pending_weight().is_none() {
                break;
            }
            if *shutdown.borrow() {
                return;
            }
            let now = self.shared.clock.now();
            let mut wake = if ended {
                now + self.interval
            } else {
                self.window_start + self.interval
            };
            if let Some(d) = self.rollout.next_deadline().filter(|_| !ended) {
                wake = wake.min(d);
            }
            if let Some(r) = self.router_retry_at {
                wake = wake.min(r);
            }
            let sleep = wake.saturating_since(now);
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                msg = rx.recv() => match msg {
                    Some(DriverMsg::Command { order, reply }) => {
                        let Order { command, queued } = *order;
                        self.queued_command = queued;
                        // Boxed, like the timer's step below: a step's
                        // future holds its locals only while it runs, not in
                        // every idle driver's task.
                        let result = Box::pin(self.run(Input::Command { command }))
                            .await
                            .map(|()| self.view());
                        self.queued_command = None;
                        let _ = reply.send(result);
                    }
                    None => return,
                },
                _ = tokio::time::sleep(sleep) => {
                    if let Err(e) = Box::pin(self.on_timer()).await {
                        tracing::error!(rollout = %self.id(), error = %e.message, "driver step failed");
                    }
                }
                () = super::clock::clock_moved(&mut moved) => {}
            }
        }
        // Commands that arrived as the rollout ended: it no longer takes any.
        rx.close();
        while let Ok(DriverMsg::Command { order, reply }) = rx.try_recv() {
            let command = order.command;
            let _ = reply.send(Err(Rejected::conflict(format!(
                "rollout {} is already {}; `{}` no longer applies",
                self.id(),
                self.rollout.phase().as_str(),
                command.name()
            ))));
        }
        Box::pin((*self).finish()).await;
    }

    async fn on_timer(&mut self) -> Result<(), Rejected> {
        let now = self.shared.clock.now();
        if self.rollout.phase().is_terminal() {
            // Ended, traffic not yet back: only the router is retried.
            if self.router_retry_at.is_none_or(|t| now >= t) {
                self.router_retry_at = None;
                if let Some(w) = self.rollout.pending_weight() {
                    self.apply_weight(w).await?;
                }
            }
            return Ok(());
        }
        let mut evaluated = false;
        if now >= self.window_start + self.interval {
            evaluated = self.close_window(now).await?;
        }
        if self.router_retry_at.is_some_and(|t| now >= t) {
            self.router_retry_at = None;
            if let Some(w) = self.rollout.pending_weight() {
                self.apply_weight(w).await?;
            }
        }
        // A data input already evaluated everything at this instant.
        if !evaluated && !self.rollout.phase().is_terminal() {
            self.run(Input::Tick).await?;
        }
        Ok(())
    }

    /// Close `[window_start, end)`: pushed data plus every pull source. A
    /// failed pull feeds the engine nothing for the window (the policy's
    /// `noData` decides) and keeps the pushed data for the next one.
    /// Returns whether the engine was fed (and so evaluated at `now`).
    async fn close_window(&mut self, now: Timestamp) -> Result<bool, Rejected> {
        let start = self.window_start;
        let end = if now.saturating_since(start) > self.interval * 2 {
            now
        } else {
            start + self.interval
        };
        self.window_start = end;
        let pushed = match self.push.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Collected::default(),
        };
        let mut base = std::mem::take(&mut self.carry);
        if base == Collected::default() {
            base = pushed;
        } else {
            merge(&mut base, &pushed);
        }
        if self.lease.is_some() {
            self.take_relayed(&mut base);
        }
        // Only a failed pull keeps `base` (for the next window): without
        // pull sources nothing can fail, and the window is not copied.
        let mut data = if self.service.pull.is_empty() {
            std::mem::take(&mut base)
        } else {
            base.clone()
        };
        let spec = self.rollout.spec();
        let window = Window {
            start,
            end,
            baseline_version: spec.baseline.clone(),
            canary_version: spec.canary.clone(),
        };
        let mut failure = None;
        let mut failed_source = None;
        for source in self.service.pull.clone() {
            let pulled = tokio::time::timeout(self.interval, source.collect(&window)).await;
            match pulled {
                Ok(Ok(c)) => {
                    self.count_observations(&c);
                    merge(&mut data, &c);
                }
                Ok(Err(e)) => {
                    failure = Some(e.to_string());
                    failed_source = Some(source.describe());
                    break;
                }
                Err(_) => {
                    failed_source = Some(source.describe());
                    failure = Some(format!(
                        "{}: no answer within the interval ({:?})",
                        source.describe(),
                        self.interval
                    ));
                    break;
                }
            }
        }
        if !self.service.pull.is_empty() {
            self.shared
                .metrics
                .source_pulled(&self.service.name, failed_source.as_deref(), now);
        }
        if let Some(err) = failure {
            tracing::warn!(rollout = %self.id(), error = %err, "metric source failed; no data for this window");
            self.status.source.status = "failing".into();
            self.source_edge_to(EventKind::SourceFailing, Some(&err), now);
            self.status.source.last_error = Some(err);
            self.carry = base;
            return Ok(false);
        }
        if self.source_edge == Some(EventKind::SourceFailing) {
            self.source_edge_to(EventKind::SourceRecovered, None, now);
        }
        self.status.source.status = "ok".into();
        self.status.source.last_success_at = Some(rfc3339(now));
        let mut snapshot = IntervalSnapshot::new(start, end);
        snapshot.baseline = data.baseline;
        snapshot.canary = data.canary;
        self.shared.metrics.record_window(
            self.id(),
            &self.service.name,
            &WindowSample::of(self.rollout.policy(), &snapshot),
        );
        self.run(Input::Data { snapshot }).await?;
        self.shared
            .metrics
            .window_closed(self.shared.clock.now().saturating_since(end));
        Ok(true)
    }

    fn count_observations(&self, c: &Collected) {
        for (arm, data) in [("baseline", &c.baseline), ("canary", &c.canary)] {
            let n = data.counter("requests");
            if n > 0 {
                self.shared
                    .metrics
                    .observations
                    .get_or_create(&super::metrics::ArmLabels {
                        service: self.service.name.clone(),
                        arm: arm.into(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// Handle one input and everything it chains (router acknowledgements),
    /// each committed before it is acted on.
    pub async fn run(&mut self, input: Input<IntervalSnapshot>) -> Result<(), Rejected> {
        let mut queue = VecDeque::from([input]);
        let mut first = true;
        let mut handled = 0;
        while let Some(input) = queue.pop_front() {
            handled += 1;
            if handled > MAX_CHAINED_INPUTS {
                tracing::error!(rollout = %self.id(), "too many chained inputs; stopping this round");
                break;
            }
            let now = self.shared.clock.now();
            let before = self.rollout.phase();
            match self.rollout.handle(now, input.clone()) {
                Ok(()) => {}
                Err(e) if first => return Err(e),
                Err(e) => {
                    tracing::error!(rollout = %self.id(), error = %e.message, "engine refused a chained input");
                    continue;
                }
            }
            first = false;
            let mut effects = Vec::new();
            while let Some(e) = self.rollout.poll_effect() {
                effects.push(e);
            }
            let checkpoint = effects.iter().any(|e| matches!(e, Effect::Checkpoint))
                || self.rollout.phase().is_terminal()
                || self.steps_since_checkpoint >= CHECKPOINT_EVERY;
            let notices = self.notices_of(before, &input, &effects, now);
            if !notices.is_empty()
                || effects
                    .iter()
                    .any(|e| matches!(e, Effect::OpenIncident { .. }))
            {
                // Before the commit: a view read after it must look.
                self.deliveries.store(true, Ordering::SeqCst);
            }
            // Serialized only once there is room for it (see
            // `CHECKPOINTS_IN_FLIGHT`); released once committed.
            let checkpoint_permit = if checkpoint {
                self.shared
                    .checkpoints_in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .ok()
            } else {
                None
            };
            let prepared = EngineStep {
                at: now,
                input: &input,
                effects: &effects,
                rollout: &self.rollout,
                checkpoint,
                audit: &[],
            }
            .prepare()
            .map(|p| {
                p.with_notices(notices)
                    .with_fence(self.lease.as_ref().map(|l| l.fence.clone()))
                    .with_command(self.queued_command.take())
                    .with_relayed(if matches!(input, Input::Data { .. }) {
                        std::mem::take(&mut self.relayed)
                    } else {
                        Vec::new()
                    })
            })
            .map_err(|e| CommitError::Failed(e.to_string()));
            let committed = match prepared {
                Ok(p) => self.shared.commit(p).await,
                Err(e) => Err(e),
            };
            drop(checkpoint_permit);
            let committed = match committed {
                Ok(c) => c,
                Err(CommitError::Fenced(e)) => {
                    // Not durable, so not acted on; the new owner goes on
                    // from its own restore.
                    tracing::warn!(rollout = %self.id(), error = %e, "fenced: step not committed");
                    self.shared.lease_lost(self.id());
                    return Err(Rejected::conflict(
                        "another daemon took this rollout over; retry the request",
                    ));
                }
                // A shared database that failed mid-step (restarted, cut
                // off): whether the step committed is unknown, and nothing
                // of it was acted on. The driver lets the rollout go; the
                // lease's holder (this daemon, once the database is back,
                // or another) resumes it from what the database has.
                Err(CommitError::Failed(e)) if self.lease.is_some() => {
                    tracing::warn!(rollout = %self.id(), error = %e, "the database failed during a step; letting the rollout go until it is back (resumed from the database, nothing of this step acted on)");
                    self.shared.lease_lost(self.id());
                    return Err(Rejected::conflict(
                        "the database failed during this change; retry the request",
                    ));
                }
                Err(e) => {
                    // Nothing may be acted on that is not durable: stop the
                    // daemon; a restart resumes from the last commit.
                    self.shared.fatal(format!(
                        "cannot commit a step of rollout {}: {e}",
                        self.id()
                    ));
                    return Err(Rejected::conflict(
                        "the daemon could not persist this change and is stopping",
                    ));
                }
            };
            self.steps_since_checkpoint = if checkpoint {
                0
            } else {
                self.steps_since_checkpoint + 1
            };
            self.row.updated_at = now;
            self.row.phase = self.rollout.phase();
            self.row.journal_len = committed.last_seq;
            if let Some(ack) = self.act(&effects, &committed).await {
                queue.push_back(ack);
            }
            self.publish(now);
            // Event streams redraw on the new evidence; the end is `finish`'s.
            if self.shared.events.receiver_count() > 0 && !self.rollout.phase().is_terminal() {
                let _ = self.shared.events.send(StreamEvent {
                    rollout_id: self.id().to_string(),
                    seq: committed.last_seq,
                    event: wire::StreamEvent::Status(Box::new(self.view())),
                });
            }
        }
        Ok(())
    }

    /// The source's edge: report it once (with the next step's commit).
    fn source_edge_to(&mut self, kind: EventKind, error: Option<&str>, now: Timestamp) {
        if self.source_edge == Some(kind) {
            return;
        }
        self.source_edge = Some(kind);
        if self.shared.config.notifications.routes_any(kind) {
            self.notices
                .push(source_event(kind, &self.rollout, error, now));
        }
    }

    /// The lifecycle events of this step (and any waiting from outside a
    /// step) as deliveries to their routed receivers, to commit with it.
    fn notices_of(
        &mut self,
        before: Phase,
        input: &Input<IntervalSnapshot>,
        effects: &[Effect<crate::monitor::TriggerEvidence>],
        now: Timestamp,
    ) -> Vec<NewNotice> {
        let config = &self.shared.config.notifications;
        let mut docs = std::mem::take(&mut self.notices);
        if config.routes.is_empty() {
            return Vec::new();
        }
        docs.extend(step_events(before, input, effects, &self.rollout, now));
        // A router failing again and again (retried every few seconds) is
        // told once per stretch: its first failure.
        let again = self.router_failures > 1;
        docs.retain(|d| !(again && d.kind == EventKind::RouterFailure));
        let mut out = Vec::new();
        for doc in docs {
            let payload = match serde_json::to_string(&doc) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(rollout = %self.id(), error = %e, "cannot serialize a notification");
                    continue;
                }
            };
            for name in config.receivers_for(&doc.service, doc.kind) {
                if let Some(r) = config.receivers.get(name) {
                    out.push(NewNotice {
                        receiver: name.to_string(),
                        target: r.url.clone(),
                        event: doc.kind.as_str().to_string(),
                        payload: payload.clone(),
                    });
                }
            }
        }
        out
    }

    /// Carry out committed effects. Returns the router acknowledgement to
    /// feed back, if an effect moved traffic.
    async fn act(
        &mut self,
        effects: &[Effect<crate::monitor::TriggerEvidence>],
        committed: &Committed,
    ) -> Option<Input<IntervalSnapshot>> {
        let mut ack = None;
        let mut incidents = committed.incidents.iter();
        for (i, effect) in effects.iter().enumerate() {
            let decision = match effect {
                Effect::SetWeight { weight, .. } => {
                    ack = Some(self.router_ack(*weight).await);
                    "set-weight"
                }
                Effect::Rollback { .. } => {
                    ack = Some(self.router_ack(Weight::ZERO).await);
                    "rollback"
                }
                Effect::Promote { .. } => "promote",
                Effect::AwaitApproval { .. } => "await-approval",
                Effect::OpenIncident { .. } => {
                    if let Some(id) = incidents.next() {
                        self.incident = Some(id.clone());
                    }
                    "incident"
                }
                Effect::OpenReview { .. } => "review",
                Effect::Notify(event) => {
                    let _ = self.shared.events.send(StreamEvent {
                        rollout_id: self.id().to_string(),
                        // Journaled right after the step's input, in order.
                        seq: committed.input_seq + 1 + i as u64,
                        event: wire::StreamEvent::Transition(event.clone()),
                    });
                    tracing::info!(rollout = %self.id(), phase = event.phase.as_str(), weight = event.weight.percent(), actor = %event.actor, "{}", event.message);
                    continue;
                }
                Effect::Checkpoint => continue,
            };
            self.shared
                .metrics
                .decisions
                .get_or_create(&super::metrics::DecisionLabels {
                    service: self.service.name.clone(),
                    decision: decision.into(),
                })
                .inc();
        }
        self.shared
            .send_notifications(self.id(), &committed.notifications);
        ack
    }

    /// Move the router (unless dry run) and return the acknowledgement.
    async fn router_ack(&mut self, weight: Weight) -> Input<IntervalSnapshot> {
        let spec = self.rollout.spec();
        let router = match (&self.service.router, spec.dry_run) {
            (Some(r), false) => r.clone(),
            _ => {
                return Input::RouterAck {
                    weight,
                    error: None,
                };
            }
        };
        let target = Target {
            epoch: self.lease.as_ref().map(|l| l.fence.epoch),
            service: spec.service.clone(),
            baseline: spec.baseline.clone(),
            canary: spec.canary.clone(),
        };
        let policy = self.shared.retry;
        let result = apply_with_retries(
            router.as_ref(),
            &target,
            weight,
            policy,
            retry::jitter,
            tokio::time::sleep,
        )
        .await;
        let label = super::metrics::ServiceLabels {
            service: self.service.name.clone(),
        };
        match result {
            Ok(attempts) => {
                let failed = attempts.iter().filter(|a| a.error.is_some()).count();
                if failed > 0 {
                    self.shared
                        .metrics
                        .router_errors
                        .get_or_create(&label)
                        .inc_by(failed as u64);
                }
                self.router_failures = 0;
                self.router_retry_at = None;
                self.status.router_error = None;
                Input::RouterAck {
                    weight,
                    error: None,
                }
            }
            Err((e, attempts)) => {
                self.shared
                    .metrics
                    .router_errors
                    .get_or_create(&label)
                    .inc_by(attempts.len() as u64);
                self.router_failures += 1;
                let backoff = policy.delay(self.router_failures + 1, retry::jitter());
                self.router_retry_at =
                    Some(self.shared.clock.now() + backoff.max(Duration::from_secs(1)));
                let message = format!("{e} (after {} attempts)", attempts.len());
                tracing::error!(rollout = %self.id(), weight = weight.percent(), error = %message, "router failed");
                self.status.router_error = Some(message.clone());
                if weight == Weight::ZERO && !self.rollback_incident {
                    self.open_rollback_incident(&message, attempts.len());
                }
                Input::RouterAck {
                    weight,
                    error: Some(message),
                }
            }
        }
    }

    /// A rollback the router could not apply is an incident of its own
    /// (once per rollout); the driver keeps retrying the weight.
    fn open_rollback_incident(&mut self, error: &str, attempts: usize) {
        let policy = self.rollout.policy();
        let severity = policy.incident.severity.clone();
        let notify: Vec<String> = policy
            .incident
            .notify
            .iter()
            .map(|n| {
                let crate::policy::Notify::Webhook(url) = n;
                url.clone()
            })
            .collect();
        let evidence = json!({
            "kind": "router",
            "router": self.service.router.as_ref().map(|r| r.describe()),
            "wanted_weight": 0,
            "error": error,
            "attempts": attempts,
            "still_retrying": true,
        });
        let id = self.id().to_string();
        let now = self.shared.clock.now();
        self.deliveries.store(true, Ordering::SeqCst);
        match self
            .shared
            .with_store(|s| s.open_router_incident(&id, &severity, &notify, evidence, now))
        {
            Ok((incident, notifications)) => {
                self.rollback_incident = true;
                tracing::error!(rollout = %id, incident = %incident, "the rollback could not be applied; incident opened, still retrying");
                self.shared.send_notifications(&id, &notifications);
            }
            Err(e) => {
                tracing::error!(rollout = %id, error = %e, "cannot record the failed rollback's incident")
            }
        }
    }

    /// Ask the router for `weight` and feed the acknowledgement.
    async fn apply_weight(&mut self, weight: Weight) -> Result<(), Rejected> {
        let ack = self.router_ack(weight).await;
        self.run(ack).await
    }

    /// Refresh the view the API serves and the per-rollout metrics.
    fn publish(&mut self, now: Timestamp) {
        self.status.pending_weight = self.rollout.pending_weight().map(|w| w.percent());
        let at = (self.rollout.phase(), self.rollout.step());
        if self.last_step != Some(at) {
            self.last_step = Some(at);
            self.status.step_since = Some(now);
        }
        let weight = self.rollout.weight();
        if self.last_weight != Some(weight) {
            if self.last_weight.is_some() {
                self.weight_since.store(now.as_millis(), Ordering::SeqCst);
            }
            self.last_weight = Some(weight);
        }
        let view = Arc::new(LiveView::new(
            &self.row,
            &self.rollout,
            &self.checks,
            self.incident.as_deref(),
            Some(&self.status),
            now,
        ));
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
        self.shared
            .metrics
            .publish_rollout(&RolloutSample::of(&self.rollout, self.status.step_since));
    }

    /// The rollout ended: hooks, stream end, and leave the active set.
    async fn finish(self) {
        let spec = self.rollout.spec().clone();
        self.shared
            .metrics
            .rollout_ended(&spec.id, self.shared.clock.now());
        let _ = self.shared.events.send(StreamEvent {
            rollout_id: spec.id.clone(),
            seq: self.row.journal_len,
            event: wire::StreamEvent::End(Box::new(self.view())),
        });
        self.shared.finished(&spec.id);
        if self.lease.is_some() {
            self.shared.release_lease(&spec.id);
        }
        // The step that ended the rollout queued its hook (the store's
        // outbox); it runs now that traffic is back where it belongs.
        self.shared.run_hooks_of(&spec.id);
    }
}

pub fn merge(into: &mut Collected, from: &Collected) {
    merge_arm(&mut into.baseline, &from.baseline);
    merge_arm(&mut into.canary, &from.canary);
}

fn merge_arm(into: &mut ArmData, from: &ArmData) {
    if let Err(e) = into.merge(from) {
        tracing::error!(error = %e, "cannot merge signals (latency layouts differ); dropping the newer ones");
    }
}

#[cfg(test)]
mod tests {
    use super::{CHECKPOINT_EVERY, DriverMsg, checkpoint_phase};

    /// Rollouts started together checkpoint in different steps: 1,000 ids
    /// fall on every step of the cycle, none on more than twice its share;
    /// and the phase is the same in every build (a restart resumes it).
    #[test]
    fn periodic_checkpoints_are_spread_over_the_cycle() {
        let mut on = [0u32; CHECKPOINT_EVERY as usize];
        for i in 0..1_000 {
            on[checkpoint_phase(&format!("r{i}")) as usize] += 1;
        }
        let share = 1_000 / CHECKPOINT_EVERY;
        assert!(
            on.iter().all(|&n| n > 0 && n <= 2 * share),
            "checkpoints per step of the cycle: {on:?}"
        );
        assert_eq!(checkpoint_phase("r0"), 0x0d53_ff3f_u32 % CHECKPOINT_EVERY);
    }

    /// Each driver's channel allocates room for 32 messages up front
    /// (tokio's first block), for every live rollout: a message stays two
    /// pointers, not a `Command` inline (about 110 bytes: 3.5 KiB a rollout).
    #[test]
    fn a_driver_message_is_two_pointers() {
        assert!(
            std::mem::size_of::<DriverMsg>() <= 2 * std::mem::size_of::<usize>(),
            "DriverMsg is {} bytes",
            std::mem::size_of::<DriverMsg>()
        );
    }
}

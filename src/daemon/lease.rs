//! Leases in the daemon (`storage.postgres`; `store/leases.rs` has the
//! rows and their rules). Several daemons share one database; each open
//! rollout is driven by the one holding its lease.
//!
//! One task per daemon, every third of the lease:
//! - **renew** every lease this daemon holds; a lease missing from the
//!   answer was taken over, and its driver stops at once, acting on
//!   nothing more (its commits would be refused anyway: each step commits
//!   under its fence);
//! - **claim** open rollouts whose lease expired (their owner stopped
//!   renewing: killed, paused, cut off) or that have none, and resume
//!   each from its checkpoint and journal, reconcile its router, and drive
//!   it: the same path as a restart.
//!
//! A rollout this daemon starts is leased in the transaction that creates
//! it. A driver whose rollout ended with its traffic back gives the lease
//! up. A SQLite data dir has one daemon and no leases.
//!
//! Two more tasks serve rollouts other daemons drive: commands this
//! daemon's API took for them wait in the database's queue, and the owner
//! applies them (`run_commands`, every 100 ms); observations pushed here
//! for them are summed and relayed through the database every second
//! (`run_relay`), for the owner's next window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Shared;
use super::driver::{Driver, HeldLease, RelayedData};
use crate::monitor::Monitor;
use crate::store::leases::Fence;

/// The leases this daemon holds, by rollout, each with the flag its
/// driver watches; and observations pushed here for rollouts other
/// daemons drive, summed until the next relay.
#[derive(Default)]
pub(super) struct Held {
    leases: Mutex<HashMap<String, HeldLease>>,
    relay: Mutex<HashMap<String, crate::sources::Collected>>,
}

/// How often observations pushed to a non-owner are relayed.
const RELAY_EVERY: Duration = Duration::from_secs(1);

/// How many open rollouts one claim pass takes at most.
const CLAIM_BATCH: usize = 64;

/// How often the owner looks for queued commands, and how often the API
/// that queued one looks for its answer.
const COMMAND_POLL: Duration = Duration::from_millis(100);
/// How long the API waits for a queued command's answer.
const COMMAND_WAIT: Duration = Duration::from_secs(15);
/// An applied command whose answer did not follow this soon lost it with
/// its owner.
const COMMAND_ANSWER_GRACE: Duration = Duration::from_secs(2);

/// What the owner answers to a queued command (the `answer` column).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum QueueAnswer {
    Applied(Box<crate::wire::Rollout>),
    Refused(crate::engine::Rejected),
}

impl Shared {
    /// Record a lease this daemon now holds; the handle its driver keeps.
    pub(super) fn hold_lease(&self, rollout_id: &str, fence: Fence) -> HeldLease {
        let held = HeldLease {
            fence,
            lost: Arc::new(AtomicBool::new(false)),
        };
        self.leases
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rollout_id.to_string(), held.clone());
        held
    }

    /// The driver of `rollout_id` is done with its lease (the rollout's
    /// traffic is back): give it up so the row does not linger.
    pub(super) fn release_lease(&self, rollout_id: &str) {
        let held = self
            .leases
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(rollout_id);
        if let Some(held) = held
            && !held.is_lost()
            && let Err(e) = self.with_store(|s| s.release_lease(rollout_id, &held.fence))
        {
            tracing::warn!(rollout = %rollout_id, error = %e, "cannot release the lease; it expires on its own");
        }
    }

    /// A lease this daemon thought it held is another's (a commit was
    /// fenced, or a renewal missed it): its driver stops.
    pub(super) fn lease_lost(&self, rollout_id: &str) {
        let held = self
            .leases
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(rollout_id);
        if let Some(held) = held {
            held.lost.store(true, Ordering::SeqCst);
        }
    }

    /// Renew, then claim: one round of the lease task. Returns how many
    /// rollouts it took over.
    pub(super) async fn lease_round(self: &Arc<Self>) -> usize {
        let Some(pg) = self.config.postgres.clone() else {
            return 0;
        };
        match self.with_store(|s| s.renew_leases(&pg.instance, pg.lease)) {
            Ok(still) => {
                let still: HashMap<String, u64> = still.into_iter().collect();
                // Leases still this daemon's whose driver let go (the
                // database failed mid-step): resume them now it answers.
                for (id, epoch) in &still {
                    if self.driver(id).is_none() && !self.holds_lease(id) {
                        let fence = Fence {
                            owner: pg.instance.clone(),
                            epoch: *epoch,
                        };
                        self.take_over(id, fence).await;
                    }
                }
                let lost: Vec<(String, HeldLease)> = {
                    let mut held = self.leases.leases.lock().unwrap_or_else(|e| e.into_inner());
                    let gone: Vec<String> = held
                        .iter()
                        .filter(|(id, h)| still.get(*id) != Some(&h.fence.epoch))
                        .map(|(id, _)| id.clone())
                        .collect();
                    gone.into_iter()
                        .filter_map(|id| held.remove(&id).map(|h| (id, h)))
                        .collect()
                };
                for (id, held) in lost {
                    held.lost.store(true, Ordering::SeqCst);
                    tracing::warn!(rollout = %id, epoch = held.fence.epoch, "lease lost to another daemon: this daemon stops driving the rollout and moves no more traffic for it");
                    self.metrics.leases_lost.inc();
                }
            }
            Err(e) => {
                // The database is away: nothing can commit either. Leases
                // not renewed in time are taken over elsewhere; the renewal
                // after the database is back finds out.
                tracing::warn!(error = %e, "cannot renew leases; retrying");
                return 0;
            }
        }
        if self.shutdown_requested() {
            return 0;
        }
        let ids = match self.with_store(|s| s.claimable_rollouts(CLAIM_BATCH)) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for rollouts to take over; retrying");
                return 0;
            }
        };
        let mut taken = 0;
        for id in ids {
            if self.driver(&id).is_some() {
                continue;
            }
            match self.with_store(|s| s.acquire_lease(&id, &pg.instance, pg.lease)) {
                Ok(Some(fence)) => {
                    if self.take_over(&id, fence).await {
                        taken += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(rollout = %id, error = %e, "cannot take the lease"),
            }
        }
        taken
    }

    /// Resume `id` under the lease just taken: restore, reconcile, drive.
    async fn take_over(self: &Arc<Self>, id: &str, fence: Fence) -> bool {
        let open = match self.with_store(|s| s.open_rollout::<Monitor>(id)) {
            Ok(Some(open)) => open,
            Ok(None) => {
                let _ = self.with_store(|s| s.release_lease(id, &fence));
                return false;
            }
            Err(e) => {
                tracing::error!(rollout = %id, error = %e, "cannot read the rollout to take over; releasing its lease");
                let _ = self.with_store(|s| s.release_lease(id, &fence));
                return false;
            }
        };
        let Some(service) = self.services.get(&open.row.service).cloned() else {
            tracing::error!(rollout = %id, service = %open.row.service, "the service of an open rollout is not configured here; releasing its lease for a daemon that has it");
            let _ = self.with_store(|s| s.release_lease(id, &fence));
            return false;
        };
        let epoch = fence.epoch;
        let held = self.hold_lease(id, fence);
        let now = self.clock.now();
        let mut driver = match Driver::restore(self.clone(), service, open, now) {
            Ok(d) => d.with_lease(held),
            Err(e) => {
                tracing::error!(rollout = %id, error = %e, "cannot restore the rollout; releasing its lease");
                self.lease_lost(id);
                let _ = self.with_store(|s| s.release_lease(id, &held.fence));
                return false;
            }
        };
        if let Err(e) = driver.reconcile().await {
            tracing::error!(rollout = %id, error = %e, "cannot reconcile the router after taking over; the driver keeps retrying");
        }
        tracing::info!(rollout = %id, epoch, "rollout taken over: resumed from its checkpoint and journal");
        self.metrics.leases_taken.inc();
        self.launch(driver);
        // What its former owner queued and did not send is this daemon's now.
        let pending: Vec<_> = self
            .pending_outbox()
            .into_iter()
            .filter(|row| row.rollout_id() == id)
            .collect();
        self.resume_outbox(pending);
        true
    }

    /// Of the outbox's pending rows, those this daemon sends: its own open
    /// rollouts', and those of rollouts nobody drives any more (ended, with
    /// their traffic back). Another daemon's open rollouts' rows are that
    /// daemon's to send.
    pub(super) fn outbox_of_mine(
        &self,
        pending: Vec<crate::store::OutboxRow>,
    ) -> Vec<crate::store::OutboxRow> {
        pending
            .into_iter()
            .filter(|row| {
                let id = row.rollout_id();
                self.driver(id).is_some()
                    || match self.with_store(|s| s.rollout(id)) {
                        Ok(Some(r)) => !r.is_open(),
                        Ok(None) => true,
                        Err(_) => false,
                    }
            })
            .collect()
    }

    /// Give up every lease this daemon holds (it is stopping, its drivers
    /// drained): the others take the rollouts over at once instead of
    /// after the lease expires.
    pub(super) fn release_all_leases(&self) {
        let held: Vec<(String, HeldLease)> = self
            .leases
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (id, held) in held {
            if let Err(e) = self.with_store(|s| s.release_lease(&id, &held.fence)) {
                tracing::warn!(rollout = %id, error = %e, "cannot release the lease; it expires on its own");
            }
        }
    }

    /// A command for a rollout another daemon drives: queue it, and wait
    /// (bounded) for its owner's answer.
    pub(super) async fn command_through_queue(
        &self,
        id: &str,
        command: crate::engine::Command,
    ) -> Result<crate::wire::Rollout, super::Refusal> {
        use super::Refusal;
        let body = serde_json::to_string(&command)
            .map_err(|e| Refusal::internal(format!("cannot queue the command: {e}")))?;
        let now = self.clock.now();
        let queued = self.with_store(|s| s.queue_command(id, &body, now))?;
        let deadline = tokio::time::Instant::now() + COMMAND_WAIT;
        let mut applied_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(COMMAND_POLL).await;
            let state = self.with_store(|s| s.command_state(queued))?;
            match state {
                Some((_, Some(answer))) => {
                    let answer: QueueAnswer = serde_json::from_str(&answer).map_err(|e| {
                        Refusal::internal(format!("command {queued}: unreadable answer: {e}"))
                    })?;
                    return match answer {
                        QueueAnswer::Applied(view) => Ok(*view),
                        QueueAnswer::Refused(rejected) => Err(rejected.into()),
                    };
                }
                // Applied, but its owner stopped before it wrote the
                // answer: the rollout as stored is the answer.
                Some((true, None)) => {
                    let since = *applied_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > COMMAND_ANSWER_GRACE {
                        return self.rollout(id);
                    }
                }
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Refusal::unavailable(format!(
                    "command {queued} for rollout {id} is queued; the daemon that drives the rollout has not applied it within {}s (it will, once; retrying sends another)",
                    COMMAND_WAIT.as_secs()
                )));
            }
        }
    }

    /// Apply the queued commands of the rollouts this daemon drives, in
    /// order, and write each one's answer.
    pub(super) async fn apply_queued_commands(&self) {
        let Some(pg) = &self.config.postgres else {
            return;
        };
        let pending = match self.with_store(|s| s.pending_commands(&pg.instance)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the command queue; retrying");
                return;
            }
        };
        for queued in pending {
            let Some(handle) = self.driver(&queued.rollout_id) else {
                // Leased but not driven yet (a takeover under way), or its
                // driver just ended: the next round sees it again, or the
                // rollout's end refuses it.
                continue;
            };
            let answer = match serde_json::from_str::<crate::engine::Command>(&queued.command) {
                Err(e) => QueueAnswer::Refused(crate::engine::Rejected::conflict(format!(
                    "unreadable queued command: {e}"
                ))),
                Ok(command) => {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    let sent = handle
                        .tx
                        .send(super::driver::DriverMsg::Command {
                            order: Box::new(super::driver::Order {
                                command,
                                queued: Some(queued.id),
                            }),
                            reply,
                        })
                        .await;
                    if sent.is_err() {
                        continue;
                    }
                    match answer.await {
                        Ok(Ok(view)) => QueueAnswer::Applied(Box::new(view)),
                        // Refused because the lease went meanwhile: not
                        // applied here; the next owner applies it.
                        Ok(Err(_)) if !self.holds_lease(&queued.rollout_id) => continue,
                        Ok(Err(rejected)) => QueueAnswer::Refused(rejected),
                        // The driver stopped (lease lost, shutdown): the
                        // command stays queued for whoever drives it next.
                        Err(_) => continue,
                    }
                }
            };
            let text = match serde_json::to_string(&answer) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(command = queued.id, error = %e, "cannot write a command's answer");
                    continue;
                }
            };
            let now = self.clock.now();
            if let Err(e) = self.with_store(|s| s.answer_command(queued.id, &text, now)) {
                tracing::warn!(command = queued.id, error = %e, "cannot record a command's answer");
            }
        }
    }

    /// Observations for a rollout another daemon drives: summed here,
    /// relayed to it within [`RELAY_EVERY`].
    pub(super) fn relay_push(&self, rollout_id: &str, data: &crate::sources::Collected) {
        let mut relay = self.leases.relay.lock().unwrap_or_else(|e| e.into_inner());
        let open = relay.entry(rollout_id.to_string()).or_default();
        super::driver::merge(open, data);
    }

    /// Write what was pushed here since the last relay, one row per
    /// rollout. Kept for the next try if the database is away.
    pub(super) fn flush_relay(&self) {
        let taken: HashMap<String, crate::sources::Collected> =
            std::mem::take(&mut *self.leases.relay.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return;
        }
        let rows: Vec<(String, String)> = taken
            .iter()
            .filter_map(|(id, c)| {
                let data = RelayedData {
                    baseline: c.baseline.clone(),
                    canary: c.canary.clone(),
                };
                serde_json::to_string(&data).ok().map(|d| (id.clone(), d))
            })
            .collect();
        let now = self.clock.now();
        if let Err(e) = self.with_store(|s| s.relay(&rows, now)) {
            tracing::warn!(error = %e, "cannot relay pushed observations; keeping them for the next try");
            let mut relay = self.leases.relay.lock().unwrap_or_else(|e| e.into_inner());
            for (id, c) in taken {
                super::driver::merge(relay.entry(id).or_default(), &c);
            }
        }
    }

    fn holds_lease(&self, rollout_id: &str) -> bool {
        self.leases
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rollout_id)
            .is_some_and(|h| !h.is_lost())
    }

    fn shutdown_requested(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The lease task: a round every third of the lease until shutdown. The
/// first round ran before the daemon was ready (`start`).
pub(super) async fn run(shared: Arc<Shared>) {
    let Some(pg) = shared.config.postgres.clone() else {
        return;
    };
    let period = pg.lease / 3;
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(period.max(Duration::from_millis(100))) => {}
        }
        shared.lease_round().await;
    }
}

/// The relay's task: pushed observations of others' rollouts, written
/// every [`RELAY_EVERY`], and once more at shutdown.
pub(super) async fn run_relay(shared: Arc<Shared>) {
    if shared.config.postgres.is_none() {
        return;
    }
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                shared.flush_relay();
                return;
            }
            _ = tokio::time::sleep(RELAY_EVERY) => {}
        }
        shared.flush_relay();
    }
}

/// The command queue's task: the queued commands of this daemon's
/// rollouts, every [`COMMAND_POLL`], until shutdown.
pub(super) async fn run_commands(shared: Arc<Shared>) {
    if shared.config.postgres.is_none() {
        return;
    }
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(COMMAND_POLL) => {}
        }
        shared.apply_queued_commands().await;
    }
}

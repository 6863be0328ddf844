//! The retention task: every `retention.every`, a pruning pass over the
//! store (`store/retention.rs`), applied online. A pass is a run of small
//! steps, each one short transaction under the store's lock, with a pause
//! between them so that the committer (and with it every rollback) waits
//! for at most one step. It reads the time from the daemon's clock.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::store::{Budget, PruneStep};

/// The pause between two steps of a pass: the store's lock is free for
/// this long at least, for the committer and the API.
const BETWEEN_STEPS: Duration = Duration::from_millis(2);

/// What a pass did, for the log.
#[derive(Debug, Default)]
struct PassTotals {
    steps: u64,
    journal_rows: u64,
    journals: u64,
    rollouts: u64,
    audit_entries: u64,
    pages_released: u64,
}

impl PassTotals {
    fn add(&mut self, step: &PruneStep) {
        self.steps += 1;
        self.journal_rows += step.journal_rows;
        self.journals += step.journals_done.len() as u64;
        self.rollouts += step.rollouts_removed.len() as u64;
        self.audit_entries += step.audit_entries;
        self.pages_released += step.pages_released;
    }
}

/// Until the daemon drains: a pass at start, then one every `every`.
pub(super) async fn run(shared: Arc<Shared>) {
    let every = shared.config.retention.every;
    let mut stop = shared.shutdown.subscribe();
    loop {
        if *stop.borrow() {
            break;
        }
        pass(&shared).await;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass: steps until nothing is due (or the daemon drains).
async fn pass(shared: &Shared) {
    let ages = shared.config.retention.ages;
    let started = shared.clock.now();
    let mut totals = PassTotals::default();
    loop {
        if *shared.shutdown.borrow() {
            break;
        }
        let now = shared.clock.now();
        match shared.with_store(|s| s.prune_step(now, &ages, Budget::default())) {
            Ok(step) if step.is_idle() => break,
            Ok(step) => totals.add(&step),
            Err(e) => {
                // The next pass tries again; a store that cannot commit
                // stops the committer too, which says so.
                tracing::error!(error = %e, "retention: pruning failed; the next pass retries");
                break;
            }
        }
        tokio::time::sleep(BETWEEN_STEPS).await;
    }
    if totals.steps > 0 {
        tracing::info!(
            steps = totals.steps,
            journal_rows = totals.journal_rows,
            journals = totals.journals,
            rollouts = totals.rollouts,
            audit_entries = totals.audit_entries,
            pages_released = totals.pages_released,
            elapsed_ms = shared
                .clock
                .now()
                .as_millis()
                .saturating_sub(started.as_millis()),
            "retention: pass done"
        );
    }
}

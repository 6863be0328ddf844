//! The group committer. Every driver's engine steps go through one task
//! that commits whatever has queued meanwhile in one transaction (one
//! fsync), so a thousand rollouts cost a few fsyncs per second, not
//! thousands. All steps of a group commit or none do; a failed group
//! answers each of its steps with the error, and the driver then stops the
//! daemon (fail-stop): nothing is acted on that is not durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::store::{Committed, PreparedStep};

/// A prepared engine step waiting for the group commit.
pub(super) struct CommitJob {
    step: PreparedStep,
    reply: oneshot::Sender<Result<Committed, String>>,
}

/// The most steps one transaction commits.
pub(super) const MAX_GROUP_COMMIT: usize = 512;

/// The committer task: until every sender is gone, take the first step
/// waiting and whatever else has queued behind it, and commit them as one.
pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<CommitJob>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP_COMMIT {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (steps, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.step, j.reply)).unzip();
        let n = steps.len() as u64;
        match shared.with_store(|s| s.commit_prepared(steps)) {
            Ok(committed) => {
                shared.metrics.commit_groups.inc();
                shared.metrics.committed_steps.inc_by(n);
                for (reply, c) in replies.into_iter().zip(committed) {
                    let _ = reply.send(Ok(c));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// The committer's queue: a bound of four full groups.
pub(super) fn queue() -> (mpsc::Sender<CommitJob>, mpsc::Receiver<CommitJob>) {
    mpsc::channel(4 * MAX_GROUP_COMMIT)
}

impl Shared {
    /// Commit a prepared step (with whatever else is queued) and wait for it.
    pub async fn commit(&self, step: PreparedStep) -> Result<Committed, String> {
        let (reply, answer) = oneshot::channel();
        self.commits
            .send(CommitJob { step, reply })
            .await
            .map_err(|_| "the committer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the committer stopped before answering".to_string())?
    }
}

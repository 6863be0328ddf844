//! The group committer. Every driver's engine steps go through one task
//! that commits whatever has queued meanwhile in one transaction (one
//! fsync), so a thousand rollouts cost a few fsyncs per second, not
//! thousands. All steps of a group commit or none do; a failed group
//! answers each of its steps with the error, and the driver then stops the
//! daemon (fail-stop): nothing is acted on that is not durable. A step
//! refused because its daemon lost the rollout's lease (`Fenced`) is the
//! exception: it is answered alone, and the rest of its group is
//! committed without it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::store::{Committed, PreparedStep, StoreError};

/// Why a step was not committed.
#[derive(Clone, Debug)]
pub enum CommitError {
    /// Another daemon holds the rollout's lease now: this one must stop
    /// driving it (and must not stop itself).
    Fenced(String),
    /// The store failed: nothing may be acted on.
    Failed(String),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Fenced(m) | CommitError::Failed(m) => f.write_str(m),
        }
    }
}

/// A prepared engine step waiting for the group commit.
pub(super) struct CommitJob {
    step: PreparedStep,
    reply: oneshot::Sender<Result<Committed, CommitError>>,
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
        commit_group(&shared, jobs);
    }
}

/// Commit `jobs` as one transaction; a fenced step leaves the group and
/// the others are tried again without it.
fn commit_group(shared: &Shared, jobs: Vec<CommitJob>) {
    let (mut steps, mut replies): (Vec<PreparedStep>, Vec<_>) =
        jobs.into_iter().map(|j| (j.step, j.reply)).unzip();
    loop {
        let n = steps.len() as u64;
        match shared.with_store(|s| s.commit_prepared(&steps)) {
            Ok(committed) => {
                shared.metrics.commit_groups.inc();
                shared.metrics.committed_steps.inc_by(n);
                for (reply, c) in replies.into_iter().zip(committed) {
                    let _ = reply.send(Ok(c));
                }
                return;
            }
            Err(e @ StoreError::Fenced { .. }) => {
                let message = e.to_string();
                let StoreError::Fenced { rollout_id, .. } = e else {
                    unreachable!("matched above");
                };
                let mut kept = (Vec::new(), Vec::new());
                for (step, reply) in steps.into_iter().zip(replies) {
                    if step.rollout_id() == rollout_id {
                        let _ = reply.send(Err(CommitError::Fenced(message.clone())));
                    } else {
                        kept.0.push(step);
                        kept.1.push(reply);
                    }
                }
                (steps, replies) = kept;
                if steps.is_empty() {
                    return;
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(CommitError::Failed(message.clone())));
                }
                return;
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
    pub async fn commit(&self, step: PreparedStep) -> Result<Committed, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.commits
            .send(CommitJob { step, reply })
            .await
            .map_err(|_| CommitError::Failed("the committer has stopped".into()))?;
        answer
            .await
            .map_err(|_| CommitError::Failed("the committer stopped before answering".into()))?
    }
}

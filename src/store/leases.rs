//! Leases: which daemon owns which rollout when several share one
//! database (issue #20). A rollout that is open (active, or ended with
//! traffic not yet back) is driven by the daemon holding its lease row:
//! an owner, an epoch and an expiry. The owner renews it; when it stops
//! renewing, the lease expires and another daemon takes it over, which
//! raises the epoch. Every step commits under a [`Fence`] (owner and
//! epoch) checked in the step's own transaction, with the lease row
//! locked until the commit: a takeover waits for a step in flight, and a
//! former owner that was paused or cut off commits nothing afterwards.
//!
//! Commands an API took for a rollout another daemon drives wait in the
//! `commands` queue; the owner applies them in order, and marks each
//! applied in the transaction of the step it caused, so a command is
//! applied once even across a takeover.
//!
//! Time is the database's clock, never a daemon's: expiry compares
//! instants of one clock, so daemons whose clocks disagree still agree on
//! who owns what.

use std::time::Duration;

use super::db::{Dialect, Sql, params};
use super::{OpenRollout, Result, Store, StoreError};
use crate::engine::Analysis;

/// What a step commits under: the lease's owner and epoch as the daemon
/// last took or renewed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub owner: String,
    pub epoch: u64,
}

/// The database's clock, in ms since the epoch.
fn now_ms(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "(extract(epoch from clock_timestamp()) * 1000)::BIGINT",
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Take the lease of `rollout_id` for `owner` if nobody holds it or it
/// expired; its new epoch, or `None` while another holds it.
pub(super) fn acquire(
    sql: &impl Sql,
    rollout_id: &str,
    owner: &str,
    lease: Duration,
) -> Result<Option<u64>> {
    let now = now_ms(sql.dialect());
    sql.query_opt(
        &format!(
            "INSERT INTO leases (rollout_id, owner, epoch, expires_at) VALUES (?1, ?2, 1, {now} + ?3)
             ON CONFLICT (rollout_id) DO UPDATE
                SET owner = excluded.owner, epoch = leases.epoch + 1, expires_at = excluded.expires_at
                WHERE leases.expires_at < {now}
             RETURNING epoch"
        ),
        params![rollout_id, owner, ms(lease)],
        |r| r.get(0),
    )
}

/// Fail with [`StoreError::Fenced`] unless `fence` still holds the lease;
/// on PostgreSQL the row stays locked until the transaction ends.
pub(super) fn check(sql: &impl Sql, rollout_id: &str, fence: &Fence) -> Result<()> {
    let lock = match sql.dialect() {
        Dialect::Postgres => " FOR SHARE",
        // One writer at a time: the transaction itself is the lock.
        Dialect::Sqlite => "",
    };
    let found: Option<(String, u64)> = sql.query_opt(
        &format!("SELECT owner, epoch FROM leases WHERE rollout_id = ?1{lock}"),
        params![rollout_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    match found {
        Some((owner, epoch)) if owner == fence.owner && epoch == fence.epoch => Ok(()),
        found => Err(StoreError::Fenced {
            rollout_id: rollout_id.to_string(),
            epoch: fence.epoch,
            holder: match found {
                Some((owner, epoch)) => format!("{owner} holds it at epoch {epoch}"),
                None => "nobody holds it".into(),
            },
        }),
    }
}

impl Store {
    /// [`Store::create_rollout`] with its lease taken for `owner` in the
    /// same transaction; the row and the lease's epoch.
    pub fn create_rollout_leased<A: Analysis>(
        &mut self,
        rollout: &crate::engine::Rollout<A>,
        policy_version: &str,
        at: crate::time::Timestamp,
        owner: &str,
        lease: Duration,
    ) -> Result<(super::RolloutRow, Fence)> {
        let (row, epoch) =
            self.create_rollout_with(rollout, policy_version, at, Some((owner, lease)))?;
        let epoch = epoch.ok_or_else(|| {
            StoreError::Invalid(format!(
                "rollout {}: its lease was taken before its creation committed",
                row.id
            ))
        })?;
        Ok((
            row,
            Fence {
                owner: owner.to_string(),
                epoch,
            },
        ))
    }

    /// Take the lease of one open rollout (see [`acquire`]).
    pub fn acquire_lease(
        &mut self,
        rollout_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Fence>> {
        self.writable()?;
        let tx = self.db.begin(super::db::Begin::Write)?;
        let epoch = acquire(&tx, rollout_id, owner, lease)?;
        tx.commit()?;
        Ok(epoch.map(|epoch| Fence {
            owner: owner.to_string(),
            epoch,
        }))
    }

    /// Extend every lease `owner` holds by `lease` from now; the rollouts
    /// and epochs it still holds. A lease missing from the answer was
    /// taken over: its driver must stop. One that expired without being
    /// taken is still this owner's (the epoch did not move) and is renewed.
    pub fn renew_leases(&mut self, owner: &str, lease: Duration) -> Result<Vec<(String, u64)>> {
        self.writable()?;
        let now = now_ms(self.db.dialect());
        self.db.query_all(
            &format!(
                "UPDATE leases SET expires_at = {now} + ?2
                 WHERE owner = ?1
                 RETURNING rollout_id, epoch"
            ),
            params![owner, ms(lease)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Give a lease up (the rollout's traffic is back, or the daemon is
    /// stopping): another daemon may take it at once.
    pub fn release_lease(&mut self, rollout_id: &str, fence: &Fence) -> Result<()> {
        self.writable()?;
        self.db.execute(
            "DELETE FROM leases WHERE rollout_id = ?1 AND owner = ?2 AND epoch = ?3",
            params![rollout_id, fence.owner, fence.epoch],
        )?;
        Ok(())
    }

    /// Open rollouts nobody holds a live lease on, oldest first, at most
    /// `limit`: what a daemon may take over.
    pub fn claimable_rollouts(&self, limit: usize) -> Result<Vec<String>> {
        let now = now_ms(self.db.dialect());
        self.db.query_all(
            &format!(
                "SELECT r.id FROM rollouts AS r LEFT JOIN leases AS l ON l.rollout_id = r.id
                 WHERE (r.outcome IS NULL OR (r.outcome <> 'promoted' AND r.weight > 0))
                   AND (l.rollout_id IS NULL OR l.expires_at < {now})
                 ORDER BY r.created_at, r.id LIMIT ?1"
            ),
            params![limit],
            |r| r.get(0),
        )
    }

    /// Who holds the lease of `rollout_id` now, and until when by the
    /// database's clock (ms), if anyone does.
    pub fn lease_of(&self, rollout_id: &str) -> Result<Option<(Fence, i64)>> {
        self.db.query_opt(
            "SELECT owner, epoch, expires_at FROM leases WHERE rollout_id = ?1",
            params![rollout_id],
            |r| {
                Ok((
                    Fence {
                        owner: r.get(0)?,
                        epoch: r.get(1)?,
                    },
                    r.get(2)?,
                ))
            },
        )
    }

    /// One open rollout with its checkpoint and the journal after it (what
    /// a daemon that took its lease resumes from); `None` if it is not
    /// open any more.
    pub fn open_rollout<A: Analysis>(&self, rollout_id: &str) -> Result<Option<OpenRollout<A>>> {
        let Some(row) = self.rollout(rollout_id)? else {
            return Ok(None);
        };
        if !row.is_open() {
            return Ok(None);
        }
        let checkpoint = self.checkpoint(&row.id)?;
        let after_checkpoint = self.journal_after(&row.id, row.checkpoint_seq)?;
        Ok(Some(OpenRollout {
            row,
            checkpoint,
            after_checkpoint,
        }))
    }
}

/// A command queued for the daemon that owns its rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedCommand {
    pub id: i64,
    pub rollout_id: String,
    /// The engine `Command`, JSON.
    pub command: String,
}

/// Delete relayed observations `ids` of `rollout_id` (in the transaction
/// of the step whose window they joined).
pub(super) fn consume_relayed(sql: &impl Sql, rollout_id: &str, ids: &[i64]) -> Result<()> {
    for id in ids {
        sql.execute(
            "DELETE FROM relayed WHERE id = ?1 AND rollout_id = ?2",
            params![id, rollout_id],
        )?;
    }
    Ok(())
}

/// Mark command `id` applied (in the transaction of the step it caused).
pub(super) fn mark_applied(sql: &impl Sql, id: i64, at: i64) -> Result<()> {
    sql.execute(
        "UPDATE commands SET applied_at = ?2 WHERE id = ?1 AND applied_at IS NULL",
        params![id, at],
    )?;
    Ok(())
}

impl Store {
    /// Queue a command for the daemon that owns `rollout_id`; its id.
    pub fn queue_command(
        &mut self,
        rollout_id: &str,
        command: &str,
        at: crate::time::Timestamp,
    ) -> Result<i64> {
        self.writable()?;
        self.db.query_one(
            "INSERT INTO commands (rollout_id, command, created_at) VALUES (?1, ?2, ?3) RETURNING id",
            params![rollout_id, command, super::records::ms(at)],
            |r| r.get(0),
        )
    }

    /// Commands not yet applied to the rollouts `owner` holds, in order.
    pub fn pending_commands(&self, owner: &str) -> Result<Vec<QueuedCommand>> {
        self.db.query_all(
            "SELECT c.id, c.rollout_id, c.command FROM commands AS c
             JOIN leases AS l ON l.rollout_id = c.rollout_id
             WHERE c.applied_at IS NULL AND l.owner = ?1
             ORDER BY c.id",
            params![owner],
            |r| {
                Ok(QueuedCommand {
                    id: r.get(0)?,
                    rollout_id: r.get(1)?,
                    command: r.get(2)?,
                })
            },
        )
    }

    /// Record the answer to command `id` (and that it was applied, if the
    /// step that applied it did not: a refused command causes no step).
    pub fn answer_command(
        &mut self,
        id: i64,
        answer: &str,
        at: crate::time::Timestamp,
    ) -> Result<()> {
        self.writable()?;
        self.db.execute(
            "UPDATE commands SET answer = ?2, applied_at = coalesce(applied_at, ?3) WHERE id = ?1",
            params![id, answer, super::records::ms(at)],
        )?;
        Ok(())
    }

    /// Relay pushed observations (`(rollout, data)`, one row each) to the
    /// daemons that drive their rollouts, in one transaction.
    pub fn relay(&mut self, rows: &[(String, String)], at: crate::time::Timestamp) -> Result<()> {
        self.writable()?;
        let tx = self.db.begin(super::db::Begin::Write)?;
        for (rollout_id, data) in rows {
            tx.execute(
                "INSERT INTO relayed (rollout_id, at, data) VALUES (?1, ?2, ?3)",
                params![rollout_id, super::records::ms(at), data],
            )?;
        }
        tx.commit()
    }

    /// The observations relayed to `rollout_id` and not yet consumed, in
    /// order: `(id, data)`.
    pub fn relayed_for(&self, rollout_id: &str) -> Result<Vec<(i64, String)>> {
        self.db.query_all(
            "SELECT id, data FROM relayed WHERE rollout_id = ?1 ORDER BY id",
            params![rollout_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Whether command `id` was applied, and its answer once written.
    pub fn command_state(&self, id: i64) -> Result<Option<(bool, Option<String>)>> {
        self.db.query_opt(
            "SELECT applied_at IS NOT NULL, answer FROM commands WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

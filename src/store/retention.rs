//! Retention: pruning what ended rollouts leave behind, in small
//! transactions, each sealed by an anchor entry in the audit chain.
//!
//! Three tiers, each an age after a rollout's end (its last change,
//! `updated_at`), `None` for forever:
//! - `journal`: the rollout's journal (every input and effect; the bulk of
//!   the file). The rollout's row, final checkpoint, incidents and reviews
//!   stay, so the API still shows it.
//! - `rollouts`: the rest of the rollout: its row and checkpoint,
//!   incidents, reviews, webhook deliveries and hook runs. Only once its
//!   journal went, and never while a delivery or a hook is pending or a
//!   model-registry watch names it.
//! - `audit`: the log's oldest entries, a prefix, as long as each is that
//!   old and describes no rollout still stored (a rollout's entries go
//!   only after the rollout did) and is no deliberate restart of the chain.
//!
//! Only an *ended* rollout whose traffic is back (promoted, or at weight
//! 0) is ever touched: the triggers of schema migration 6 refuse anything
//! else, and refuse any delete outside a pruning transaction.
//!
//! Every transaction that completes something appends an `audit.prune`
//! anchor ([`binding::Anchor`]) naming what went: the rollouts whose
//! journal went (with its last seq), the rollouts that went whole (with
//! their incident and review counts), and the log's pruned seq range with
//! the mac of its last entry. The anchor is chained and MACed like every
//! entry, so without the key nobody can write one. `verify` starts its
//! walk from the anchor's mac when the log's oldest entries are gone, and
//! the binding check drops what an anchor removed from the state the chain
//! vouches for; a row missing without an anchor is still named. A prune of
//! the log's prefix appends a fresh genesis after its anchor (the old one
//! may have gone), which the store's identity then names.
//!
//! The database file: freed pages are reused by later writes, so under
//! steady churn the file stops growing at its peak live size. A store
//! created by this build has `auto_vacuum = INCREMENTAL`, and
//! [`Store::prune_step`] gives free pages beyond a slack back to the OS a
//! few at a time; an older file keeps reusing them (`docs/retention.md`
//! says how to convert it offline).

use std::time::Duration;

use super::db::{Dialect, Sql, Tx, params};

use super::audit::NewAudit;
use super::binding::{self, Anchor, PrunedAudit, PrunedJournal, PrunedRollout};
use super::records::ms;
use super::{Result, Store, StoreError};
use crate::engine::ENGINE;
use crate::time::Timestamp;

/// How long each tier is kept after a rollout's end; `None`: forever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ages {
    pub journal: Option<Duration>,
    pub rollouts: Option<Duration>,
    pub audit: Option<Duration>,
}

/// What one [`Store::prune_step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneStep {
    /// Journal rows deleted.
    pub journal_rows: u64,
    /// Rollouts whose journal is now wholly gone.
    pub journals_done: Vec<String>,
    /// Rollouts removed whole.
    pub rollouts_removed: Vec<String>,
    /// Audit entries pruned.
    pub audit_entries: u64,
    /// Free pages given back to the OS.
    pub pages_released: u64,
    /// The anchor's seq, when the step appended one.
    pub anchor: Option<u64>,
}

impl PruneStep {
    /// Nothing was due: the pass is over.
    pub fn is_idle(&self) -> bool {
        *self == PruneStep::default()
    }
}

/// Rows one step deletes at most (journal rows, or audit entries); a
/// step's rollouts removed at most. Small, so that no step holds the store
/// for long: a rollback's commit waits at most one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub rows: usize,
    pub rollouts: usize,
    /// Free pages given back to the OS in one step; 0: none (the file
    /// keeps them for reuse).
    pub pages: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            rows: 2000,
            rollouts: 64,
            pages: 256,
        }
    }
}

/// The fewest audit entries worth a prune: each prune of the log appends
/// two (its anchor and a genesis).
const MIN_AUDIT_PRUNE: usize = 16;

/// An ended rollout whose traffic is back: what pruning may touch (the
/// triggers say the same).
const PRUNABLE: &str = "outcome IS NOT NULL AND (outcome = 'promoted' OR weight = 0)";

fn cutoff(now: Timestamp, age: Duration) -> i64 {
    ms(now).saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// Open the gate migration 6's triggers check; [`close_gate`] before the
/// transaction commits, so no committed state ever holds it open.
fn open_gate(tx: &Tx<'_>) -> Result<()> {
    tx.execute("INSERT INTO prune_pass (one) VALUES (1)", params![])?;
    Ok(())
}

fn close_gate(tx: &Tx<'_>) -> Result<()> {
    tx.execute("DELETE FROM prune_pass", params![])?;
    Ok(())
}

fn anchor_entry(at: Timestamp, reason: String, anchor: &Anchor) -> Result<NewAudit> {
    Ok(NewAudit {
        at,
        actor: ENGINE.into(),
        action: binding::PRUNE_ACTION.into(),
        rollout_id: None,
        reason,
        ticket: None,
        details: serde_json::to_value(anchor)?,
    })
}

impl Store {
    /// One small pruning transaction: the first tier with something due
    /// (journals, then rollouts, then the log), else a few free pages
    /// given back. Call it until [`PruneStep::is_idle`], letting other
    /// writers in between: each call is one short transaction.
    pub fn prune_step(&mut self, now: Timestamp, ages: &Ages, budget: Budget) -> Result<PruneStep> {
        self.writable()?;
        if let Some(age) = ages.journal {
            let step = self.prune_journals(now, cutoff(now, age), budget)?;
            if !step.is_idle() {
                return Ok(step);
            }
        }
        if let Some(age) = ages.rollouts {
            let step = self.prune_rollouts(now, cutoff(now, age), budget)?;
            if !step.is_idle() {
                return Ok(step);
            }
        }
        if let Some(age) = ages.audit {
            let step = self.prune_audit(now, cutoff(now, age), budget)?;
            if !step.is_idle() {
                return Ok(step);
            }
        }
        self.release_free_pages(budget.pages)
    }

    fn prune_journals(&mut self, now: Timestamp, before: i64, budget: Budget) -> Result<PruneStep> {
        let due: Vec<(String, u64)> = self.db.query_all(
            &format!(
                "SELECT id, journal_len FROM rollouts
                 WHERE outcome IS NOT NULL AND journal_pruned_at IS NULL AND updated_at <= ?1
                   AND {PRUNABLE}
                 ORDER BY updated_at LIMIT ?2"
            ),
            params![before, budget.rollouts],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if due.is_empty() {
            return Ok(PruneStep::default());
        }
        let (step, _) = self.write(|tx, _| {
            open_gate(tx)?;
            let mut step = PruneStep::default();
            let mut left = budget.rows as u64;
            let mut anchor = Anchor::default();
            for (id, journal_len) in &due {
                if left == 0 {
                    break;
                }
                let deleted = tx.execute(
                    "DELETE FROM journal WHERE rollout_id = ?1 AND seq IN
                        (SELECT seq FROM journal WHERE rollout_id = ?1 ORDER BY seq LIMIT ?2)",
                    params![id, left],
                )?;
                left -= deleted;
                step.journal_rows += deleted;
                let rest: bool = tx.query_one(
                    "SELECT EXISTS (SELECT 1 FROM journal WHERE rollout_id = ?1)",
                    params![id],
                    |r| r.get(0),
                )?;
                if !rest {
                    tx.execute(
                        "UPDATE rollouts SET journal_pruned_at = ?2 WHERE id = ?1",
                        params![id, ms(now)],
                    )?;
                    anchor.journals.push(PrunedJournal {
                        rollout: id.clone(),
                        through: *journal_len,
                    });
                    step.journals_done.push(id.clone());
                }
            }
            close_gate(tx)?;
            let audit = if anchor.journals.is_empty() {
                Vec::new()
            } else {
                vec![anchor_entry(
                    now,
                    format!(
                        "retention: the journals of {} ended rollouts",
                        anchor.journals.len()
                    ),
                    &anchor,
                )?]
            };
            Ok((step, audit))
        })?;
        Ok(self.with_anchor(step))
    }

    fn prune_rollouts(&mut self, now: Timestamp, before: i64, budget: Budget) -> Result<PruneStep> {
        let due: Vec<String> = self.db.query_all(
            &format!(
                "SELECT id FROM rollouts AS r
                 WHERE journal_pruned_at IS NOT NULL AND updated_at <= ?1 AND {PRUNABLE}
                   AND NOT EXISTS (SELECT 1 FROM notifications AS n WHERE n.rollout_id = r.id
                                   AND n.delivered_at IS NULL AND n.failed_at IS NULL)
                   AND NOT EXISTS (SELECT 1 FROM hook_runs AS h WHERE h.rollout_id = r.id
                                   AND h.status = 'pending')
                   AND NOT EXISTS (SELECT 1 FROM registry_versions AS v WHERE v.rollout_id = r.id)
                 ORDER BY updated_at LIMIT ?2"
            ),
            params![before, budget.rollouts],
            |r| r.get(0),
        )?;
        if due.is_empty() {
            return Ok(PruneStep::default());
        }
        let (step, _) = self.write(|tx, _| {
            open_gate(tx)?;
            let mut step = PruneStep::default();
            let mut anchor = Anchor::default();
            for id in &due {
                // Rows the commit path could have added since (a late
                // router answer journals an input): they go too.
                step.journal_rows +=
                    tx.execute("DELETE FROM journal WHERE rollout_id = ?1", params![id])?;
                tx.execute(
                    "DELETE FROM notifications WHERE rollout_id = ?1",
                    params![id],
                )?;
                tx.execute("DELETE FROM hook_runs WHERE rollout_id = ?1", params![id])?;
                let incidents =
                    tx.execute("DELETE FROM incidents WHERE rollout_id = ?1", params![id])?;
                let reviews =
                    tx.execute("DELETE FROM reviews WHERE rollout_id = ?1", params![id])?;
                tx.execute("DELETE FROM checkpoints WHERE rollout_id = ?1", params![id])?;
                tx.execute("DELETE FROM rollouts WHERE id = ?1", params![id])?;
                anchor.rollouts.push(PrunedRollout {
                    rollout: id.clone(),
                    incidents,
                    reviews,
                });
                step.rollouts_removed.push(id.clone());
            }
            close_gate(tx)?;
            let entry = anchor_entry(
                now,
                format!(
                    "retention: {} ended rollouts with their incidents and reviews",
                    anchor.rollouts.len()
                ),
                &anchor,
            )?;
            Ok((step, vec![entry]))
        })?;
        Ok(self.with_anchor(step))
    }

    fn prune_audit(&mut self, now: Timestamp, before: i64, budget: Budget) -> Result<PruneStep> {
        // The oldest entries, in order, with whether their rollout is still
        // stored; the prefix that may go ends at the first that may not.
        // The last entry always stays: the chain goes on from it.
        let rows: Vec<(u64, i64, String, bool, String, String)> = self.db.query_all(
            "SELECT seq, at, action,
                    rollout_id IS NOT NULL AND EXISTS (SELECT 1 FROM rollouts WHERE id = audit.rollout_id),
                    details, mac
             FROM audit ORDER BY seq LIMIT ?1",
            params![budget.rows],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )?;
        let mut through = None;
        for (seq, at, action, rollout_kept, details, mac) in &rows {
            let restart = action == binding::GENESIS_ACTION
                && serde_json::from_str::<binding::Genesis>(details)
                    .map(|g| g.restart.is_some())
                    .unwrap_or(true);
            if *at > before || *rollout_kept || restart || *seq >= self.head.seq {
                break;
            }
            through = Some((*seq, mac.clone()));
        }
        let Some((through, mac)) = through else {
            return Ok(PruneStep::default());
        };
        let from = rows[0].0;
        if ((through - from + 1) as usize) < MIN_AUDIT_PRUNE {
            return Ok(PruneStep::default());
        }
        let key = self.key.as_ref().ok_or(StoreError::ReadOnly)?;
        let identity = self.read_identity()?.ok_or_else(|| StoreError::Corrupt {
            path: match &self.place {
                super::Place::DataDir(dir) => dir.join(super::DB_FILE),
                place => place.to_string().into(),
            },
            reason: "the store's identity row is missing".into(),
        })?;
        // The anchor is entry head+1; the genesis that binds the chain
        // again, head+2.
        let genesis_seq = self.head.seq + 2;
        let genesis = binding::Genesis {
            store: identity.id,
            key_id: key.key_id(),
            predates: genesis_seq - 1,
            restart: None,
        };
        let anchor = Anchor {
            audit: Some(PrunedAudit { from, through, mac }),
            ..Anchor::default()
        };
        let entries = vec![
            anchor_entry(
                now,
                format!("retention: audit entries {from}..={through}"),
                &anchor,
            )?,
            NewAudit {
                at: now,
                actor: ENGINE.into(),
                action: binding::GENESIS_ACTION.into(),
                rollout_id: None,
                reason: format!(
                    "the audit chain is bound to this store and its key again after retention pruned entries {from}..={through}"
                ),
                ticket: None,
                details: serde_json::to_value(&genesis)?,
            },
        ];
        let (step, _) = self.write(|tx, _| {
            open_gate(tx)?;
            let deleted = tx.execute("DELETE FROM audit WHERE seq <= ?1", params![through])?;
            close_gate(tx)?;
            tx.execute(
                "UPDATE store_identity SET genesis_seq = ?1 WHERE one = 1",
                params![genesis_seq],
            )?;
            Ok((
                PruneStep {
                    audit_entries: deleted,
                    ..PruneStep::default()
                },
                entries,
            ))
        })?;
        let mut step = self.with_anchor(step);
        step.anchor = Some(genesis_seq - 1);
        Ok(step)
    }

    /// The anchor is the last entry of its transaction but one genesis.
    fn with_anchor(&self, mut step: PruneStep) -> PruneStep {
        if !step.journals_done.is_empty() || !step.rollouts_removed.is_empty() {
            step.anchor = Some(self.head.seq);
        }
        step
    }

    /// When more than a quarter of the file is free, give free pages back
    /// to the OS down to a slack (a tenth of the file, at least 1 MiB of
    /// pages), at most `pages` a step: only in a file with `auto_vacuum =
    /// INCREMENTAL`. The slack is kept for the writes to come, so the file
    /// does not shrink only to grow again.
    fn release_free_pages(&mut self, pages: u64) -> Result<PruneStep> {
        // PostgreSQL reclaims space itself (autovacuum): nothing to do.
        let Some(conn) = self.db.sqlite() else {
            return Ok(PruneStep::default());
        };
        if pages == 0 {
            return Ok(PruneStep::default());
        }
        let pragma = |name: &str| -> Result<u64> {
            Ok(conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
        };
        if pragma("auto_vacuum")? != 2 {
            return Ok(PruneStep::default());
        }
        let free = pragma("freelist_count")?;
        let total = pragma("page_count")?;
        let page_size = pragma("page_size")?;
        // Under steady churn the free pages are reused within a pass or two
        // and stay under a quarter of the file: moving pages to give them
        // back would cost more than the churn itself (the soak bench
        // measured it). Only a larger surplus, a big prune, is given back,
        // down to a tenth.
        let slack = (total / 10).max((1 << 20) / page_size.max(1));
        if free <= slack || free * 4 <= total {
            return Ok(PruneStep::default());
        }
        let n = (free - slack).min(pages);
        conn.execute_batch(&format!("PRAGMA incremental_vacuum({n})"))?;
        let after = pragma("freelist_count")?;
        Ok(PruneStep {
            pages_released: free.saturating_sub(after),
            ..PruneStep::default()
        })
    }

    /// The database's size and free space (the WAL's too, for SQLite),
    /// and its largest tables' rows: what the soak bench reports. On
    /// PostgreSQL the size is the whole database's (`pg_database_size`)
    /// and free space is not counted (autovacuum reuses it).
    pub fn storage_size(&self) -> Result<StorageSize> {
        let count = |table: &str| -> Result<u64> {
            self.db
                .query_one(&format!("SELECT count(*) FROM {table}"), params![], |r| {
                    r.get(0)
                })
        };
        let (file_bytes, free_bytes, wal_bytes) = match self.db.dialect() {
            Dialect::Sqlite => {
                let pragma = |name: &str| -> Result<u64> {
                    self.db
                        .query_one(&format!("PRAGMA {name}"), params![], |r| r.get(0))
                };
                let page_size = pragma("page_size")?;
                let wal = std::fs::metadata(self.dir.join(format!("{}-wal", super::DB_FILE)))
                    .map_or(0, |m| m.len());
                (
                    pragma("page_count")? * page_size,
                    pragma("freelist_count")? * page_size,
                    wal,
                )
            }
            Dialect::Postgres => (
                self.db.query_one(
                    "SELECT pg_database_size(current_database())",
                    params![],
                    |r| r.get(0),
                )?,
                0,
                0,
            ),
        };
        Ok(StorageSize {
            file_bytes,
            free_bytes,
            wal_bytes,
            journal_rows: count("journal")?,
            audit_entries: count("audit")?,
            rollouts: count("rollouts")?,
        })
    }

    /// When the rollout's journal was pruned, if it was.
    pub fn journal_pruned_at(&self, rollout_id: &str) -> Result<Option<Timestamp>> {
        let at: Option<Option<i64>> = self.db.query_opt(
            "SELECT journal_pruned_at FROM rollouts WHERE id = ?1",
            params![rollout_id],
            |r| r.get(0),
        )?;
        Ok(at
            .flatten()
            .map(|ms| Timestamp::from_millis(u64::try_from(ms).unwrap_or(0))))
    }
}

/// Sizes of a store's files and tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageSize {
    pub file_bytes: u64,
    pub free_bytes: u64,
    pub wal_bytes: u64,
    pub journal_rows: u64,
    pub audit_entries: u64,
    pub rollouts: u64,
}

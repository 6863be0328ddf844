//! Model-registry watch state (schema migration 2): per watch, the version
//! last seen and the baseline; per (watch, version), the one intent to roll
//! it out and what became of it. Every write here goes through the same
//! transaction as its audit entries (`Store::write`).

use super::db::{Row, Sql, params, unique_violation};

use super::audit::NewAudit;
use super::records::ms;
use super::{Result, Store, StoreError};
use crate::time::Timestamp;

#[derive(Clone, Debug, PartialEq)]
pub struct WatchRow {
    pub watch: String,
    pub current: Option<String>,
    pub stable: Option<String>,
}

/// What became of a version the watcher meant to roll out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionStatus {
    /// Recorded, the rollout not known to exist yet (maybe a crash or a 409).
    Starting,
    /// Its rollout exists (`rollout_id`) and may still be running.
    Started,
    /// Its rollout ended (`outcome`).
    Ended,
    /// The alias moved away before a rollout could start; never started.
    Skipped,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Starting => "starting",
            VersionStatus::Started => "started",
            VersionStatus::Ended => "ended",
            VersionStatus::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> VersionStatus {
        match s {
            "starting" => VersionStatus::Starting,
            "started" => VersionStatus::Started,
            "ended" => VersionStatus::Ended,
            _ => VersionStatus::Skipped,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct VersionRow {
    pub watch: String,
    pub version: String,
    pub baseline: String,
    pub reason: String,
    pub status: VersionStatus,
    pub rollout_id: Option<String>,
    pub outcome: Option<String>,
    pub event: serde_json::Value,
    pub tags_written: bool,
}

fn watch_row(r: &Row<'_>) -> Result<WatchRow> {
    Ok(WatchRow {
        watch: r.get(0)?,
        current: r.get(1)?,
        stable: r.get(2)?,
    })
}

fn version_row(r: &Row<'_>) -> Result<VersionRow> {
    let status: String = r.get(4)?;
    let event: String = r.get(7)?;
    Ok(VersionRow {
        watch: r.get(0)?,
        version: r.get(1)?,
        baseline: r.get(2)?,
        reason: r.get(3)?,
        status: VersionStatus::parse(&status),
        rollout_id: r.get(5)?,
        outcome: r.get(6)?,
        event: serde_json::from_str(&event).unwrap_or(serde_json::Value::Null),
        tags_written: r.get::<i64>(8)? != 0,
    })
}

const VERSION_COLS: &str =
    "watch, version, baseline, reason, status, rollout_id, outcome, event, tags_written";

impl Store {
    pub fn registry_watch(&self, watch: &str) -> Result<Option<WatchRow>> {
        self.query_one(
            "SELECT watch, current, stable FROM registry_watches WHERE watch = ?1",
            params![watch],
            watch_row,
        )
    }

    /// Every version the watch ever meant to roll out, oldest first.
    pub fn registry_versions(&self, watch: &str) -> Result<Vec<VersionRow>> {
        self.query_all(
            &format!(
                "SELECT {VERSION_COLS} FROM registry_versions WHERE watch = ?1 ORDER BY created_at, version"
            ),
            params![watch],
            version_row,
        )
    }

    /// Set what the watch points to (and its baseline), creating the watch
    /// on first sight; with its audit entries, in one transaction.
    pub fn registry_set_watch(
        &mut self,
        watch: &str,
        current: Option<&str>,
        stable: Option<&str>,
        at: Timestamp,
        audit: Vec<NewAudit>,
    ) -> Result<()> {
        self.write(|tx, _| {
            tx.execute(
                "INSERT INTO registry_watches (watch, current, stable, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (watch) DO UPDATE SET current = ?2, stable = ?3, updated_at = ?4",
                params![watch, current, stable, ms(at)],
            )?;
            Ok(((), audit))
        })?;
        Ok(())
    }

    /// Record the intent to roll `version` out (status `starting`), before
    /// the rollout is created. Refused (`StoreError::Invalid`) when the
    /// version already has a row: a version is intended at most once.
    #[allow(clippy::too_many_arguments)]
    pub fn registry_intend(
        &mut self,
        watch: &str,
        version: &str,
        baseline: &str,
        reason: &str,
        event: &serde_json::Value,
        at: Timestamp,
        audit: Vec<NewAudit>,
    ) -> Result<()> {
        let event = serde_json::to_string(event)?;
        self.write(|tx, _| {
            tx.execute(
                "INSERT INTO registry_versions
                   (watch, version, baseline, reason, status, event, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'starting', ?5, ?6, ?6)",
                params![watch, version, baseline, reason, event, ms(at)],
            )?;
            Ok(((), audit))
        })
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Invalid(format!(
                    "registry watch {watch}: version {version} was already intended"
                ))
            } else {
                e
            }
        })?;
        Ok(())
    }

    /// Move a version to a new status (with its rollout and outcome when
    /// known), with its audit entries.
    #[allow(clippy::too_many_arguments)]
    pub fn registry_set_version(
        &mut self,
        watch: &str,
        version: &str,
        status: VersionStatus,
        rollout_id: Option<&str>,
        outcome: Option<&str>,
        at: Timestamp,
        audit: Vec<NewAudit>,
    ) -> Result<()> {
        self.write(|tx, _| {
            tx.execute(
                "UPDATE registry_versions SET status = ?3,
                        rollout_id = coalesce(?4, rollout_id),
                        outcome = coalesce(?5, outcome), updated_at = ?6
                 WHERE watch = ?1 AND version = ?2",
                params![watch, version, status.as_str(), rollout_id, outcome, ms(at)],
            )?;
            Ok(((), audit))
        })?;
        Ok(())
    }

    /// The verdict was written back to the registry.
    pub fn registry_tags_written(
        &mut self,
        watch: &str,
        version: &str,
        at: Timestamp,
        audit: Vec<NewAudit>,
    ) -> Result<()> {
        self.write(|tx, _| {
            tx.execute(
                "UPDATE registry_versions SET tags_written = 1, updated_at = ?3
                 WHERE watch = ?1 AND version = ?2",
                params![watch, version, ms(at)],
            )?;
            Ok(((), audit))
        })?;
        Ok(())
    }
}

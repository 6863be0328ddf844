//! The database schema and its forward-only migrations. Migration `n` (1-based)
//! takes a database from version `n - 1` to `n`; each runs in its own
//! transaction with the version bump, so a crash mid-migration leaves the
//! old version. A database newer than this build is refused, never touched.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

/// Applied in order; never edit a released entry, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: rollouts, journal, audit, incidents, reviews, notifications.
    r#"
CREATE TABLE rollouts (
    id              TEXT PRIMARY KEY CHECK (id <> ''),
    service         TEXT NOT NULL,
    policy_name     TEXT NOT NULL,
    -- The policy version (a hash of its bytes) the rollout is pinned to.
    policy_version  TEXT NOT NULL,
    spec            TEXT NOT NULL,           -- RolloutSpec, JSON
    phase           TEXT NOT NULL,
    outcome         TEXT,                    -- the terminal phase, NULL while active
    reason          TEXT NOT NULL,
    step            INTEGER NOT NULL,
    weight          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,        -- ms since the epoch
    updated_at      INTEGER NOT NULL,
    checkpoint      TEXT NOT NULL,           -- engine Checkpoint, JSON
    -- The last journal seq the checkpoint includes; replay what follows.
    checkpoint_seq  INTEGER NOT NULL,
    journal_len     INTEGER NOT NULL
) STRICT;
-- One active rollout per service (the API answers 409 otherwise).
CREATE UNIQUE INDEX rollouts_one_active_per_service ON rollouts(service) WHERE outcome IS NULL;

CREATE TABLE journal (
    rollout_id  TEXT NOT NULL REFERENCES rollouts(id),
    seq         INTEGER NOT NULL CHECK (seq > 0),
    -- The seq of the input this entry belongs to (itself for an input).
    input_seq   INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('input', 'effect')),
    -- For an input: how many effects its step produced.
    effects     INTEGER NOT NULL,
    body        TEXT NOT NULL,               -- Input or Effect, JSON
    PRIMARY KEY (rollout_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY CHECK (seq > 0),
    tx          INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    rollout_id  TEXT,
    reason      TEXT NOT NULL,
    ticket      TEXT,
    details     TEXT NOT NULL,
    mac         TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_rollout ON audit(rollout_id, seq);

CREATE TABLE incidents (
    id              TEXT PRIMARY KEY CHECK (id <> ''),
    rollout_id      TEXT NOT NULL REFERENCES rollouts(id),
    service         TEXT NOT NULL,
    trigger_name    TEXT NOT NULL,
    severity        TEXT NOT NULL,
    opened_at       INTEGER NOT NULL,
    evidence        TEXT NOT NULL,           -- JSON (null when none)
    timeline        TEXT NOT NULL,           -- JSON array of events
    router_result   TEXT,                    -- JSON, once the router answered
    status          TEXT NOT NULL CHECK (status IN ('open', 'reviewed')),
    policy_version  TEXT NOT NULL,
    review_note     TEXT,
    reviewed_by     TEXT,
    reviewed_at     INTEGER
) STRICT;
CREATE INDEX incidents_by_rollout ON incidents(rollout_id);

CREATE TABLE reviews (
    id          TEXT PRIMARY KEY CHECK (id <> ''),
    rollout_id  TEXT NOT NULL REFERENCES rollouts(id),
    reason      TEXT NOT NULL,
    ticket      TEXT NOT NULL,
    opened_at   INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    note        TEXT,
    closed_by   TEXT,
    closed_at   INTEGER
) STRICT;
CREATE INDEX reviews_by_rollout ON reviews(rollout_id);

CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id      TEXT NOT NULL REFERENCES rollouts(id),
    incident_id     TEXT REFERENCES incidents(id),
    target          TEXT NOT NULL,
    payload         TEXT NOT NULL,           -- JSON
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER
) STRICT;
CREATE INDEX notifications_pending ON notifications(id) WHERE delivered_at IS NULL;

-- The journal and the audit log are append-only. These triggers stop a bug;
-- the audit chain (not SQL) is what stops a person.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
"#,
    // 2: model-registry watchers (src/daemon/registry.rs): what each watch
    // last saw and every version it ever meant to roll out, so a version is
    // rolled out at most once, also across restarts.
    r#"
CREATE TABLE registry_watches (
    -- `mlflow <url> <model> alias:<alias>` or `... stage:<stage>`.
    watch       TEXT PRIMARY KEY CHECK (watch <> ''),
    -- The version the alias/stage pointed to at the last successful poll.
    current     TEXT,
    -- The baseline: the version first seen, then each promoted canary.
    stable      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- One row per (watch, version), ever: the primary key is the exactly-once.
CREATE TABLE registry_versions (
    watch        TEXT NOT NULL REFERENCES registry_watches(watch),
    version      TEXT NOT NULL,
    baseline     TEXT NOT NULL,
    -- The rollout's reason, deterministic: the marker that finds a rollout
    -- created just before a crash.
    reason       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('starting', 'started', 'ended', 'skipped')),
    rollout_id   TEXT REFERENCES rollouts(id),
    outcome      TEXT,
    event        TEXT NOT NULL,             -- the registry's version object, JSON
    tags_written INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (watch, version)
) STRICT, WITHOUT ROWID;
"#,
    // 3: lifecycle hooks as an outbox: a row per lifecycle event, written in
    // the transaction that commits the state it reports, so a crash before
    // the hook ran cannot lose it (the daemon runs pending rows at start).
    r#"
CREATE TABLE hook_runs (
    id              INTEGER PRIMARY KEY,
    rollout_id      TEXT NOT NULL REFERENCES rollouts(id),
    event           TEXT NOT NULL CHECK (event IN ('onStart', 'onPromoted', 'onRolledBack', 'onAborted')),
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at INTEGER,
    last_error      TEXT,
    -- pending until it ran, failed every attempt, or the service has no
    -- hook for the event.
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'ran', 'failed', 'none')),
    done_at         INTEGER
) STRICT;
CREATE INDEX hook_runs_pending ON hook_runs(id) WHERE status = 'pending';
"#,
    // 4: the store's identity, which the audit chain's genesis entry names
    // (`binding.rs`): written by the store with the genesis entry, never by
    // this migration, so a store that predates it is told apart.
    r#"
CREATE TABLE store_identity (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    id          TEXT NOT NULL CHECK (id <> ''),
    -- The seq of the genesis entry the chain is bound by (the latest one).
    genesis_seq INTEGER NOT NULL CHECK (genesis_seq > 0)
) STRICT;
"#,
    // 5: lifecycle notifications (`notifications:` in the config) share the
    // deliveries' table: the named receiver and the event kind (both NULL
    // for an incident's policy webhook), when the next attempt is due (kept
    // across restarts), and when delivery was given up (`retryFor` spent).
    r#"
ALTER TABLE notifications ADD COLUMN receiver TEXT;
ALTER TABLE notifications ADD COLUMN event TEXT;
ALTER TABLE notifications ADD COLUMN next_attempt_at INTEGER;
ALTER TABLE notifications ADD COLUMN failed_at INTEGER;
DROP INDEX notifications_pending;
CREATE INDEX notifications_pending ON notifications(id)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX notifications_by_rollout ON notifications(rollout_id, id);
"#,
    // 6: retention (`retention.rs`). Deletes become possible, but only
    // inside a pruning transaction (it holds the one `prune_pass` row, which
    // it removes again before it commits, so no committed state ever has
    // it), and only of what pruning may take: an ended rollout whose
    // traffic is back (promoted, or at weight 0), its journal, its
    // incidents and reviews. Updates stay forbidden. These triggers stop a
    // bug; the audit chain, whose anchors seal what pruning took, is what
    // stops a person. `journal_pruned_at`: when the rollout's journal went
    // (NULL while kept); the partial indexes find what is due.
    r#"
CREATE TABLE prune_pass (one INTEGER PRIMARY KEY CHECK (one = 1)) STRICT;
ALTER TABLE rollouts ADD COLUMN journal_pruned_at INTEGER;
CREATE INDEX rollouts_journal_due ON rollouts(updated_at)
    WHERE outcome IS NOT NULL AND journal_pruned_at IS NULL;
CREATE INDEX rollouts_journal_pruned ON rollouts(updated_at) WHERE journal_pruned_at IS NOT NULL;
-- Deleting a rollout's rows finds them by index, not by a scan.
CREATE INDEX hook_runs_by_rollout ON hook_runs(rollout_id);
CREATE INDEX notifications_by_incident ON notifications(incident_id);
DROP TRIGGER IF EXISTS audit_no_delete;
DROP TRIGGER IF EXISTS journal_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    WHEN NOT EXISTS (SELECT 1 FROM prune_pass)
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only outside retention pruning'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    WHEN NOT EXISTS (SELECT 1 FROM prune_pass)
      OR NOT EXISTS (SELECT 1 FROM rollouts WHERE id = OLD.rollout_id
                     AND outcome IS NOT NULL AND (outcome = 'promoted' OR weight = 0))
    BEGIN SELECT RAISE(ABORT, 'journal is append-only outside retention pruning of an ended rollout'); END;
CREATE TRIGGER rollouts_no_delete BEFORE DELETE ON rollouts
    WHEN NOT EXISTS (SELECT 1 FROM prune_pass) OR OLD.outcome IS NULL
      OR (OLD.outcome <> 'promoted' AND OLD.weight > 0)
    BEGIN SELECT RAISE(ABORT, 'only retention pruning deletes a rollout, and only an ended one'); END;
CREATE TRIGGER incidents_no_delete BEFORE DELETE ON incidents
    WHEN NOT EXISTS (SELECT 1 FROM prune_pass)
    BEGIN SELECT RAISE(ABORT, 'only retention pruning deletes an incident'); END;
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews
    WHEN NOT EXISTS (SELECT 1 FROM prune_pass)
    BEGIN SELECT RAISE(ABORT, 'only retention pruning deletes a review'); END;
"#,
    // 7: checkpoints in their own table. SQLite writes a whole row again,
    // overflow pages included, on any UPDATE of it, so a checkpoint kept in
    // `rollouts` was rewritten by every step's update of phase, weight and
    // journal length (tens to hundreds of KiB a step, issue #19's scale
    // bench). Now a step rewrites a small row, and the checkpoint only when
    // it takes one (`checkpoint_seq` stays with the rollout, written in the
    // same transaction). Its rows go with their rollout, only in pruning.
    r#"
CREATE TABLE checkpoints (
    rollout_id  TEXT PRIMARY KEY REFERENCES rollouts(id),
    checkpoint  TEXT NOT NULL               -- engine Checkpoint, JSON
) STRICT;
INSERT INTO checkpoints (rollout_id, checkpoint) SELECT id, checkpoint FROM rollouts;
ALTER TABLE rollouts DROP COLUMN checkpoint;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
    WHEN NOT EXISTS (SELECT 1 FROM prune_pass)
      OR NOT EXISTS (SELECT 1 FROM rollouts WHERE id = OLD.rollout_id
                     AND outcome IS NOT NULL AND (outcome = 'promoted' OR weight = 0))
    BEGIN SELECT RAISE(ABORT, 'only retention pruning deletes a checkpoint, and only of an ended rollout'); END;
"#,
    // 8: leases, the command queue and relayed observations
    // (`leases.rs`): which daemon owns which open rollout when several
    // share a PostgreSQL database, and the commands and pushed data
    // another daemon's API took for it. A SQLite data dir has
    // one daemon and never writes them; the tables are here so both
    // engines keep one schema. No foreign key: a lease outlives nothing, and pruning
    // never meets one (a rollout is pruned only once its traffic is back,
    // when its owner has released it).
    r#"
CREATE TABLE leases (
    rollout_id  TEXT PRIMARY KEY CHECK (rollout_id <> ''),
    owner       TEXT NOT NULL,
    -- Raised by every takeover; a step commits only under the epoch it
    -- was started with.
    epoch       INTEGER NOT NULL CHECK (epoch > 0),
    -- The database's clock, ms since the epoch.
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX leases_by_owner ON leases(owner);

CREATE TABLE commands (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id  TEXT NOT NULL,
    command     TEXT NOT NULL,               -- engine Command, JSON
    created_at  INTEGER NOT NULL,
    -- Set in the transaction of the step that applied it (or that it was
    -- refused): a command is applied once, by whoever owns the rollout.
    applied_at  INTEGER,
    answer      TEXT                         -- JSON, for the API that queued it
) STRICT;
CREATE INDEX commands_pending ON commands(rollout_id, id) WHERE applied_at IS NULL;

-- Observations pushed to a daemon that does not drive their rollout,
-- summed per second and relayed to its owner, which deletes them in the
-- transaction of the step whose window they joined.
CREATE TABLE relayed (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id  TEXT NOT NULL,
    at          INTEGER NOT NULL,
    data        TEXT NOT NULL                -- both arms' ArmData, JSON
) STRICT;
CREATE INDEX relayed_by_rollout ON relayed(rollout_id, id);
"#,
    // 9: the journal's rows in a rowid table, found by a unique index on
    // (rollout_id, seq), instead of a `WITHOUT ROWID` table keyed by it
    // (issue #19). A `WITHOUT ROWID` row is stored in its key's B-tree,
    // whose cells keep only about 500 bytes in place: a 1 s window's input
    // (about 1.4 KB of JSON) spilled into an overflow page of its own, every
    // key comparison on the way to a rollout's last row read that row's
    // overflow page, and each step dirtied its rollout's leaf and a new
    // overflow page (38 KiB written per step at 3,000 rollouts). Rows of a
    // rowid table are kept whole up to 4 KB and appended where the last
    // step's rows are, so the steps of a group share their pages, and the
    // index holds only the short key. The rows are copied in key order, so
    // an existing rollout's rows stay together; the append-only triggers
    // are those of migration 6, on the new table.
    r#"
CREATE TABLE journal_rows (
    rollout_id  TEXT NOT NULL REFERENCES rollouts(id),
    seq         INTEGER NOT NULL CHECK (seq > 0),
    -- The seq of the input this entry belongs to (itself for an input).
    input_seq   INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('input', 'effect')),
    -- For an input: how many effects its step produced.
    effects     INTEGER NOT NULL,
    body        TEXT NOT NULL                -- Input or Effect, JSON
) STRICT;
INSERT INTO journal_rows (rollout_id, seq, input_seq, at, kind, effects, body)
    SELECT rollout_id, seq, input_seq, at, kind, effects, body FROM journal
    ORDER BY rollout_id, seq;
DROP TRIGGER IF EXISTS journal_no_update;
DROP TRIGGER IF EXISTS journal_no_delete;
DROP TABLE journal;
ALTER TABLE journal_rows RENAME TO journal;
CREATE UNIQUE INDEX journal_by_rollout ON journal(rollout_id, seq);
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    WHEN NOT EXISTS (SELECT 1 FROM prune_pass)
      OR NOT EXISTS (SELECT 1 FROM rollouts WHERE id = OLD.rollout_id
                     AND outcome IS NOT NULL AND (outcome = 'promoted' OR weight = 0))
    BEGIN SELECT RAISE(ABORT, 'journal is append-only outside retention pruning of an ended rollout'); END;
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The database's version; 0 for a new, empty database.
pub(crate) fn version(conn: &Connection) -> Result<u32, StoreError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?;
    Ok(v.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)))
}

/// Bring the database up to [`SCHEMA_VERSION`]; refuse a newer one.
/// Returns the version found before migrating.
pub(crate) fn migrate(conn: &mut Connection, db_path: &Path) -> Result<u32, StoreError> {
    let found = version(conn)?;
    check_not_newer(found, db_path)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = i as u32 + 1;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        // Another writer cannot race us (the data-dir lock), but re-read
        // inside the transaction all the same.
        if version(&tx)? >= to {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [to])?;
        tx.commit()?;
    }
    Ok(found)
}

pub(crate) fn check_not_newer(found: u32, db_path: &Path) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: db_path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

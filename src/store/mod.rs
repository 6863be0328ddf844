//! The daemon's durable state: one SQLite database per data dir holding
//! rollouts (with their latest engine checkpoint), the per-rollout journal of
//! every engine input and effect, the HMAC-chained audit log, incidents,
//! post-incident reviews, and the outbox of webhook deliveries and
//! lifecycle hook runs.
//!
//! The API is synchronous; the daemon calls it from one dedicated thread.
//! It reads no clock: every timestamp comes from the caller. Its one rule is
//! **persist, then act**: [`Store::commit_step`] writes an engine step's input,
//! all its effects, the rollout's new state, its audit entries, incidents,
//! reviews and notifications in one transaction, and only after it returns
//! may the daemon carry out any of those effects. A crash leaves all of a
//! step or none of it.
//!
//! - `schema.rs`: tables and forward-only migrations.
//! - `audit.rs`: the hash chain, the key and head files, `verify`.
//! - `step.rs`: creating rollouts and committing engine steps.
//! - `outbox.rs`: webhook deliveries and lifecycle hook runs, two tables
//!   behind one interface: rows, the pending scan, attempts.
//! - `records.rs`: the other typed rows and the queries that read them.
//! - `id.rs`: identifiers.
//!
//! Files in a data dir: `canaryd.db` (+ `-wal`, `-shm`), `lock` (held by the
//! one daemon using the dir), `audit.key` and `audit.head`.

pub mod audit;
pub mod id;
pub mod outbox;
pub mod records;
pub mod registry;
pub mod schema;
pub mod step;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use audit::{AuditEntry, AuditKey, Breakage, BrokenLink, Head, NewAudit, Verification};
pub use id::IdGen;
pub use outbox::{HookRun, HookStatus, Notification, OutboxItem, OutboxRow};
pub use records::{
    Incident, IncidentStatus, JournalEntry, JournalKind, OpenRollout, Review, ReviewStatus,
    RolloutRow,
};
pub use schema::SCHEMA_VERSION;
pub use step::{Committed, EngineStep, PreparedStep};

use audit::RawEntry;

pub const DB_FILE: &str = "canaryd.db";
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data dir {dir} is in use by another canaryd{holder} (lock file {lock}); one daemon per data dir"
    )]
    Locked {
        dir: PathBuf,
        lock: PathBuf,
        /// ` (pid N)` when the holder wrote its pid.
        holder: String,
    },
    #[error(
        "{path}: schema version {found} is newer than this canaryd supports ({supported}); run a newer canaryd"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{path}: schema version {found} is older than this canaryd's ({supported}); start the daemon on it once to migrate"
    )]
    SchemaTooOld {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{dir}: no canaryd state here ({DB_FILE} does not exist or was never initialized)")]
    NoState { dir: PathBuf },
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "audit log in {dir} is broken at {link}; refusing to append to it (inspect with `canaryd audit verify --data-dir {dir}`)"
    )]
    AuditBroken { dir: PathBuf, link: BrokenLink },
    #[error("the store was opened read-only")]
    ReadOnly,
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("service {service} already has an active rollout {rollout_id}")]
    ServiceBusy { service: String, rollout_id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open data dir. Read-write stores hold the data-dir lock until dropped.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    conn: Connection,
    /// `None` only for a read-only store of a dir without a key.
    key: Option<AuditKey>,
    /// The chain's end as this store last committed it.
    head: Head,
    /// The head file lags `head`: its write failed after a commit. No new
    /// commit starts until it is written (the one-transaction bound).
    head_unwritten: bool,
    ids: IdGen,
    read_only: bool,
    _lock: Option<File>,
}

impl Store {
    /// Open (creating if needed) the data dir for the one daemon that uses
    /// it: take the lock, migrate the schema, create the audit key on first
    /// use, check the audit chain and bring `audit.head` up to date.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Store> {
        let dir = data_dir.as_ref().to_path_buf();
        create_private_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let db_path = dir.join(DB_FILE);
        let mut conn = Connection::open(&db_path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL lets `audit verify` and `incident list` read while the daemon
        // writes. synchronous=FULL fsyncs the WAL at every commit: with
        // NORMAL a power cut may forget the last commits, yet the daemon has
        // already acted on them (moved traffic, sent webhooks) and fsynced
        // `audit.head` past them, which would then read as truncation.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path: db_path,
                reason: format!("cannot switch to WAL journaling (got {mode})"),
            });
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        schema::migrate(&mut conn, &db_path)?;

        let entries: i64 = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
        let key = match AuditKey::load(&dir) {
            Ok(key) => key,
            Err(StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && entries == 0 =>
            {
                AuditKey::create(&dir)?
            }
            Err(StoreError::Io { path, source })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(StoreError::Key {
                    path,
                    reason: format!(
                        "missing, but the audit log has {entries} entries; restore the key (a new one could not verify them)"
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        let mut store = Store {
            dir,
            conn,
            key: Some(key),
            head: Head::EMPTY,
            head_unwritten: false,
            ids: IdGen::from_os(),
            read_only: false,
            _lock: Some(lock),
        };
        let v = store.verify()?;
        if let Some(link) = v.broken {
            return Err(StoreError::AuditBroken {
                dir: store.dir,
                link,
            });
        }
        store.head = v.last;
        if v.head_file != Some(v.last) {
            // The crash window: the last transaction committed, its head
            // write did not happen. Its entries chain from the recorded head.
            audit::write_head(&store.dir, &store.head)?;
        }
        Ok(store)
    }

    /// Open a data dir for reading while a daemon may be using it: no lock,
    /// a read-only connection, nothing created or migrated.
    pub fn open_read_only(data_dir: impl AsRef<Path>) -> Result<Store> {
        let dir = data_dir.as_ref().to_path_buf();
        let db_path = dir.join(DB_FILE);
        if !db_path.exists() {
            return Err(StoreError::NoState { dir });
        }
        let conn = Connection::open_with_flags(
            &db_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let found = schema::version(&conn)?;
        schema::check_not_newer(found, &db_path)?;
        if found == 0 {
            // A daemon was stopped before its first migration committed.
            return Err(StoreError::NoState { dir });
        }
        if found < SCHEMA_VERSION {
            return Err(StoreError::SchemaTooOld {
                path: db_path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let key = match AuditKey::load(&dir) {
            Ok(key) => Some(key),
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Store {
            dir,
            conn,
            key,
            head: Head::EMPTY,
            head_unwritten: false,
            ids: IdGen::from_os(),
            read_only: true,
            _lock: None,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Use a seeded ID generator (tests, the simulator).
    pub fn set_id_seed(&mut self, seed: u64) {
        self.ids = IdGen::from_seed(seed);
    }

    /// A new rollout ID, `r-...`.
    pub fn new_rollout_id(&mut self, now: crate::time::Timestamp) -> String {
        self.ids.next("r", now)
    }

    /// The chain's end as this store last committed it (read-write stores).
    pub fn audit_head(&self) -> Head {
        self.head
    }

    /// Walk the whole audit chain and compare its end with `audit.head`.
    /// Reads the head file before and after taking the database snapshot and
    /// retries when it moved, so a daemon committing meanwhile is not
    /// mistaken for tampering.
    pub fn verify(&self) -> Result<Verification> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let before = audit::read_head(&self.dir)?;
            let tx = self.conn.unchecked_transaction()?;
            let rows = self.raw_audit_rows()?;
            let after = audit::read_head(&self.dir)?;
            tx.finish()?;
            if before != after && attempts < 20 {
                continue;
            }
            let key = match &self.key {
                Some(key) => key,
                // A daemon stopped before it created the key wrote nothing
                // to chain; there is nothing to check a key against.
                None if rows.is_empty() => &AuditKey::unused(),
                None => {
                    return Err(StoreError::Key {
                        path: self.dir.join(audit::KEY_FILE),
                        reason: format!(
                            "missing: the audit log's {} entries cannot be verified without it",
                            rows.len()
                        ),
                    });
                }
            };
            return Ok(audit::walk(key, &rows, after));
        }
    }

    fn raw_audit_rows(&self) -> Result<Vec<RawEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, tx, at, actor, action, rollout_id, reason, ticket, details, mac
             FROM audit ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RawEntry {
                seq: r.get(0)?,
                tx: r.get(1)?,
                at: r.get(2)?,
                actor: r.get(3)?,
                action: r.get(4)?,
                rollout_id: r.get(5)?,
                reason: r.get(6)?,
                ticket: r.get(7)?,
                details: r.get(8)?,
                mac: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| StoreError::io(dir, e))
}

/// Take `<dir>/lock` exclusively (flock); released when the file closes,
/// including when the process dies.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StoreError::Locked {
                dir: dir.to_path_buf(),
                lock: path,
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
    }
    // Best effort: the pid only improves the error message above.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

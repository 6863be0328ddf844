//! The daemon's durable state, in one SQLite database per data dir or in a
//! PostgreSQL database several daemons share (the same contract on both:
//! `tests/store_contract.rs` runs every test on each), holding
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
//! - `db.rs`: the one SQL layer both engines speak (parameters, rows,
//!   transactions, a PostgreSQL connection that reconnects).
//! - `schema.rs`: tables and forward-only migrations; `schema_postgres.rs`
//!   the same tables on PostgreSQL.
//! - `postgres.rs`: opening a PostgreSQL store, its head row and the lock
//!   that serializes several daemons' appends.
//! - `audit.rs`: the hash chain, the key and head files, `verify`.
//! - `binding.rs`: the genesis entry and the store identity that bind the
//!   chain to its store, and the check of the state rows against it.
//! - `step.rs`: creating rollouts and committing engine steps.
//! - `outbox.rs`: webhook deliveries and lifecycle hook runs, two tables
//!   behind one interface: rows, the pending scan, attempts.
//! - `records.rs`: the other typed rows and the queries that read them.
//! - `retention.rs`: pruning ended rollouts' journals, rows and the log's
//!   oldest entries, each transaction sealed by an anchor entry.
//! - `id.rs`: identifiers.
//!
//! Files in a data dir: `canaryd.db` (+ `-wal`, `-shm`), `lock` (held by the
//! one daemon using the dir), `audit.key` (`audit.key.new` during a first
//! start) and `audit.head`.

pub mod audit;
pub mod binding;
pub mod db;
pub mod id;
pub mod leases;
pub mod outbox;
pub mod page_cache;
pub mod postgres;
pub mod records;
pub mod registry;
pub mod retention;
pub mod schema;
pub mod schema_postgres;
pub mod step;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use db::{Begin, Db, Sql, params};

pub use audit::{AuditEntry, AuditKey, Breakage, BrokenLink, Head, NewAudit};
pub use binding::{Binding, Disagreement};
pub use id::IdGen;
pub use outbox::{
    HookRun, HookStatus, NewNotice, NextAttempt, Notification, OutboxItem, OutboxRow,
};
pub use records::{
    Incident, IncidentStatus, JournalEntry, JournalKind, OpenRollout, Review, ReviewStatus,
    RolloutRow,
};
pub use retention::{Ages, Budget, PruneStep, StorageSize};
pub use schema::SCHEMA_VERSION;

/// The first schema with the store's identity: a store older than this is
/// upgraded, and its chain bound, by `Store::open`.
const BINDING_SCHEMA_VERSION: u32 = 4;
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
    #[error("{place}: no canaryd state here ({})", place.no_state())]
    NoState { place: Place },
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "audit log in {place} is broken at {link}; refusing to append to it (inspect with {}); {}",
        place.verify_command(),
        recovery(.link.kind, .place)
    )]
    AuditBroken { place: Place, link: BrokenLink },
    #[error(
        "{place}: {count} state rows disagree with the audit log (first: {first}); refusing to act on state edited outside the chain (inspect with {}); restore the database from a backup",
        place.verify_command()
    )]
    StateDisagrees {
        place: Place,
        count: usize,
        first: String,
    },
    #[error("the store was opened read-only")]
    ReadOnly,
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("service {service} already has an active rollout {rollout_id}")]
    ServiceBusy { service: String, rollout_id: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "rollout {rollout_id}: this daemon's lease (epoch {epoch}) was taken over ({holder}); it commits nothing more for it"
    )]
    Fenced {
        rollout_id: String,
        epoch: u64,
        holder: String,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {}", db::postgres_message(.0))]
    Postgres(#[from] ::postgres::Error),
    /// A row that does not read as the store wrote it.
    #[error("reading a row: {0}")]
    Decode(String),
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

/// Where a store's state lives, as messages name it: a SQLite data dir,
/// or a PostgreSQL database (its URL without the password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    DataDir(PathBuf),
    Database(String),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::DataDir(dir) => write!(f, "{}", dir.display()),
            Place::Database(url) => write!(f, "database {url}"),
        }
    }
}

impl Place {
    /// The command that shows an operator what `verify` found here.
    fn verify_command(&self) -> String {
        match self {
            Place::DataDir(dir) => format!("`canaryd audit verify --data-dir {}`", dir.display()),
            Place::Database(_) => {
                "`canaryd audit verify` with the daemon's storage configuration".into()
            }
        }
    }

    fn no_state(&self) -> &'static str {
        match self {
            Place::DataDir(_) => "canaryd.db does not exist or was never initialized",
            Place::Database(_) => "canaryd never created its tables in it",
        }
    }

    /// How the chain's end is recorded outside its entries, in messages.
    pub(crate) fn head_mark(&self) -> audit::HeadMark {
        match self {
            Place::DataDir(_) => audit::HeadMark::FILE,
            Place::Database(_) => audit::HeadMark::ROW,
        }
    }
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Entries in the database.
    pub entries: u64,
    /// The database's last entry (seq 0 when empty).
    pub last: Head,
    /// What `audit.head` records, if it exists.
    pub head_file: Option<Head>,
    /// Entries past the head file: the last transaction, whose head write a
    /// crash interrupted (or a daemon is about to make).
    pub ahead_of_head: u64,
    pub broken: Option<BrokenLink>,
    /// How the chain is bound to its store (`binding.rs`); meaningful when
    /// the chain holds.
    pub binding: Binding,
    /// What an operator should know of a chain that holds: entries that
    /// predate the binding, deliberate restarts.
    pub notes: Vec<String>,
    /// State rows the chain does not vouch for (checked when it holds).
    pub disagreements: Vec<Disagreement>,
}

impl Verification {
    /// What the walk of the chain found; the binding is checked after it.
    pub(crate) fn of_chain(
        entries: u64,
        last: Head,
        head_file: Option<Head>,
        ahead_of_head: u64,
        broken: Option<BrokenLink>,
    ) -> Verification {
        Verification {
            entries,
            last,
            head_file,
            ahead_of_head,
            broken,
            binding: Binding::Unbound,
            notes: Vec::new(),
            disagreements: Vec::new(),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.broken.is_none() && self.disagreements.is_empty()
    }
}

/// How to recover, deliberately, from a broken chain of this kind.
fn recovery(kind: Breakage, place: &Place) -> String {
    let dir = match place {
        Place::DataDir(dir) => dir,
        Place::Database(_) => {
            return "restore the database from a backup: the chain cannot vouch for entries it lost or that were changed (`canaryd audit restart-chain` is for SQLite stores only)".into();
        }
    };
    match kind {
        Breakage::HeadMissing | Breakage::GenesisMissing => format!(
            "restore {} and the database from a backup, or, to keep the state and start a new chain that records the loss, stop the daemon and run `canaryd audit restart-chain --data-dir {} --actor NAME --reason TEXT`",
            audit::HEAD_FILE,
            dir.display()
        ),
        _ => "restore the data dir from a backup: the chain cannot vouch for entries it lost or that were changed".into(),
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open data dir. Read-write stores hold the data-dir lock until dropped.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Where the state is, as messages name it.
    place: Place,
    db: Db,
    /// `None` only for a read-only store of a dir without a key.
    key: Option<AuditKey>,
    /// The key is still `audit.key.new`: a first start before its genesis
    /// entry committed.
    key_staged: bool,
    /// The schema predates the binding: opened for its upgrade.
    upgrading: bool,
    /// The chain's end as this store last committed it.
    head: Head,
    /// The head file lags `head`: its write failed after a commit. No new
    /// commit starts until it is written (the one-transaction bound).
    head_unwritten: bool,
    ids: IdGen,
    read_only: bool,
    /// The open rollouts SQLite's page cache was last sized for, and the
    /// rollouts created since (`page_cache.rs`).
    cache_sized_for: u64,
    created_since_sizing: u64,
    _lock: Option<File>,
}

impl Store {
    /// Open (creating if needed) the data dir for the one daemon that uses
    /// it: take the lock, migrate the schema, create the audit key and the
    /// genesis entry on first use, check the audit chain and the state it
    /// describes, bind a chain that predates the binding, and bring
    /// `audit.head` up to date.
    ///
    /// It refuses, naming what it found and how to recover, a chain that
    /// does not hold, a log that was emptied or lost its head while the
    /// store holds state, and state rows the chain does not vouch for: it
    /// never starts a new chain on its own.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Store> {
        let mut store = Store::open_unchecked(data_dir)?;
        let v = store.verify_opening()?;
        if let Some(link) = v.broken {
            return Err(StoreError::AuditBroken {
                place: store.place,
                link,
            });
        }
        if let Some(first) = v.disagreements.first() {
            return Err(StoreError::StateDisagrees {
                place: store.place,
                count: v.disagreements.len(),
                first: first.to_string(),
            });
        }
        store.head = v.last;
        if v.head_file != Some(v.last) {
            // The crash window: the last transaction committed, its head
            // write did not happen. Its entries chain from the recorded head.
            store.write_head_mark()?;
        }
        if matches!(v.binding, Binding::Empty | Binding::Unbound) {
            store.append_genesis(v.entries, None)?;
        }
        store.install_staged_key()?;
        Ok(store)
    }

    /// Start a new chain deliberately on a store whose log was emptied or
    /// lost its head (`canaryd audit restart-chain`), keeping its state.
    /// The genesis entry records `actor`, `reason`, what `verify` found and
    /// the state rows as they are, which later checks start from. Refuses
    /// any other breakage (restore a backup for those), a store whose log
    /// holds, and a log that cannot be verified without its missing key.
    pub fn restart_chain(
        data_dir: impl AsRef<Path>,
        actor: &str,
        reason: &str,
        at: crate::time::Timestamp,
    ) -> Result<Verification> {
        if actor.trim().is_empty() || reason.trim().is_empty() {
            return Err(StoreError::Invalid(
                "restarting the audit chain needs an actor and a reason".into(),
            ));
        }
        let mut store = Store::open_unchecked(data_dir)?;
        let v = store.verify_opening()?;
        let Some(link) = v.broken else {
            return Err(StoreError::Invalid(if v.disagreements.is_empty() {
                "the audit log holds: there is nothing to restart".into()
            } else {
                format!(
                    "the audit log holds but {} state rows disagree with it (first: {}): restore the database from a backup",
                    v.disagreements.len(),
                    v.disagreements[0]
                )
            }));
        };
        if !matches!(link.kind, Breakage::HeadMissing | Breakage::GenesisMissing) {
            return Err(StoreError::AuditBroken {
                place: store.place,
                link,
            });
        }
        let state = store.read_state()?;
        if link.kind == Breakage::HeadMissing {
            // The entries still hold: the state must still agree with them.
            let rows = store.raw_audit_rows()?;
            let key = store.key.as_ref().ok_or(StoreError::ReadOnly)?;
            let checked = binding::check(
                &rows,
                &binding::Context {
                    key_id: &key.key_id(),
                    key_file_exists: true,
                    identity: store.read_identity()?,
                    state: &state,
                    upgrading: false,
                },
            );
            if let Some(link) = checked.broken {
                return Err(StoreError::AuditBroken {
                    place: store.place,
                    link,
                });
            }
            if let Some(first) = checked.disagreements.first() {
                return Err(StoreError::StateDisagrees {
                    place: store.place,
                    count: checked.disagreements.len(),
                    first: first.to_string(),
                });
            }
        }
        store.head = v.last;
        let restart = binding::Restart {
            found: link.to_string(),
            state,
        };
        store.append_genesis(v.entries, Some((actor, reason, at, restart)))?;
        store.install_staged_key()?;
        store.verify()
    }

    /// Lock, migrate and load (or stage) the key; nothing checked yet.
    fn open_unchecked(data_dir: impl AsRef<Path>) -> Result<Store> {
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
        // A new file frees pages back to the OS incrementally
        // (`retention.rs`); the mode must be set before its first table.
        // An existing file keeps its mode: converting it takes a full
        // VACUUM (docs/retention.md), too long and too much disk for a start.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables == 0 {
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path: db_path,
                reason: format!("cannot switch to WAL journaling (got {mode})"),
            });
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        page_cache::set_wal_autocheckpoint(&conn)?;
        let found = schema::migrate(&mut conn, &db_path)?;

        let entries: i64 = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
        let mut key_staged = false;
        let key = match AuditKey::load(&dir) {
            Ok(key) => key,
            Err(StoreError::Io { path, source })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                // A first start stages the key until its genesis commits;
                // a crash in between leaves it staged, to be used (before
                // the genesis) or installed (after it).
                match AuditKey::load_staged(&dir)? {
                    Some(staged) => {
                        key_staged = true;
                        staged
                    }
                    None if entries == 0 => {
                        // Staged by `append_genesis`, if the store gets one.
                        key_staged = true;
                        AuditKey::generate(&dir)?
                    }
                    None => {
                        return Err(StoreError::Key {
                            path,
                            reason: format!(
                                "missing, but the audit log has {entries} entries; restore the key (a new one could not verify them)"
                            ),
                        });
                    }
                }
            }
            Err(e) => return Err(e),
        };
        Ok(Store {
            place: Place::DataDir(dir.clone()),
            dir,
            db: Db::Sqlite(conn),
            key: Some(key),
            key_staged,
            upgrading: found < BINDING_SCHEMA_VERSION,
            head: Head::EMPTY,
            head_unwritten: false,
            ids: IdGen::from_os(),
            read_only: false,
            cache_sized_for: 0,
            created_since_sizing: 0,
            _lock: Some(lock),
        })
        .and_then(|mut store| {
            store.size_page_cache()?;
            Ok(store)
        })
    }

    /// `verify` as `open` needs it: the key may still be staged, and a
    /// store being upgraded may hold a key beside an empty log.
    fn verify_opening(&self) -> Result<Verification> {
        let key_file_exists = !self.key_staged;
        self.verify_with(key_file_exists, self.upgrading)
    }

    /// Append a genesis entry: the chain's first, or one binding a chain
    /// that predates the binding (`predates` entries), or a deliberate
    /// restart; and point the store's identity at it, in one transaction.
    fn append_genesis(
        &mut self,
        predates: u64,
        restart: Option<(&str, &str, crate::time::Timestamp, binding::Restart)>,
    ) -> Result<()> {
        let key = self.key.as_ref().ok_or(StoreError::ReadOnly)?;
        if self.key_staged {
            // On disk before the genesis it MACs commits (see `stage`).
            key.stage(&self.dir)?;
        }
        let key_id = key.key_id();
        let store_id = match self.read_identity()? {
            Some(identity) => identity.id,
            None => {
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes).map_err(|e| StoreError::Key {
                    path: self.place.to_string().into(),
                    reason: format!("no randomness from the OS for the store's identity: {e}"),
                })?;
                format!("s-{}", audit::to_hex(&bytes))
            }
        };
        let genesis_seq = self.head.seq + 1;
        let (actor, reason, at, restart) = match restart {
            Some((actor, reason, at, restart)) => {
                (actor.to_string(), reason.to_string(), at, Some(restart))
            }
            None => (
                crate::engine::ENGINE.to_string(),
                if predates == 0 {
                    "the audit chain begins, bound to this store and its key".to_string()
                } else {
                    format!(
                        "the audit chain is bound to this store and its key after {predates} earlier entries"
                    )
                },
                // The store reads no clock: the genesis takes the time of the
                // entry before it (0 for a new store); `at` orders nothing.
                self.last_entry_at()?,
                None,
            ),
        };
        let details = serde_json::to_value(binding::Genesis {
            store: store_id.clone(),
            key_id,
            predates,
            restart,
        })?;
        let entry = NewAudit {
            at,
            actor,
            action: binding::GENESIS_ACTION.into(),
            rollout_id: None,
            reason,
            ticket: None,
            details,
        };
        let (_, written) = self.write(move |tx, _| {
            tx.execute(
                "INSERT INTO store_identity (one, id, genesis_seq) VALUES (1, ?1, ?2)
                 ON CONFLICT (one) DO UPDATE SET genesis_seq = excluded.genesis_seq",
                params![store_id, genesis_seq],
            )?;
            Ok(((), vec![entry]))
        })?;
        if !written {
            self.write_head_mark()?;
            self.head_unwritten = false;
        }
        Ok(())
    }

    fn last_entry_at(&self) -> Result<crate::time::Timestamp> {
        let at: Option<i64> = self
            .db
            .query_one("SELECT max(at) FROM audit", params![], |r| r.get(0))?;
        Ok(crate::time::Timestamp::from_millis(
            at.and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0),
        ))
    }

    /// Once the genesis it MACs is committed, the staged key becomes
    /// `audit.key`.
    fn install_staged_key(&mut self) -> Result<()> {
        if self.key_staged {
            AuditKey::install(&self.dir)?;
            self.key_staged = false;
        }
        Ok(())
    }

    /// Open a data dir for reading while a daemon may be using it: no lock,
    /// a read-only connection, nothing created or migrated.
    pub fn open_read_only(data_dir: impl AsRef<Path>) -> Result<Store> {
        let dir = data_dir.as_ref().to_path_buf();
        let db_path = dir.join(DB_FILE);
        if !db_path.exists() {
            return Err(StoreError::NoState {
                place: Place::DataDir(dir),
            });
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
            return Err(StoreError::NoState {
                place: Place::DataDir(dir),
            });
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
            place: Place::DataDir(dir.clone()),
            dir,
            db: Db::Sqlite(conn),
            key,
            key_staged: false,
            upgrading: false,
            head: Head::EMPTY,
            head_unwritten: false,
            ids: IdGen::from_os(),
            read_only: true,
            cache_sized_for: 0,
            created_since_sizing: 0,
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

    /// Walk the whole audit chain, compare its end with `audit.head`, and,
    /// when it holds, check its genesis and the state rows it describes.
    /// Reads the head file before and after taking the database snapshot
    /// and retries when it moved, so a daemon committing meanwhile is not
    /// mistaken for tampering.
    pub fn verify(&self) -> Result<Verification> {
        // On PostgreSQL the key comes from the configuration: that it
        // exists says nothing of the database.
        let key_file_exists =
            self.db.dialect() == db::Dialect::Sqlite && self.key.is_some() && !self.key_staged;
        self.verify_with(key_file_exists, false)
    }

    fn verify_with(&self, key_file_exists: bool, upgrading: bool) -> Result<Verification> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let before = self.read_head_mark(None)?;
            let tx = self.db.begin(Begin::Snapshot)?;
            let rows = raw_audit_rows(&tx)?;
            let state = read_state(&tx)?;
            let identity = read_identity(&tx)?;
            let after = self.read_head_mark(Some(&tx))?;
            drop(tx);
            // A SQLite head file is read outside the snapshot: a daemon
            // that committed meanwhile moved it. PostgreSQL's row is in it.
            if self.db.dialect() == db::Dialect::Sqlite && before != after && attempts < 20 {
                continue;
            }
            let key = match &self.key {
                Some(key) => key,
                // A daemon stopped before it created the key wrote nothing
                // to chain; there is nothing to check a key against.
                None if rows.is_empty() => &AuditKey::unused(),
                None => {
                    return Err(StoreError::Key {
                        path: match &self.place {
                            Place::DataDir(dir) => dir.join(audit::KEY_FILE),
                            Place::Database(_) => "the audit key file (audit.keyFile)".into(),
                        },
                        reason: format!(
                            "missing: the audit log's {} entries cannot be verified without it",
                            rows.len()
                        ),
                    });
                }
            };
            let mut v = audit::walk(
                key,
                &rows,
                binding::chain_start(&rows),
                after,
                self.place.head_mark(),
            );
            if v.broken.is_none()
                && v.ahead_of_head > 0
                && self.db.dialect() == db::Dialect::Postgres
            {
                // The row is written in the transaction that appends: it
                // never lags its entries, not even by the crash window a
                // head file has.
                let head = after.map_or(0, |h| h.seq);
                v.broken = Some(BrokenLink {
                    seq: head + 1,
                    kind: Breakage::HeadStale,
                    detail: format!(
                        "the audit_head row records entry {head} but the log goes on to entry {}; the row is written with the entries, so it was moved back",
                        v.last.seq
                    ),
                });
                v.ahead_of_head = 0;
            }
            if v.broken.is_none() {
                let checked = binding::check(
                    &rows,
                    &binding::Context {
                        key_id: &key.key_id(),
                        key_file_exists,
                        identity,
                        state: &state,
                        upgrading,
                    },
                );
                v.binding = checked.binding;
                v.notes = checked.notes;
                v.broken = checked.broken;
                v.disagreements = checked.disagreements;
            }
            return Ok(v);
        }
    }

    fn read_state(&self) -> Result<binding::StateSnapshot> {
        read_state(&self.db)
    }

    fn read_identity(&self) -> Result<Option<binding::Identity>> {
        read_identity(&self.db)
    }

    fn raw_audit_rows(&self) -> Result<Vec<RawEntry>> {
        raw_audit_rows(&self.db)
    }

    /// The chain's end as recorded outside its entries: `audit.head` in a
    /// SQLite data dir, the `audit_head` row on PostgreSQL (read inside
    /// `snapshot` when given, where the walk's rows were read).
    fn read_head_mark(&self, snapshot: Option<&db::Tx<'_>>) -> Result<Option<Head>> {
        match self.db.dialect() {
            db::Dialect::Sqlite => audit::read_head(&self.dir),
            db::Dialect::Postgres => match snapshot {
                Some(tx) => postgres::read_head_row(tx),
                // Before the snapshot: the row is read with the entries.
                None => Ok(None),
            },
        }
    }

    /// Record `self.head` as the chain's end (see [`Store::read_head_mark`]).
    /// On PostgreSQL the row is written in each appending transaction
    /// (`step.rs`); here only when opening found it behind.
    fn write_head_mark(&self) -> Result<()> {
        match self.db.dialect() {
            db::Dialect::Sqlite => audit::write_head(&self.dir, &self.head),
            db::Dialect::Postgres => postgres::write_head_row(&self.db, &self.head),
        }
    }

    /// Size SQLite's page cache for the rollouts open now
    /// (`page_cache.rs`); nothing on PostgreSQL.
    fn size_page_cache(&mut self) -> Result<()> {
        let Some(conn) = self.db.sqlite() else {
            return Ok(());
        };
        let open: u64 = conn.query_row(
            "SELECT count(*) FROM rollouts WHERE outcome IS NULL",
            [],
            |r| r.get(0),
        )?;
        page_cache::size_for(conn, open)?;
        self.cache_sized_for = open;
        self.created_since_sizing = 0;
        Ok(())
    }

    /// SQLite's page cache bound in KiB (`page_cache.rs`); `None` on
    /// PostgreSQL.
    pub fn page_cache_kib(&self) -> Result<Option<u64>> {
        let Some(conn) = self.db.sqlite() else {
            return Ok(None);
        };
        let size: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
        Ok(Some(if size < 0 {
            size.unsigned_abs()
        } else {
            // A positive size counts pages.
            let page: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            size as u64 * page / 1024
        }))
    }

    /// A rollout was created: resize the cache once enough were. A
    /// resize that fails keeps the cache as it was: that costs speed, not
    /// state, and the rollout is committed already.
    pub(super) fn rollout_created(&mut self) {
        self.created_since_sizing += 1;
        if self.created_since_sizing >= page_cache::creates_between_sizings(self.cache_sized_for) {
            let _ = self.size_page_cache();
        }
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }
}

/// The state rows the chain describes, as stored.
fn read_state(sql: &impl Sql) -> Result<binding::StateSnapshot> {
    let mut state = binding::StateSnapshot::default();
    for (id, rollout) in sql.query_all(
        "SELECT id, service, policy_version, phase, outcome FROM rollouts",
        params![],
        |r| {
            Ok((
                r.get::<String>(0)?,
                binding::RolloutState {
                    service: r.get(1)?,
                    policy_version: r.get(2)?,
                    phase: r.get(3)?,
                    outcome: r.get(4)?,
                },
            ))
        },
    )? {
        state.rollouts.insert(id, rollout);
    }
    for (table, records) in [
        ("incidents", &mut state.incidents),
        ("reviews", &mut state.reviews),
    ] {
        for (id, record) in sql.query_all(
            &format!("SELECT id, rollout_id, status FROM {table}"),
            params![],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    binding::RecordState {
                        rollout_id: r.get(1)?,
                        status: r.get(2)?,
                    },
                ))
            },
        )? {
            records.insert(id, record);
        }
    }
    Ok(state)
}

fn read_identity(sql: &impl Sql) -> Result<Option<binding::Identity>> {
    sql.query_opt(
        "SELECT id, genesis_seq FROM store_identity WHERE one = 1",
        params![],
        |r| {
            Ok(binding::Identity {
                id: r.get(0)?,
                genesis_seq: r.get(1)?,
            })
        },
    )
}

/// Entries with seq at or after `from`, in order, exactly as stored.
pub(crate) fn raw_audit_rows_from(sql: &impl Sql, from: u64) -> Result<Vec<RawEntry>> {
    sql.query_all(
        "SELECT seq, tx, at, actor, action, rollout_id, reason, ticket, details, mac
         FROM audit WHERE seq >= ?1 ORDER BY seq",
        params![from],
        |r| {
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
        },
    )
}

fn raw_audit_rows(sql: &impl Sql) -> Result<Vec<RawEntry>> {
    raw_audit_rows_from(sql, 0)
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

/// Create `dir` (mode 0700) and take its lock as [`Store::open`] does: a
/// daemon whose state is elsewhere (PostgreSQL) still keeps files of its
/// own there (the admin token). Held until the file is dropped.
pub fn lock_data_dir(dir: &Path) -> Result<File> {
    create_private_dir(dir)?;
    lock_dir(dir)
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

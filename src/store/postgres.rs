//! The store on PostgreSQL: opening it, and what differs from a SQLite
//! data dir.
//!
//! - **The key** comes from the configuration (`audit.keyFile`), the same
//!   file on every daemon sharing the database; it is never generated here.
//! - **The head** (`audit.head` in a data dir) is the `audit_head` row,
//!   written in the transaction that appends: the daemons share no disk.
//!   It still catches entries deleted from the end by someone who forgot
//!   the row; keeping a copy outside the database is the operator's
//!   choice (docs/deploy.md).
//! - **Appends** from several daemons are serialized by a transaction-level
//!   advisory lock, taken last in the transaction (after the rows the step
//!   writes), so it cannot deadlock with row locks; each daemon chains onto
//!   whatever the others appended, after checking that its own last entry
//!   is still there unchanged.
//! - **No data-dir lock**: several daemons share the database by design;
//!   what keeps two of them from acting on one rollout is the lease
//!   (issue #20), not the store.

use std::path::Path;

use super::audit::{self, AuditKey, Head};
use super::db::{Db, PgConn, Sql, params};
use super::{Binding, IdGen, Place, Result, Store, StoreError, schema_postgres};

/// Where the database is and how to reach it.
#[derive(Clone)]
pub struct PostgresOptions {
    /// Parsed from the `postgres://` URL.
    pub config: postgres::Config,
    /// TLS for the connection (`caFile` and client certificates from the
    /// config; the system roots otherwise). Used when the URL's
    /// `sslmode` asks for TLS (`prefer`, the default, or `require`).
    pub tls: rustls::ClientConfig,
    /// The database as the operator may read it in messages: the URL
    /// without its password.
    pub display: String,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// Parse a `postgres://` URL (or a `key=value` connection string). The
    /// error names what is wrong and never repeats the password.
    pub fn parse(url: &str, tls: rustls::ClientConfig) -> Result<PostgresOptions, String> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| format!("not a PostgreSQL connection URL: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        let mut config = config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("canaryd");
        }
        Ok(PostgresOptions {
            display: redact(url),
            config,
            tls,
        })
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a PostgreSQL connection string)".into();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// The advisory lock that serializes appends to the chain.
const CHAIN_LOCK: i64 = 2_262_794;

/// Wait for the chain; held until the transaction ends.
pub(super) fn lock_chain(tx: &impl Sql) -> Result<()> {
    tx.query_one(
        "SELECT pg_advisory_xact_lock(?1)::TEXT",
        params![CHAIN_LOCK],
        |r| r.get::<String>(0),
    )?;
    Ok(())
}

pub(super) fn read_head_row(sql: &impl Sql) -> Result<Option<Head>> {
    let row: Option<(u64, String)> = sql.query_opt(
        "SELECT seq, mac FROM audit_head WHERE one = 1",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    row.map(|(seq, mac)| {
        Ok(Head {
            seq,
            mac: audit::mac_from_hex(&mac).ok_or_else(|| {
                StoreError::Decode(format!("audit_head: mac {mac:?} is not 64 hex digits"))
            })?,
        })
    })
    .transpose()
}

/// Move the head row forward to `head` (never back).
pub(super) fn write_head_row(sql: &impl Sql, head: &Head) -> Result<()> {
    sql.execute(
        "INSERT INTO audit_head (one, seq, mac) VALUES (1, ?1, ?2)
         ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, mac = excluded.mac
         WHERE audit_head.seq < excluded.seq",
        params![head.seq, head.mac_hex()],
    )?;
    Ok(())
}

/// The session-level lock a daemon holds while it checks the chain and,
/// on a new database, writes its genesis: so two daemons starting at once
/// on an empty database write one genesis, not two.
const OPEN_LOCK: i64 = 2_262_795;

impl Store {
    /// Open the store on PostgreSQL: connect, migrate, check the chain and
    /// the state it describes as [`Store::open`] does, and write the
    /// genesis entry on a new database. `dir` is the daemon's own data dir
    /// (its proxy state and token file); nothing of the store is kept there.
    pub fn open_postgres(options: &PostgresOptions, key: AuditKey, dir: &Path) -> Result<Store> {
        let mut store = Store::connect_postgres(options, Some(key), dir, false)?;
        store.db.query_one(
            "SELECT pg_advisory_lock(?1)::TEXT",
            params![OPEN_LOCK],
            |r| r.get::<String>(0),
        )?;
        let opened = store.check_opening_postgres();
        // The lock is the session's: released here, or when the connection
        // closes if this fails.
        let _ = store.db.query_one(
            "SELECT pg_advisory_unlock(?1)::TEXT",
            params![OPEN_LOCK],
            |r| r.get::<String>(0),
        );
        opened?;
        Ok(store)
    }

    fn check_opening_postgres(&mut self) -> Result<()> {
        let v = self.verify()?;
        if let Some(link) = v.broken {
            return Err(StoreError::AuditBroken {
                place: self.place.clone(),
                link,
            });
        }
        if let Some(first) = v.disagreements.first() {
            return Err(StoreError::StateDisagrees {
                place: self.place.clone(),
                count: v.disagreements.len(),
                first: first.to_string(),
            });
        }
        self.head = v.last;
        if matches!(v.binding, Binding::Empty | Binding::Unbound) {
            self.append_genesis(v.entries, None)?;
        }
        Ok(())
    }

    /// Open the store on PostgreSQL for reading (`audit verify`, `incident
    /// list` without a daemon): nothing created or migrated. Without the
    /// key, the chain cannot be verified (other reads work).
    pub fn open_postgres_read_only(
        options: &PostgresOptions,
        key: Option<AuditKey>,
    ) -> Result<Store> {
        let store = Store::connect_postgres(options, key, Path::new(""), true)?;
        let found = schema_postgres::version(&store.db)?;
        if found == 0 {
            return Err(StoreError::NoState {
                place: store.place.clone(),
            });
        }
        if found != super::SCHEMA_VERSION {
            return Err(if found > super::SCHEMA_VERSION {
                StoreError::SchemaTooNew {
                    path: store.place.to_string().into(),
                    found,
                    supported: super::SCHEMA_VERSION,
                }
            } else {
                StoreError::SchemaTooOld {
                    path: store.place.to_string().into(),
                    found,
                    supported: super::SCHEMA_VERSION,
                }
            });
        }
        Ok(store)
    }

    fn connect_postgres(
        options: &PostgresOptions,
        key: Option<AuditKey>,
        dir: &Path,
        read_only: bool,
    ) -> Result<Store> {
        let conn = PgConn::connect(options.config.clone(), options.tls.clone())?;
        let db = Db::Postgres(Box::new(std::sync::Mutex::new(conn)));
        let place = Place::Database(options.display.clone());
        if !read_only {
            schema_postgres::migrate(&db, &place.to_string())?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            place,
            db,
            key,
            key_staged: false,
            upgrading: false,
            head: Head::EMPTY,
            head_unwritten: false,
            ids: IdGen::from_os(),
            read_only,
            cache_sized_for: 0,
            created_since_sizing: 0,
            // Several daemons share the database by design; the daemon
            // locks its own dir itself (`lock_data_dir`).
            _lock: None,
        })
    }

    /// The engine this store runs on.
    pub fn dialect(&self) -> super::db::Dialect {
        self.db.dialect()
    }
}

/// Read the key every daemon on one database names (`audit.keyFile`):
/// exactly 32 bytes, readable by its owner only.
pub fn load_key_file(path: &Path) -> Result<AuditKey> {
    AuditKey::load_file(path)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact("postgres://canaryd:s3cret@db.example:5432/canaryd?sslmode=require"),
            "postgres://canaryd@db.example:5432/canaryd?sslmode=require"
        );
        assert_eq!(
            redact("postgres://canaryd@127.0.0.1/db"),
            "postgres://canaryd@127.0.0.1/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact("host=h password=x"),
            "(a PostgreSQL connection string)"
        );
    }
}

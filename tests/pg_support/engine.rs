//! The store's engine under test, SQLite in a temp dir or a database on
//! this binary's PostgreSQL server, behind one type: the contract suite
//! (`tests/store_contract.rs`) runs each of its tests on both.

use std::path::Path;

use canaryd::store::{Store, StoreError};

use crate::pg_support::{self, PgServer};
use crate::store_support::tamper;

/// The store's engine under test: the contract suite
/// (`tests/store_contract.rs`) runs each of its tests on both.
pub enum Engine {
    /// A data dir in a temp dir.
    Sqlite(tempfile::TempDir),
    /// A fresh database on the binary's PostgreSQL server, its key file
    /// and the daemon's own dir in a temp dir.
    Postgres {
        server: &'static PgServer,
        database: String,
        dir: tempfile::TempDir,
    },
}

impl Engine {
    pub fn sqlite() -> Engine {
        Engine::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    pub fn postgres() -> Engine {
        Engine::postgres_on(pg_support::server())
    }

    /// A fresh database on `server` (a test that stops its server has one
    /// of its own).
    pub fn postgres_on(server: &'static PgServer) -> Engine {
        let database = server.database();
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("audit.key");
        std::fs::write(&key, [7u8; 32]).expect("key file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        Engine::Postgres {
            server,
            database,
            dir,
        }
    }

    /// The PostgreSQL database's URL.
    pub fn url(&self) -> String {
        let Engine::Postgres {
            server, database, ..
        } = self
        else {
            panic!("not PostgreSQL");
        };
        server.url(database)
    }

    /// End every other connection to the database, as an operator's
    /// `pg_terminate_backend` or a restarted pooler would; how many.
    pub fn terminate_connections(&self) -> u32 {
        let Engine::Postgres {
            server, database, ..
        } = self
        else {
            panic!("not PostgreSQL");
        };
        server
            .psql(
                database,
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()) AS ended",
            )
            .parse()
            .expect("a count")
    }

    pub fn options(&self) -> canaryd::store::postgres::PostgresOptions {
        let tls = canaryd::tls::ClientTls::default()
            .rustls_config()
            .expect("tls config");
        canaryd::store::postgres::PostgresOptions::parse(&self.url(), tls).expect("url")
    }

    /// The dir the store (SQLite) or the daemon (PostgreSQL) keeps files in.
    pub fn dir(&self) -> &Path {
        match self {
            Engine::Sqlite(dir) => dir.path(),
            Engine::Postgres { dir, .. } => dir.path(),
        }
    }

    pub fn try_open(&self) -> Result<Store, StoreError> {
        match self {
            Engine::Sqlite(dir) => Store::open(dir.path()),
            Engine::Postgres { dir, .. } => {
                let key = canaryd::store::postgres::load_key_file(&dir.path().join("audit.key"))?;
                Store::open_postgres(&self.options(), key, dir.path())
            }
        }
    }

    pub fn open(&self) -> Store {
        self.try_open().expect("open store")
    }

    pub fn open_read_only(&self) -> Store {
        self.try_open_read_only().expect("open read-only")
    }

    pub fn try_open_read_only(&self) -> Result<Store, StoreError> {
        match self {
            Engine::Sqlite(dir) => Store::open_read_only(dir.path()),
            Engine::Postgres { dir, .. } => {
                let key = canaryd::store::postgres::load_key_file(&dir.path().join("audit.key"))?;
                Store::open_postgres_read_only(&self.options(), Some(key))
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Engine::Postgres { .. })
    }

    /// Another store of the same engine, with nothing in it yet.
    pub fn fresh(&self) -> Engine {
        match self {
            Engine::Sqlite(_) => Engine::sqlite(),
            Engine::Postgres { .. } => Engine::postgres(),
        }
    }

    /// `sqlite` or `postgres`, whichever SQL this engine speaks.
    pub fn pick<'a>(&self, sqlite: &'a str, postgres: &'a str) -> &'a str {
        if self.is_postgres() { postgres } else { sqlite }
    }

    /// Raw SQL with the store's rules in place (its triggers), in one
    /// session, as a bug in canaryd would run it; the database's message
    /// when it refuses.
    pub fn raw(&self, sql: &str) -> Result<(), String> {
        match self {
            Engine::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("canaryd.db"))
                    .map_err(|e| e.to_string())?;
                conn.execute_batch(sql).map_err(|e| e.to_string())
            }
            Engine::Postgres {
                server, database, ..
            } => server.try_psql(database, sql).map(drop),
        }
    }

    /// Query one text value with raw SQL.
    pub fn raw_text(&self, sql: &str) -> String {
        match self {
            Engine::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("canaryd.db")).expect("open");
                conn.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
                    .map(|v| match v {
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })
                    .expect("query")
            }
            Engine::Postgres {
                server, database, ..
            } => server.psql(database, sql),
        }
    }

    /// Replace the chain's end as recorded outside its entries (the head
    /// file, the `audit_head` row), or remove it.
    pub fn set_head(&self, head: Option<(u64, &str)>) {
        match (self, head) {
            (Engine::Sqlite(dir), Some((seq, mac))) => std::fs::write(
                dir.path().join("audit.head"),
                format!("canaryd audit head v1\nseq {seq}\nmac {mac}\n"),
            )
            .expect("write head"),
            (Engine::Sqlite(dir), None) => {
                std::fs::remove_file(dir.path().join("audit.head")).expect("remove head")
            }
            (Engine::Postgres { .. }, Some((seq, mac))) => {
                self.tamper(&format!("UPDATE audit_head SET seq = {seq}, mac = '{mac}'"))
            }
            (Engine::Postgres { .. }, None) => self.tamper("DELETE FROM audit_head"),
        }
    }

    /// Every hook run and delivery done, as the daemon's outbox does it
    /// (those tables are not the chain's).
    pub fn outbox_done(&self) {
        self.raw(
            "UPDATE hook_runs SET status = 'ran', done_at = 0 WHERE status = 'pending';
             UPDATE notifications SET delivered_at = 0 WHERE delivered_at IS NULL",
        )
        .expect("outbox done");
    }

    /// Raw SQL, as someone with write access to the database but not the
    /// key would run it: the append-only triggers are out of the way
    /// (dropped in SQLite; replication role on PostgreSQL).
    pub fn tamper(&self, sql: &str) {
        match self {
            // A plain connection enforces foreign keys in this build.
            Engine::Sqlite(dir) => tamper(dir.path(), &format!("PRAGMA foreign_keys = OFF; {sql}")),
            Engine::Postgres {
                server, database, ..
            } => {
                server.psql(
                    database,
                    &format!("SET session_replication_role = replica; {sql}"),
                );
            }
        }
    }
}

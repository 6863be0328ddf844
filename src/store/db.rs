//! The SQL the store speaks, on either engine: SQLite (a file in the data
//! dir, compiled in) or PostgreSQL (a server several daemons share).
//!
//! Everything above this module is written once: statements with `?1`,
//! `?2`, ... parameters (rewritten to `$1`, `$2`, ... for PostgreSQL),
//! parameters as [`Value`]s, rows read by column index into Rust types
//! through one [`Column`] conversion, and transactions. Where the dialects
//! differ in a statement (schema, upserts of JSON, space accounting), the
//! caller asks [`Sql::dialect`] and writes each form; that is rare and
//! stays in the file that owns the statement.
//!
//! Column types are kept to what both engines store the same way: integers
//! are 64-bit (`INTEGER` in SQLite, `BIGINT` in PostgreSQL), text is text,
//! bytes are `BLOB`/`BYTEA`. A PostgreSQL aggregate that widens (`sum` of
//! a `BIGINT` is `NUMERIC`) is cast back to `BIGINT` in the statement.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::{Result, StoreError};

/// Which SQL a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// SQL for the text of a top-level field of a JSON text column.
    pub fn json_field(self, column: &str, field: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{field}')"),
            Dialect::Postgres => format!("({column}::json ->> '{field}')"),
        }
    }
}

/// A statement parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// What can be bound as a parameter (see [`params!`](crate::sql_params)).
pub trait ToValue {
    fn to_value(&self) -> Value<'_>;
}

impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Bytes(self)
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Bytes(self)
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                // Every integer the store keeps (sequence numbers, counts,
                // milliseconds) fits; one that did not would be a bug, and
                // the saturated value then fails the row's own checks.
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_values!(i64, i32, u8, u16, u32, u64, usize);

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

impl<'a> ToValue for Value<'a> {
    fn to_value(&self) -> Value<'_> {
        *self
    }
}

/// `sql_params![a, b, ...]`: a statement's parameters, each taken by
/// reference (`&[Value]`).
#[macro_export]
#[doc(hidden)]
macro_rules! sql_params {
    () => {
        &[] as &[$crate::store::db::Value<'_>]
    };
    ($($x:expr),+ $(,)?) => {
        &[$($crate::store::db::ToValue::to_value(&$x)),+] as &[$crate::store::db::Value<'_>]
    };
}
pub use crate::sql_params as params;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Real(v) => ValueRef::Real(v),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                _ => Err(format!("an integer parameter where PostgreSQL expects {ty}").into()),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                _ => Err(format!("a real parameter where PostgreSQL expects {ty}").into()),
            },
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`: the enum is one Rust type for all.
        true
    }

    to_sql_checked!();
}

/// One column of a row, as both engines hand it over.
#[derive(Clone, Copy, Debug)]
pub enum Raw<'r> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'r str),
    Bytes(&'r [u8]),
}

/// A row of a result, read by column index.
pub struct Row<'r>(RowRef<'r>);

enum RowRef<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl<'r> Row<'r> {
    /// Column `idx` as `T`; a type that does not fit is an error naming
    /// the column.
    pub fn get<T: Column>(&self, idx: usize) -> Result<T> {
        T::from_raw(self.raw(idx)?).map_err(|expected| self.mismatch(idx, expected))
    }

    /// Column `idx` as stored.
    pub fn raw(&self, idx: usize) -> Result<Raw<'_>> {
        match &self.0 {
            RowRef::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(idx)? {
                    ValueRef::Null => Raw::Null,
                    ValueRef::Integer(v) => Raw::Int(v),
                    ValueRef::Real(v) => Raw::Real(v),
                    ValueRef::Text(t) => Raw::Text(std::str::from_utf8(t).map_err(|_| {
                        StoreError::Decode(format!("column {idx}: text that is not UTF-8"))
                    })?),
                    ValueRef::Blob(b) => Raw::Bytes(b),
                })
            }
            RowRef::Postgres(r) => pg_raw(r, idx),
        }
    }

    fn mismatch(&self, idx: usize, expected: &str) -> StoreError {
        let name = match &self.0 {
            RowRef::Sqlite(r) => r.as_ref().column_name(idx).map(str::to_string).ok(),
            RowRef::Postgres(r) => r.columns().get(idx).map(|c| c.name().to_string()),
        };
        let found = match self.raw(idx) {
            Ok(Raw::Null) => "NULL".to_string(),
            Ok(Raw::Int(v)) => format!("integer {v}"),
            Ok(Raw::Real(v)) => format!("real {v}"),
            Ok(Raw::Text(_)) => "text".to_string(),
            Ok(Raw::Bytes(_)) => "bytes".to_string(),
            Err(e) => e.to_string(),
        };
        StoreError::Decode(format!(
            "column {idx} ({}): expected {expected}, found {found}",
            name.unwrap_or_default()
        ))
    }
}

fn pg_raw<'r>(r: &'r postgres::Row, idx: usize) -> Result<Raw<'r>> {
    let column = r
        .columns()
        .get(idx)
        .ok_or_else(|| StoreError::Decode(format!("column {idx}: no such column")))?;
    let ty = column.type_().clone();
    let raw = match ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(idx)?.map(Raw::Int),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(idx)?
            .map(|v| Raw::Int(v.into())),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(idx)?
            .map(|v| Raw::Int(v.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(idx)?
            .map(|v| Raw::Int(v.into())),
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(idx)?.map(Raw::Real),
        Type::FLOAT4 => r
            .try_get::<_, Option<f32>>(idx)?
            .map(|v| Raw::Real(v.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            r.try_get::<_, Option<&str>>(idx)?.map(Raw::Text)
        }
        Type::BYTEA => r.try_get::<_, Option<&[u8]>>(idx)?.map(Raw::Bytes),
        other => {
            return Err(StoreError::Decode(format!(
                "column {idx} ({}): PostgreSQL type {other} is not one the store reads (cast it to BIGINT or TEXT)",
                column.name()
            )));
        }
    };
    Ok(raw.unwrap_or(Raw::Null))
}

/// A Rust type a column converts to. `Err` names what was expected.
pub trait Column: Sized {
    fn from_raw(raw: Raw<'_>) -> std::result::Result<Self, &'static str>;
}

impl Column for i64 {
    fn from_raw(raw: Raw<'_>) -> std::result::Result<Self, &'static str> {
        match raw {
            Raw::Int(v) => Ok(v),
            _ => Err("an integer"),
        }
    }
}

macro_rules! int_columns {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn from_raw(raw: Raw<'_>) -> std::result::Result<Self, &'static str> {
                match raw {
                    Raw::Int(v) => <$t>::try_from(v).map_err(|_| concat!("an integer in range of ", stringify!($t))),
                    _ => Err(concat!("an integer in range of ", stringify!($t))),
                }
            }
        }
    )*};
}
int_columns!(i32, u8, u16, u32, u64, usize);

impl Column for bool {
    fn from_raw(raw: Raw<'_>) -> std::result::Result<Self, &'static str> {
        match raw {
            Raw::Int(v) => Ok(v != 0),
            _ => Err("a boolean"),
        }
    }
}

impl Column for f64 {
    fn from_raw(raw: Raw<'_>) -> std::result::Result<Self, &'static str> {
        match raw {
            Raw::Real(v) => Ok(v),
            Raw::Int(v) => Ok(v as f64),
            _ => Err("a number"),
        }
    }
}

impl Column for String {
    fn from_raw(raw: Raw<'_>) -> std::result::Result<Self, &'static str> {
        match raw {
            Raw::Text(t) => Ok(t.to_string()),
            _ => Err("text"),
        }
    }
}

impl Column for Vec<u8> {
    fn from_raw(raw: Raw<'_>) -> std::result::Result<Self, &'static str> {
        match raw {
            Raw::Bytes(b) => Ok(b.to_vec()),
            _ => Err("bytes"),
        }
    }
}

impl<T: Column> Column for Option<T> {
    fn from_raw(raw: Raw<'_>) -> std::result::Result<Self, &'static str> {
        match raw {
            Raw::Null => Ok(None),
            other => T::from_raw(other).map(Some),
        }
    }
}

/// Running statements: on a connection outside a transaction (each
/// statement its own), or inside one ([`Tx`]).
pub trait Sql {
    fn dialect(&self) -> Dialect;

    /// Run a statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64>;

    /// Run a statement and hand each row to `f`, in order.
    fn each_row(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()>;

    /// Several statements without parameters (schema, pragmas).
    fn execute_batch(&self, sql: &str) -> Result<()>;

    /// Every row, each read by `f`.
    fn query_all<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>>
    where
        Self: Sized,
    {
        let mut out = Vec::new();
        self.each_row(sql, params, &mut |row| {
            out.push(f(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, if any, read by `f`.
    fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>>
    where
        Self: Sized,
    {
        let mut f = Some(f);
        let mut out = None;
        self.each_row(sql, params, &mut |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, which must exist (an aggregate, a row just written).
    fn query_one<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T>
    where
        Self: Sized,
    {
        self.query_opt(sql, params, f)?.ok_or_else(|| {
            StoreError::Decode(format!(
                "no row where one was expected: {}",
                first_line(sql)
            ))
        })
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// How a transaction begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// Writes: SQLite takes its write lock at once (`IMMEDIATE`), so the
    /// transaction cannot fail half-way for want of it; PostgreSQL runs
    /// `READ COMMITTED`, serialized where it matters by row locks.
    Write,
    /// One consistent snapshot for several reads (`audit verify`).
    Snapshot,
}

/// A connection to the store's database.
pub enum Db {
    Sqlite(rusqlite::Connection),
    /// Boxed: its client, config and statement cache are large, and a
    /// store holds one `Db` for its life.
    Postgres(Box<Mutex<PgConn>>),
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Db::Sqlite(_) => f.write_str("Db::Sqlite"),
            Db::Postgres(_) => f.write_str("Db::Postgres"),
        }
    }
}

impl Db {
    pub fn begin(&self, how: Begin) -> Result<Tx<'_>> {
        Ok(Tx(match self {
            Db::Sqlite(conn) => TxInner::Sqlite(rusqlite::Transaction::new_unchecked(
                conn,
                match how {
                    Begin::Write => rusqlite::TransactionBehavior::Immediate,
                    Begin::Snapshot => rusqlite::TransactionBehavior::Deferred,
                },
            )?),
            Db::Postgres(conn) => {
                let mut conn = lock(conn);
                let begin = match how {
                    Begin::Write => "BEGIN ISOLATION LEVEL READ COMMITTED",
                    Begin::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                };
                conn.once_more(|c| c.batch(begin))?;
                TxInner::Postgres(PgTx {
                    conn: RefCell::new(conn),
                    open: true,
                })
            }
        }))
    }

    /// The SQLite connection (pragmas, migrations); `None` on PostgreSQL.
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Db::Sqlite(conn) => Some(conn),
            Db::Postgres(_) => None,
        }
    }
}

fn lock(conn: &Mutex<PgConn>) -> MutexGuard<'_, PgConn> {
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sql for Db {
    fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64> {
        match self {
            Db::Sqlite(conn) => sqlite_execute(conn, sql, params),
            Db::Postgres(conn) => lock(conn).once_more(|c| c.execute(sql, params)),
        }
    }

    fn each_row(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        match self {
            Db::Sqlite(conn) => sqlite_each_row(conn, sql, params, f),
            Db::Postgres(conn) => lock(conn).once_more(|c| c.each_row(sql, params, &mut *f)),
        }
    }

    fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(conn) => lock(conn).once_more(|c| c.batch(sql)),
        }
    }
}

/// A transaction: commit it, or drop it to roll back.
pub struct Tx<'a>(TxInner<'a>);

enum TxInner<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(PgTx<'a>),
}

struct PgTx<'a> {
    conn: RefCell<MutexGuard<'a, PgConn>>,
    open: bool,
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        let conn = self.conn.get_mut();
        if self.open && conn.batch("ROLLBACK").is_err() {
            // The connection is in an unknown state: start afresh.
            conn.reset();
        }
    }
}

impl Tx<'_> {
    pub fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(tx) => Ok(tx.commit()?),
            TxInner::Postgres(mut tx) => {
                tx.open = false;
                let conn = tx.conn.get_mut();
                let done = conn.batch("COMMIT");
                if done.is_err() {
                    conn.reset();
                }
                done
            }
        }
    }
}

impl Sql for Tx<'_> {
    fn dialect(&self) -> Dialect {
        match &self.0 {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Postgres(_) => Dialect::Postgres,
        }
    }

    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64> {
        match &self.0 {
            TxInner::Sqlite(tx) => sqlite_execute(tx, sql, params),
            TxInner::Postgres(tx) => tx.with(|c| c.execute(sql, params)),
        }
    }

    fn each_row(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        match &self.0 {
            TxInner::Sqlite(tx) => sqlite_each_row(tx, sql, params, f),
            TxInner::Postgres(tx) => tx.with(|c| c.each_row(sql, params, f)),
        }
    }

    fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.0 {
            TxInner::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            TxInner::Postgres(tx) => tx.with(|c| c.batch(sql)),
        }
    }
}

impl PgTx<'_> {
    /// The guard is held for the transaction's life; a statement needs the
    /// connection mutably while `Sql` hands out `&self`.
    fn with<T>(&self, f: impl FnOnce(&mut PgConn) -> Result<T>) -> Result<T> {
        f(&mut self.conn.borrow_mut())
    }
}

fn sqlite_execute(conn: &rusqlite::Connection, sql: &str, params: &[Value<'_>]) -> Result<u64> {
    let mut stmt = conn.prepare_cached(sql)?;
    let n = stmt.execute(rusqlite::params_from_iter(params.iter()))?;
    Ok(n as u64)
}

fn sqlite_each_row(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value<'_>],
    f: &mut dyn FnMut(&Row<'_>) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        f(&Row(RowRef::Sqlite(row)))?;
    }
    Ok(())
}

/// A PostgreSQL connection that reconnects: after the server went away,
/// the next statement connects again (a transaction that was open fails
/// and rolls back with it). Outside a transaction, a statement the lost
/// connection failed is run once more on a new one: there every statement
/// the store runs is a read, `BEGIN`, or an idempotent write (the head
/// row moves only forward; advisory locks), so running it twice is
/// harmless. Prepared statements are kept per connection.
pub struct PgConn {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    /// Connect now, so a wrong URL, password or certificate is reported
    /// at start.
    pub fn connect(config: postgres::Config, tls: rustls::ClientConfig) -> Result<PgConn> {
        let mut conn = PgConn {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            client: None,
            statements: HashMap::new(),
        };
        conn.client()?;
        Ok(conn)
    }

    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.reset();
        }
        if self.client.is_none() {
            let client = self.config.connect(self.tls.clone())?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Forget the connection; the next statement makes a new one.
    fn reset(&mut self) {
        self.client = None;
        self.statements.clear();
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let translated = postgres_placeholders(sql);
        let stmt = self.client()?.prepare(&translated)?;
        self.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    fn after<T>(&mut self, r: std::result::Result<T, postgres::Error>) -> Result<T> {
        if let Err(e) = &r
            && (connection_lost(e) || self.client.as_ref().is_some_and(|c| c.is_closed()))
        {
            self.reset();
        }
        Ok(r?)
    }

    /// Run `f`; when it failed because the connection was lost, once more
    /// on a new connection (see the type's doc for why that is safe).
    fn once_more<T>(&mut self, mut f: impl FnMut(&mut PgConn) -> Result<T>) -> Result<T> {
        match f(self) {
            Err(StoreError::Postgres(e)) if connection_lost(&e) => {
                self.reset();
                f(self)
            }
            other => other,
        }
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let refs = pg_params(params);
        let r = self.client()?.execute(&stmt, &refs);
        self.after(r)
    }

    fn each_row(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let stmt = self.statement(sql)?;
        let refs = pg_params(params);
        let r = self.client()?.query(&stmt, &refs);
        for row in self.after(r)? {
            f(&Row(RowRef::Postgres(&row)))?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let r = self.client()?.batch_execute(sql);
        self.after(r)
    }
}

fn pg_params<'v>(params: &'v [Value<'_>]) -> Vec<&'v (dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// `?N` → `$N`, outside quoted strings and identifiers.
fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                out.push('$');
            }
            None => out.push(c),
        }
    }
    out
}

/// The connection is gone (the server ended it, restarted, or the network
/// failed), as opposed to a statement the server refused.
fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        // Class 08: connection exception; 57P01..57P03: the server is
        // shutting down, crashed, or not accepting connections yet.
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A PostgreSQL error as an operator reads it: the server's message,
/// detail and SQLSTATE, or the client's error and its cause (the `Display`
/// of the client's error alone says only "db error").
pub(crate) fn postgres_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            out.push_str(&format!("; {detail}"));
        }
        return out;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A unique index refused a row: PostgreSQL's SQLSTATE 23505, SQLite's
/// `UNIQUE` or `PRIMARY KEY` constraint. Where two daemons may insert the
/// same key at once, the callers map it to the error a check before the
/// insert gives (the check alone cannot see the other's uncommitted row).
pub fn unique_violation(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(_) => sqlstate(e) == Some("23505"),
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
            f.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        ),
        _ => false,
    }
}

/// The SQLSTATE of a PostgreSQL error, if that is what `e` is.
pub fn sqlstate(e: &StoreError) -> Option<&str> {
    match e {
        StoreError::Postgres(e) => e.code().map(|c| c.code()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND \"?3\" = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND \"?3\" = $12"
        );
        assert_eq!(postgres_placeholders("SELECT '?' || ?"), "SELECT '?' || ?");
    }

    #[test]
    fn sqlite_round_trips_each_value_kind() {
        let db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.execute_batch("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n TEXT)")
            .unwrap();
        let none: Option<&str> = None;
        let tx = db.begin(Begin::Write).unwrap();
        let n = tx
            .execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
                params![42u64, 1.5f64, "text", vec![1u8, 2], none],
            )
            .unwrap();
        assert_eq!(n, 1);
        tx.commit().unwrap();
        let row = db
            .query_one("SELECT i, r, s, b, n FROM t", params![], |r| {
                Ok((
                    r.get::<u64>(0)?,
                    r.get::<f64>(1)?,
                    r.get::<String>(2)?,
                    r.get::<Vec<u8>>(3)?,
                    r.get::<Option<String>>(4)?,
                ))
            })
            .unwrap();
        assert_eq!(row, (42, 1.5, "text".to_string(), vec![1, 2], None));
        let err = db
            .query_one("SELECT s FROM t", params![], |r| r.get::<i64>(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column 0 (s): expected an integer, found text"),
            "{err}"
        );
        assert!(
            db.query_opt("SELECT i FROM t WHERE i = ?1", params![7], |r| r
                .get::<i64>(0))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_dropped_transaction_rolls_back() {
        let db = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.execute_batch("CREATE TABLE t (i INTEGER)").unwrap();
        {
            let tx = db.begin(Begin::Write).unwrap();
            tx.execute("INSERT INTO t VALUES (?1)", params![1]).unwrap();
        }
        let n: i64 = db
            .query_one("SELECT count(*) FROM t", params![], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }
}

//! The config's `storage:` and `audit:` blocks: where state lives, and the
//! audit chain's key when it does not live in the data dir.
//!
//! ```yaml
//! storage:
//!   postgres:
//!     url: postgres://canaryd@db.example:5432/canaryd?sslmode=require
//!     caFile: /etc/canaryd/db-ca.pem      # clientCert, clientKey too
//!     instance: canaryd-a                 # default: host name and pid
//!     lease: 15s
//! audit:
//!   keyFile: /etc/canaryd/audit.key       # required with postgres
//! ```
//!
//! Without `storage`, state is SQLite under `dataDir` and the key is
//! `<dataDir>/audit.key`. With `storage.postgres`, every daemon sharing the
//! database names the same key file; the key is read now, so a missing or
//! unreadable one is reported at its line. The URL is parsed now too (and
//! never repeated with its password).

use std::path::PathBuf;
use std::time::Duration;

use super::tls::{client_tls, with_tls_keys};
use crate::store::postgres::PostgresOptions;
use crate::tls::ClientTls;
use crate::yaml::decode;
use crate::yaml::diag::{Path, Sink};
use crate::yaml::node::Node;

/// `storage.postgres` as decoded.
#[derive(Clone, Debug)]
pub struct PostgresStorage {
    pub options: PostgresOptions,
    pub tls: ClientTls,
    /// This daemon's name among those sharing the database: the owner
    /// recorded in each lease it holds.
    pub instance: String,
    /// How long a lease lasts without renewal: how long an owner may be
    /// gone before another daemon takes its rollouts over.
    pub lease: Duration,
}

impl PartialEq for PostgresStorage {
    fn eq(&self, other: &Self) -> bool {
        self.options.display == other.options.display
            && self.tls == other.tls
            && self.instance == other.instance
            && self.lease == other.lease
    }
}

impl PostgresStorage {
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
    /// Shorter leases are refused: renewals every third of it would then
    /// compete with the work itself, and a GC pause would cost ownership.
    pub const MIN_LEASE: Duration = Duration::from_secs(3);
}

/// `audit:` as decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditConfig {
    /// The chain's HMAC key, outside the data dir.
    pub key_file: Option<PathBuf>,
}

/// Decode `storage:`.
pub(super) fn storage(
    sink: &mut Sink,
    node: &Node,
    path: &Path,
) -> Option<Option<PostgresStorage>> {
    let f = decode::mapping(sink, node, path, &["postgres"])?;
    let Some(n) = f.get("postgres") else {
        return Some(None);
    };
    postgres(sink, n, &f.child("postgres")).map(Some)
}

fn postgres(sink: &mut Sink, node: &Node, path: &Path) -> Option<PostgresStorage> {
    let f = decode::mapping(
        sink,
        node,
        path,
        &with_tls_keys(&["url", "instance", "lease"]),
    )?;
    let mut ok = true;
    let url = match f.get("url") {
        Some(n) => {
            let url = decode::string(sink, n, &f.child("url"));
            if url.is_none() {
                ok = false;
            }
            url.map(|u| (u, n.pos))
        }
        None => {
            sink.error(
                f.pos,
                path,
                "missing `url` (postgres://USER@HOST:PORT/DATABASE)",
            );
            ok = false;
            None
        }
    };
    let instance = match f.get("instance") {
        Some(n) => match decode::string(sink, n, &f.child("instance")) {
            Some(s) if valid_instance(&s) => Some(s),
            Some(_) => {
                sink.error(
                    n.pos,
                    &f.child("instance"),
                    "expected 1 to 63 characters from `a-z`, `A-Z`, `0-9`, `.`, `_` and `-`",
                );
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };
    let mut lease = PostgresStorage::DEFAULT_LEASE;
    if let Some(n) = f.get("lease") {
        match decode::positive_duration(sink, n, &f.child("lease")) {
            Some(d) if d >= PostgresStorage::MIN_LEASE => lease = d,
            Some(_) => {
                sink.error(n.pos, &f.child("lease"), "expected at least 3s");
                ok = false;
            }
            None => ok = false,
        }
    }
    // TLS is the URL's `sslmode`, not its scheme: the https check of other
    // endpoints does not apply.
    let tls = client_tls(sink, &f, &[None]);
    let (tls, (url, url_pos)) = (tls?, url?);
    if !ok {
        return None;
    }
    let rustls = match tls.rustls_config() {
        Ok(c) => c,
        Err(e) => {
            sink.error(f.pos, path, e.to_string());
            return None;
        }
    };
    let options = match PostgresOptions::parse(&url, rustls) {
        Ok(o) => o,
        Err(e) => {
            sink.error(url_pos, &f.child("url"), e);
            return None;
        }
    };
    Some(PostgresStorage {
        options,
        tls,
        instance: instance.unwrap_or_else(default_instance),
        lease,
    })
}

fn valid_instance(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The host name and the process id: unique among daemons that are alive.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "canaryd".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Decode `audit:`.
pub(super) fn audit(sink: &mut Sink, node: &Node, path: &Path) -> Option<AuditConfig> {
    let f = decode::mapping(sink, node, path, &["keyFile"])?;
    let mut out = AuditConfig::default();
    if let Some(n) = f.get("keyFile") {
        let p = f.child("keyFile");
        let s = decode::string(sink, n, &p)?;
        if s.trim().is_empty() {
            sink.error(n.pos, &p, "expected a file path");
            return None;
        }
        let file = PathBuf::from(s);
        if let Err(e) = crate::store::postgres::load_key_file(&file) {
            sink.error(n.pos, &p, e.to_string());
            return None;
        }
        out.key_file = Some(file);
    }
    Some(out)
}

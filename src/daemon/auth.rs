//! Bearer tokens and roles (PRODUCT.md section 7). Tokens are kept only as
//! SHA-256 hashes; a presented token is hashed and looked up, so the daemon
//! never holds, logs or compares the secret itself.
//!
//! The set in force comes from the config's `tokens:`, or, with none, from
//! the admin token file ([`token_set`]); SIGHUP re-reads both
//! (`reload.rs`), keeping the old set when the new config has any error. With tokens configured no admin token file is left in the
//! data dir, so no client sends a token that opens nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// What an actor may do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Start, pause, resume, promote, abort, push observations, review.
    Operator,
    /// Approve as this policy role.
    Approver(String),
    /// Everything, `--override-gates`, tokens.
    Admin,
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.to_string()
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Viewer => f.write_str("viewer"),
            Role::Operator => f.write_str("operator"),
            Role::Approver(r) => write!(f, "approver:{r}"),
            Role::Admin => f.write_str("admin"),
        }
    }
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => match s.strip_prefix("approver:") {
                Some(r) if !r.is_empty() && crate::yaml::decode::is_identifier(r) => {
                    Ok(Role::Approver(r.to_string()))
                }
                _ => Err(format!(
                    "unknown role `{s}`; expected `viewer`, `operator`, `approver:<role>` or `admin`"
                )),
            },
        }
    }
}

/// What an action needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need<'a> {
    Read,
    Operate,
    Approve(&'a str),
    /// Approve as some role (which one is in the body): checked before the
    /// body is read, so a caller who may approve nothing gets 403 first.
    ApproveAny,
    Admin,
}

/// One configured token: who it is and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    pub actor: String,
    /// Lowercase hex SHA-256 of the bearer token.
    pub sha256: String,
    pub roles: Vec<Role>,
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub actor: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn may(&self, need: Need<'_>) -> bool {
        self.roles.iter().any(|r| match (r, need) {
            (Role::Admin, _) => true,
            (Role::Viewer | Role::Operator, Need::Read) => true,
            (Role::Approver(_), Need::Read) => true,
            (Role::Operator, Need::Operate) => true,
            (Role::Approver(mine), Need::Approve(wanted)) => mine == wanted,
            (Role::Approver(_), Need::ApproveAny) => true,
            _ => false,
        })
    }
}

/// Writes per actor (`api.writeRateLimit`): a token bucket each, `burst`
/// deep, refilled at `per_second`. Only authenticated actors get a bucket,
/// so there are as many as configured tokens.
pub struct WriteRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: crate::time::Timestamp,
}

impl WriteRate {
    pub fn new(per_second: f64, burst: u32) -> WriteRate {
        WriteRate {
            per_second,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one write for `actor` at `now`, or say how long until one is
    /// available.
    pub fn admit(&self, actor: &str, now: crate::time::Timestamp) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(actor.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed_s = now.as_millis().saturating_sub(b.at.as_millis()) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed_s * self.per_second).min(self.burst);
        b.at = b.at.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

pub fn sha256_hex(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A fresh token: 32 random bytes, hex, with a `cnry_` prefix so leaked
/// tokens are easy to grep for.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut out = String::from("cnry_");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<String, Principal>,
}

impl Tokens {
    pub fn new(entries: &[TokenEntry]) -> Tokens {
        Tokens {
            by_hash: entries
                .iter()
                .map(|e| {
                    (
                        e.sha256.clone(),
                        Principal {
                            actor: e.actor.clone(),
                            roles: e.roles.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn insert(&mut self, entry: TokenEntry) {
        self.by_hash.insert(
            entry.sha256,
            Principal {
                actor: entry.actor,
                roles: entry.roles,
            },
        );
    }

    /// The caller behind an `Authorization` header value, if any.
    pub fn authenticate(&self, header: Option<&str>) -> Option<&Principal> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        self.by_hash.get(&sha256_hex(token))
    }
}

pub const ADMIN_TOKEN_FILE: &str = "admin.token";

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// With no tokens configured: the admin token from `<data-dir>/admin.token`,
/// created (mode 0600, fsynced) on first start and kept afterwards.
pub fn ensure_admin_token(data_dir: &Path) -> std::io::Result<(TokenEntry, bool)> {
    let path = admin_token_path(data_dir);
    let (token, created) = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => (s.trim().to_string(), false),
        Ok(_) => (write_new_token(&path)?, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (write_new_token(&path)?, true),
        Err(e) => return Err(e),
    };
    Ok((
        TokenEntry {
            actor: "admin".into(),
            sha256: sha256_hex(&token),
            roles: vec![Role::Admin],
        },
        created,
    ))
}

/// With tokens configured: remove an admin token file left from a start
/// without them (it no longer opens anything, and the CLI would otherwise
/// send it). True when there was one.
pub fn retire_admin_token(data_dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(admin_token_path(data_dir)) {
        Ok(()) => {
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Which tokens a config's `tokens:` put in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminTokenFile {
    /// Tokens are configured; the file is gone (`true`: it was just removed).
    Retired(bool),
    /// None are configured: the file's token (`true`: just created).
    InForce(bool),
}

/// The tokens a daemon with `configured` tokens and this data dir accepts:
/// the configured ones, or with none the admin token file's (created when
/// missing). Used at start and on every reload.
pub fn token_set(
    configured: &[TokenEntry],
    data_dir: &Path,
) -> std::io::Result<(Tokens, AdminTokenFile)> {
    let mut tokens = Tokens::new(configured);
    if configured.is_empty() {
        let (entry, created) = ensure_admin_token(data_dir)?;
        tokens.insert(entry);
        Ok((tokens, AdminTokenFile::InForce(created)))
    } else {
        Ok((
            tokens,
            AdminTokenFile::Retired(retire_admin_token(data_dir)?),
        ))
    }
}

fn write_new_token(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = new_token().map_err(std::io::Error::other)?;
    let tmp = path.with_extension("token.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_contract_says() {
        let p = |roles: &[&str]| Principal {
            actor: "a".into(),
            roles: roles.iter().map(|r| Role::parse(r).unwrap()).collect(),
        };
        let viewer = p(&["viewer"]);
        assert!(viewer.may(Need::Read));
        assert!(!viewer.may(Need::Operate));
        let op = p(&["operator"]);
        assert!(op.may(Need::Operate) && !op.may(Need::Approve("risk")) && !op.may(Need::Admin));
        let risk = p(&["approver:risk"]);
        assert!(risk.may(Need::Approve("risk")) && !risk.may(Need::Approve("compliance")));
        assert!(risk.may(Need::ApproveAny) && !op.may(Need::ApproveAny));
        assert!(!viewer.may(Need::ApproveAny));
        assert!(!risk.may(Need::Operate));
        let admin = p(&["admin"]);
        assert!(admin.may(Need::Admin) && admin.may(Need::Approve("anything")));
        assert!(Role::parse("approver:").is_err() && Role::parse("root").is_err());
    }

    #[test]
    fn writes_are_limited_per_actor_and_refill_with_time() {
        let t = |ms: u64| crate::time::Timestamp::from_millis(ms);
        let rate = WriteRate::new(2.0, 3);
        for _ in 0..3 {
            assert!(rate.admit("a", t(1_000)).is_ok());
        }
        let wait = rate.admit("a", t(1_000)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(rate.admit("b", t(1_000)).is_ok(), "each actor has its own");
        assert!(rate.admit("a", t(1_500)).is_ok());
        assert!(rate.admit("a", t(1_500)).is_err());
        // A clock that steps back refills nothing and breaks nothing.
        assert!(rate.admit("a", t(500)).is_err());
        assert!(rate.admit("a", t(60_000)).is_ok());
    }

    #[test]
    fn tokens_are_looked_up_by_hash() {
        let t = new_token().unwrap();
        let tokens = Tokens::new(&[TokenEntry {
            actor: "alice".into(),
            sha256: sha256_hex(&t),
            roles: vec![Role::Operator],
        }]);
        assert_eq!(
            tokens
                .authenticate(Some(&format!("Bearer {t}")))
                .unwrap()
                .actor,
            "alice"
        );
        assert!(tokens.authenticate(Some("Bearer nope")).is_none());
        assert!(tokens.authenticate(Some(&t)).is_none());
        assert!(tokens.authenticate(None).is_none());
    }

    #[test]
    fn the_admin_token_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = ensure_admin_token(dir.path()).unwrap();
        assert!(created);
        let (b, created) = ensure_admin_token(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        let meta = std::fs::metadata(admin_token_path(dir.path())).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(admin_token_path(dir.path())).unwrap();
        assert!(text.ends_with('\n') && sha256_hex(text.trim()) == a.sha256);
    }
}

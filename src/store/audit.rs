//! The audit log's hash chain: the key, the canonical encoding of an entry,
//! the head file kept outside the database, and the walk that finds the
//! first broken link. It owns no SQL beyond reading the `audit` table; the
//! transaction that appends entries lives in `step.rs`.
//!
//! # Design
//!
//! Entry `n` carries `mac_n = HMAC-SHA256(key, mac_{n-1} || canonical(entry_n))`
//! with `mac_0` = 32 zero bytes. `canonical` is a length-prefixed encoding of
//! every stored field (seq, tx, at, actor, action, rollout id, reason, ticket
//! and the details JSON *as stored*), so no two entries share an encoding and
//! a changed byte anywhere changes the mac. `tx` is the seq of the first
//! entry written by the same transaction.
//!
//! The key is 32 random bytes in `<data-dir>/audit.key` (mode 0600), never in
//! the database and never logged. The chain's head (seq and mac of the last
//! entry) is also kept outside the database, in `<data-dir>/audit.head`,
//! replaced atomically after every transaction that appended entries.
//!
//! # Crash window
//!
//! The store commits to SQLite first and writes the head file second, so a
//! crash between the two leaves the head behind the database by exactly the
//! entries of the last transaction: they all carry `tx = head.seq + 1`. That
//! is accepted (and `Store::open` moves the head forward). A database
//! *behind* the head is truncation; a database ahead by more than one
//! transaction means the head file was replaced with an older one. The store
//! refuses to commit while the head of the previous commit is unwritten, so
//! the one-transaction bound holds even when writing the head fails. Readers
//! read the head before and after their database snapshot and retry when it
//! moved, so a daemon committing concurrently never looks like tampering.
//!
//! # Threat model
//!
//! `docs/threat-model.md` has the whole of it, with what `binding.rs` adds
//! (the genesis entry, the state rows checked against the chain). In short:
//! whoever can read `audit.key` can forge a whole valid chain: protect it
//! like the daemon's credentials. Whoever cannot read it (someone with write
//! access to the database file, or a restored or hand-edited copy of it)
//! cannot edit, insert, delete or reorder entries, nor cut the tail, without
//! `verify` naming the first broken entry. Cutting the tail *and* rewriting
//! `audit.head` to match is only caught when the head has been kept
//! elsewhere too (`canaryd audit verify` prints it; ship it off the host), or
//! when the new head is inconsistent with the log. A head put back by
//! exactly one transaction looks like the crash window and is accepted; the
//! daemon's next commit or start rewrites it.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{StoreError, Verification};
use crate::time::Timestamp;

pub const KEY_FILE: &str = "audit.key";
pub const HEAD_FILE: &str = "audit.head";
/// A new store's key until its genesis entry is committed.
pub const STAGED_KEY_FILE: &str = "audit.key.new";
const HEAD_MAGIC: &str = "canaryd audit head v1";
const DOMAIN: &[u8] = b"canaryd-audit-v1\0";
const KEY_BYTES: usize = 32;

pub type Mac32 = [u8; 32];

/// An entry to append. `at` comes from the caller: the store reads no clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAudit {
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub rollout_id: Option<String>,
    pub reason: String,
    pub ticket: Option<String>,
    pub details: serde_json::Value,
}

/// One stored entry, as `audit log` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// The seq of the first entry of the transaction that wrote this one.
    pub tx: u64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub rollout_id: Option<String>,
    pub reason: String,
    pub ticket: Option<String>,
    pub details: serde_json::Value,
    /// Hex HMAC-SHA256 chaining this entry to the one before.
    pub mac: String,
}

/// An entry exactly as stored (details as text), which is what the mac covers.
#[derive(Clone, Debug)]
pub(crate) struct RawEntry {
    pub seq: i64,
    pub tx: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub rollout_id: Option<String>,
    pub reason: String,
    pub ticket: Option<String>,
    pub details: String,
    pub mac: String,
}

/// The last entry of the chain: seq 0 with a zero mac for an empty log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub mac: Mac32,
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        mac: [0; 32],
    };

    pub fn mac_hex(&self) -> String {
        to_hex(&self.mac)
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {} mac {}", self.seq, self.mac_hex())
    }
}

/// The audit key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct AuditKey([u8; KEY_BYTES]);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(redacted)")
    }
}

impl AuditKey {
    /// Read `<dir>/audit.key`; refuse a key that others can read.
    pub fn load(dir: &Path) -> Result<AuditKey, StoreError> {
        Self::load_from(&dir.join(KEY_FILE))
    }

    /// Read a key file named by the configuration (`audit.keyFile`).
    pub fn load_file(path: &Path) -> Result<AuditKey, StoreError> {
        Self::load_from(path)
    }

    fn load_from(path: &Path) -> Result<AuditKey, StoreError> {
        let path = path.to_path_buf();
        let file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
        check_private(&file, &path)?;
        let mut bytes = Vec::with_capacity(KEY_BYTES);
        file.take(KEY_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(&path, e))?;
        let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| StoreError::Key {
            path: path.clone(),
            reason: format!("must hold exactly {KEY_BYTES} bytes, has {}", b.len()),
        })?;
        Ok(AuditKey(key))
    }

    /// 32 bytes from the OS, in memory only.
    pub(crate) fn generate(dir: &Path) -> Result<AuditKey, StoreError> {
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|e| StoreError::Key {
            path: dir.join(KEY_FILE),
            reason: format!("no randomness from the OS: {e}"),
        })?;
        Ok(AuditKey(key))
    }

    /// Write the key to `<dir>/audit.key.new` (mode 0600), durably. A new
    /// store's key is staged there until the genesis entry it MACs is
    /// committed, then [`AuditKey::install`]ed: so `audit.key` never
    /// exists beside an empty log, which would look like a deleted one.
    /// Callers hold the data-dir lock; a key is never replaced.
    pub(crate) fn stage(&self, dir: &Path) -> Result<(), StoreError> {
        let tmp = dir.join(STAGED_KEY_FILE);
        let mut file = private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StoreError::io(&tmp, e))?;
        file.write_all(&self.0)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io(&tmp, e))?;
        drop(file);
        sync_dir(dir)
    }

    /// The staged key, if a first start staged one.
    pub(crate) fn load_staged(dir: &Path) -> Result<Option<AuditKey>, StoreError> {
        let path = dir.join(STAGED_KEY_FILE);
        match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, e)),
            Ok(_) => {}
        }
        Self::load_from(&path).map(Some)
    }

    /// Rename the staged key to `<dir>/audit.key`, atomically and durably.
    pub(crate) fn install(dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(KEY_FILE);
        fs::rename(dir.join(STAGED_KEY_FILE), &path).map_err(|e| StoreError::io(&path, e))?;
        sync_dir(dir)
    }

    /// An identifier of the key that reveals nothing of it: the first 16
    /// bytes of `HMAC-SHA256(key, "canaryd audit key id")`, in hex.
    pub fn key_id(&self) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length"); // proved by the HMAC definition
        mac.update(b"canaryd audit key id");
        to_hex(&mac.finalize().into_bytes()[..16])
    }

    /// A stand-in for walking an empty log, which computes no mac.
    pub(crate) fn unused() -> AuditKey {
        AuditKey([0; KEY_BYTES])
    }

    /// `HMAC-SHA256(key, prev || canonical(entry))`.
    pub(crate) fn mac(&self, prev: &Mac32, entry: &RawEntry) -> Mac32 {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length"); // proved by the HMAC definition
        mac.update(prev);
        mac.update(&canonical(entry));
        mac.finalize().into_bytes().into()
    }
}

/// The bytes an entry's mac covers: a domain tag, then every field with its
/// length, so distinct entries never share an encoding.
pub(crate) fn canonical(e: &RawEntry) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn optional(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                field(out, s);
            }
        }
    }
    let mut out = Vec::with_capacity(128 + e.details.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.tx.to_be_bytes());
    out.extend_from_slice(&e.at.to_be_bytes());
    field(&mut out, &e.actor);
    field(&mut out, &e.action);
    optional(&mut out, e.rollout_id.as_deref());
    field(&mut out, &e.reason);
    optional(&mut out, e.ticket.as_deref());
    field(&mut out, &e.details);
    out
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

pub(crate) fn mac_from_hex(s: &str) -> Option<Mac32> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Read `<dir>/audit.head`; `Ok(None)` when there is none.
pub fn read_head(dir: &Path) -> Result<Option<Head>, StoreError> {
    let path = dir.join(HEAD_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    parse_head(&text)
        .map(Some)
        .ok_or_else(|| StoreError::Corrupt {
            path,
            reason: "not a canaryd audit head (expected `seq N` and `mac HEX` lines)".into(),
        })
}

fn parse_head(text: &str) -> Option<Head> {
    let mut lines = text.lines();
    if lines.next()? != HEAD_MAGIC {
        return None;
    }
    let seq = lines.next()?.strip_prefix("seq ")?.parse().ok()?;
    let mac = mac_from_hex(lines.next()?.strip_prefix("mac ")?)?;
    Some(Head { seq, mac })
}

/// Replace `<dir>/audit.head` atomically and durably: write a temp file,
/// fsync it, rename it over the old one, fsync the directory.
pub(crate) fn write_head(dir: &Path, head: &Head) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let path = dir.join(HEAD_FILE);
    let text = format!("{HEAD_MAGIC}\nseq {}\nmac {}\n", head.seq, head.mac_hex());
    let mut file = private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn check_private(file: &File, path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| StoreError::io(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::Key {
                path: path.to_path_buf(),
                reason: format!(
                    "mode {:o} lets others read the audit key; it must be 0600 (chmod 600)",
                    mode & 0o777
                ),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (file, path);
    Ok(())
}

/// The first place the chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: u64,
    pub kind: Breakage,
    pub detail: String,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}: {}", self.seq, self.detail)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakage {
    /// The entry's contents no longer match its mac (the next entry still
    /// chains from the stored mac).
    Edited,
    /// The entry does not chain from the one before: inserted, forged,
    /// reordered, or entries before it deleted and renumbered.
    Forged,
    /// Entries are missing: a gap in the sequence.
    Missing,
    /// The log ends before the head file's entry.
    Truncated,
    /// The head file names an entry whose mac differs from the log's.
    HeadMismatch,
    /// The log is ahead of the head file by more than one transaction: the
    /// head file was replaced with an older one.
    HeadStale,
    /// The log has entries but `audit.head` is missing.
    HeadMissing,
    /// A stored value is not what the store writes (e.g. a malformed mac).
    Malformed,
    /// The log has no genesis entry, yet the store was used: it is empty
    /// beside rollouts, incidents, reviews, the key or the store's
    /// identity, or the identity names a genesis the log lacks.
    GenesisMissing,
    /// A genesis entry names another key or store than this one's, or the
    /// store's identity row disagrees with it.
    GenesisMismatch,
}

/// How the chain's end kept outside its entries is named in what `verify`
/// says: the head file of a data dir, or PostgreSQL's `audit_head` row.
#[derive(Clone, Copy, Debug)]
pub struct HeadMark {
    /// As the subject of a sentence.
    name: &'static str,
    /// What replacing it with an older one is called.
    replaced: &'static str,
}

impl HeadMark {
    pub const FILE: HeadMark = HeadMark {
        name: HEAD_FILE,
        replaced: "the head file was replaced with an older one",
    };
    pub const ROW: HeadMark = HeadMark {
        name: "the audit_head row",
        replaced: "the audit_head row was moved back",
    };
}

/// Walk the chain from `start` (the empty head, or the last entry that
/// retention pruned, as its anchor declares it: `binding::chain_start`)
/// and compare its end with the head file.
pub(crate) fn walk(
    key: &AuditKey,
    rows: &[RawEntry],
    start: Head,
    head_file: Option<Head>,
    mark: HeadMark,
) -> Verification {
    let mut prev = start;
    let mut broken = None;
    for (i, row) in rows.iter().enumerate() {
        let expected = prev.seq + 1;
        if row.seq != expected as i64 {
            let kind = if row.seq > expected as i64 {
                Breakage::Missing
            } else {
                Breakage::Malformed
            };
            let detail = if kind == Breakage::Missing {
                let last_missing = row.seq - 1;
                if last_missing == expected as i64 {
                    format!("missing (deleted); the log goes on at entry {}", row.seq)
                } else {
                    format!(
                        "entries {expected}..={last_missing} are missing (deleted); the log goes on at entry {}",
                        row.seq
                    )
                }
            } else {
                format!("out of sequence: found seq {} after {}", row.seq, prev.seq)
            };
            broken = Some(BrokenLink {
                seq: expected,
                kind,
                detail,
            });
            break;
        }
        let Some(stored) = mac_from_hex(&row.mac) else {
            broken = Some(BrokenLink {
                seq: expected,
                kind: Breakage::Malformed,
                detail: format!("stored mac `{}` is not 64 hex digits", row.mac),
            });
            break;
        };
        if key.mac(&prev.mac, row) != stored {
            let next_chains = rows.get(i + 1).is_some_and(|next| {
                next.seq == row.seq + 1
                    && mac_from_hex(&next.mac).is_some_and(|m| key.mac(&stored, next) == m)
            });
            let (kind, detail) = if next_chains {
                (
                    Breakage::Edited,
                    "edited: its contents no longer match its mac".to_string(),
                )
            } else {
                (
                    Breakage::Forged,
                    format!(
                        "does not chain from entry {}: edited, forged or inserted, or entries before it were deleted and renumbered",
                        prev.seq
                    ),
                )
            };
            broken = Some(BrokenLink {
                seq: expected,
                kind,
                detail,
            });
            break;
        }
        prev = Head {
            seq: expected,
            mac: stored,
        };
    }
    let entries = rows.len() as u64;
    // With a broken chain, "last" is simply what the last row says.
    let last = match (&broken, rows.last()) {
        (Some(_), Some(r)) => Head {
            seq: u64::try_from(r.seq).unwrap_or(0),
            mac: mac_from_hex(&r.mac).unwrap_or([0; 32]),
        },
        _ => prev,
    };
    let mut ahead_of_head = 0;
    if broken.is_none() {
        (broken, ahead_of_head) = check_head(rows, start, last, head_file, mark);
    }
    Verification::of_chain(entries, last, head_file, ahead_of_head, broken)
}

/// The chain holds; does its end agree with the head file?
fn check_head(
    rows: &[RawEntry],
    start: Head,
    last: Head,
    head_file: Option<Head>,
    mark: HeadMark,
) -> (Option<BrokenLink>, u64) {
    let HeadMark {
        name: head_name,
        replaced,
    } = mark;
    let Some(head) = head_file else {
        if last.seq == 0 {
            return (None, 0);
        }
        return (
            Some(BrokenLink {
                seq: last.seq,
                kind: Breakage::HeadMissing,
                detail: format!(
                    "{head_name} is missing, so a cut tail cannot be ruled out (the log ends here)"
                ),
            }),
            0,
        );
    };
    if head.seq > last.seq {
        let detail = if last.seq == 0 {
            format!(
                "truncated: the log is empty but {head_name} records entry {}",
                head.seq
            )
        } else {
            format!(
                "truncated: the log ends at entry {} but {head_name} records entry {}",
                last.seq, head.seq
            )
        };
        return (
            Some(BrokenLink {
                seq: last.seq + 1,
                kind: Breakage::Truncated,
                detail,
            }),
            0,
        );
    }
    // Rows are dense from `start.seq + 1` here (the walk checked), so seq
    // n is rows[n - start.seq - 1]. Retention never prunes the last entry,
    // so a head at or before `start` is one the log has moved past.
    if head.seq < start.seq || (head.seq == start.seq && !rows.is_empty()) {
        return (
            Some(BrokenLink {
                seq: head.seq,
                kind: Breakage::HeadStale,
                detail: format!(
                    "{head_name} records entry {}, which retention pruned (entries up to {} went): {replaced}",
                    head.seq, start.seq
                ),
            }),
            0,
        );
    }
    let at_head = if head.seq == 0 {
        [0; 32]
    } else {
        mac_from_hex(&rows[(head.seq - start.seq) as usize - 1].mac).unwrap_or([0; 32])
    };
    if at_head != head.mac {
        return (
            Some(BrokenLink {
                seq: head.seq,
                kind: Breakage::HeadMismatch,
                detail: format!(
                    "{head_name} records mac {} for this entry, the log has {}: the log or the head was rewritten",
                    head.mac_hex(),
                    to_hex(&at_head)
                ),
            }),
            0,
        );
    }
    // A crash between the commit and the head write leaves exactly the last
    // transaction's entries past the head: all with tx = head.seq + 1.
    let pending = &rows[(head.seq - start.seq) as usize..];
    let next_tx = head.seq as i64 + 1;
    if pending.first().is_some_and(|first| first.tx != next_tx) {
        return (
            Some(BrokenLink {
                seq: head.seq,
                kind: Breakage::HeadMismatch,
                detail: format!(
                    "{head_name} records this entry, but it is not the last of its transaction: canaryd never writes such a head"
                ),
            }),
            0,
        );
    }
    if let Some(stray) = pending.iter().find(|r| r.tx != next_tx) {
        let transactions = 1 + pending.windows(2).filter(|w| w[0].tx != w[1].tx).count();
        return (
            Some(BrokenLink {
                seq: stray.seq as u64,
                kind: Breakage::HeadStale,
                detail: format!(
                    "{head_name} records entry {} but the log goes on for {transactions} transactions after it; a crash leaves it at most one behind, so {replaced}",
                    head.seq
                ),
            }),
            0,
        );
    }
    (None, pending.len() as u64)
}

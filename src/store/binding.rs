//! What binds the audit chain to the data it describes: the genesis entry
//! that begins every chain (naming the store's identity and the key's id),
//! the `store_identity` row it names, and the check of the state tables
//! (rollouts, incidents, reviews) against what the chain records of them.
//! It works on rows the store read in one snapshot and performs no I/O.
//!
//! # Design
//!
//! A new store's first transaction writes entry 1, `audit.genesis`, whose
//! details carry the store's random identity, the key's id (a MAC of a
//! constant, which reveals nothing of the key) and how many entries came
//! before it (0). So an empty log is never what a used store looks like: a
//! log that is empty while rollouts, incidents, reviews, the key or the
//! identity row exist was deleted, and `verify` says so. A store written
//! before the binding existed is bound on its next start by a genesis
//! appended after its old entries (`predates` counts them).
//!
//! The chain records every phase a rollout enters (`rollout.event` carries
//! the engine's event with its phase), every rollout it starts with its
//! service and policy version, and every incident and review it opens and
//! closes. [`check`] replays those entries and compares the result with the
//! rows, so a row edited, inserted or deleted outside the chain (e.g.
//! `rollouts.outcome` set to `promoted`) is named. Weights, steps and the
//! checkpoint move without an entry and are not covered.
//!
//! An operator who lost the log or its head can start a new chain
//! deliberately (`canaryd audit restart-chain`): its genesis records who,
//! why, what verify found, and a snapshot of the state rows, which the
//! check starts from.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::audit::{Breakage, BrokenLink, Head, RawEntry, mac_from_hex};
use crate::engine::Phase;

pub const GENESIS_ACTION: &str = "audit.genesis";
/// The anchor a retention pruning transaction appends (`retention.rs`):
/// it seals what the transaction took.
pub const PRUNE_ACTION: &str = "audit.prune";

/// The details of a pruning anchor: what went, so that `verify` can tell
/// data that retention took (sealed here, under the key) from data that was
/// deleted outside the chain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// Ended rollouts whose whole journal went (the rollout row stays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journals: Vec<PrunedJournal>,
    /// Ended rollouts that went whole: row, checkpoint, incidents, reviews,
    /// deliveries and hook runs. The chain no longer vouches for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<PrunedRollout>,
    /// The log's oldest entries that went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<PrunedAudit>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunedJournal {
    pub rollout: String,
    /// Its journal's seqs `1..=through` are gone.
    pub through: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunedRollout {
    pub rollout: String,
    pub incidents: u64,
    pub reviews: u64,
}

/// Entries `from..=through` of the log went; the walk goes on from
/// `mac`, the mac of entry `through`, which this anchor (MACed like any
/// entry) vouches for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunedAudit {
    pub from: u64,
    pub through: u64,
    pub mac: String,
}

/// An anchor's details, if `row` is one that reads.
pub(crate) fn anchor_of(row: &RawEntry) -> Option<Anchor> {
    (row.action == PRUNE_ACTION)
        .then(|| serde_json::from_str(&row.details).ok())
        .flatten()
}

/// Where the walk of the chain starts: before entry 1 (the empty head),
/// or, when the log's oldest entries were pruned, after the last of them,
/// as the anchor that pruned the most declares it. The anchor is read
/// before the walk has vouched for it; the walk reaches it later and
/// checks its mac, so a forged or edited anchor is still named.
pub(crate) fn chain_start(rows: &[RawEntry]) -> Head {
    let Some(first) = rows.first() else {
        return Head::EMPTY;
    };
    if first.seq <= 1 {
        return Head::EMPTY;
    }
    // The anchor that pruned the most, before the first entry kept: when
    // it does not reach the first entry kept, the walk names the gap.
    rows.iter()
        .filter_map(anchor_of)
        .filter_map(|a| a.audit)
        .filter(|a| (a.through as i64) < first.seq)
        .max_by_key(|a| a.through)
        .and_then(|a| {
            mac_from_hex(&a.mac).map(|mac| Head {
                seq: a.through,
                mac,
            })
        })
        .unwrap_or(Head::EMPTY)
}

/// The details of a genesis entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The store's identity (`store_identity.id`).
    pub store: String,
    /// [`super::AuditKey::key_id`] of the key that MACs the chain.
    pub key_id: String,
    /// Entries before this one: written before the chain was bound, or
    /// before it was restarted.
    pub predates: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
}

/// A chain an operator restarted deliberately.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// What `verify` found that the operator started over from.
    pub found: String,
    /// The state rows as they were: the check starts from them.
    pub state: StateSnapshot,
}

/// The state rows the chain vouches for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSnapshot {
    pub rollouts: BTreeMap<String, RolloutState>,
    pub incidents: BTreeMap<String, RecordState>,
    pub reviews: BTreeMap<String, RecordState>,
}

impl StateSnapshot {
    pub fn is_empty(&self) -> bool {
        self.rollouts.is_empty() && self.incidents.is_empty() && self.reviews.is_empty()
    }

    /// `35 rollouts, 2 incidents`: what exists, for messages.
    fn describe(&self) -> Vec<String> {
        [
            (self.rollouts.len(), "rollout"),
            (self.incidents.len(), "incident"),
            (self.reviews.len(), "review"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
        .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    pub service: String,
    pub policy_version: String,
    pub phase: String,
    pub outcome: Option<String>,
}

/// An incident's or a review's owner and status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordState {
    pub rollout_id: String,
    pub status: String,
}

/// The `store_identity` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub genesis_seq: u64,
}

/// How the chain is bound to its store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// No entries and nothing they could describe: a new store.
    Empty,
    /// Entries written by a canaryd that predates the binding.
    Unbound,
    /// Bound by the genesis entry at `genesis_seq` (the latest one).
    Bound { genesis_seq: u64, store: String },
}

/// A state row that the chain does not vouch for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// `rollouts`, `incidents` or `reviews`.
    pub table: &'static str,
    pub id: String,
    pub detail: String,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.table, self.id, self.detail)
    }
}

/// What the store knows beside the chain, read in the chain's snapshot.
pub(crate) struct Context<'a> {
    pub key_id: &'a str,
    pub key_file_exists: bool,
    pub identity: Option<Identity>,
    pub state: &'a StateSnapshot,
    /// The store is being upgraded from a version without the binding: an
    /// empty log beside a key (and nothing else) is what that version left
    /// after a first start, not a deletion.
    pub upgrading: bool,
}

/// What [`check`] found.
pub(crate) struct Checked {
    pub binding: Binding,
    pub notes: Vec<String>,
    pub broken: Option<BrokenLink>,
    pub disagreements: Vec<Disagreement>,
}

/// Check a chain that holds (its MACs and head already verified) against
/// its store: the genesis, the identity row, the state tables.
pub(crate) fn check(rows: &[RawEntry], ctx: &Context<'_>) -> Checked {
    let mut out = Checked {
        binding: Binding::Empty,
        notes: Vec::new(),
        broken: None,
        disagreements: Vec::new(),
    };
    match bind(rows, ctx, &mut out.notes) {
        Ok(binding) => out.binding = binding,
        Err(link) => {
            out.broken = Some(link);
            return out;
        }
    }
    match replay(rows) {
        Ok(derived) => out.disagreements = compare(&derived, ctx.state),
        Err(link) => out.broken = Some(link),
    }
    out
}

fn broken(seq: u64, kind: Breakage, detail: String) -> BrokenLink {
    BrokenLink { seq, kind, detail }
}

fn genesis_of(row: &RawEntry) -> Result<Genesis, BrokenLink> {
    serde_json::from_str(&row.details).map_err(|e| {
        broken(
            row.seq as u64,
            Breakage::Malformed,
            format!("a genesis entry whose details canaryd cannot read: {e}"),
        )
    })
}

/// The genesis entries and the identity row agree with each other, the key
/// and the store; or the log is empty and describes nothing; or it
/// predates the binding.
fn bind(
    rows: &[RawEntry],
    ctx: &Context<'_>,
    notes: &mut Vec<String>,
) -> Result<Binding, BrokenLink> {
    let mut geneses = Vec::new();
    for row in rows.iter().filter(|r| r.action == GENESIS_ACTION) {
        geneses.push((row, genesis_of(row)?));
    }
    let Some((last_row, last)) = geneses.last() else {
        if !rows.is_empty() {
            if let Some(identity) = &ctx.identity {
                return Err(broken(
                    1,
                    Breakage::GenesisMissing,
                    format!(
                        "the store's identity says its chain is bound at entry {}, but the log has no genesis entry: its entries were deleted",
                        identity.genesis_seq
                    ),
                ));
            }
            notes.push(format!(
                "entries 1..={} predate the binding of the chain to its store (written by an earlier canaryd); the daemon binds it at its next start",
                rows.len()
            ));
            return Ok(Binding::Unbound);
        }
        let mut present = ctx.state.describe();
        if ctx.key_file_exists && !ctx.upgrading {
            present.push(super::audit::KEY_FILE.to_string());
        }
        if let Some(identity) = &ctx.identity {
            present.push(format!(
                "an identity whose chain is bound at entry {}",
                identity.genesis_seq
            ));
        }
        if present.is_empty() {
            return Ok(Binding::Empty);
        }
        return Err(broken(
            1,
            Breakage::GenesisMissing,
            format!(
                "the audit log is empty, yet this store has {}: a used store's log begins with its genesis entry, so its entries were deleted",
                present.join(", ")
            ),
        ));
    };
    for (row, genesis) in &geneses {
        let seq = row.seq as u64;
        if genesis.key_id != ctx.key_id {
            return Err(broken(
                seq,
                Breakage::GenesisMismatch,
                format!(
                    "the genesis names key {}, but audit.key is key {}",
                    genesis.key_id, ctx.key_id
                ),
            ));
        }
        if genesis.predates != seq - 1 {
            return Err(broken(
                seq,
                Breakage::Malformed,
                format!(
                    "the genesis says {} entries come before it, the log has {}",
                    genesis.predates,
                    seq - 1
                ),
            ));
        }
        if genesis.store != last.store {
            return Err(broken(
                seq,
                Breakage::GenesisMismatch,
                format!(
                    "the genesis names store {}, a later one store {}",
                    genesis.store, last.store
                ),
            ));
        }
    }
    let seq = last_row.seq as u64;
    let Some(identity) = &ctx.identity else {
        return Err(broken(
            seq,
            Breakage::GenesisMismatch,
            format!(
                "the chain is bound to store {} here, but the store's identity row is gone",
                last.store
            ),
        ));
    };
    if identity.id != last.store {
        return Err(broken(
            seq,
            Breakage::GenesisMismatch,
            format!(
                "the chain is bound to store {} here, but this database is store {}: the log belongs to another store",
                last.store, identity.id
            ),
        ));
    }
    if identity.genesis_seq != seq {
        return Err(broken(
            seq,
            Breakage::GenesisMismatch,
            format!(
                "this is the chain's last genesis entry, but the store's identity names entry {}",
                identity.genesis_seq
            ),
        ));
    }
    let (first_row, first) = &geneses[0];
    let pruned = rows
        .iter()
        .filter_map(|r| anchor_of(r).and_then(|a| a.audit).map(|a| (r.seq, a)))
        .max_by_key(|(_, a)| a.through);
    if let Some((anchor_seq, audit)) = &pruned {
        notes.push(format!(
            "entries 1..={} were pruned by retention: entry {anchor_seq} seals them, and a genesis entry after it binds the chain again",
            audit.through
        ));
    } else if first.restart.is_none() && first.predates > 0 {
        notes.push(format!(
            "entries 1..={} predate the binding of the chain to its store (written by an earlier canaryd); entry {} binds it",
            first.predates, first_row.seq
        ));
    }
    for (row, genesis) in &geneses {
        if let Some(restart) = &genesis.restart {
            notes.push(format!(
                "entry {} restarted the chain deliberately ({}: {}); it had found: {}",
                row.seq, row.actor, row.reason, restart.found
            ));
        }
    }
    Ok(Binding::Bound {
        genesis_seq: seq,
        store: last.store.clone(),
    })
}

/// Where each derived row was last set, for messages.
#[derive(Default)]
struct Derived {
    state: StateSnapshot,
    set_by: BTreeMap<(&'static str, String), u64>,
    /// Rollouts a pruning anchor removed, with the anchor's seq.
    pruned: BTreeMap<String, u64>,
}

fn text<'a>(details: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    details.get(field).and_then(serde_json::Value::as_str)
}

/// The state rows as the chain's entries leave them.
fn replay(rows: &[RawEntry]) -> Result<Derived, BrokenLink> {
    let mut d = Derived::default();
    for row in rows {
        let seq = row.seq as u64;
        let malformed = |what: &str| {
            broken(
                seq,
                Breakage::Malformed,
                format!("a `{}` entry without {what}", row.action),
            )
        };
        if row.action == GENESIS_ACTION {
            if let Some(restart) = genesis_of(row)?.restart {
                d.state = restart.state;
                d.set_by.clear();
                for id in d.state.rollouts.keys() {
                    d.set_by.insert(("rollouts", id.clone()), seq);
                }
                for id in d.state.incidents.keys() {
                    d.set_by.insert(("incidents", id.clone()), seq);
                }
                for id in d.state.reviews.keys() {
                    d.set_by.insert(("reviews", id.clone()), seq);
                }
            }
            continue;
        }
        if row.action == PRUNE_ACTION {
            let anchor =
                anchor_of(row).ok_or_else(|| malformed("anchor details canaryd can read"))?;
            for gone in anchor.rollouts {
                let id = gone.rollout;
                d.state.rollouts.remove(&id);
                d.state.incidents.retain(|_, r| r.rollout_id != id);
                d.state.reviews.retain(|_, r| r.rollout_id != id);
                d.pruned.insert(id, seq);
            }
            continue;
        }
        let watched = matches!(
            row.action.as_str(),
            "rollout.start"
                | "rollout.event"
                | "incident.open"
                | "incident.review"
                | "review.open"
                | "review.close"
        );
        if !watched {
            continue;
        }
        let Some(rollout_id) = row.rollout_id.clone() else {
            return Err(malformed("a rollout id"));
        };
        let details: serde_json::Value =
            serde_json::from_str(&row.details).map_err(|_| malformed("JSON details"))?;
        match row.action.as_str() {
            "rollout.start" => {
                let service = text(&details, "service").ok_or_else(|| malformed("a service"))?;
                let policy_version = text(&details, "policy_version")
                    .ok_or_else(|| malformed("a policy version"))?;
                d.state.rollouts.insert(
                    rollout_id.clone(),
                    RolloutState {
                        service: service.into(),
                        policy_version: policy_version.into(),
                        phase: Phase::Pending.as_str().into(),
                        outcome: None,
                    },
                );
                d.set_by.insert(("rollouts", rollout_id), seq);
            }
            "rollout.event" => {
                let phase: Phase = details
                    .get("phase")
                    .and_then(|p| serde_json::from_value(p.clone()).ok())
                    .ok_or_else(|| malformed("a phase"))?;
                if let Some(r) = d.state.rollouts.get_mut(&rollout_id) {
                    r.phase = phase.as_str().into();
                    r.outcome = phase.is_terminal().then(|| phase.as_str().into());
                    d.set_by.insert(("rollouts", rollout_id), seq);
                }
            }
            action => {
                let (table, field, status) = match action {
                    "incident.open" => ("incidents", "incident", "open"),
                    "incident.review" => ("incidents", "incident", "reviewed"),
                    "review.open" => ("reviews", "review", "open"),
                    _ => ("reviews", "review", "closed"),
                };
                let id =
                    text(&details, field).ok_or_else(|| malformed(&format!("an {field} id")))?;
                let records = if table == "incidents" {
                    &mut d.state.incidents
                } else {
                    &mut d.state.reviews
                };
                records.insert(
                    id.to_string(),
                    RecordState {
                        rollout_id,
                        status: status.into(),
                    },
                );
                d.set_by.insert((table, id.to_string()), seq);
            }
        }
    }
    Ok(d)
}

/// Rows that differ from what the chain derives, in table and id order.
fn compare(derived: &Derived, rows: &StateSnapshot) -> Vec<Disagreement> {
    let mut out = Vec::new();
    let at = |table: &'static str, id: &str| {
        derived
            .set_by
            .get(&(table, id.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let mut differ = |table: &'static str, id: &str, detail: String| {
        out.push(Disagreement {
            table,
            id: id.to_string(),
            detail,
        })
    };
    let show = |v: Option<&str>| v.map_or("NULL".to_string(), |v| format!("`{v}`"));

    for (id, row) in &rows.rollouts {
        let Some(want) = derived.state.rollouts.get(id) else {
            let detail = match derived.pruned.get(id) {
                Some(seq) => format!(
                    "the audit log (entry {seq}) says retention pruned it, yet its row is here: the row was written outside the chain"
                ),
                None => {
                    "the audit log never started it: the row was written outside the chain".into()
                }
            };
            differ("rollouts", id, detail);
            continue;
        };
        let seq = at("rollouts", id);
        for (field, found, expected) in [
            (
                "service",
                Some(row.service.as_str()),
                Some(want.service.as_str()),
            ),
            (
                "policy_version",
                Some(row.policy_version.as_str()),
                Some(want.policy_version.as_str()),
            ),
            ("phase", Some(row.phase.as_str()), Some(want.phase.as_str())),
            ("outcome", row.outcome.as_deref(), want.outcome.as_deref()),
        ] {
            if found != expected {
                differ(
                    "rollouts",
                    id,
                    format!(
                        "{field} is {} but the audit log (entry {seq}) leaves it {}",
                        show(found),
                        show(expected)
                    ),
                );
            }
        }
    }
    for id in derived
        .state
        .rollouts
        .keys()
        .filter(|id| !rows.rollouts.contains_key(*id))
    {
        differ(
            "rollouts",
            id,
            format!(
                "the audit log started it (entry {}) but its row is gone",
                at("rollouts", id)
            ),
        );
    }
    for (table, found, expected) in [
        ("incidents", &rows.incidents, &derived.state.incidents),
        ("reviews", &rows.reviews, &derived.state.reviews),
    ] {
        for (id, row) in found {
            let Some(want) = expected.get(id) else {
                differ(
                    table,
                    id,
                    "the audit log never opened it: the row was written outside the chain".into(),
                );
                continue;
            };
            let seq = at(table, id);
            if row.rollout_id != want.rollout_id {
                differ(
                    table,
                    id,
                    format!(
                        "rollout_id is `{}` but the audit log (entry {seq}) opened it for `{}`",
                        row.rollout_id, want.rollout_id
                    ),
                );
            }
            if row.status != want.status {
                differ(
                    table,
                    id,
                    format!(
                        "status is `{}` but the audit log (entry {seq}) leaves it `{}`",
                        row.status, want.status
                    ),
                );
            }
        }
        for id in expected.keys().filter(|id| !found.contains_key(*id)) {
            differ(
                table,
                id,
                format!(
                    "the audit log opened it (entry {}) but its row is gone",
                    at(table, id)
                ),
            );
        }
    }
    out
}

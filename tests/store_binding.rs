//! The audit chain bound to the data it describes (issue #21, item 6): a
//! genesis entry begins every chain, an emptied log is never taken for a
//! new one, the state rows are checked against the chain, a store written
//! before the binding still opens and verifies, and an operator can start
//! a new chain only deliberately. One test per kind of tampering, each by
//! someone with write access to the files but without the key.

use std::fs;
use std::path::Path;

use canaryd::store::{Binding, Breakage, Store, StoreError, Verification};

mod store_support;
mod support;
use store_support::{at, copy_fixture, tamper, used_store};

fn verify(dir: &Path) -> Verification {
    Store::open_read_only(dir).unwrap().verify().unwrap()
}

fn broken(v: &Verification, kind: Breakage) -> String {
    let link = v
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("not broken: {v:?}"));
    assert_eq!(link.kind, kind, "{link}");
    link.detail.clone()
}

fn used() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    drop(used_store(dir.path()));
    let v = verify(dir.path());
    assert!(v.is_ok(), "{v:?}");
    dir
}

/// The reproduction: the append-only trigger dropped, every entry
/// deleted, the head file removed. Before: "ok: 0 entries" and a new chain.
#[test]
fn a_wiped_log_is_named_and_the_store_refuses_to_start_a_new_chain() {
    let dir = used();
    tamper(dir.path(), "DELETE FROM audit");
    fs::remove_file(dir.path().join("audit.head")).unwrap();

    let v = verify(dir.path());
    let detail = broken(&v, Breakage::GenesisMissing);
    assert!(
        detail.contains("the audit log is empty, yet this store has 2 rollouts, 1 incident, 1 review, audit.key, an identity whose chain is bound at entry 1"),
        "{detail}"
    );
    assert!(!v.is_ok());

    let err = Store::open(dir.path()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::AuditBroken { .. }), "{message}");
    assert!(
        message.contains("canaryd audit restart-chain --data-dir"),
        "{message}"
    );
    // Refusing changed nothing: no new chain, no head.
    assert!(!dir.path().join("audit.head").exists());
    assert_eq!(verify(dir.path()).entries, 0);
}

/// With the identity row gone too, and no state at all, the key alone
/// still says the store was used.
#[test]
fn a_wiped_log_beside_only_its_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    tamper(dir.path(), "DELETE FROM audit; DELETE FROM store_identity");
    fs::remove_file(dir.path().join("audit.head")).unwrap();
    let detail = broken(&verify(dir.path()), Breakage::GenesisMissing);
    assert!(detail.contains("this store has audit.key"), "{detail}");
    assert!(Store::open(dir.path()).is_err());
}

/// The identity row names a genesis the log lacks (the log emptied, the
/// key and the identity kept, and no state yet).
#[test]
fn an_identity_without_its_genesis_is_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    tamper(dir.path(), "DELETE FROM audit");
    fs::remove_file(dir.path().join("audit.head")).unwrap();
    fs::remove_file(dir.path().join("audit.key")).unwrap();
    let detail = broken(&verify(dir.path()), Breakage::GenesisMissing);
    assert!(
        detail.contains(
            "the audit log is empty, yet this store has an identity whose chain is bound at entry 1"
        ),
        "{detail}"
    );
    assert!(Store::open(dir.path()).is_err());
}

#[test]
fn an_active_rollout_marked_ended_is_named() {
    let dir = used();
    tamper(
        dir.path(),
        "UPDATE rollouts SET outcome = 'aborted' WHERE id = 'r-std'",
    );
    let v = verify(dir.path());
    assert_eq!(v.disagreements.len(), 1, "{:?}", v.disagreements);
    assert_eq!(
        v.disagreements[0]
            .to_string()
            .split(" but ")
            .next()
            .unwrap(),
        "rollouts r-std: outcome is `aborted`"
    );
}

#[test]
fn a_changed_service_or_policy_version_is_named() {
    let dir = used();
    tamper(
        dir.path(),
        "UPDATE rollouts SET service = 'payments', policy_version = 'sha256:evil' WHERE id = 'r-std'",
    );
    let lines: Vec<String> = verify(dir.path())
        .disagreements
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines[0].starts_with("rollouts r-std: service is `payments`"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("rollouts r-std: policy_version is `sha256:evil`"),
        "{lines:?}"
    );
}

#[test]
fn a_rollout_row_inserted_outside_the_chain_is_named() {
    let dir = used();
    tamper(
        dir.path(),
        "INSERT INTO rollouts SELECT 'r-ghost', 'ghost', policy_name, policy_version, spec, phase,
            outcome, reason, step, weight, created_at, updated_at, checkpoint_seq, 0, NULL
         FROM rollouts WHERE id = 'r-em'",
    );
    let v = verify(dir.path());
    assert_eq!(
        v.disagreements[0].to_string(),
        "rollouts r-ghost: the audit log never started it: the row was written outside the chain"
    );
}

#[test]
fn a_reopened_incident_and_review_are_named() {
    let dir = used();
    tamper(
        dir.path(),
        "UPDATE incidents SET status = 'open'; UPDATE reviews SET status = 'closed'",
    );
    let lines: Vec<String> = verify(dir.path())
        .disagreements
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("incidents inc-")
            && lines[0].contains("status is `open` but the audit log"),
        "{lines:?}"
    );
    assert!(lines[0].ends_with("leaves it `reviewed`"), "{lines:?}");
    assert!(
        lines[1].starts_with("reviews rev-") && lines[1].ends_with("leaves it `open`"),
        "{lines:?}"
    );
}

#[test]
fn an_incident_deleted_or_moved_to_another_rollout_is_named() {
    let dir = used();
    tamper(dir.path(), "UPDATE incidents SET rollout_id = 'r-std'");
    let lines: Vec<String> = verify(dir.path())
        .disagreements
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines[0].contains("rollout_id is `r-std` but the audit log"),
        "{lines:?}"
    );
    tamper(
        dir.path(),
        "PRAGMA foreign_keys = OFF; DELETE FROM notifications; DELETE FROM incidents",
    );
    let lines: Vec<String> = verify(dir.path())
        .disagreements
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines[0].starts_with("incidents inc-") && lines[0].ends_with("but its row is gone"),
        "{lines:?}"
    );
}

#[test]
fn a_removed_identity_row_is_named() {
    let dir = used();
    tamper(dir.path(), "DELETE FROM store_identity");
    let detail = broken(&verify(dir.path()), Breakage::GenesisMismatch);
    assert!(
        detail.contains("the store's identity row is gone"),
        "{detail}"
    );
}

/// The genesis names the key it was written with; a genesis forged with
/// another key breaks the chain at entry 1 before that.
#[test]
fn the_genesis_names_the_store_and_the_key() {
    let dir = used();
    let store = Store::open_read_only(dir.path()).unwrap();
    let log = store.audit_log().unwrap();
    let genesis = &log[0];
    assert_eq!((genesis.seq, genesis.action.as_str()), (1, "audit.genesis"));
    let key = canaryd::store::AuditKey::load(dir.path()).unwrap();
    assert_eq!(genesis.details["key_id"], key.key_id());
    assert_eq!(genesis.details["predates"], 0);
    assert!(genesis.details["store"].as_str().unwrap().starts_with("s-"));
    let v = store.verify().unwrap();
    assert_eq!(
        v.binding,
        Binding::Bound {
            genesis_seq: 1,
            store: genesis.details["store"].as_str().unwrap().into()
        }
    );
    assert!(v.notes.is_empty(), "{:?}", v.notes);
}

/// A store written by the previous version (no genesis, schema 3) opens,
/// is bound by a genesis after its 17 entries, and verifies with a note
/// saying so; its state agrees with its old entries.
#[test]
fn a_store_from_before_the_binding_opens_verifies_and_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("pre-genesis", dir.path());
    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooOld { found: 3, .. }),
        "{err}"
    );

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.audit_head().seq, 18);
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.entries, 18);
    assert!(
        matches!(
            v.binding,
            Binding::Bound {
                genesis_seq: 18,
                ..
            }
        ),
        "{:?}",
        v.binding
    );
    assert_eq!(
        v.notes,
        vec!["entries 1..=17 predate the binding of the chain to its store (written by an earlier canaryd); entry 18 binds it".to_string()]
    );
    let genesis = store.audit_log().unwrap().pop().unwrap();
    assert_eq!(genesis.action, "audit.genesis");
    assert_eq!(genesis.details["predates"], 17);
    assert_eq!(
        store.rollout("r-em").unwrap().unwrap().outcome,
        Some(canaryd::engine::Phase::RolledBack)
    );
    drop(store);
    // Opening again binds nothing more.
    drop(Store::open(dir.path()).unwrap());
    assert_eq!(verify(dir.path()).entries, 18);

    // Its old rows are checked against its old entries like any others.
    tamper(
        dir.path(),
        "UPDATE rollouts SET phase = 'progressing' WHERE id = 'r-n'",
    );
    let v = verify(dir.path());
    assert!(
        v.disagreements[0]
            .to_string()
            .starts_with("rollouts r-n: phase is `progressing`"),
        "{v:?}"
    );
}

/// The old version's store, wiped before its upgrade: its rollouts remain,
/// so the upgrade refuses it rather than binding an empty log.
#[test]
fn a_store_from_before_the_binding_wiped_before_its_upgrade_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("pre-genesis", dir.path());
    tamper(dir.path(), "DELETE FROM audit");
    fs::remove_file(dir.path().join("audit.head")).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("the audit log is empty, yet this store has 2 rollouts"),
        "{err}"
    );
}

/// Crash windows of a first start: before the genesis commits the key is
/// only staged (`audit.key.new`), so a crash leaves no key beside an empty
/// log; after it commits, the staged key is installed on the next open.
#[test]
fn a_first_start_interrupted_either_side_of_its_genesis_recovers() {
    // After the genesis committed, before the key was installed.
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    fs::rename(
        dir.path().join("audit.key"),
        dir.path().join("audit.key.new"),
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.audit_head().seq, 1);
    assert!(dir.path().join("audit.key").exists() && !dir.path().join("audit.key.new").exists());
    drop(store);
    assert!(verify(dir.path()).is_ok());

    // Before the genesis committed: the key staged, nothing else.
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    tamper(dir.path(), "DELETE FROM audit; DELETE FROM store_identity");
    fs::remove_file(dir.path().join("audit.head")).unwrap();
    fs::rename(
        dir.path().join("audit.key"),
        dir.path().join("audit.key.new"),
    )
    .unwrap();
    let staged = fs::read(dir.path().join("audit.key.new")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.audit_head().seq, 1);
    drop(store);
    assert_eq!(fs::read(dir.path().join("audit.key")).unwrap(), staged);
    assert!(verify(dir.path()).is_ok());
}

/// The deliberate way out: a new chain that records who, why and what was
/// found, keeps the rollouts, and checks them from then on.
#[test]
fn restarting_the_chain_is_deliberate_recorded_and_checked_from_then_on() {
    let dir = used();
    // Nothing to restart while the chain holds.
    let err = Store::restart_chain(dir.path(), "ops", "lost", at(1000)).unwrap_err();
    assert!(err.to_string().contains("nothing to restart"), "{err}");

    tamper(dir.path(), "DELETE FROM audit");
    fs::remove_file(dir.path().join("audit.head")).unwrap();
    let err = Store::restart_chain(dir.path(), "", "x", at(1000)).unwrap_err();
    assert!(
        err.to_string().contains("needs an actor and a reason"),
        "{err}"
    );

    let v = Store::restart_chain(
        dir.path(),
        "ops-oncall",
        "INC-42: disk restored without the audit table",
        at(1000),
    )
    .unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.entries, 1);
    assert_eq!(v.notes.len(), 1, "{:?}", v.notes);
    assert!(
        v.notes[0].starts_with("entry 1 restarted the chain deliberately (ops-oncall: INC-42: disk restored without the audit table); it had found: entry 1: the audit log is empty, yet this store has 2 rollouts"),
        "{:?}",
        v.notes
    );
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.rollouts().unwrap().len(), 2, "the state is kept");
    drop(store);
    // The snapshot in the genesis is what later checks start from.
    tamper(
        dir.path(),
        "UPDATE rollouts SET outcome = 'promoted' WHERE id = 'r-std'",
    );
    let v = verify(dir.path());
    assert!(
        v.disagreements[0].to_string().starts_with(
            "rollouts r-std: outcome is `promoted` but the audit log (entry 1) leaves it NULL"
        ),
        "{v:?}"
    );
}

/// A lost head with the entries intact: restart appends the genesis after
/// them; an edited entry is not restartable (restore a backup).
#[test]
fn restarting_after_a_lost_head_keeps_the_entries_and_edits_are_not_restartable() {
    let dir = used();
    let entries = verify(dir.path()).entries;
    fs::remove_file(dir.path().join("audit.head")).unwrap();
    assert!(
        Store::open(dir.path())
            .unwrap_err()
            .to_string()
            .contains("restart-chain")
    );
    let v =
        Store::restart_chain(dir.path(), "ops", "head lost with the old disk", at(1000)).unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.entries, entries + 1);
    assert!(v.notes[0].contains("it had found: entry"), "{:?}", v.notes);

    tamper(dir.path(), "UPDATE audit SET reason = 'x' WHERE seq = 3");
    let err = Store::restart_chain(dir.path(), "ops", "again", at(1001)).unwrap_err();
    assert!(matches!(err, StoreError::AuditBroken { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("restore the data dir from a backup"),
        "{err}"
    );
}

//! Retention against real SQLite in temp dirs: pruning ended rollouts'
//! journals, rows and the log's oldest entries leaves a chain that
//! verifies (the anchors seal what went), while each kind of tampering
//! after pruning is still named at its first broken entry; the triggers
//! refuse deletes outside a pruning transaction and of what pruning may
//! not take.

use std::time::Duration;

use canaryd::engine::{Input, Phase};
use canaryd::policy::ChangeType;
use canaryd::store::{Ages, Binding, Breakage, Budget, Store, Verification};

mod store_support;
mod support;
use store_support::{Driver, at, copy_fixture, tamper};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Drive a new rollout of `service` from second `t` until its trigger
/// rolled it back and the router confirmed weight 0: ended, traffic back.
fn rolled_back(store: &mut Store, id: &str, service: &str, t: u64) {
    let mut d = Driver::start(store, id, service, ChangeType::Emergency, t);
    d.step(store, Input::Tick, false, |_| vec![]).expect("tick");
    for _ in 0..8 {
        let input = d.next_input(true);
        d.step(store, input, false, |_| vec![]).expect("step");
        if d.rollout.phase().is_terminal() && d.unacked.is_none() {
            break;
        }
    }
    assert_eq!(d.rollout.phase(), Phase::RolledBack, "{id} rolled back");
    let row = store.rollout(id).unwrap().unwrap();
    assert_eq!(
        row.weight.percent(),
        0,
        "{id}: the router confirmed weight 0"
    );
}

const SECOND: Duration = Duration::from_secs(1);

fn all(journal: bool, rollouts: bool, audit: bool) -> Ages {
    Ages {
        journal: journal.then_some(SECOND),
        rollouts: rollouts.then_some(SECOND),
        audit: audit.then_some(SECOND),
    }
}

/// Prune steps until nothing is due; returns how many did something.
fn prune_all(store: &mut Store, ages: &Ages, budget: Budget) -> usize {
    let now = at(100_000);
    for n in 0..10_000 {
        if store
            .prune_step(now, ages, budget)
            .expect("prune")
            .is_idle()
        {
            return n;
        }
    }
    panic!("pruning never went idle");
}

fn holds(v: &Verification) {
    assert_eq!(v.broken, None, "chain holds");
    assert!(v.disagreements.is_empty(), "{:?}", v.disagreements);
    assert!(
        matches!(v.binding, Binding::Bound { .. }),
        "{:?}",
        v.binding
    );
}

fn assert_broken(v: &Verification, seq: u64, kind: Breakage) {
    let link = v.broken.as_ref().expect("the chain is broken");
    assert_eq!((link.seq, link.kind), (seq, kind), "{link}");
}

/// A store with history: four rollouts rolled back by their trigger
/// (each with an incident and, emergencies, a post-incident review),
/// then `r-std` started and still active, whose hooks ran and webhooks
/// were delivered (as the daemon's outbox does).
fn churned(dir: &std::path::Path) -> Store {
    let mut store = Store::open(dir).expect("open");
    store.set_id_seed(21);
    for (i, service) in ["a", "b", "c", "d"].into_iter().enumerate() {
        rolled_back(
            &mut store,
            &format!("r-{service}"),
            service,
            1000 * i as u64,
        );
    }
    let mut std = Driver::start(&mut store, "r-std", "checkout", ChangeType::Standard, 5000);
    for _ in 0..3 {
        let input = std.next_input(false);
        std.step(&mut store, input, false, |_| vec![])
            .expect("step");
    }
    outbox_done(dir);
    store
}

/// Every hook run and delivery done (those tables are not the chain's).
fn outbox_done(dir: &std::path::Path) {
    let conn = rusqlite::Connection::open(dir.join("canaryd.db")).unwrap();
    conn.execute_batch(
        "UPDATE hook_runs SET status = 'ran', done_at = 0 WHERE status = 'pending';
         UPDATE notifications SET delivered_at = 0 WHERE delivered_at IS NULL",
    )
    .unwrap();
}

#[test]
fn journals_of_ended_rollouts_go_and_the_chain_still_verifies() {
    let dir = tempdir();
    let mut store = churned(dir.path());
    let active_journal = store.journal("r-std").unwrap().len();
    assert!(!store.journal("r-a").unwrap().is_empty());
    // Two rows a step: several steps, each a transaction of its own.
    let steps = prune_all(
        &mut store,
        &all(true, false, false),
        Budget {
            rows: 2,
            ..Budget::default()
        },
    );
    assert!(steps > 4, "small steps: {steps}");
    for id in ["r-a", "r-b", "r-c", "r-d"] {
        assert!(store.journal(id).unwrap().is_empty(), "{id}'s journal went");
        assert!(store.journal_pruned_at(id).unwrap().is_some());
        // The row and its final state stay.
        assert!(store.rollout(id).unwrap().is_some());
        store
            .checkpoint::<support::scripted::Scripted>(id)
            .expect("the checkpoint stays");
    }
    assert_eq!(
        store.journal("r-std").unwrap().len(),
        active_journal,
        "active: untouched"
    );
    let anchors: Vec<_> = store
        .audit_log()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "audit.prune")
        .collect();
    let sealed: Vec<&str> = anchors
        .iter()
        .flat_map(|a| a.details["journals"].as_array().unwrap())
        .map(|j| j["rollout"].as_str().unwrap())
        .collect();
    assert_eq!(sealed.len(), 4, "each journal sealed once: {sealed:?}");
    assert!(!sealed.contains(&"r-std"));
    holds(&store.verify().unwrap());
    drop(store);
    holds(&Store::open(dir.path()).unwrap().verify().unwrap());
    holds(&Store::open_read_only(dir.path()).unwrap().verify().unwrap());
}

#[test]
fn whole_rollouts_and_the_oldest_entries_go_and_the_chain_still_verifies() {
    let dir = tempdir();
    let mut store = churned(dir.path());
    let before = store.audit_log().unwrap();
    assert_eq!(store.incidents().unwrap().len(), 4);
    prune_all(&mut store, &all(true, true, true), Budget::default());
    for id in ["r-a", "r-b", "r-c", "r-d"] {
        assert!(store.rollout(id).unwrap().is_none(), "{id} went whole");
    }
    assert!(
        store.incidents().unwrap().is_empty(),
        "their incidents went with them"
    );
    assert!(
        store.rollout("r-std").unwrap().is_some(),
        "the active rollout stays"
    );
    let after = store.audit_log().unwrap();
    let first = after[0].seq;
    assert!(first > 1, "the oldest entries went");
    // Nothing of the active rollout went, nor anything after its start.
    let std_start = before
        .iter()
        .find(|e| e.action == "rollout.start" && e.rollout_id.as_deref() == Some("r-std"))
        .unwrap()
        .seq;
    assert!(first <= std_start, "{first} <= {std_start}");
    let v = store.verify().unwrap();
    holds(&v);
    assert!(
        v.notes.iter().any(|n| n.contains("pruned by retention")),
        "{:?}",
        v.notes
    );
    // The daemon goes on: a reopen verifies, new entries chain on.
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    rolled_back(&mut store, "r-e", "e", 50_000);
    holds(&store.verify().unwrap());
    holds(&Store::open_read_only(dir.path()).unwrap().verify().unwrap());
}

/// A store pruned of everything that may go, and its first kept entry.
fn pruned(dir: &std::path::Path) -> u64 {
    let mut store = churned(dir);
    prune_all(&mut store, &all(true, true, true), Budget::default());
    holds(&store.verify().unwrap());
    store.audit_log().unwrap()[0].seq
}

fn verify_read_only(dir: &std::path::Path) -> Verification {
    Store::open_read_only(dir).unwrap().verify().unwrap()
}

#[test]
fn an_edited_kept_entry_is_named_after_pruning() {
    let dir = tempdir();
    let first = pruned(dir.path());
    tamper(
        dir.path(),
        &format!(
            "UPDATE audit SET reason = 'nothing to see' WHERE seq = {}",
            first + 2
        ),
    );
    assert_broken(&verify_read_only(dir.path()), first + 2, Breakage::Edited);
}

#[test]
fn a_deleted_kept_entry_is_named_after_pruning() {
    let dir = tempdir();
    let first = pruned(dir.path());
    tamper(
        dir.path(),
        &format!("DELETE FROM audit WHERE seq = {}", first + 2),
    );
    assert_broken(&verify_read_only(dir.path()), first + 2, Breakage::Missing);
}

#[test]
fn kept_entries_deleted_beside_the_pruned_ones_are_named() {
    let dir = tempdir();
    let first = pruned(dir.path());
    // The oldest kept entries go too, as if pruning had taken them.
    tamper(
        dir.path(),
        &format!("DELETE FROM audit WHERE seq <= {}", first + 1),
    );
    assert_broken(&verify_read_only(dir.path()), first, Breakage::Missing);
}

#[test]
fn a_forged_anchor_is_named() {
    let dir = tempdir();
    let first = pruned(dir.path());
    let log = Store::open_read_only(dir.path())
        .unwrap()
        .audit_log()
        .unwrap();
    let last = log.last().unwrap().seq;
    // Someone without the key removes the active rollout and writes an
    // anchor that says retention took it (any mac: they cannot compute
    // the right one), and moves the head file to match.
    tamper(
        dir.path(),
        &format!(
            "PRAGMA foreign_keys = OFF;
             DELETE FROM journal WHERE rollout_id = 'r-std';
             DELETE FROM hook_runs WHERE rollout_id = 'r-std';
             DELETE FROM rollouts WHERE id = 'r-std';
             INSERT INTO audit (seq, tx, at, actor, action, rollout_id, reason, ticket, details, mac)
             VALUES ({seq}, {seq}, 0, 'engine', 'audit.prune', NULL, 'retention', NULL,
                     '{{\"rollouts\":[{{\"rollout\":\"r-std\",\"incidents\":0,\"reviews\":0}}]}}',
                     '{mac}')",
            seq = last + 1,
            mac = "ab".repeat(32),
        ),
    );
    std::fs::write(
        dir.path().join("audit.head"),
        format!(
            "canaryd audit head v1\nseq {}\nmac {}\n",
            last + 1,
            "ab".repeat(32)
        ),
    )
    .unwrap();
    assert_broken(&verify_read_only(dir.path()), last + 1, Breakage::Forged);
    assert!(first > 1);
}

#[test]
fn an_edited_anchor_is_named() {
    let dir = tempdir();
    pruned(dir.path());
    let store = Store::open_read_only(dir.path()).unwrap();
    let anchor = store
        .audit_log()
        .unwrap()
        .into_iter()
        .rfind(|e| e.action == "audit.prune" && e.details.get("rollouts").is_some())
        .expect("a rollouts anchor is kept");
    drop(store);
    // It now also claims the active rollout went, whose row is removed.
    tamper(
        dir.path(),
        &format!(
            "PRAGMA foreign_keys = OFF;
             DELETE FROM journal WHERE rollout_id = 'r-std';
             DELETE FROM hook_runs WHERE rollout_id = 'r-std';
             DELETE FROM rollouts WHERE id = 'r-std';
             UPDATE audit SET details = json_insert(details, '$.rollouts[#]',
                 json('{{\"rollout\":\"r-std\",\"incidents\":0,\"reviews\":0}}'))
             WHERE seq = {}",
            anchor.seq
        ),
    );
    // Edited when an entry follows it (its mac is what the next chains
    // from), Forged when it is the last; named either way.
    let v = verify_read_only(dir.path());
    let link = v.broken.expect("broken");
    assert_eq!(link.seq, anchor.seq, "{link}");
    assert!(
        matches!(link.kind, Breakage::Edited | Breakage::Forged),
        "{link}"
    );
}

#[test]
fn a_kept_rollout_deleted_without_an_anchor_is_named() {
    let dir = tempdir();
    let mut store = churned(dir.path());
    // Journals only: the rows stay, and the chain vouches for them.
    prune_all(&mut store, &all(true, false, false), Budget::default());
    drop(store);
    tamper(
        dir.path(),
        "PRAGMA foreign_keys = OFF;
         DELETE FROM hook_runs WHERE rollout_id = 'r-a';
         DELETE FROM rollouts WHERE id = 'r-a'",
    );
    let v = verify_read_only(dir.path());
    assert_eq!(v.broken, None);
    assert_eq!(v.disagreements.len(), 1, "{:?}", v.disagreements);
    assert_eq!(v.disagreements[0].id, "r-a");
    assert!(v.disagreements[0].detail.contains("its row is gone"));
}

#[test]
fn deletes_outside_pruning_are_refused() {
    let dir = tempdir();
    drop(churned(dir.path()));
    let conn = rusqlite::Connection::open(dir.path().join("canaryd.db")).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    for sql in [
        "DELETE FROM journal WHERE rollout_id = 'r-a'",
        "DELETE FROM audit WHERE seq = 1",
        "DELETE FROM incidents",
        "DELETE FROM reviews",
        "DELETE FROM rollouts WHERE id = 'r-a'",
        "DELETE FROM checkpoints WHERE rollout_id = 'r-a'",
        "UPDATE journal SET body = '{}' WHERE rollout_id = 'r-a'",
        "UPDATE audit SET reason = '' WHERE seq = 1",
    ] {
        let err = conn.execute_batch(sql).expect_err(sql);
        assert!(
            err.to_string().contains("append-only") || err.to_string().contains("only retention"),
            "{sql}: {err}"
        );
    }
    // Inside a pruning transaction, still not an active rollout's data.
    conn.execute_batch("BEGIN; INSERT INTO prune_pass (one) VALUES (1)")
        .unwrap();
    for sql in [
        "DELETE FROM journal WHERE rollout_id = 'r-std'",
        "DELETE FROM rollouts WHERE id = 'r-std'",
        "DELETE FROM checkpoints WHERE rollout_id = 'r-std'",
    ] {
        let err = conn.execute_batch(sql).expect_err(sql);
        assert!(err.to_string().contains("ended"), "{sql}: {err}");
    }
    conn.execute_batch("DELETE FROM journal WHERE rollout_id = 'r-a'")
        .expect("an ended rollout's journal, inside a pruning transaction");
    conn.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn nothing_is_pruned_before_its_age_or_when_kept_forever() {
    let dir = tempdir();
    let mut store = churned(dir.path());
    let journal = store.journal("r-d").unwrap().len();
    // Forever everywhere: nothing.
    assert!(
        store
            .prune_step(at(100_000), &Ages::default(), Budget::default())
            .unwrap()
            .is_idle()
    );
    // r-d ended at about second 3,500; a day's age is not reached.
    let day = Some(Duration::from_secs(86_400));
    let ages = Ages {
        journal: day,
        rollouts: day,
        audit: day,
    };
    assert!(
        store
            .prune_step(at(10_000), &ages, Budget::default())
            .unwrap()
            .is_idle()
    );
    assert_eq!(store.journal("r-d").unwrap().len(), journal);
}

#[test]
fn a_rollout_with_a_pending_delivery_stays_until_it_is_done() {
    let dir = tempdir();
    let mut store = churned(dir.path());
    rolled_back(&mut store, "r-late", "late", 5000);
    // r-late's hooks are still pending: its journal may go, its row not.
    prune_all(&mut store, &all(true, true, false), Budget::default());
    assert!(store.journal("r-late").unwrap().is_empty());
    assert!(store.rollout("r-late").unwrap().is_some());
    assert!(store.rollout("r-a").unwrap().is_none());
    outbox_done(dir.path());
    prune_all(&mut store, &all(true, true, false), Budget::default());
    assert!(store.rollout("r-late").unwrap().is_none());
    holds(&store.verify().unwrap());
}

/// A data dir written by the daemon before retention (schema 5): this
/// build migrates it, verifies it, prunes the ended rollout's journal and
/// verifies it again; the file keeps its vacuum mode (converting it is an
/// offline VACUUM).
#[test]
fn a_store_written_before_retention_is_migrated_and_pruned() {
    let dir = tempdir();
    copy_fixture("schema-5", dir.path());
    let ids = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/store_fixtures/schema-5/ids"),
    )
    .unwrap();
    let (ended, active) = ids.trim().split_once('\n').unwrap();
    let mut store = Store::open(dir.path()).expect("opens and migrates");
    holds(&store.verify().unwrap());
    // Migration 7 moved every checkpoint to its own table: both still read
    // and restore, and the active one resumes.
    for id in [ended, active] {
        let checkpoint = store
            .checkpoint::<canaryd::monitor::Monitor>(id)
            .unwrap_or_else(|e| panic!("{id}'s checkpoint after the migration: {e}"));
        canaryd::engine::Rollout::restore(checkpoint).expect("restores");
    }
    let open = store.open_rollouts::<canaryd::monitor::Monitor>().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].row.id, active);
    let ended_journal = store.journal(ended).unwrap().len();
    let active_journal = store.journal(active).unwrap().len();
    assert!(ended_journal > 0 && active_journal > 0);
    let now = canaryd::time::Timestamp::from_millis(4_000_000_000_000);
    let step = store
        .prune_step(now, &all(true, false, false), Budget::default())
        .unwrap();
    assert_eq!(step.journals_done, vec![ended.to_string()]);
    assert_eq!(step.journal_rows, ended_journal as u64);
    assert!(store.journal(ended).unwrap().is_empty());
    assert_eq!(store.journal(active).unwrap().len(), active_journal);
    holds(&store.verify().unwrap());
    drop(store);
    holds(&verify_read_only(dir.path()));
    let conn = rusqlite::Connection::open(dir.path().join("canaryd.db")).unwrap();
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 0, "an existing file keeps its mode");
}

#[test]
fn a_new_store_frees_pages_incrementally() {
    let dir = tempdir();
    drop(Store::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("canaryd.db")).unwrap();
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2, "INCREMENTAL");
}

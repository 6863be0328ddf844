//! The store against real SQLite in temp dirs: round trips of every table,
//! migrations and reopen, the data-dir lock, read-only access beside a
//! writer, restore, and the audit chain catching each kind of tampering by
//! someone without the key.

use std::fs;

use canaryd::engine::{Checkpoint, Command, Effect, Input, Phase, Rollout};
use canaryd::policy::{ChangeType, Weight};
use canaryd::store::{
    Breakage, HookStatus, IncidentStatus, JournalKind, NewAudit, ReviewStatus, SCHEMA_VERSION,
    Store, StoreError, Verification,
};
use serde_json::json;

mod store_support;
mod support;
use store_support::{Driver, POLICY_VERSION, actor, at, tamper};
use support::scripted::Scripted;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn note(i: u64) -> NewAudit {
    NewAudit {
        at: at(i),
        actor: format!("user{}", i % 3),
        action: "test.note".into(),
        rollout_id: i.is_multiple_of(2).then(|| "r-x".to_string()),
        reason: format!("entry {i}"),
        ticket: i.is_multiple_of(5).then(|| format!("T-{i}")),
        details: json!({ "i": i, "ratio": 0.1 + i as f64 }),
    }
}

/// A data dir whose audit log holds 40 entries: the genesis (entry 1, its
/// own transaction), then `note(i)` as entry `i`, written by transactions
/// that end at entries 5, 10, ..., 40 (2..=5, then 5 each); returns the head
/// file's text after each of those 8.
fn audited_dir() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempdir();
    let mut heads = Vec::new();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.audit_head().seq,
        1,
        "a new store begins with its genesis"
    );
    for tx in 0..8 {
        let batch: Vec<_> = (tx * 5 + 1..=tx * 5 + 5)
            .filter(|&i| i > 1)
            .map(note)
            .collect();
        store.append_audit(&batch).unwrap();
        heads.push(fs::read_to_string(dir.path().join("audit.head")).unwrap());
    }
    assert_eq!(store.audit_head().seq, 40);
    drop(store);
    (dir, heads)
}

fn verify_read_only(dir: &std::path::Path) -> Verification {
    Store::open_read_only(dir).unwrap().verify().unwrap()
}

fn assert_broken(v: &Verification, seq: u64, kind: Breakage) {
    let link = v
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("not broken: {v:?}"));
    assert_eq!((link.seq, link.kind), (seq, kind), "{link}");
}

#[test]
fn a_new_dir_is_created_migrated_and_reopens() {
    let root = tempdir();
    let dir = root.path().join("nested/state");
    let store = Store::open(&dir).unwrap();
    assert!(store.verify().unwrap().is_ok());
    drop(store);
    let key = fs::read(dir.join("audit.key")).unwrap();
    assert_eq!(key.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join("audit.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The genesis entry is written and the head names it.
    assert!(
        fs::read_to_string(dir.join("audit.head"))
            .unwrap()
            .contains("seq 1")
    );
    assert!(!dir.join("audit.key.new").exists());
    // Reopen: nothing to migrate, same key.
    let mut store = Store::open(&dir).unwrap();
    store.append_audit(&[note(1)]).unwrap();
    drop(store);
    assert_eq!(fs::read(dir.join("audit.key")).unwrap(), key);
    let conn = rusqlite::Connection::open(dir.join("canaryd.db")).unwrap();
    let version: u32 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(verify_read_only(&dir).is_ok());
}

#[test]
fn a_newer_schema_is_refused_with_its_version() {
    let dir = tempdir();
    drop(Store::open(dir.path()).unwrap());
    tamper(dir.path(), "UPDATE schema_version SET version = 99");
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("schema version 99 is newer"),
        "{err}"
    );
    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

#[test]
fn one_daemon_per_data_dir_and_readers_beside_it() {
    let dir = tempdir();
    let mut first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()) && message.contains("in use"),
        "{message}"
    );
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );

    // A reader works while the daemon holds the dir, and sees its commits.
    let reader = Store::open_read_only(dir.path()).unwrap();
    first.append_audit(&[note(1), note(2)]).unwrap();
    let v = reader.verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.entries, 3);
    assert!(reader.is_read_only());
    assert!(matches!(
        Store::open_read_only(dir.path())
            .unwrap()
            .append_audit(&[note(3)]),
        Err(StoreError::ReadOnly)
    ));

    drop(first);
    drop(Store::open(dir.path()).unwrap());
    // Reading a dir with no state is a clear error, not an empty answer.
    let empty = tempdir();
    let err = Store::open_read_only(empty.path()).unwrap_err();
    assert!(err.to_string().contains("no canaryd state"), "{err}");
}

#[test]
fn a_reader_verifying_beside_a_busy_writer_never_sees_tampering() {
    let dir = tempdir();
    let mut writer = Store::open(dir.path()).unwrap();
    let path = dir.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        let store = Store::open_read_only(&path).unwrap();
        let mut checked = 0;
        for _ in 0..60 {
            let v = store.verify().unwrap();
            assert!(v.is_ok(), "{v:?}");
            checked += 1;
        }
        checked
    });
    for i in 0..200 {
        writer
            .append_audit(&[note(2 * i), note(2 * i + 1)])
            .unwrap();
    }
    assert_eq!(reader.join().unwrap(), 60);
}

#[test]
fn rollouts_journal_and_checkpoints_round_trip_and_restore() {
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    store.set_id_seed(42);
    let mut d = Driver::start(&mut store, "r-1", "checkout", ChangeType::Standard, 0);

    let row = store.rollout("r-1").unwrap().unwrap();
    assert_eq!(row.service, "checkout");
    assert_eq!(row.policy_name, "store-test");
    assert_eq!(row.policy_version, POLICY_VERSION);
    assert_eq!(row.spec, d.rollout.spec().clone());
    assert_eq!(
        (row.phase, row.outcome, row.journal_len),
        (Phase::Pending, None, 0)
    );

    // Another rollout of the same service is refused while this one runs.
    let err = store
        .create_rollout(&d.rollout, POLICY_VERSION, at(0))
        .unwrap_err();
    assert!(matches!(err, StoreError::ServiceBusy { .. }), "{err}");

    d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
    for i in 0..12 {
        let input = d.next_input(false);
        d.step(&mut store, input, i % 5 == 0, |_| vec![]).unwrap();
    }
    let pause = d.command(Command::Pause { by: actor("bob") });
    d.step(&mut store, pause, false, |_| vec![]).unwrap();
    let input = d.next_input(false);
    d.step(&mut store, input, false, |_| vec![]).unwrap();

    let row = store.rollout("r-1").unwrap().unwrap();
    assert_eq!(row.phase, d.rollout.phase());
    assert_eq!(row.phase, Phase::Paused);
    assert_eq!(row.weight, d.rollout.weight());
    assert_eq!(row.step, d.rollout.step());
    assert_eq!(row.reason, d.rollout.reason());

    // The journal: seqs 1..=n, each input followed by exactly its effects.
    let journal = store.journal("r-1").unwrap();
    assert_eq!(journal.len() as u64, row.journal_len);
    for (i, e) in journal.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    for input in journal.iter().filter(|e| e.kind == JournalKind::Input) {
        let effects = journal
            .iter()
            .filter(|e| e.kind == JournalKind::Effect && e.input_seq == input.seq)
            .count();
        assert_eq!(effects as u32, input.effects);
        input.decode_input::<support::scripted::Snap>().unwrap();
    }
    assert!(matches!(
        journal[1].decode_effect::<String>().unwrap(),
        Effect::SetWeight { .. } | Effect::Notify(_) | Effect::Checkpoint
    ));

    // Restore: the checkpoint plus the inputs after it give today's state.
    let open = store.open_rollouts::<Scripted>().unwrap();
    assert_eq!(open.len(), 1);
    let o = &open[0];
    assert!(o.row.checkpoint_seq > 0 && o.row.checkpoint_seq < o.row.journal_len);
    let mut restored = Rollout::restore(o.checkpoint.clone()).unwrap();
    for (now, input) in o.inputs_to_replay().unwrap() {
        restored.handle(now, input).unwrap();
        while restored.poll_effect().is_some() {}
    }
    let json = |c: Checkpoint<Scripted>| serde_json::to_string(&c).unwrap();
    assert_eq!(json(restored.checkpoint()), json(d.rollout.checkpoint()));

    // A command shows up in the audit log with who, why and the ticket.
    let log = store.audit_for_rollout("r-1").unwrap();
    let paused = log.iter().find(|e| e.action == "rollout.pause").unwrap();
    assert_eq!(
        (paused.actor.as_str(), paused.reason.as_str()),
        ("bob", "bob says so")
    );
    assert_eq!(paused.ticket.as_deref(), Some("CHG-1"));
    assert_eq!(log[0].action, "rollout.start");
    assert!(log.iter().any(|e| e.action == "rollout.event"));

    // A reopened store sees the same.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.rollout("r-1").unwrap().unwrap(), row);
    assert_eq!(store.journal("r-1").unwrap(), journal);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn incidents_reviews_and_notifications_round_trip() {
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    store.set_id_seed(7);
    let mut d = Driver::start(&mut store, "r-em", "search", ChangeType::Emergency, 0);
    let (committed, _) = d
        .step(&mut store, Input::Tick, false, |_| vec![])
        .unwrap()
        .unwrap();
    assert_eq!(committed.reviews.len(), 1, "emergency opens a review");
    let review_id = committed.reviews[0].clone();
    let review = store.review(&review_id).unwrap().unwrap();
    assert_eq!(review.status, ReviewStatus::Open);
    assert_eq!(
        (review.ticket.as_str(), review.rollout_id.as_str()),
        ("INC-7", "r-em")
    );
    assert_eq!(store.open_reviews().unwrap(), vec![review.clone()]);

    // Data with the trigger firing arrives:
    // rollback, incident, two webhooks; then the router confirms 0%.
    // (The emergency bypass skips bakes, so the data comes before the ack
    // of 10%, which the router is slow to send.)
    d.unacked = None;
    let mut incident_id = None;
    let mut end_hooks = Vec::new();
    for _ in 0..3 {
        let input = d.next_input(true);
        if let Some((c, _)) = d.step(&mut store, input, false, |_| vec![]).unwrap() {
            end_hooks.extend(c.hooks.clone());
            if let Some(id) = c.incidents.first() {
                assert_eq!(c.notifications.len(), 2);
                incident_id = Some(id.clone());
            }
        }
        if d.rollout.phase().is_terminal() {
            break;
        }
    }
    let incident_id = incident_id.expect("the trigger opened an incident");
    assert_eq!(d.rollout.phase(), Phase::RolledBack);
    let incident = store.incident(&incident_id).unwrap().unwrap();
    assert_eq!(incident.rollout_id, "r-em");
    assert_eq!(incident.service, "search");
    assert_eq!(incident.trigger, "error-rate");
    assert_eq!(incident.severity, "sev2");
    assert_eq!(incident.policy_version, POLICY_VERSION);
    assert_eq!(incident.status, IncidentStatus::Open);
    assert_eq!(incident.evidence, json!("evidence for trigger 0"));
    let timeline = incident.timeline.as_array().unwrap();
    assert!(timeline.len() >= 2, "{timeline:?}");
    assert!(timeline.iter().all(|e| e.get("message").is_some()));
    // The router acknowledged weight 0 after the rollback.
    assert_eq!(
        incident.router_result,
        Some(json!({ "weight": 0, "error": null, "at": at(d.t) }))
    );
    let row = store.rollout("r-em").unwrap().unwrap();
    assert_eq!(row.outcome, Some(Phase::RolledBack));
    assert!(store.active_rollout("search").unwrap().is_none());
    assert!(store.open_rollouts::<Scripted>().unwrap().is_empty());
    assert_eq!(store.incidents().unwrap(), vec![incident.clone()]);
    assert_eq!(store.incidents_for_rollout("r-em").unwrap().len(), 1);

    // Lifecycle hooks: `onStart` was queued with the rollout, `onRolledBack`
    // by the step that ended it (and by no later step).
    let hooks = store.hook_runs_for_rollout("r-em").unwrap();
    let events: Vec<_> = hooks.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(events, ["onStart", "onRolledBack"]);
    assert_eq!(end_hooks, vec![hooks[1].id]);
    assert_eq!(store.pending_hook_runs().unwrap(), hooks);
    let h = store
        .record_hook_attempt(hooks[1].id, at(900), Err("exit 1".into()), false)
        .unwrap();
    assert_eq!((h.attempts, h.status), (1, HookStatus::Pending));
    let h = store
        .record_hook_attempt(hooks[1].id, at(901), Err("exit 1".into()), true)
        .unwrap();
    assert_eq!((h.attempts, h.status), (2, HookStatus::Failed));
    assert_eq!(h.last_error.as_deref(), Some("exit 1"));
    assert_eq!(h.done_at, Some(at(901)));
    let h = store
        .record_hook_attempt(hooks[0].id, at(902), Ok(()), false)
        .unwrap();
    assert_eq!(
        (h.attempts, h.status, h.last_error),
        (1, HookStatus::Ran, None)
    );
    assert!(store.pending_hook_runs().unwrap().is_empty());
    // A run that is done takes no further attempt.
    assert!(matches!(
        store.record_hook_attempt(hooks[0].id, at(903), Ok(()), false),
        Err(StoreError::NotFound { .. })
    ));

    // Webhooks: a failure is recorded and stays pending; a success delivers.
    let pending = store.pending_notifications().unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].target, "http://127.0.0.1:9/hooks/a");
    assert_eq!(pending[0].payload["incident"], json!(incident_id));
    let n = store
        .record_delivery(pending[0].id, at(900), Err("connection refused".into()))
        .unwrap();
    assert_eq!((n.attempts, n.delivered()), (1, false));
    assert_eq!(n.last_error.as_deref(), Some("connection refused"));
    let n = store
        .record_delivery(pending[0].id, at(960), Ok(()))
        .unwrap();
    assert_eq!((n.attempts, n.delivered(), n.last_error), (2, true, None));
    assert_eq!(store.pending_notifications().unwrap().len(), 1);
    assert_eq!(store.notifications_for_rollout("r-em").unwrap().len(), 2);

    // Reviews: the incident's and the emergency's, each once, with a note.
    assert!(matches!(
        store.review_incident(&incident_id, "carol", " ", at(1000)),
        Err(StoreError::Invalid(_))
    ));
    let reviewed = store
        .review_incident(&incident_id, "carol", "bad canary build", at(1000))
        .unwrap();
    assert_eq!(reviewed.status, IncidentStatus::Reviewed);
    assert_eq!(reviewed.reviewed_by.as_deref(), Some("carol"));
    assert!(
        store
            .review_incident(&incident_id, "carol", "again", at(1001))
            .is_err()
    );
    let closed = store
        .close_review(&review_id, "dave", "root cause fixed in v3", at(1100))
        .unwrap();
    assert_eq!(closed.status, ReviewStatus::Closed);
    assert_eq!(closed.closed_at, Some(at(1100)));
    assert!(store.open_reviews().unwrap().is_empty());
    assert!(matches!(
        store.close_review("rev-nope", "dave", "x", at(1100)),
        Err(StoreError::NotFound { .. })
    ));

    let actions: Vec<_> = store
        .audit_for_rollout("r-em")
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for expected in [
        "rollout.start",
        "review.open",
        "rollout.rollback",
        "incident.open",
        "incident.review",
        "review.close",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    // A new rollout of the service may start now that the last one ended.
    let d2 = Driver::start(&mut store, "r-2", "search", ChangeType::Standard, 2000);
    assert_eq!(d2.rollout.weight(), Weight::ZERO);
    assert!(store.verify().unwrap().is_ok());
}

/// Deliveries and hook runs behind one interface: one pending scan, and
/// one way to record an attempt, whose `last` closes a hook run but leaves
/// a delivery pending for the next start.
#[test]
fn the_outbox_is_one_interface_over_deliveries_and_hook_runs() {
    use canaryd::routers::hooks::HookEvent;
    use canaryd::store::{OutboxItem, OutboxRow};
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    store.set_id_seed(7);
    let mut d = Driver::start(&mut store, "r-em", "search", ChangeType::Emergency, 0);
    d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
    d.unacked = None;
    for _ in 0..3 {
        let input = d.next_input(true);
        d.step(&mut store, input, false, |_| vec![]).unwrap();
        if d.rollout.phase().is_terminal() {
            break;
        }
    }
    assert_eq!(d.rollout.phase(), Phase::RolledBack);

    let pending = store.pending_outbox().unwrap();
    let notifications = store.pending_notifications().unwrap();
    let hooks = store.pending_hook_runs().unwrap();
    let items: Vec<OutboxItem> = pending.iter().map(OutboxRow::item).collect();
    assert_eq!(
        items,
        [
            OutboxItem::Delivery(notifications[0].id),
            OutboxItem::Delivery(notifications[1].id),
            OutboxItem::Hook(hooks[0].id),
            OutboxItem::Hook(hooks[1].id),
        ]
    );
    assert!(
        pending
            .iter()
            .all(|r| r.is_pending() && r.rollout_id() == "r-em")
    );
    assert_eq!(
        store.outbox_row(items[2]).unwrap(),
        Some(OutboxRow::Hook(hooks[0].clone()))
    );
    assert_eq!(store.outbox_row(OutboxItem::Hook(9_999)).unwrap(), None);

    // A last failed attempt closes a hook run, not a delivery.
    let hook = store
        .record_outbox_attempt(items[3], at(900), Err("exit 1".into()), true)
        .unwrap();
    let OutboxRow::Hook(run) = &hook else {
        panic!("{hook:?}")
    };
    assert_eq!(
        (run.event, run.status),
        (HookEvent::OnRolledBack, HookStatus::Failed)
    );
    assert!(!hook.is_pending());
    let delivery = store
        .record_outbox_attempt(items[0], at(900), Err("refused".into()), true)
        .unwrap();
    assert_eq!(delivery.attempts(), 1);
    assert!(delivery.is_pending());
    let delivery = store
        .record_outbox_attempt(items[0], at(901), Ok(()), false)
        .unwrap();
    assert_eq!(delivery.attempts(), 2);
    assert!(!delivery.is_pending());
    let left: Vec<OutboxItem> = store
        .pending_outbox()
        .unwrap()
        .iter()
        .map(OutboxRow::item)
        .collect();
    assert_eq!(left, [items[1], items[2]]);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn edited_entry_is_named() {
    let (dir, _) = audited_dir();
    tamper(
        dir.path(),
        "UPDATE audit SET reason = 'nothing to see' WHERE seq = 17",
    );
    let v = verify_read_only(dir.path());
    assert_broken(&v, 17, Breakage::Edited);
    // The daemon refuses to append to a broken chain.
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::AuditBroken { .. }), "{err}");
    assert!(err.to_string().contains("entry 17"), "{err}");
}

#[test]
fn edited_details_are_named() {
    let (dir, _) = audited_dir();
    tamper(
        dir.path(),
        r#"UPDATE audit SET details = '{"i":23,"ratio":23.2}' WHERE seq = 23"#,
    );
    assert_broken(&verify_read_only(dir.path()), 23, Breakage::Edited);
}

#[test]
fn deleted_middle_entry_is_named() {
    let (dir, _) = audited_dir();
    tamper(dir.path(), "DELETE FROM audit WHERE seq = 17");
    let v = verify_read_only(dir.path());
    assert_broken(&v, 17, Breakage::Missing);
    assert!(v.broken.unwrap().detail.contains("missing"));
}

#[test]
fn deleted_and_renumbered_entries_are_named() {
    let (dir, _) = audited_dir();
    tamper(
        dir.path(),
        "DELETE FROM audit WHERE seq = 17;
         CREATE TEMP TABLE moved AS SELECT * FROM audit WHERE seq > 17;
         DELETE FROM audit WHERE seq > 17;
         INSERT INTO audit SELECT seq - 1, tx, at, actor, action, rollout_id, reason, ticket, details, mac FROM moved;",
    );
    assert_broken(&verify_read_only(dir.path()), 17, Breakage::Forged);
}

#[test]
fn forged_entry_at_the_end_is_named() {
    let (dir, _) = audited_dir();
    tamper(
        dir.path(),
        &format!(
            "INSERT INTO audit VALUES (41, 41, 1800000000000, 'mallory', 'rollout.approve', 'r-x',
                'approved', NULL, '{{}}', '{}')",
            "ab".repeat(32)
        ),
    );
    assert_broken(&verify_read_only(dir.path()), 41, Breakage::Forged);
}

#[test]
fn forged_entry_in_the_middle_is_named() {
    let (dir, _) = audited_dir();
    // Make room at 20 and insert a row with a mac from some other key.
    tamper(
        dir.path(),
        &format!(
            "CREATE TEMP TABLE moved AS SELECT * FROM audit WHERE seq >= 20;
             DELETE FROM audit WHERE seq >= 20;
             INSERT INTO audit SELECT seq + 1, tx, at, actor, action, rollout_id, reason, ticket, details, mac FROM moved;
             INSERT INTO audit VALUES (20, 16, 1800000000000, 'mallory', 'rollout.approve', 'r-x',
                'approved', NULL, '{{}}', '{}');",
            "cd".repeat(32)
        ),
    );
    assert_broken(&verify_read_only(dir.path()), 20, Breakage::Forged);
}

#[test]
fn truncated_tail_is_named() {
    let (dir, _) = audited_dir();
    tamper(dir.path(), "DELETE FROM audit WHERE seq > 35");
    let v = verify_read_only(dir.path());
    assert_broken(&v, 36, Breakage::Truncated);
    assert!(v.broken.unwrap().detail.contains("records entry 40"));
    // Emptying the log is truncation too.
    tamper(dir.path(), "DELETE FROM audit");
    assert_broken(&verify_read_only(dir.path()), 1, Breakage::Truncated);
    assert!(Store::open(dir.path()).is_err());
}

#[test]
fn an_older_head_file_is_named() {
    let (dir, heads) = audited_dir();
    // The head as it was after the 5th transaction (entry 25): the log is
    // three transactions ahead, which no crash can cause.
    fs::write(dir.path().join("audit.head"), &heads[4]).unwrap();
    let v = verify_read_only(dir.path());
    // Entries 26..=30 could be a crash's last transaction; 31 cannot.
    assert_broken(&v, 31, Breakage::HeadStale);
    assert!(Store::open(dir.path()).is_err());
}

#[test]
fn a_head_file_that_does_not_match_the_log_is_named() {
    let (dir, heads) = audited_dir();
    let forged = heads[7].replace(&heads[7][heads[7].len() - 9..], "00000000\n");
    fs::write(dir.path().join("audit.head"), forged).unwrap();
    assert_broken(&verify_read_only(dir.path()), 40, Breakage::HeadMismatch);
}

#[test]
fn a_head_in_the_middle_of_a_transaction_is_named() {
    let (dir, heads) = audited_dir();
    // Entry 23 is real, but the 5th transaction (21..=25) did not end there.
    let mac = Store::open_read_only(dir.path())
        .unwrap()
        .audit_log()
        .unwrap()[22]
        .mac
        .clone();
    let head = format!("canaryd audit head v1\nseq 23\nmac {mac}\n");
    assert_eq!(heads[0].lines().next(), head.lines().next());
    fs::write(dir.path().join("audit.head"), head).unwrap();
    assert_broken(&verify_read_only(dir.path()), 23, Breakage::HeadMismatch);
}

#[test]
fn a_missing_head_file_is_named() {
    let (dir, _) = audited_dir();
    fs::remove_file(dir.path().join("audit.head")).unwrap();
    assert_broken(&verify_read_only(dir.path()), 40, Breakage::HeadMissing);
}

#[test]
fn another_key_breaks_the_first_entry() {
    let (dir, _) = audited_dir();
    fs::write(dir.path().join("audit.key"), [7u8; 32]).unwrap();
    let v = verify_read_only(dir.path());
    assert_eq!(v.broken.unwrap().seq, 1);
}

#[test]
fn a_missing_key_is_an_error_once_entries_exist() {
    let (dir, _) = audited_dir();
    fs::remove_file(dir.path().join("audit.key")).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("40 entries"), "{err}");
    assert!(Store::open_read_only(dir.path()).unwrap().verify().is_err());
}

#[test]
fn the_crash_window_is_accepted_and_healed_on_open() {
    let (dir, heads) = audited_dir();
    // A crash after the last commit, before its head write: the head file
    // is one transaction (5 entries) behind, and those entries chain on.
    fs::write(dir.path().join("audit.head"), &heads[6]).unwrap();
    let v = verify_read_only(dir.path());
    assert!(v.is_ok(), "{v:?}");
    assert_eq!((v.ahead_of_head, v.last.seq), (5, 40));
    // Opening brings the head up to date.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.audit_head().seq, 40);
    drop(store);
    assert_eq!(
        fs::read_to_string(dir.path().join("audit.head")).unwrap(),
        heads[7]
    );
    assert_eq!(verify_read_only(dir.path()).ahead_of_head, 0);
}

#[test]
fn tampering_while_the_daemon_runs_stops_its_next_append() {
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    store.append_audit(&[note(2), note(3), note(4)]).unwrap();
    tamper(dir.path(), "DELETE FROM audit WHERE seq = 4");
    let err = store.append_audit(&[note(5)]).unwrap_err();
    assert!(matches!(err, StoreError::AuditBroken { .. }), "{err}");
    // Nothing was appended over the evidence.
    assert_eq!(store.audit_log().unwrap().len(), 3);
    assert_broken(&verify_read_only(dir.path()), 4, Breakage::Truncated);
}

#[test]
fn the_audit_log_reads_back_as_written() {
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    let written: Vec<_> = (1..=6).map(note).collect();
    store.append_audit(&written[..2]).unwrap();
    store.append_audit(&written[2..]).unwrap();
    let log = store.audit_log().unwrap();
    assert_eq!(log.len(), 7);
    assert_eq!(log[0].action, "audit.genesis");
    let log = &log[1..];
    for (i, (e, w)) in log.iter().zip(&written).enumerate() {
        assert_eq!(e.seq, i as u64 + 2);
        assert_eq!(e.tx, if i < 2 { 2 } else { 4 });
        assert_eq!(
            (
                &e.actor,
                &e.action,
                &e.rollout_id,
                &e.reason,
                &e.ticket,
                &e.details,
                e.at
            ),
            (
                &w.actor,
                &w.action,
                &w.rollout_id,
                &w.reason,
                &w.ticket,
                &w.details,
                w.at
            )
        );
        assert_eq!(e.mac.len(), 64);
    }
    assert_eq!(store.audit_head().mac_hex(), log[5].mac);
}

/// Commit latency with synchronous=FULL (fsync of the WAL, then of the head
/// file and its directory) on this machine's disk. Not a pass/fail test:
/// `cargo test --test store commit_latency -- --ignored --nocapture`.
#[test]
#[ignore]
fn commit_latency() {
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    let mut d = Driver::start(&mut store, "r-lat", "svc", ChangeType::Standard, 0);
    // Steps that append audit entries also replace the head file (two more
    // fsyncs); data steps with no event write only SQLite.
    let (mut with_head, mut sqlite_only) = (Vec::new(), Vec::new());
    for _ in 0..400 {
        let input = d.next_input(false);
        let before = store.audit_head();
        #[allow(clippy::disallowed_methods)] // a measurement, not the core
        let start = std::time::Instant::now();
        d.step(&mut store, input, false, |_| vec![]).unwrap();
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if store.audit_head() == before {
            sqlite_only.push(ms);
        } else {
            with_head.push(ms);
        }
        if d.rollout.phase().is_terminal() {
            let id = format!("r-lat{}", with_head.len() + sqlite_only.len());
            d = Driver::start(&mut store, &id, "svc", ChangeType::Standard, d.t + 60);
        }
    }
    for (what, mut samples) in [
        ("SQLite only", sqlite_only),
        ("SQLite + audit + head file", with_head),
    ] {
        if samples.is_empty() {
            continue;
        }
        samples.sort_by(f64::total_cmp);
        let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
        eprintln!(
            "commit_step, {what}, {} steps: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            samples.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    }
}

/// The real statistics carry f64 state: a checkpoint stored as JSON text in
/// SQLite must restore bit for bit, so replaying the journal after it gives
/// exactly the live rollout's state.
#[test]
fn a_monitor_checkpoint_restores_exactly_through_the_store() {
    use canaryd::engine::RolloutSpec;
    use canaryd::monitor::Monitor;
    use canaryd::policy::parse_policy;
    use canaryd::stats::IntervalSnapshot;
    use canaryd::store::EngineStep;
    use canaryd::time::Timestamp;

    const POLICY: &str = "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: exact }
spec:
  analysis: { interval: 1s, alpha: 0.01, minSamples: 1000000000, maxDuration: 24h }
  steps: [ { setWeight: 10 }, { bake: 24h }, { setWeight: 100 } ]
  metrics:
    ctr: { kind: ratio, numerator: clicks, denominator: impressions }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - { name: ctr-drop, metric: ctr, vsBaseline: { relativeDrop: 2% } }
    - { name: p95, metric: latency, quantile: 0.95, vsBaseline: { relativeIncrease: 10% } }
";
    let snapshot = |i: u64| {
        let mut s = IntervalSnapshot::new(
            Timestamp::from_millis(i * 1000),
            Timestamp::from_millis((i + 1) * 1000),
        );
        for (arm, n) in [(&mut s.baseline, 900u64), (&mut s.canary, 100u64)] {
            arm.add("impressions", n);
            arm.add("clicks", n / 20 + i % 3);
            let h = arm.latency_mut("latency_ms");
            for k in 0..n {
                h.record_us(20_000 + (k * 7919 + i) % 180_000);
            }
        }
        s
    };
    let policy = parse_policy("exact.yaml", POLICY.as_bytes()).unwrap();
    let monitor = Monitor::new(&policy).unwrap();
    let spec = RolloutSpec {
        id: "r-exact".into(),
        service: "svc".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
        change_type: ChangeType::Standard,
        dry_run: false,
        started_by: "alice".into(),
        reason: None,
        ticket: None,
    };
    let mut rollout = Rollout::new(spec, policy, monitor, Timestamp::EPOCH).unwrap();
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .create_rollout(&rollout, POLICY_VERSION, Timestamp::EPOCH)
        .unwrap();
    let mut inputs = vec![
        (0, Input::Tick),
        (
            0,
            Input::RouterAck {
                weight: Weight::new(10).unwrap(),
                error: None,
            },
        ),
    ];
    inputs.extend((0..90).map(|i| {
        (
            i + 1,
            Input::Data {
                snapshot: snapshot(i),
            },
        )
    }));
    for (i, (t, input)) in inputs.into_iter().enumerate() {
        let now = Timestamp::from_millis(t * 1000);
        rollout.handle(now, input.clone()).unwrap();
        let mut effects = Vec::new();
        while let Some(e) = rollout.poll_effect() {
            effects.push(e);
        }
        store
            .commit_step(&EngineStep {
                at: now,
                input: &input,
                effects: &effects,
                rollout: &rollout,
                checkpoint: i == 45,
                audit: &[],
            })
            .unwrap();
    }
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let open = store.open_rollouts::<Monitor>().unwrap();
    let o = &open[0];
    // The checkpoint was taken after the 46th of 92 steps; 46 remain.
    let journal = store.journal("r-exact").unwrap();
    let inputs_upto = |seq: u64| {
        journal
            .iter()
            .filter(|e| e.kind == JournalKind::Input && e.seq <= seq)
            .count()
    };
    assert_eq!(inputs_upto(o.row.checkpoint_seq), 46);
    assert_eq!(o.inputs_to_replay().unwrap().len(), 46);
    let mut restored = Rollout::restore(o.checkpoint.clone()).unwrap();
    for (now, input) in o.inputs_to_replay().unwrap() {
        restored.handle(now, input).unwrap();
        while restored.poll_effect().is_some() {}
    }
    assert_eq!(
        serde_json::to_string(&restored.checkpoint()).unwrap(),
        serde_json::to_string(&rollout.checkpoint()).unwrap()
    );
}

#[test]
fn the_journal_and_audit_log_refuse_updates_and_deletes() {
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    let mut d = Driver::start(&mut store, "r-1", "svc", ChangeType::Standard, 0);
    d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("canaryd.db")).unwrap();
    for sql in [
        "UPDATE audit SET reason = 'x' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 1",
        "UPDATE journal SET body = '{}' WHERE seq = 1",
        "DELETE FROM journal WHERE seq = 1",
    ] {
        let err = conn.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

/// The daemon moves the store to its own thread.
#[test]
fn the_store_can_move_to_a_dedicated_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
}

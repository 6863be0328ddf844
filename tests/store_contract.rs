//! The store contract: what the daemon relies on from its store, run
//! against both engines, SQLite in a temp dir and a real PostgreSQL server
//! on loopback (`pg_support`). Each test is written once as a function of
//! the [`Engine`] and run as `sqlite::NAME` and `postgres::NAME`; what only
//! PostgreSQL has (several daemons on one database, a server that goes
//! away, the head kept as a row) is in `postgres_only`. What only a SQLite
//! data dir has (its lock, the head and key files, migrations from older
//! files, WAL readers, vacuum) stays in `tests/store.rs` and
//! `tests/store_retention.rs`.

use std::time::Duration;

use canaryd::engine::{Checkpoint, Command, Effect, Input, Phase, Rollout};
use canaryd::policy::{ChangeType, Weight};
use canaryd::store::{
    Ages, Breakage, Budget, HookStatus, IncidentStatus, JournalKind, NewAudit, ReviewStatus,
    SCHEMA_VERSION, Store, StoreError, Verification,
};
use serde_json::json;

mod pg_support;
// The engine under test (a binary's own: it needs `store_support`).
#[path = "pg_support/engine.rs"]
mod engine;
mod store_support;
mod support;
use engine::Engine;
use store_support::{Driver, POLICY_VERSION, actor, append_forty, assert_broken, at, holds, note};
use support::scripted::Scripted;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&super::Engine::sqlite())
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&super::Engine::postgres())
            })*
        }
    };
}

contract!(
    rollouts_journal_and_checkpoints_round_trip_and_restore,
    incidents_reviews_and_notifications_round_trip,
    the_outbox_is_one_interface_over_deliveries_and_hook_runs,
    registry_watches_and_versions_round_trip,
    rollouts_are_paged_newest_first_by_key,
    events_and_newest_inputs_are_read_from_the_journal,
    the_last_notice_of_a_rollout_is_found_by_kind,
    the_audit_log_reads_back_as_written,
    a_monitor_checkpoint_restores_exactly_through_the_store,
    a_read_only_store_sees_commits_and_refuses_writes,
    a_newer_schema_is_refused_with_its_version,
    edited_entry_is_named,
    edited_details_are_named,
    deleted_middle_entry_is_named,
    deleted_and_renumbered_entries_are_named,
    forged_entry_at_the_end_is_named,
    forged_entry_in_the_middle_is_named,
    truncated_tail_is_named,
    another_key_breaks_the_first_entry,
    tampering_while_the_daemon_runs_stops_its_next_append,
    an_own_last_entry_edited_stops_the_next_append,
    the_journal_and_audit_log_refuse_updates_and_deletes,
    journals_of_ended_rollouts_go_and_the_chain_still_verifies,
    whole_rollouts_and_the_oldest_entries_go_and_the_chain_still_verifies,
    an_edited_kept_entry_is_named_after_pruning,
    a_deleted_kept_entry_is_named_after_pruning,
    kept_entries_deleted_beside_the_pruned_ones_are_named,
    a_forged_anchor_is_named,
    an_edited_anchor_is_named,
    a_kept_rollout_deleted_without_an_anchor_is_named,
    deletes_outside_pruning_are_refused,
    nothing_is_pruned_before_its_age_or_when_kept_forever,
    a_rollout_with_a_pending_delivery_stays_until_it_is_done,
    an_edited_outcome_is_named_and_the_store_refuses_to_act_on_it,
    a_deleted_rollout_row_is_named,
    a_log_from_another_store_is_named,
);

/// The daemon moves the store to its own thread.
#[test]
fn the_store_can_move_to_a_dedicated_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
}

fn verify_read_only(e: &Engine) -> Verification {
    e.open_read_only().verify().unwrap()
}

/// A store whose audit log holds 40 entries: the genesis (entry 1, its
/// own transaction), then `note(i)` as entry `i`, written by transactions
/// that end at entries 5, 10, ..., 40 (2..=5, then 5 each).
fn audited(e: &Engine) {
    append_forty(&mut e.open(), |_| {});
}

fn rollouts_journal_and_checkpoints_round_trip_and_restore(e: &Engine) {
    let mut store = e.open();
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
    for (i, entry) in journal.iter().enumerate() {
        assert_eq!(entry.seq, i as u64 + 1);
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
    let store = e.open();
    assert_eq!(store.rollout("r-1").unwrap().unwrap(), row);
    assert_eq!(store.journal("r-1").unwrap(), journal);
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
    let v = e.open_read_only().verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
}

fn registry_watches_and_versions_round_trip(e: &Engine) {
    use canaryd::store::registry::{VersionRow, VersionStatus};
    let mut store = e.open();
    assert_eq!(store.registry_watch("m/prod").unwrap(), None);
    let moved = |reason: &str| {
        vec![NewAudit {
            at: at(1),
            actor: "registry".into(),
            action: "registry.moved".into(),
            rollout_id: None,
            reason: reason.into(),
            ticket: None,
            details: json!({}),
        }]
    };
    store
        .registry_set_watch("m/prod", Some("3"), Some("2"), at(1), moved("first sight"))
        .unwrap();
    store
        .registry_set_watch("m/prod", Some("4"), Some("2"), at(2), moved("to 4"))
        .unwrap();
    let watch = store.registry_watch("m/prod").unwrap().unwrap();
    assert_eq!(
        (watch.current.as_deref(), watch.stable.as_deref()),
        (Some("4"), Some("2"))
    );
    let event = json!({ "model": "m", "version": "4" });
    store
        .registry_intend("m/prod", "4", "2", "moved to 4", &event, at(3), vec![])
        .unwrap();
    // A version is intended at most once, and says so on both engines.
    let err = store
        .registry_intend("m/prod", "4", "2", "again", &event, at(4), vec![])
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("version 4"), "{err}");
    store
        .registry_intend(
            "m/prod",
            "5",
            "2",
            "moved to 5",
            &json!(null),
            at(5),
            vec![],
        )
        .unwrap();
    Driver::start(&mut store, "r-reg", "m", ChangeType::Standard, 6);
    store
        .registry_set_version(
            "m/prod",
            "4",
            VersionStatus::Started,
            Some("r-reg"),
            None,
            at(7),
            vec![],
        )
        .unwrap();
    store
        .registry_set_version(
            "m/prod",
            "4",
            VersionStatus::Ended,
            None,
            Some("promoted"),
            at(8),
            vec![],
        )
        .unwrap();
    store
        .registry_tags_written("m/prod", "4", at(9), vec![])
        .unwrap();
    store
        .registry_set_version(
            "m/prod",
            "5",
            VersionStatus::Skipped,
            None,
            None,
            at(10),
            vec![],
        )
        .unwrap();
    let versions = store.registry_versions("m/prod").unwrap();
    assert_eq!(
        versions,
        [
            VersionRow {
                watch: "m/prod".into(),
                version: "4".into(),
                baseline: "2".into(),
                reason: "moved to 4".into(),
                status: VersionStatus::Ended,
                rollout_id: Some("r-reg".into()),
                outcome: Some("promoted".into()),
                event,
                tags_written: true,
            },
            VersionRow {
                watch: "m/prod".into(),
                version: "5".into(),
                baseline: "2".into(),
                reason: "moved to 5".into(),
                status: VersionStatus::Skipped,
                rollout_id: None,
                outcome: None,
                event: json!(null),
                tags_written: false,
            },
        ]
    );
    assert!(store.registry_versions("other").unwrap().is_empty());
    let log = store.audit_log().unwrap();
    assert_eq!(
        log.iter().filter(|a| a.action == "registry.moved").count(),
        2
    );
    holds(&store.verify().unwrap());
}

fn rollouts_are_paged_newest_first_by_key(e: &Engine) {
    let mut store = e.open();
    store.set_id_seed(3);
    rolled_back(&mut store, "r-1", "a", 0);
    rolled_back(&mut store, "r-2", "b", 1000);
    rolled_back(&mut store, "r-3", "a", 2000);
    Driver::start(&mut store, "r-4", "b", ChangeType::Standard, 3000);
    Driver::start(&mut store, "r-5", "a", ChangeType::Standard, 3000);
    let ids = |rows: Vec<canaryd::store::RolloutRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.id).collect()
    };
    let page = |service, phase, after, limit| {
        ids(store.rollouts_page(service, phase, after, limit).unwrap())
    };
    assert_eq!(page(None, None, None, 2), ["r-5", "r-4"]);
    assert_eq!(page(None, None, Some((at(3000), "r-4")), 2), ["r-3", "r-2"]);
    assert_eq!(page(None, None, Some((at(1000), "r-2")), 2), ["r-1"]);
    assert_eq!(page(Some("a"), None, None, 10), ["r-5", "r-3", "r-1"]);
    let rolled_back = Phase::RolledBack.as_str();
    assert_eq!(
        page(None, Some(rolled_back), None, 10),
        ["r-3", "r-2", "r-1"]
    );
    assert_eq!(page(Some("b"), Some("pending"), None, 10), ["r-4"]);
    assert!(page(Some("nope"), None, None, 10).is_empty());
    assert_eq!(
        ids(store.rollouts().unwrap()),
        ["r-1", "r-2", "r-3", "r-4", "r-5"]
    );
    assert_eq!(store.active_rollout("a").unwrap().unwrap().id, "r-5");
}

fn events_and_newest_inputs_are_read_from_the_journal(e: &Engine) {
    let mut store = e.open();
    let mut d = Driver::start(&mut store, "r-1", "checkout", ChangeType::Standard, 0);
    d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
    for _ in 0..14 {
        let input = d.next_input(false);
        d.step(&mut store, input, false, |_| vec![]).unwrap();
    }
    let journal = store.journal("r-1").unwrap();
    let events: Vec<(u64, serde_json::Value)> = journal
        .iter()
        .filter(|j| j.kind == JournalKind::Effect)
        .filter_map(|j| match j.decode_effect::<String>().unwrap() {
            Effect::Notify(event) => Some((j.seq, serde_json::to_value(event).unwrap())),
            _ => None,
        })
        .collect();
    assert!(events.len() >= 3, "{events:?}");
    let read = |after, up_to| -> Vec<(u64, serde_json::Value)> {
        store
            .events_between("r-1", after, up_to)
            .unwrap()
            .into_iter()
            .map(|(seq, event)| (seq, serde_json::to_value(event).unwrap()))
            .collect()
    };
    assert_eq!(read(0, u64::MAX), events);
    let (first, second) = (events[0].0, events[1].0);
    assert_eq!(read(first, second), [events[1].clone()]);
    assert!(read(second, second).is_empty());

    let inputs_of = |kind: &str| -> Vec<(u64, canaryd::time::Timestamp)> {
        let prefix = format!("{{\"input\":\"{kind}\"");
        journal
            .iter()
            .filter(|j| j.kind == JournalKind::Input && j.body.starts_with(&prefix))
            .map(|j| (j.seq, j.at))
            .collect()
    };
    let newest = |kind, since, limit| -> Vec<(u64, canaryd::time::Timestamp)> {
        store
            .journal_inputs_newest("r-1", kind, since, limit)
            .unwrap()
            .into_iter()
            .map(|j| (j.seq, j.at))
            .collect()
    };
    let data = inputs_of("data");
    assert!(data.len() >= 10, "{data:?}");
    let expected: Vec<_> = data.iter().rev().take(4).copied().collect();
    assert_eq!(newest("data", at(0), 4), expected);
    let since = data[data.len() - 2].1;
    assert_eq!(newest("data", since, 10).len(), 2);
    let acks = inputs_of("router-ack");
    assert!(!acks.is_empty());
    assert_eq!(
        newest("router-ack", at(0), 100),
        acks.iter().rev().copied().collect::<Vec<_>>()
    );
    assert!(newest("command", at(0), 100).is_empty());
}

fn the_last_notice_of_a_rollout_is_found_by_kind(e: &Engine) {
    use canaryd::store::{EngineStep, NewNotice};
    let mut store = e.open();
    let mut d = Driver::start(&mut store, "r-1", "checkout", ChangeType::Standard, 0);
    d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
    let notice = |event: &str| NewNotice {
        receiver: "ops".into(),
        target: "http://127.0.0.1:9/ops".into(),
        event: event.into(),
        payload: json!({ "event": event }).to_string(),
    };
    for kinds in [vec!["degraded"], vec!["recovered", "step"], vec!["step"]] {
        let input = d.next_input(false);
        let now = at(d.t);
        d.rollout.handle(now, input.clone()).unwrap();
        let mut effects = Vec::new();
        while let Some(effect) = d.rollout.poll_effect() {
            effects.push(effect);
        }
        let prepared = EngineStep {
            at: now,
            input: &input,
            effects: &effects,
            rollout: &d.rollout,
            checkpoint: false,
            audit: &[],
        }
        .prepare()
        .unwrap()
        .with_notices(kinds.iter().map(|k| notice(k)).collect());
        let committed = store.commit_prepared(&[prepared]).unwrap();
        assert_eq!(committed[0].notifications.len(), kinds.len());
    }
    let last = |kinds: &[&str]| store.last_notice_of("r-1", kinds).unwrap();
    assert_eq!(
        last(&["degraded", "recovered"]).as_deref(),
        Some("recovered")
    );
    assert_eq!(last(&["degraded"]).as_deref(), Some("degraded"));
    assert_eq!(last(&["step", "degraded"]).as_deref(), Some("step"));
    assert_eq!(last(&["paused"]), None);
    assert_eq!(store.last_notice_of("r-2", &["step"]).unwrap(), None);
    let sent = store.notifications_for_rollout("r-1").unwrap();
    assert_eq!(sent.len(), 4);
    assert_eq!(
        (
            sent[0].receiver.as_deref(),
            sent[0].event.as_deref(),
            sent[0].incident_id.as_deref()
        ),
        (Some("ops"), Some("degraded"), None)
    );
    assert_eq!(sent[0].payload, json!({ "event": "degraded" }));
}

fn a_read_only_store_sees_commits_and_refuses_writes(e: &Engine) {
    let mut store = e.open();
    let mut reader = e.open_read_only();
    store.append_audit(&[note(2), note(3)]).unwrap();
    let v = reader.verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.entries, 3);
    assert!(reader.is_read_only());
    assert!(matches!(
        reader.append_audit(&[note(4)]),
        Err(StoreError::ReadOnly)
    ));
    // Reading where no store was ever opened is a clear error, not an
    // empty answer.
    let empty = e.fresh();
    let err = empty.try_open_read_only().unwrap_err();
    assert!(matches!(err, StoreError::NoState { .. }), "{err}");
    assert!(err.to_string().contains("no canaryd state"), "{err}");
}

/// Someone edits the last entry this daemon wrote: its next append would
/// chain onto the edit and bury it, so it refuses.
fn an_own_last_entry_edited_stops_the_next_append(e: &Engine) {
    let mut store = e.open();
    store.append_audit(&[note(2), note(3)]).unwrap();
    e.tamper("UPDATE audit SET reason = 'nothing to see' WHERE seq = 3");
    let err = store.append_audit(&[note(4)]).unwrap_err();
    assert!(matches!(err, StoreError::AuditBroken { .. }), "{err}");
    assert!(err.to_string().contains("entry 3"), "{err}");
    assert_eq!(store.audit_log().unwrap().len(), 3);
    assert_broken(&verify_read_only(e), 3, Breakage::Forged);
}

fn incidents_reviews_and_notifications_round_trip(e: &Engine) {
    let mut store = e.open();
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
fn the_outbox_is_one_interface_over_deliveries_and_hook_runs(e: &Engine) {
    use canaryd::routers::hooks::HookEvent;
    use canaryd::store::{OutboxItem, OutboxRow};
    let mut store = e.open();
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

fn edited_entry_is_named(e: &Engine) {
    audited(e);
    e.tamper("UPDATE audit SET reason = 'nothing to see' WHERE seq = 17");
    let v = verify_read_only(e);
    assert_broken(&v, 17, Breakage::Edited);
    // The daemon refuses to append to a broken chain.
    let err = e.try_open().unwrap_err();
    assert!(matches!(err, StoreError::AuditBroken { .. }), "{err}");
    assert!(err.to_string().contains("entry 17"), "{err}");
}

fn edited_details_are_named(e: &Engine) {
    audited(e);
    e.tamper(r#"UPDATE audit SET details = '{"i":23,"ratio":23.2}' WHERE seq = 23"#);
    assert_broken(&verify_read_only(e), 23, Breakage::Edited);
}

fn deleted_middle_entry_is_named(e: &Engine) {
    audited(e);
    e.tamper("DELETE FROM audit WHERE seq = 17");
    let v = verify_read_only(e);
    assert_broken(&v, 17, Breakage::Missing);
    assert!(v.broken.unwrap().detail.contains("missing"));
}

fn deleted_and_renumbered_entries_are_named(e: &Engine) {
    audited(e);
    e.tamper("DELETE FROM audit WHERE seq = 17;
         CREATE TEMP TABLE moved AS SELECT * FROM audit WHERE seq > 17;
         DELETE FROM audit WHERE seq > 17;
         INSERT INTO audit SELECT seq - 1, tx, at, actor, action, rollout_id, reason, ticket, details, mac FROM moved;",
    );
    assert_broken(&verify_read_only(e), 17, Breakage::Forged);
}

fn forged_entry_at_the_end_is_named(e: &Engine) {
    audited(e);
    e.tamper(&format!(
        "INSERT INTO audit VALUES (41, 41, 1800000000000, 'mallory', 'rollout.approve', 'r-x',
                'approved', NULL, '{{}}', '{}')",
        "ab".repeat(32)
    ));
    assert_broken(&verify_read_only(e), 41, Breakage::Forged);
}

fn forged_entry_in_the_middle_is_named(e: &Engine) {
    audited(e);
    // Make room at 20 and insert a row with a mac from some other key.
    e.tamper(&format!(
            "CREATE TEMP TABLE moved AS SELECT * FROM audit WHERE seq >= 20;
             DELETE FROM audit WHERE seq >= 20;
             INSERT INTO audit SELECT seq + 1, tx, at, actor, action, rollout_id, reason, ticket, details, mac FROM moved;
             INSERT INTO audit VALUES (20, 16, 1800000000000, 'mallory', 'rollout.approve', 'r-x',
                'approved', NULL, '{{}}', '{}');",
            "cd".repeat(32)
        ),
    );
    assert_broken(&verify_read_only(e), 20, Breakage::Forged);
}

fn truncated_tail_is_named(e: &Engine) {
    audited(e);
    e.tamper("DELETE FROM audit WHERE seq > 35");
    let v = verify_read_only(e);
    assert_broken(&v, 36, Breakage::Truncated);
    assert!(v.broken.unwrap().detail.contains("records entry 40"));
    // Emptying the log is truncation too.
    e.tamper("DELETE FROM audit");
    assert_broken(&verify_read_only(e), 1, Breakage::Truncated);
    assert!(e.try_open().is_err());
}

fn another_key_breaks_the_first_entry(e: &Engine) {
    audited(e);
    // Both engines read the key from this file (SQLite's data dir, the
    // file PostgreSQL's configuration names).
    std::fs::write(e.dir().join("audit.key"), [9u8; 32]).unwrap();
    let v = verify_read_only(e);
    assert_eq!(v.broken.unwrap().seq, 1);
}

fn tampering_while_the_daemon_runs_stops_its_next_append(e: &Engine) {
    let mut store = e.open();
    store.append_audit(&[note(2), note(3), note(4)]).unwrap();
    e.tamper("DELETE FROM audit WHERE seq = 4");
    let err = store.append_audit(&[note(5)]).unwrap_err();
    assert!(matches!(err, StoreError::AuditBroken { .. }), "{err}");
    // Nothing was appended over the evidence.
    assert_eq!(store.audit_log().unwrap().len(), 3);
    assert_broken(&verify_read_only(e), 4, Breakage::Truncated);
}

fn the_audit_log_reads_back_as_written(e: &Engine) {
    let mut store = e.open();
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

/// The real statistics carry f64 state: a checkpoint stored as JSON text in
/// SQLite must restore bit for bit, so replaying the journal after it gives
/// exactly the live rollout's state.
fn a_monitor_checkpoint_restores_exactly_through_the_store(e: &Engine) {
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
    let mut store = e.open();
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
    let store = e.open();
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

fn the_journal_and_audit_log_refuse_updates_and_deletes(e: &Engine) {
    let mut store = e.open();
    let mut d = Driver::start(&mut store, "r-1", "svc", ChangeType::Standard, 0);
    d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
    drop(store);
    for sql in [
        "UPDATE audit SET reason = 'x' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 1",
        "UPDATE journal SET body = '{}' WHERE seq = 1",
        "DELETE FROM journal WHERE seq = 1",
    ] {
        let err = e.raw(sql).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

fn a_newer_schema_is_refused_with_its_version(e: &Engine) {
    drop(e.open());
    e.tamper("UPDATE schema_version SET version = 99");
    let err = e.try_open().unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("schema version 99 is newer"),
        "{err}"
    );
    let err = e.try_open_read_only().unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

const SECOND: Duration = Duration::from_secs(1);

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

/// A store with history: four rollouts rolled back by their trigger
/// (each with an incident and, emergencies, a post-incident review),
/// then `r-std` started and still active, whose hooks ran and webhooks
/// were delivered (as the daemon's outbox does).
fn churned(e: &Engine) -> Store {
    let mut store = e.open();
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
    e.outbox_done();
    store
}

fn journals_of_ended_rollouts_go_and_the_chain_still_verifies(e: &Engine) {
    let mut store = churned(e);
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
    holds(&e.open().verify().unwrap());
    holds(&e.open_read_only().verify().unwrap());
}

fn whole_rollouts_and_the_oldest_entries_go_and_the_chain_still_verifies(e: &Engine) {
    let mut store = churned(e);
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
    let mut store = e.open();
    rolled_back(&mut store, "r-e", "e", 50_000);
    holds(&store.verify().unwrap());
    holds(&e.open_read_only().verify().unwrap());
}

/// A store pruned of everything that may go, and its first kept entry.
fn pruned(e: &Engine) -> u64 {
    let mut store = churned(e);
    prune_all(&mut store, &all(true, true, true), Budget::default());
    holds(&store.verify().unwrap());
    store.audit_log().unwrap()[0].seq
}

fn an_edited_kept_entry_is_named_after_pruning(e: &Engine) {
    let first = pruned(e);
    e.tamper(&format!(
        "UPDATE audit SET reason = 'nothing to see' WHERE seq = {}",
        first + 2
    ));
    assert_broken(&verify_read_only(e), first + 2, Breakage::Edited);
}

fn a_deleted_kept_entry_is_named_after_pruning(e: &Engine) {
    let first = pruned(e);
    e.tamper(&format!("DELETE FROM audit WHERE seq = {}", first + 2));
    assert_broken(&verify_read_only(e), first + 2, Breakage::Missing);
}

fn kept_entries_deleted_beside_the_pruned_ones_are_named(e: &Engine) {
    let first = pruned(e);
    // The oldest kept entries go too, as if pruning had taken them.
    e.tamper(&format!("DELETE FROM audit WHERE seq <= {}", first + 1));
    assert_broken(&verify_read_only(e), first, Breakage::Missing);
}

fn a_forged_anchor_is_named(e: &Engine) {
    let first = pruned(e);
    let log = e.open_read_only().audit_log().unwrap();
    let last = log.last().unwrap().seq;
    // Someone without the key removes the active rollout and writes an
    // anchor that says retention took it (any mac: they cannot compute
    // the right one), and moves the head file to match.
    e.tamper(&format!(
            "DELETE FROM journal WHERE rollout_id = 'r-std';
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
    e.set_head(Some((last + 1, &"ab".repeat(32))));
    assert_broken(&verify_read_only(e), last + 1, Breakage::Forged);
    assert!(first > 1);
}

fn an_edited_anchor_is_named(e: &Engine) {
    pruned(e);
    let store = e.open_read_only();
    let anchor = store
        .audit_log()
        .unwrap()
        .into_iter()
        .rfind(|e| e.action == "audit.prune" && e.details.get("rollouts").is_some())
        .expect("a rollouts anchor is kept");
    drop(store);
    // It now also claims the active rollout went, whose row is removed.
    e.tamper(&format!(
        "DELETE FROM journal WHERE rollout_id = 'r-std';
             DELETE FROM hook_runs WHERE rollout_id = 'r-std';
             DELETE FROM rollouts WHERE id = 'r-std';
             UPDATE audit SET details = {}
             WHERE seq = {}",
        e.pick(
            r#"json_insert(details, '$.rollouts[#]',
                     json('{"rollout":"r-std","incidents":0,"reviews":0}'))"#,
            r#"jsonb_insert(details::jsonb, '{rollouts,-1}',
                     '{"rollout":"r-std","incidents":0,"reviews":0}', true)::text"#
        ),
        anchor.seq
    ));
    // Edited when an entry follows it (its mac is what the next chains
    // from), Forged when it is the last; named either way.
    let v = verify_read_only(e);
    let link = v.broken.expect("broken");
    assert_eq!(link.seq, anchor.seq, "{link}");
    assert!(
        matches!(link.kind, Breakage::Edited | Breakage::Forged),
        "{link}"
    );
}

fn a_kept_rollout_deleted_without_an_anchor_is_named(e: &Engine) {
    let mut store = churned(e);
    // Journals only: the rows stay, and the chain vouches for them.
    prune_all(&mut store, &all(true, false, false), Budget::default());
    drop(store);
    e.tamper(
        "DELETE FROM hook_runs WHERE rollout_id = 'r-a';
         DELETE FROM rollouts WHERE id = 'r-a'",
    );
    let v = verify_read_only(e);
    assert_eq!(v.broken, None);
    assert_eq!(v.disagreements.len(), 1, "{:?}", v.disagreements);
    assert_eq!(v.disagreements[0].id, "r-a");
    assert!(v.disagreements[0].detail.contains("its row is gone"));
}

fn deletes_outside_pruning_are_refused(e: &Engine) {
    drop(churned(e));
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
        let err = e.raw(sql).expect_err(sql);
        assert!(
            err.contains("append-only") || err.contains("only retention"),
            "{sql}: {err}"
        );
    }
    // Inside a pruning transaction, still not an active rollout's data.
    for sql in [
        "DELETE FROM journal WHERE rollout_id = 'r-std'",
        "DELETE FROM rollouts WHERE id = 'r-std'",
        "DELETE FROM checkpoints WHERE rollout_id = 'r-std'",
    ] {
        let err = e
            .raw(&format!(
                "BEGIN; INSERT INTO prune_pass (one) VALUES (1); {sql}; ROLLBACK"
            ))
            .expect_err(sql);
        assert!(err.contains("ended"), "{sql}: {err}");
    }
    e.raw(
        "BEGIN; INSERT INTO prune_pass (one) VALUES (1);
         DELETE FROM journal WHERE rollout_id = 'r-a'; ROLLBACK",
    )
    .expect("an ended rollout's journal, inside a pruning transaction");
}

fn nothing_is_pruned_before_its_age_or_when_kept_forever(e: &Engine) {
    let mut store = churned(e);
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

fn a_rollout_with_a_pending_delivery_stays_until_it_is_done(e: &Engine) {
    let mut store = churned(e);
    rolled_back(&mut store, "r-late", "late", 5000);
    // r-late's hooks are still pending: its journal may go, its row not.
    prune_all(&mut store, &all(true, true, false), Budget::default());
    assert!(store.journal("r-late").unwrap().is_empty());
    assert!(store.rollout("r-late").unwrap().is_some());
    assert!(store.rollout("r-a").unwrap().is_none());
    e.outbox_done();
    prune_all(&mut store, &all(true, true, false), Budget::default());
    assert!(store.rollout("r-late").unwrap().is_none());
    holds(&store.verify().unwrap());
}

/// What only PostgreSQL has: several daemons on one database, a server
/// that goes away and comes back, the head kept as a row.
mod postgres_only {
    use std::sync::Barrier;

    use super::*;
    use crate::pg_support::PgServer;
    use crate::store_support::new_rollout;

    #[test]
    fn a_new_database_is_migrated_and_reopens() {
        let e = Engine::postgres();
        let store = e.open();
        assert!(store.verify().unwrap().is_ok());
        assert_eq!(store.audit_head().seq, 1);
        drop(store);
        assert_eq!(
            e.raw_text("SELECT version FROM schema_version"),
            SCHEMA_VERSION.to_string()
        );
        assert_eq!(e.raw_text("SELECT seq FROM audit_head"), "1");
        // Nothing of the store is kept in the daemon's dir: only the key
        // file its configuration names.
        let files: Vec<_> = std::fs::read_dir(e.dir())
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["audit.key"]);
        let mut store = e.open();
        assert_eq!(store.audit_head().seq, 1);
        store.append_audit(&[note(2)]).unwrap();
        assert_eq!(e.raw_text("SELECT seq FROM audit_head"), "2");
        assert_eq!(
            e.raw_text("SELECT count(*) FROM audit WHERE action = 'audit.genesis'"),
            "1"
        );
    }

    /// The `audit_head` row is to PostgreSQL what `audit.head` is to a
    /// data dir; errors name the database, never a data dir.
    #[test]
    fn the_head_row_deleted_is_named() {
        let e = Engine::postgres();
        audited(&e);
        e.set_head(None);
        let v = verify_read_only(&e);
        assert_broken(&v, 40, Breakage::HeadMissing);
        let detail = v.broken.unwrap().detail;
        assert!(detail.contains("audit_head row"), "{detail}");
        let err = e.try_open().unwrap_err();
        assert!(matches!(err, StoreError::AuditBroken { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("database postgres://"), "{message}");
        assert!(
            !message.contains("data dir") && !message.contains("--data-dir"),
            "{message}"
        );
    }

    /// The row is written in the transaction that appends: unlike the
    /// head file, it never lags, so even one transaction behind is named.
    #[test]
    fn the_head_row_moved_back_is_named() {
        let e = Engine::postgres();
        audited(&e);
        let log = e.open_read_only().audit_log().unwrap();
        e.set_head(Some((25, &log[24].mac)));
        assert_broken(&verify_read_only(&e), 31, Breakage::HeadStale);
        e.set_head(Some((35, &log[34].mac)));
        let v = verify_read_only(&e);
        assert_broken(&v, 36, Breakage::HeadStale);
        assert!(v.broken.unwrap().detail.contains("audit_head row"));
        assert!(e.try_open().is_err());
    }

    /// Two daemons on one database, each appending and committing steps of
    /// its own rollout: first call by call in turn, then on two threads at
    /// once beside a reader verifying. One chain, no gap, each daemon's
    /// entries where it wrote them, each daemon seeing the other's state.
    #[test]
    fn two_daemons_append_and_commit_interleaved() {
        let e = Engine::postgres();
        let mut a = e.open();
        let mut b = e.open();
        a.set_id_seed(1);
        b.set_id_seed(2);
        let mut da = Driver::start(&mut a, "r-a", "svc-a", ChangeType::Standard, 0);
        let mut db = Driver::start(&mut b, "r-b", "svc-b", ChangeType::Standard, 0);
        let mut written: Vec<(&str, u64)> = Vec::new();
        for i in 0..6 {
            for (name, store, d) in [("a", &mut a, &mut da), ("b", &mut b, &mut db)] {
                let input = d.next_input(false);
                d.step(store, input, i % 2 == 0, |_| vec![]).unwrap();
                let head = store.append_audit(&[note_by(name, i)]).unwrap();
                written.push((name, head.seq));
            }
        }
        // Each store's view of the other's rollout is the database's.
        assert_eq!(a.rollout("r-b").unwrap(), b.rollout("r-b").unwrap());
        assert_eq!(b.journal("r-a").unwrap(), a.journal("r-a").unwrap());

        let threads_done = std::thread::scope(|s| {
            let reader = e.open_read_only();
            let verifying = s.spawn(move || {
                for _ in 0..10 {
                    let v = reader.verify().unwrap();
                    assert!(v.is_ok(), "{v:?}");
                }
            });
            let run = |name: &'static str, mut store: Store, mut d: Driver| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 6..30 {
                        let input = d.next_input(false);
                        d.step(&mut store, input, i % 5 == 0, |_| vec![]).unwrap();
                        let head = store.append_audit(&[note_by(name, i)]).unwrap();
                        mine.push((name, head.seq));
                    }
                    let id = format!("r-{name}");
                    let row = store.rollout(&id).unwrap().unwrap();
                    assert_eq!(row.journal_len, store.journal(&id).unwrap().len() as u64);
                    assert_eq!(
                        (row.phase, row.weight),
                        (d.rollout.phase(), d.rollout.weight())
                    );
                    (mine, store)
                })
            };
            let ta = run("a", a, da);
            let tb = run("b", b, db);
            verifying.join().unwrap();
            [ta.join().unwrap(), tb.join().unwrap()]
        });
        let mut stores = Vec::new();
        for (mine, store) in threads_done {
            written.extend(mine);
            stores.push(store);
        }
        let log = e.open_read_only().audit_log().unwrap();
        for (i, entry) in log.iter().enumerate() {
            assert_eq!(entry.seq, i as u64 + 1, "gapless");
        }
        assert_eq!(
            log.iter().filter(|x| x.action == "audit.genesis").count(),
            1
        );
        for (name, seq) in &written {
            let entry = &log[*seq as usize - 1];
            assert_eq!(entry.actor, *name, "{entry:?}");
        }
        for store in &stores {
            holds(&store.verify().unwrap());
            assert_eq!(store.rollouts().unwrap().len(), 2);
        }
        holds(&verify_read_only(&e));
        // Each reopens and goes on.
        drop(stores);
        e.open().append_audit(&[note(99)]).unwrap();
        holds(&verify_read_only(&e));
    }

    fn note_by(name: &str, i: u64) -> NewAudit {
        NewAudit {
            actor: name.into(),
            ..note(i)
        }
    }

    /// Three daemons start on a new, empty database at the same moment:
    /// one schema, one genesis, and all three run.
    #[test]
    fn daemons_opening_a_new_database_at_once_write_one_genesis() {
        let e = Engine::postgres();
        let barrier = Barrier::new(3);
        let stores: Vec<Store> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        e.try_open()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().expect("opens"))
                .collect()
        });
        assert_eq!(
            e.raw_text("SELECT count(*) FROM audit WHERE action = 'audit.genesis'"),
            "1"
        );
        for (i, mut store) in stores.into_iter().enumerate() {
            store.append_audit(&[note(i as u64 + 2)]).unwrap();
        }
        let v = verify_read_only(&e);
        holds(&v);
        assert_eq!(v.entries, 4);
    }

    /// A connection the server ends (`pg_terminate_backend`) between two
    /// calls: the next call connects again and works, a read or a step.
    #[test]
    fn a_connection_dropped_between_calls_is_made_again() {
        let e = Engine::postgres();
        let mut store = e.open();
        let mut d = Driver::start(&mut store, "r-1", "svc", ChangeType::Standard, 0);
        d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
        assert_eq!(e.terminate_connections(), 1);
        let row = store.rollout("r-1").unwrap().unwrap();
        assert_eq!(e.terminate_connections(), 1);
        let input = d.next_input(false);
        let (committed, _) = d
            .step(&mut store, input, false, |_| vec![])
            .unwrap()
            .unwrap();
        assert_eq!(committed.input_seq, row.journal_len + 1);
        assert_eq!(e.terminate_connections(), 1);
        holds(&store.verify().unwrap());
    }

    /// The connection dies inside a step's transaction, after its journal
    /// rows and before its audit entries: the step fails, nothing of it is
    /// written, and the same step commits on the next connection.
    #[test]
    fn a_connection_dropped_in_a_transaction_writes_nothing() {
        use canaryd::store::EngineStep;
        let e = Engine::postgres();
        let mut store = e.open();
        let mut d = Driver::start(&mut store, "r-1", "svc", ChangeType::Standard, 0);
        d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
        let before = store.rollout("r-1").unwrap().unwrap();
        let log_before = store.audit_log().unwrap();
        e.raw(
            "CREATE FUNCTION drop_connection() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;
             CREATE TRIGGER drop_connection BEFORE INSERT ON audit
                 FOR EACH ROW EXECUTE FUNCTION drop_connection();",
        )
        .unwrap();
        let input = d.command(Command::Pause { by: actor("bob") });
        let now = at(d.t);
        d.rollout.handle(now, input.clone()).unwrap();
        let mut effects = Vec::new();
        while let Some(effect) = d.rollout.poll_effect() {
            effects.push(effect);
        }
        let step = EngineStep {
            at: now,
            input: &input,
            effects: &effects,
            rollout: &d.rollout,
            checkpoint: true,
            audit: &[],
        };
        let err = store.commit_step(&step).unwrap_err();
        assert!(matches!(err, StoreError::Postgres(_)), "{err}");
        e.raw("DROP TRIGGER drop_connection ON audit").unwrap();
        assert_eq!(store.rollout("r-1").unwrap().unwrap(), before);
        assert_eq!(
            store.journal("r-1").unwrap().len() as u64,
            before.journal_len
        );
        assert_eq!(store.audit_log().unwrap(), log_before);
        let committed = store.commit_step(&step).unwrap();
        assert_eq!(committed.input_seq, before.journal_len + 1);
        assert_eq!(store.rollout("r-1").unwrap().unwrap().phase, Phase::Paused);
        holds(&store.verify().unwrap());
    }

    /// PostgreSQL crashes and comes back: calls meanwhile fail (no panic),
    /// and the store reconnects once it is back.
    #[test]
    fn the_store_reconnects_after_postgresql_restarts() {
        // A server of its own: the binary's other tests share theirs.
        let server: &'static PgServer = Box::leak(Box::new(PgServer::start(&[])));
        let e = Engine::postgres_on(server);
        let mut store = e.open();
        let mut d = Driver::start(&mut store, "r-1", "svc", ChangeType::Standard, 0);
        d.step(&mut store, Input::Tick, false, |_| vec![]).unwrap();
        server.stop("immediate");
        assert!(store.rollout("r-1").is_err());
        server.launch(&[]);
        server.wait_ready();
        assert!(store.rollout("r-1").unwrap().is_some());
        let input = d.next_input(false);
        d.step(&mut store, input, false, |_| vec![]).unwrap();
        holds(&store.verify().unwrap());
    }

    /// Another daemon starts a rollout of the same service between this
    /// one's check and its insert: the unique index refuses the insert,
    /// and that reads as `ServiceBusy` naming the other rollout.
    #[test]
    fn a_service_started_meanwhile_by_another_daemon_is_busy() {
        let e = Engine::postgres();
        let mut store = e.open();
        let mut other = ::postgres::Client::connect(&e.url(), ::postgres::NoTls).expect("connect");
        other
            .batch_execute(
                "BEGIN; INSERT INTO rollouts (id, service, policy_name, policy_version, spec,
                    phase, outcome, reason, step, weight, created_at, updated_at,
                    checkpoint_seq, journal_len)
                 VALUES ('r-other', 'checkout', 'p', 'v', '{}', 'pending', NULL, '', 0, 0, 0, 0, 0, 0)",
            )
            .unwrap();
        let rollout = new_rollout("r-mine", "checkout", ChangeType::Standard, 0);
        let (result, waited) = std::thread::scope(|s| {
            let mine = s.spawn(|| store.create_rollout(&rollout, POLICY_VERSION, at(0)));
            // Until this store's insert waits on the other's row lock.
            let mut waited = false;
            for _ in 0..200 {
                if e.raw_text(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                ) == "1"
                {
                    waited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            other.batch_execute("COMMIT").unwrap();
            (mine.join().unwrap(), waited)
        });
        assert!(waited, "the insert never waited on the other's row");
        let err = result.unwrap_err();
        assert!(
            matches!(&err, StoreError::ServiceBusy { rollout_id, .. } if rollout_id == "r-other"),
            "{err}"
        );
        assert!(store.rollout("r-mine").unwrap().is_none());
        assert!(store.audit_for_rollout("r-mine").unwrap().is_empty());
    }
}

/// A store with history (`store_support::fill_used`): two rollouts, an
/// incident, a review, a token entry; the chain verifies.
fn used_in(e: &Engine) {
    let mut store = e.open();
    store_support::fill_used(&mut store);
    drop(store);
    let v = e.open_read_only().verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
}

/// A state row edited outside the chain (moved from `store_binding.rs`).
fn an_edited_outcome_is_named_and_the_store_refuses_to_act_on_it(e: &Engine) {
    used_in(e);
    e.tamper("UPDATE rollouts SET outcome = 'promoted', phase = 'promoted' WHERE id = 'r-em'");
    let v = e.open_read_only().verify().unwrap();
    assert!(v.broken.is_none(), "the chain itself holds");
    let lines: Vec<String> = v.disagreements.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("rollouts r-em: phase is `promoted` but the audit log (entry ")
            && lines[0].ends_with(") leaves it `rolled-back`"),
        "{lines:?}"
    );
    assert!(lines[1].contains("outcome is `promoted`"), "{lines:?}");
    let err = e.try_open().map(|_| ()).unwrap_err();
    assert!(
        matches!(err, StoreError::StateDisagrees { count: 2, .. }),
        "{err}"
    );
}

/// A rollout's row deleted outside the chain (moved from `store_binding.rs`).
fn a_deleted_rollout_row_is_named(e: &Engine) {
    used_in(e);
    e.tamper(
        "DELETE FROM hook_runs WHERE rollout_id = 'r-std';
         DELETE FROM checkpoints WHERE rollout_id = 'r-std';
         DELETE FROM journal WHERE rollout_id = 'r-std';
         DELETE FROM rollouts WHERE id = 'r-std'",
    );
    let v = e.open_read_only().verify().unwrap();
    let line = v.disagreements[0].to_string();
    assert!(
        line.starts_with("rollouts r-std: the audit log started it (entry ")
            && line.ends_with("but its row is gone"),
        "{line}"
    );
}

/// A log moved from another store (moved from `store_binding.rs`).
fn a_log_from_another_store_is_named(e: &Engine) {
    used_in(e);
    e.tamper("UPDATE store_identity SET id = 's-other'");
    let v = e.open_read_only().verify().unwrap();
    let link = v.broken.as_ref().expect("broken");
    assert_eq!(link.kind, Breakage::GenesisMismatch, "{link}");
    assert!(
        link.detail
            .contains("but this database is store s-other: the log belongs to another store"),
        "{link}"
    );
}

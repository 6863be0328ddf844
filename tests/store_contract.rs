//! The store contract: what the daemon relies on from its store, run
//! against both engines, SQLite in a temp dir and a real PostgreSQL server
//! on loopback (`pg_support`). Each test is written once as a function of
//! the [`Engine`] and run as `sqlite::NAME` and `postgres::NAME`.

use canaryd::engine::{Checkpoint, Command, Input, Phase, Rollout};
use canaryd::policy::ChangeType;
use canaryd::store::{JournalKind, StoreError};

mod store_support;
mod support;
use store_support::{Driver, Engine, POLICY_VERSION, actor, at};
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

contract!(rollouts_journal_and_checkpoints_round_trip_and_restore);

fn rollouts_journal_and_checkpoints_round_trip_and_restore(e: &Engine) {
    let mut store = e.open();
    store.set_id_seed(42);
    let mut d = Driver::start(&mut store, "r-1", "checkout", ChangeType::Standard, 0);

    let row = store.rollout("r-1").unwrap().unwrap();
    assert_eq!(row.service, "checkout");
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
    assert_eq!(row.phase, Phase::Paused);
    assert_eq!(row.weight, d.rollout.weight());

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
    }

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

    let log = store.audit_for_rollout("r-1").unwrap();
    let paused = log.iter().find(|e| e.action == "rollout.pause").unwrap();
    assert_eq!(paused.actor, "bob");
    assert_eq!(log[0].action, "rollout.start");

    drop(store);
    let store = e.open();
    assert_eq!(store.rollout("r-1").unwrap().unwrap(), row);
    assert_eq!(store.journal("r-1").unwrap(), journal);
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
    let v = e.open_read_only().verify().unwrap();
    assert!(v.is_ok(), "{v:?}");
}

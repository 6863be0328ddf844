//! Retention where only a SQLite data dir has it: a file written before
//! retention existed, migrated and pruned, and the free pages a new file
//! gives back. Pruning itself, and each kind of tampering after it, is in
//! the contract suite (`tests/store_contract.rs`), on both engines.

use std::time::Duration;

use canaryd::store::{Ages, Budget, Store};

mod store_support;
mod support;
use store_support::{copy_fixture, holds};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

const SECOND: Duration = Duration::from_secs(1);

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
        .prune_step(
            now,
            &Ages {
                journal: Some(SECOND),
                ..Ages::default()
            },
            Budget::default(),
        )
        .unwrap();
    assert_eq!(step.journals_done, vec![ended.to_string()]);
    assert_eq!(step.journal_rows, ended_journal as u64);
    assert!(store.journal(ended).unwrap().is_empty());
    assert_eq!(store.journal(active).unwrap().len(), active_journal);
    holds(&store.verify().unwrap());
    drop(store);
    holds(&Store::open_read_only(dir.path()).unwrap().verify().unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("canaryd.db")).unwrap();
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 0, "an existing file keeps its mode");
}

/// A data dir written by the daemon before migration 9 (schema 8, the
/// journal a `WITHOUT ROWID` table): this build moves the journal into a
/// rowid table with its unique index, and every row reads back as it was
/// written; the chain verifies, the open rollout restores from its
/// checkpoint and journal, the append-only triggers still refuse an edit,
/// and a step appends after the copied rows.
#[test]
fn a_store_written_before_migration_9_keeps_its_journal() {
    let dir = tempdir();
    copy_fixture("schema-8", dir.path());
    let ids = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/store_fixtures/schema-8/ids"),
    )
    .unwrap();
    let (ended, active) = ids.trim().split_once('\n').unwrap();
    type Row = (String, i64, i64, i64, String, i64, String);
    let rows = |conn: &rusqlite::Connection| -> Vec<Row> {
        let mut stmt = conn
            .prepare(
                "SELECT rollout_id, seq, input_seq, at, kind, effects, body FROM journal
                 ORDER BY rollout_id, seq",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let table_sql = |conn: &rusqlite::Connection| -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'journal'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let db = dir.path().join("canaryd.db");
    let before = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let version: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 8, "the fixture is today's format");
        assert!(table_sql(&conn).contains("WITHOUT ROWID"));
        rows(&conn)
    };
    assert!(before.iter().any(|r| r.0 == ended) && before.iter().any(|r| r.0 == active));

    let store = Store::open(dir.path()).expect("opens and migrates");
    holds(&store.verify().unwrap());
    let open = store.open_rollouts::<canaryd::monitor::Monitor>().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].row.id, active);
    let mut rollout = canaryd::engine::Rollout::restore(open[0].checkpoint.clone()).unwrap();
    for (at, input) in open[0].inputs_to_replay().unwrap() {
        rollout.handle(at, input).expect("replays");
        while rollout.poll_effect().is_some() {}
    }
    let journal_len = store.rollout(active).unwrap().unwrap().journal_len;
    assert_eq!(
        store.journal(active).unwrap().len() as u64,
        journal_len,
        "every row of the open rollout reads"
    );
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    assert!(!table_sql(&conn).contains("WITHOUT ROWID"));
    assert_eq!(rows(&conn), before, "every row as it was written");
    let index: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'journal_by_rollout'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("UNIQUE"), "{index}");
    for refused in [
        "UPDATE journal SET body = '{}'",
        "DELETE FROM journal",
        "INSERT INTO journal (rollout_id, seq, input_seq, at, kind, effects, body)
         SELECT rollout_id, seq, input_seq, at, kind, effects, body FROM journal LIMIT 1",
    ] {
        assert!(conn.execute(refused, []).is_err(), "{refused} was allowed");
    }
    drop(conn);
    holds(&Store::open_read_only(dir.path()).unwrap().verify().unwrap());
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

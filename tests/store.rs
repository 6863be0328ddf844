//! What only a SQLite data dir has: its creation and reopen, the data-dir
//! lock, readers beside a writer (WAL), and the head and key files the
//! audit chain is checked against. What every store must do, on either
//! engine, is the contract suite (`tests/store_contract.rs`).

use std::fs;

use canaryd::policy::ChangeType;
use canaryd::store::{Breakage, SCHEMA_VERSION, Store, StoreError, Verification};

mod store_support;
mod support;
use store_support::{Driver, append_forty, assert_broken, note};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A data dir whose audit log holds 40 entries: the genesis (entry 1, its
/// own transaction), then `note(i)` as entry `i`, written by transactions
/// that end at entries 5, 10, ..., 40 (2..=5, then 5 each); returns the head
/// file's text after each of those 8.
fn audited_dir() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempdir();
    let mut heads = Vec::new();
    append_forty(&mut Store::open(dir.path()).unwrap(), |_| {
        heads.push(fs::read_to_string(dir.path().join("audit.head")).unwrap());
    });
    (dir, heads)
}

fn verify_read_only(dir: &std::path::Path) -> Verification {
    Store::open_read_only(dir).unwrap().verify().unwrap()
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

    // A reader needs no lock: it opens while the daemon holds the dir.
    let reader = Store::open_read_only(dir.path()).unwrap();
    first.append_audit(&[note(1), note(2)]).unwrap();
    assert_eq!(reader.verify().unwrap().entries, 3);

    // The lock goes with the store that held it.
    drop(first);
    drop(Store::open(dir.path()).unwrap());
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

/// SQLite's page cache follows the open rollouts (issue #19): with its
/// 2 MiB default, thousands of rollouts at 1 s read their journal, row and
/// checkpoint pages back from the OS at every step. It grows as rollouts
/// are created, shrinks when they have ended, and a reopened store sizes
/// it from the rollouts open.
#[test]
fn the_page_cache_is_sized_for_the_open_rollouts() {
    use canaryd::store::page_cache::cache_kib;
    let dir = tempdir();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.page_cache_kib().unwrap(), Some(cache_kib(0)));
    let mut drivers: Vec<Driver> = (0..200)
        .map(|i| {
            Driver::start(
                &mut store,
                &format!("r{i}"),
                &format!("s{i}"),
                ChangeType::Standard,
                0,
            )
        })
        .collect();
    // Resized every 64 creates at this size: 192 of the 200 are counted.
    assert_eq!(store.page_cache_kib().unwrap(), Some(cache_kib(192)));
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.page_cache_kib().unwrap(), Some(cache_kib(200)));
    // End 150 of them, then create 64 more: the recount sees 114 open.
    for d in &mut drivers[..150] {
        let abort = d.command(canaryd::engine::Command::Abort {
            by: store_support::actor("test"),
        });
        d.step(&mut store, abort, false, |_| vec![]).unwrap();
        assert!(d.rollout.phase().is_terminal());
    }
    for i in 200..264 {
        Driver::start(
            &mut store,
            &format!("r{i}"),
            &format!("s{i}"),
            ChangeType::Standard,
            0,
        );
    }
    assert_eq!(store.page_cache_kib().unwrap(), Some(cache_kib(114)));
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

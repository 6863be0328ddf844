//! `canaryd audit verify|log --data-dir DIR`, run as the real binary against
//! a data dir written through the store, beside a live read-write store.

use std::path::Path;
use std::process::{Command, Output};

use canaryd::store::{NewAudit, Store};
use canaryd::time::Timestamp;
use serde_json::json;

mod store_support;
mod support;
use store_support::{copy_fixture, tamper, used_store};

fn canaryd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(args)
        .env_remove("CANARYD_SERVER")
        .env_remove("CANARYD_TOKEN")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn entry(i: u64) -> NewAudit {
    NewAudit {
        at: Timestamp::from_millis(1_800_000_000_000 + i * 1000),
        actor: "alice".into(),
        action: "rollout.pause".into(),
        rollout_id: Some("r-1".into()),
        reason: format!("reason {i}"),
        ticket: Some("CHG-9".into()),
        details: json!({ "i": i }),
    }
}

fn dir_arg(dir: &Path) -> String {
    dir.display().to_string()
}

#[test]
fn verify_and_log_read_a_live_data_dir_and_name_the_first_broken_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir_arg(dir.path());
    let mut daemon = Store::open(dir.path()).unwrap();
    daemon.append_audit(&[entry(1), entry(2)]).unwrap();
    daemon
        .append_audit(&[entry(3), entry(4), entry(5)])
        .unwrap();

    // While the "daemon" holds the dir: read-only, and the global flag may
    // come before or after the subcommand.
    let out = canaryd(&["audit", "verify", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The genesis entry and the 5 written.
    assert!(
        stdout.starts_with("audit log ok: 6 entries, head seq 6 mac "),
        "{stdout}"
    );
    let out = canaryd(&["--data-dir", &d, "audit", "verify"]);
    assert_eq!(out.status.code(), Some(0));

    let out = canaryd(&["audit", "log", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<_> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[0].contains("audit.genesis"), "{}", lines[0]);
    assert!(
        lines[1].contains("2027-01-15T08:00:01.000Z"),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains("alice") && lines[3].contains("reason 3 [CHG-9]"),
        "{}",
        lines[3]
    );

    let out = canaryd(&["audit", "log", "--json", "--data-dir", &d]);
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[5]["seq"], 6);
    assert_eq!(entries[5]["details"], json!({ "i": 5 }));
    assert_eq!(entries[5]["mac"].as_str().unwrap().len(), 64);

    drop(daemon);
    tamper(
        dir.path(),
        "UPDATE audit SET actor = 'mallory' WHERE seq = 4",
    );
    let out = canaryd(&["audit", "verify", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("audit log broken at entry 4: edited"),
        "{stderr}"
    );
}

#[test]
fn without_a_data_dir_or_state_it_says_so() {
    // Without --data-dir it asks the daemon; with none there, it says so.
    let out = canaryd(&[
        "audit",
        "verify",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach the daemon at http://127.0.0.1:9"),
        "{stderr}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = canaryd(&["audit", "log", "--data-dir", &dir_arg(empty.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no canaryd state"),
        "{}",
        text(&out.stderr)
    );
}

fn used_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    drop(used_store(dir.path()));
    let out = canaryd(&["audit", "verify", "--data-dir", &dir_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    dir
}

/// Issue #21's reproduction: with the append-only trigger dropped, every
/// entry deleted and the head file removed, `verify` said "ok: 0 entries"
/// and the daemon started a new chain beside the rollouts.
#[test]
fn a_wiped_log_fails_verify_and_the_daemon_refuses_to_start() {
    let dir = used_dir();
    let d = dir_arg(dir.path());
    tamper(dir.path(), "DELETE FROM audit");
    std::fs::remove_file(dir.path().join("audit.head")).unwrap();

    let out = canaryd(&["audit", "verify", "--data-dir", &d]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{stderr}", text(&out.stdout));
    assert!(
        stderr.contains(
            "audit log broken at entry 1: the audit log is empty, yet this store has 2 rollouts"
        ),
        "{stderr}"
    );

    let policies = tempfile::tempdir().unwrap();
    let out = canaryd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        &dir_arg(policies.path()),
        "--data-dir",
        &d,
    ]);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("cannot open the state in"), "{stderr}");
    assert!(
        stderr.contains("the audit log is empty, yet this store has 2 rollouts"),
        "{stderr}"
    );
    assert!(
        stderr.contains("canaryd audit restart-chain --data-dir"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("audit.head").exists(),
        "no new chain was started"
    );

    // The deliberate way out, recorded in the new chain.
    let out = canaryd(&[
        "audit",
        "restart-chain",
        "--data-dir",
        &d,
        "--actor",
        "ops",
        "--reason",
        "INC-42 restore",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("audit chain restarted: genesis at entry 1"),
        "{}",
        text(&out.stdout)
    );
    let out = canaryd(&["audit", "verify", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("note: entry 1 restarted the chain deliberately (ops: INC-42 restore)"),
        "{stdout}"
    );
    // Only on the state itself, never through the API.
    let out = canaryd(&[
        "audit",
        "restart-chain",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
        "--actor",
        "a",
        "--reason",
        "r",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pass --data-dir"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue #21: rows outside the chain (`rollouts.outcome`) could be edited
/// without a trace.
#[test]
fn an_edited_outcome_fails_verify_naming_the_row() {
    let dir = used_dir();
    tamper(
        dir.path(),
        "UPDATE rollouts SET outcome = 'promoted' WHERE id = 'r-em'",
    );
    let out = canaryd(&["audit", "verify", "--data-dir", &dir_arg(dir.path())]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{stderr}", text(&out.stdout));
    assert!(
        stderr.contains("1 state rows disagree with the audit log"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rollouts r-em: outcome is `promoted` but the audit log (entry "),
        "{stderr}"
    );
}

/// A store the previous version wrote (no genesis) opens, is bound, and
/// verifies with a note that its chain predates the binding.
#[test]
fn a_store_from_before_the_binding_verifies_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("pre-genesis", dir.path());
    drop(Store::open(dir.path()).unwrap());
    let out = canaryd(&["audit", "verify", "--data-dir", &dir_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("audit log ok: 18 entries, head seq 18 mac "),
        "{stdout}"
    );
    assert!(
        stdout.contains("note: entries 1..=17 predate the binding of the chain to its store (written by an earlier canaryd); entry 18 binds it"),
        "{stdout}"
    );
}

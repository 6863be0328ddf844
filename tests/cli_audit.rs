//! `canaryd audit verify|log --data-dir DIR`, run as the real binary against
//! a data dir written through the store, beside a live read-write store.

use std::path::Path;
use std::process::{Command, Output};

use canaryd::store::{NewAudit, Store};
use canaryd::time::Timestamp;
use serde_json::json;

mod store_support;
mod support;
use store_support::tamper;

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
    assert!(
        stdout.starts_with("audit log ok: 5 entries, head seq 5 mac "),
        "{stdout}"
    );
    let out = canaryd(&["--data-dir", &d, "audit", "verify"]);
    assert_eq!(out.status.code(), Some(0));

    let out = canaryd(&["audit", "log", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<_> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 5);
    assert!(
        lines[0].contains("2027-01-15T08:00:01.000Z"),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].contains("alice") && lines[2].contains("reason 3 [CHG-9]"),
        "{}",
        lines[2]
    );

    let out = canaryd(&["audit", "log", "--json", "--data-dir", &d]);
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[4]["seq"], 5);
    assert_eq!(entries[4]["details"], json!({ "i": 5 }));
    assert_eq!(entries[4]["mac"].as_str().unwrap().len(), 64);

    drop(daemon);
    tamper(
        dir.path(),
        "UPDATE audit SET actor = 'mallory' WHERE seq = 3",
    );
    let out = canaryd(&["audit", "verify", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("audit log broken at entry 3: edited"),
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

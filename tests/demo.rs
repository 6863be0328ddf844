//! `canaryd demo` as a newcomer runs it (no terminal: plain lines): it ends
//! with the outcome, the incident when there is one, and a state dir on
//! which `incident show` and `audit verify` work afterwards.

use std::process::Command;

fn demo(regression: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["demo", "--regression", regression])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("state: "))
        .expect("the state dir is named")
        .to_string();
    (stdout, dir)
}

fn canaryd(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn an_error_regression_is_rolled_back_with_an_incident() {
    let (out, dir) = demo("errors");
    assert!(
        out.contains("rolled back: trigger `error-rate` fired"),
        "{out}"
    );
    let incident = out
        .lines()
        .find_map(|l| l.strip_prefix("incident ").filter(|r| !r.contains(' ')))
        .expect("an `incident <ID>` line")
        .to_string();
    let (ok, shown) = canaryd(&["incident", "show", &incident, "--data-dir", &dir]);
    assert!(ok && shown.contains("trigger error-rate fired"), "{shown}");
    let (ok, verified) = canaryd(&["audit", "verify", "--data-dir", &dir]);
    assert!(ok && verified.starts_with("audit log ok"), "{verified}");
    let _ = std::fs::remove_dir_all(std::path::Path::new(&dir).parent().unwrap());
}

#[test]
fn a_healthy_canary_is_promoted() {
    let (out, dir) = demo("none");
    assert!(out.contains("promoted: v2 takes all traffic"), "{out}");
    assert!(!out.contains("\nincident "), "{out}");
    let (ok, verified) = canaryd(&["audit", "verify", "--data-dir", &dir]);
    assert!(ok, "{verified}");
    let _ = std::fs::remove_dir_all(std::path::Path::new(&dir).parent().unwrap());
}

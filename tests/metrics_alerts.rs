//! The shipped alerting rules (`dashboards/canaryd-alerts.yaml`): Prometheus'
//! own `promtool check rules` accepts them and `promtool test rules` runs
//! their unit tests (`dashboards/canaryd-alerts.test.yaml`: each alert fires
//! when it should, with its labels and words, and not before). A real
//! Prometheus evaluates them against a live daemon in
//! `metrics_dashboard.rs`.
//!
//! Skips, loudly, only when the Prometheus package cannot be installed.

mod source_support;

use std::path::Path;
use std::process::Command;

use source_support::prometheus;

fn promtool(args: &[&str]) -> (bool, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("run promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_checks_the_alerting_rules() {
    if let Err(e) = prometheus::ensure_installed() {
        println!("SKIPPED: Prometheus is not installed and cannot be: {e}");
        return;
    }
    let (ok, said) = promtool(&["check", "rules", "canaryd-alerts.yaml"]);
    assert!(ok, "promtool check rules:\n{said}");
    assert!(said.contains("SUCCESS: 10 rules found"), "{said}");
    println!("{said}");
}

#[test]
fn promtool_unit_tests_of_the_alerting_rules_pass() {
    if let Err(e) = prometheus::ensure_installed() {
        println!("SKIPPED: Prometheus is not installed and cannot be: {e}");
        return;
    }
    let (ok, said) = promtool(&["test", "rules", "canaryd-alerts.test.yaml"]);
    assert!(ok, "promtool test rules:\n{said}");
    println!("{said}");
}

/// Every alert of the rules file has a unit test that expects it to fire.
#[test]
fn every_alert_is_unit_tested_firing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let rules = std::fs::read_to_string(dir.join("canaryd-alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("canaryd-alerts.test.yaml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 10, "{alerts:?}");
    for alert in alerts {
        // An `alertname:` line followed (before the next one) by a non-empty
        // `exp_alerts:` list.
        let fired = tests.split("alertname: ").skip(1).any(|case| {
            case.starts_with(&format!("{alert}\n")) && !case.contains("exp_alerts: []")
        });
        assert!(fired, "{alert} has no test where it fires");
    }
}

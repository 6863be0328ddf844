//! Every file in `rollout-policies/` passes `canaryd policy check`, through the
//! real binary, and the seed scenarios of PRODUCT.md section 2 are all there.

use std::path::{Path, PathBuf};
use std::process::Command;

fn policy_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollout-policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("rollout-policies/ exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_policy_in_the_folder_is_valid() {
    let files = policy_files();
    assert!(
        files.len() >= 7,
        "expected the seed policies, found {files:?}"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if let Err(d) = canaryd::policy::parse_policy(&f.display().to_string(), &bytes) {
            panic!("{d}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["policy", "check"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn seed_scenarios_are_covered() {
    let mut names = Vec::new();
    let mut kinds = Vec::new();
    for f in policy_files() {
        let p = canaryd::policy::parse_policy("x", &std::fs::read(&f).unwrap()).unwrap();
        names.push(p.name.clone());
        kinds.push(p.change_type);
    }
    for want in [
        "recommender-ctr",
        "credit-risk",
        "medical-imaging-triage",
        "ride-sharing-eta",
        "fraud-recall",
        "emergency-hotfix",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing policy {want}: {names:?}"
        );
    }
    assert!(kinds.contains(&canaryd::policy::ChangeType::Experiment));
    assert!(kinds.contains(&canaryd::policy::ChangeType::Emergency));
}

#[test]
fn check_reports_located_errors_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("canaryd-policy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: canaryd.dev/v1\nkind: RolloutPolicy\nmetadata: { name: bad }\nspec:\n  steps:\n    - setWeight: 140\n").unwrap();
    let good = policy_files().remove(0);
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["policy", "check"])
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "{}:6:18: spec.steps[0].setWeight: must be from 0 to 100, got 140",
            bad.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explain_describes_steps_triggers_gates_and_alpha() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollout-policies/recommender.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["policy", "explain"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "at 10m        set the canary to 10% of traffic",
        "wait for approval by model-owner and product-owner (a different person for each role, none of them the starter)",
        "fastest possible promotion: 2d1h10m after start plus the approval waits",
        "ctr-drop (statistical, alpha share 0.5%)",
        "p95-latency (objective)",
        "each fires when its e-value reaches 2/1% = 200",
        "before any step sets 100% or more, show that the canary's `ctr` (clicks / impressions) is at least 2% above baseline's",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn explain_estimates_time_to_detect_with_rps() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollout-policies/recommender.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["policy", "explain", "--rps", "200", "--base-rate", "ctr=5%"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("- error-rate:"))
        .expect(&text);
    // A 0.5% threshold, true rate 1%: about 3,400 canary requests at 1%;
    // more at higher weights, where a 30 s interval carries more requests
    // than the test needs and the dispersion prior weighs the first ones
    // down (simulator/tests/forecast.rs checks such forecasts against runs).
    assert!(
        line.contains("at 1%:") && line.contains("at 10%:") && line.contains("at 50%:"),
        "{line}"
    );
    assert!(line.contains("3428 canary requests"), "{line}");
    let ctr = text
        .lines()
        .find(|l| l.trim_start().starts_with("- ctr-drop:"))
        .expect(&text);
    assert!(ctr.contains("oracle"), "{ctr}");

    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["policy", "explain", "--rps", "200"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "ctr-drop: not estimated (give the baseline's rate, e.g. --base-rate ctr=0.05)"
        ),
        "{text}"
    );
}

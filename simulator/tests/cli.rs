//! The command line as a user sees it: exit codes, located errors, the
//! `--json` report's fields, and the replay path from Prometheus JSON.

use std::path::PathBuf;
use std::process::{Command, Output};

use expect_test::expect;

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canaryd-sim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// A file in a temp dir of its own, which goes when the file is dropped
/// (files written beside it, such as a replay's output, go with it).
struct TempFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TempFile {
    type Target = PathBuf;

    fn deref(&self) -> &PathBuf {
        &self.path
    }
}

fn tmp(name: &str, text: &str) -> TempFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    TempFile { path, _dir: dir }
}

const SHORT_AA: &str = "\
apiVersion: canaryd.dev/v1
kind: Scenario
metadata: { name: short-aa }
spec:
  duration: 30m
  traffic: { requestsPerSecond: 50 }
  baseline: { ctr: 0.05, errorRate: 0.002 }
";

#[test]
fn bad_scenario_exits_1_with_a_located_error() {
    let p = tmp(
        "bad.yaml",
        &SHORT_AA.replace("duration: 30m", "duration: 30"),
    );
    let out = sim(&[
        "--policy",
        "policies/fast-web.yaml",
        "--scenario",
        p.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:5:13: spec.duration: missing unit in `30`"),
        "{err}"
    );
}

#[test]
fn bad_policy_and_missing_arguments_exit_1() {
    let out = sim(&[
        "--policy",
        "scenarios/aa.yaml",
        "--scenario",
        "scenarios/aa.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scenarios/aa.yaml:2:7: kind"));
    let out = sim(&["--policy", "policies/fast-web.yaml"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn json_report_has_the_contract_fields() {
    let p = tmp("aa.yaml", SHORT_AA);
    let out = sim(&[
        "--policy",
        "policies/fast-web.yaml",
        "--scenario",
        p.to_str().unwrap(),
        "--runs",
        "4",
        "--json",
        "--compare",
        "--threads",
        "2",
        "--approval-delay",
        "1m",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    };
    expect!["policy results runs scenario seed"].assert_eq(&keys(&v));
    let names: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "canaryd",
            "threshold",
            "mann-whitney",
            "sprt-oracle",
            "sprt-oracle-two-sample"
        ]
    );
    expect!["bad_requests_served by_trigger canary_requests_before_decision concluded_rate inconclusive_rate name promotion_rate rollback_rate time_to_promotion_s time_to_rollback_s unfinished_rate"]
        .assert_eq(&keys(&v["results"][0]));
    for r in v["results"].as_array().unwrap() {
        let sum: f64 = [
            "rollback_rate",
            "promotion_rate",
            "inconclusive_rate",
            "unfinished_rate",
            "concluded_rate",
        ]
        .iter()
        .map(|k| r[k].as_f64().unwrap())
        .sum();
        assert!((sum - 1.0).abs() < 1e-9, "{r}");
    }
}

#[test]
fn prometheus_json_converts_to_a_replay_that_runs() {
    let series = |arm: &str, signal: &str, values: &[u64]| {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("[{}, \"{v}\"]", 1_700_000_000 + 60 * i))
            .collect();
        format!(
            "{{\"metric\": {{\"arm\": \"{arm}\", \"signal\": \"{signal}\"}}, \"values\": [{}]}}",
            points.join(", ")
        )
    };
    let n = 60;
    let body = [
        series("baseline", "requests", &vec![5_700; n]),
        series("canary", "requests", &vec![300; n]),
        series("baseline", "errors", &vec![11; n]),
        series("canary", "errors", &vec![6; n]),
    ]
    .join(", ");
    let prom = tmp(
        "prom.json",
        &format!(
            "{{\"status\": \"success\", \"data\": {{\"resultType\": \"matrix\", \"result\": [{body}]}}}}"
        ),
    );
    let replay = prom.with_file_name("replay.json");
    let out = sim(&[
        "replay-from-prometheus",
        prom.to_str().unwrap(),
        "--out",
        replay.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&replay).unwrap();
    assert!(text.contains("\"interval\": \"1m\""), "{text}");
    let out = sim(&[
        "--policy",
        "policies/fast-web.yaml",
        "--replay",
        replay.to_str().unwrap(),
        "--runs",
        "3",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"], 3);
    // A broken replay is a located error.
    let bad = tmp(
        "bad-replay.json",
        "{\"interval\": \"1m\", \"intervals\": [ {\"baseline\": {}, \"canary\": {}, \"x\": 1} ]}",
    );
    let out = sim(&[
        "--policy",
        "policies/fast-web.yaml",
        "--replay",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad-replay.json:1:"), "{err}");
}

#[test]
fn trace_prints_one_run_with_the_evidence_of_what_fired() {
    let out = sim(&[
        "--policy",
        "policies/fast-web.yaml",
        "--scenario",
        "scenarios/errors-x3-2h.yaml",
        "--approval-delay",
        "10m",
        "--seed",
        "3",
        "--trace",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("run 0 (seed 3): rollback at "), "{text}");
    let fired = text.lines().find(|l| l.contains("fired:")).expect(&text);
    for part in ["estimate", "anytime-valid", "ln e", "canary", "window"] {
        assert!(fired.contains(part), "{fired}");
    }
    // The report counts the same run.
    let json = sim(&[
        "--policy",
        "policies/fast-web.yaml",
        "--scenario",
        "scenarios/errors-x3-2h.yaml",
        "--approval-delay",
        "10m",
        "--seed",
        "3",
        "--runs",
        "1",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["results"][0]["rollback_rate"], 1.0);
}

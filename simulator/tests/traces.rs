//! Engine traces: every policy in `rollout-policies/` under healthy,
//! regressing and no-data traffic, one seeded run each with the real engine,
//! rendered as the outcome and the timeline of transitions, weights, gates
//! and the trigger that fired with its evidence. Snapshots live in
//! `tests/traces/` (refresh with `UPDATE_EXPECT=1`).
//!
//! A policy the engine's analysis rejects (e.g. statistical tests on `mean`
//! metrics, not built yet) is listed in its snapshot as skipped, with the
//! engine's own message.

use std::time::Duration;

use canaryd::policy::parse_policy;
use canaryd::time::format_duration;
use canaryd_sim::scenario::parse_scenario;
use canaryd_sim::{Analyst, SimOptions, check_policy, model_source, simulate_one};
use expect_test::expect_file;

/// Per policy: rps, duration, baseline block, healthy canary, regressing canary.
struct Traffic {
    rps: &'static str,
    duration: &'static str,
    baseline: &'static str,
    healthy: &'static str,
    regressing: &'static str,
}

const WEB_BASELINE: &str = r"
    ctr: 0.05
    errorRate: 0.002
    latency: { distribution: lognormal, p50: 80ms, p95: 150ms }";

fn traffic(file: &str) -> Traffic {
    match file {
        "recommender.yaml" => Traffic {
            rps: "200",
            duration: "56h",
            baseline: WEB_BASELINE,
            healthy: "ctr: { relative: 6% }",
            regressing: "from: 1h\n    errorRate: { absolute: 0.01 }",
        },
        "emergency-hotfix.yaml" => Traffic {
            rps: "50",
            duration: "1h",
            baseline: WEB_BASELINE,
            healthy: "errorRate: { relative: -50% }",
            regressing: "errorRate: { absolute: 0.08 }",
        },
        "experiment-search-ranking.yaml" => Traffic {
            rps: "50",
            duration: "170h",
            baseline: WEB_BASELINE,
            healthy: "ctr: { relative: 2% }",
            regressing: "ctr: { relative: -12% }",
        },
        "fraud.yaml" => Traffic {
            rps: "100",
            duration: "6d",
            baseline: r"
    latency: { distribution: lognormal, p50: 20ms, p95: 60ms }
    signals:
      fraud_total: { rate: 0.002 }
      fraud_blocked: { rate: 0.8, of: fraud_total }
      legit_total: { rate: 0.998 }
      legit_blocked: { rate: 0.005, of: legit_total }",
            healthy: "signals: { fraud_blocked: { rate: 0.86 } }",
            regressing: "signals: { fraud_blocked: { rate: 0.7 } }",
        },
        "medical-imaging-triage.yaml" => Traffic {
            rps: "20",
            duration: "18d",
            baseline: r"
    latency: { distribution: lognormal, p50: 5s, p95: 15s }
    signals:
      confirmed_urgent: { rate: 0.05 }
      flagged_urgent: { rate: 0.97, of: confirmed_urgent }
      confirmed_routine: { rate: 0.95 }
      cleared_routine: { rate: 0.95, of: confirmed_routine }",
            healthy: "signals: { flagged_urgent: { rate: 0.985 } }",
            regressing: "signals: { flagged_urgent: { rate: 0.9 } }",
        },
        "checkout-web.yaml" => Traffic {
            rps: "100",
            duration: "3h",
            baseline: WEB_BASELINE,
            healthy: "errorRate: { relative: 0% }",
            regressing: "from: 30m\n    errorRate: { absolute: 0.02 }",
        },
        // Rejected by the engine today; any traffic will do.
        _ => Traffic {
            rps: "100",
            duration: "1h",
            baseline: WEB_BASELINE,
            healthy: "ctr: { relative: 0% }",
            regressing: "ctr: { relative: -10% }",
        },
    }
}

fn scenario_text(
    name: &str,
    rps: &str,
    duration: &str,
    baseline: &str,
    canary: Option<&str>,
) -> String {
    let canary = canary.map_or(String::new(), |c| format!("  canary:\n    {c}\n"));
    let baseline = baseline.trim_start_matches('\n');
    format!(
        "apiVersion: canaryd.dev/v1\nkind: Scenario\nmetadata: {{ name: {name} }}\nspec:\n  duration: {duration}\n  traffic: {{ requestsPerSecond: {rps}, diurnalAmplitude: 0.3 }}\n  baseline:\n{baseline}\n{canary}"
    )
}

fn trace(file: &str) -> String {
    let path = format!("{}/../rollout-policies/{file}", env!("CARGO_MANIFEST_DIR"));
    let policy = parse_policy(file, &std::fs::read(&path).unwrap()).unwrap();
    if let Err(e) = check_policy(&policy) {
        return format!("skipped: {e}\n");
    }
    let t = traffic(file);
    let mut out = String::new();
    for (label, rps, canary) in [
        ("healthy", t.rps, Some(t.healthy)),
        ("regressing", t.rps, Some(t.regressing)),
        ("no-data", "0.0001", None),
    ] {
        let text = scenario_text(label, rps, t.duration, t.baseline, canary);
        let scenario = parse_scenario(label, text.as_bytes()).unwrap();
        let source = model_source(&scenario, &policy);
        let opts = SimOptions {
            approval_delay: Duration::from_secs(3600),
            ..SimOptions::default()
        };
        let r = simulate_one(&policy, &source, Analyst::Canaryd, 7, 0, &opts, true).unwrap();
        let at = r.decided_at_s.map_or("-".to_owned(), |s| {
            format_duration(Duration::from_secs_f64(s))
        });
        out.push_str(&format!(
            "== {label} ({rps} rps): {} at {at}, trigger {}, canary requests {}\n",
            r.outcome.as_str(),
            r.trigger.as_deref().unwrap_or("-"),
            r.canary_requests_before_decision
        ));
        for line in &r.timeline {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

macro_rules! trace_test {
    ($name:ident, $file:literal) => {
        #[test]
        fn $name() {
            expect_file![concat!("traces/", $file, ".txt")].assert_eq(&trace($file));
        }
    };
}

trace_test!(recommender, "recommender.yaml");
trace_test!(emergency_hotfix, "emergency-hotfix.yaml");
trace_test!(experiment_search_ranking, "experiment-search-ranking.yaml");
trace_test!(fraud, "fraud.yaml");
trace_test!(medical_imaging_triage, "medical-imaging-triage.yaml");
trace_test!(credit_risk, "credit-risk.yaml");
trace_test!(ride_sharing_eta, "ride-sharing-eta.yaml");
trace_test!(checkout_web, "checkout-web.yaml");

#[test]
fn every_policy_file_has_a_trace() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../rollout-policies");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    let traced = [
        "checkout-web.yaml",
        "credit-risk.yaml",
        "emergency-hotfix.yaml",
        "experiment-search-ranking.yaml",
        "fraud.yaml",
        "medical-imaging-triage.yaml",
        "recommender.yaml",
        "ride-sharing-eta.yaml",
    ];
    assert_eq!(files, traced, "add a trace_test! for each new policy");
}

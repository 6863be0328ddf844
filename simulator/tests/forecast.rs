//! `policy explain --rps` forecasts against the simulator: for each kind of
//! statistical trigger `explain` forecasts (the count test on a rare ratio,
//! the normal test on a common one, a canary-alone rate threshold), a canary
//! changed by exactly twice the trigger's tolerance (what the forecast
//! assumes) at a steady weight of 10%, at two traffic levels. The mean
//! canary requests before the rollback, over the runs, must match the
//! forecast within 10%.
//!
//! The policy holds one trigger and one weight (10% for long enough that
//! every run is rolled back there), and the traffic is steady: the
//! forecast is made for one weight and one rate. Fixed seed, deterministic.

use std::time::Duration;

use canaryd::monitor::forecast;
use canaryd::policy::{Policy, Weight, parse_policy};
use canaryd_sim::scenario::parse_scenario;
use canaryd_sim::{SimOptions, model_source, simulate};

fn policy(trigger: &str) -> Policy {
    let text = format!(
        "apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: {{ name: forecast }}
spec:
  analysis: {{ interval: 10s, alpha: 0.05, maxDuration: 30h, requireNoHarm: false }}
  steps:
    - setWeight: 10
    - bake: 24h
    - setWeight: 100
  metrics:
    ctr: {{ kind: ratio, numerator: clicks, denominator: impressions }}
    error_rate: {{ kind: ratio, numerator: errors, denominator: requests }}
  triggers:
    - {trigger}
"
    );
    parse_policy("forecast.yaml", text.as_bytes()).unwrap()
}

/// Mean canary requests before the rollback over `runs` runs, and the share
/// of runs rolled back.
fn simulated(p: &Policy, rps: u32, baseline: &str, canary: &str, runs: u32) -> (f64, f64) {
    let text = format!(
        "apiVersion: canaryd.dev/v1
kind: Scenario
metadata: {{ name: twice-the-tolerance }}
spec:
  duration: 26h
  traffic: {{ requestsPerSecond: {rps}, diurnalAmplitude: 0 }}
  baseline: {baseline}
  canary: {canary}
"
    );
    let s = parse_scenario("twice.yaml", text.as_bytes()).unwrap();
    let o = SimOptions {
        runs,
        seed: 20_261_205,
        threads: None,
        approval_delay: Duration::ZERO,
        ..SimOptions::default()
    };
    let r = simulate(p, &model_source(&s, p), &o)
        .unwrap()
        .results
        .into_iter()
        .next()
        .unwrap();
    (
        r.canary_requests_before_decision
            .map(|d| d.mean)
            .unwrap_or(f64::NAN),
        r.rollback_rate,
    )
}

struct Case {
    name: &'static str,
    trigger: &'static str,
    baseline: &'static str,
    canary: &'static str,
    base_rate: Option<f64>,
    rps: u32,
}

#[test]
fn explain_forecasts_match_simulated_means_within_ten_percent() {
    let cases = [
        Case {
            name: "errors +40% (count test), 100 rps",
            trigger: "{ name: t, metric: error_rate, vsBaseline: { relativeIncrease: 20% } }",
            baseline: "{ ctr: 0.05, errorRate: 0.01 }",
            canary: "{ errorRate: { relative: 40% } }",
            base_rate: Some(0.01),
            rps: 100,
        },
        Case {
            name: "errors +40% (count test), 400 rps",
            trigger: "{ name: t, metric: error_rate, vsBaseline: { relativeIncrease: 20% } }",
            baseline: "{ ctr: 0.05, errorRate: 0.002 }",
            canary: "{ errorRate: { relative: 40% } }",
            base_rate: Some(0.002),
            rps: 400,
        },
        Case {
            name: "CTR -4% (normal test), 400 rps",
            trigger: "{ name: t, metric: ctr, vsBaseline: { relativeDrop: 2% } }",
            baseline: "{ ctr: 0.05, errorRate: 0.002 }",
            canary: "{ ctr: { relative: -4% } }",
            base_rate: Some(0.05),
            rps: 400,
        },
        Case {
            name: "CTR -4% (normal test), 2000 rps",
            trigger: "{ name: t, metric: ctr, vsBaseline: { relativeDrop: 2% } }",
            baseline: "{ ctr: 0.05, errorRate: 0.002 }",
            canary: "{ ctr: { relative: -4% } }",
            base_rate: Some(0.05),
            rps: 2000,
        },
        Case {
            name: "error rate 2% against a 1% threshold, 20 rps",
            trigger: "{ name: t, metric: error_rate, threshold: { above: 1% } }",
            baseline: "{ ctr: 0.05, errorRate: 0.002 }",
            canary: "{ errorRate: { absolute: 0.02 } }",
            base_rate: None,
            rps: 20,
        },
        Case {
            name: "error rate 2% against a 1% threshold, 200 rps",
            trigger: "{ name: t, metric: error_rate, threshold: { above: 1% } }",
            baseline: "{ ctr: 0.05, errorRate: 0.002 }",
            canary: "{ errorRate: { absolute: 0.02 } }",
            base_rate: None,
            rps: 200,
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let p = policy(c.trigger);
        let f = forecast(
            &p,
            &p.triggers[0],
            f64::from(c.rps),
            Weight::new(10).unwrap(),
            c.base_rate,
        )
        .unwrap();
        let (mean, rolled_back) = simulated(&p, c.rps, c.baseline, c.canary, 600);
        let error = f.canary_requests / mean - 1.0;
        println!(
            "FORECAST {} | forecast {:.0} canary requests | simulated mean {:.0} (rolled back {:.3}) | error {:+.1}%",
            c.name,
            f.canary_requests,
            mean,
            rolled_back,
            100.0 * error
        );
        assert!(rolled_back > 0.97, "{}: rolled back {rolled_back}", c.name);
        if error.abs() > 0.10 {
            failures.push(format!("{}: {:+.1}%", c.name, 100.0 * error));
        }
    }
    assert!(
        failures.is_empty(),
        "forecasts off by more than 10%: {failures:?}"
    );
}

//! Statistical sanity of whole simulated rollouts with the real engine:
//! A/A runs roll back at most `alpha` plus a binomial margin, regressions
//! are rolled back by the right trigger, healthy canaries are promoted after
//! their bakes and approvals, no sooner and not much later. Same seed, same
//! report, whatever the thread count.
//!
//! Default runs are short (time-compressed policies, a few hundred runs);
//! `CANARYD_STAT_SWEEP=1` adds the real seed policies at full length.

use std::time::Duration;

use canaryd::policy::{Policy, parse_policy};
use canaryd_sim::report::StyleResult;
use canaryd_sim::scenario::parse_scenario;
use canaryd_sim::{SimOptions, model_source, simulate, time_compressed};

const FAST_WEB: &str = include_str!("../policies/fast-web.yaml");

fn scenario(name: &str, duration: &str, rps: u32, canary: &str) -> canaryd_sim::scenario::Scenario {
    let text = format!(
        "apiVersion: canaryd.dev/v1
kind: Scenario
metadata: {{ name: {name} }}
spec:
  duration: {duration}
  traffic: {{ requestsPerSecond: {rps}, diurnalAmplitude: 0.5 }}
  baseline:
    ctr: 0.05
    errorRate: 0.002
    latency: {{ distribution: lognormal, p50: 80ms, p95: 150ms }}
{canary}"
    );
    parse_scenario(name, text.as_bytes()).unwrap()
}

fn policy(text: &str) -> Policy {
    parse_policy("test-policy", text.as_bytes()).unwrap()
}

fn real_policy(file: &str) -> Policy {
    let path = format!("{}/../rollout-policies/{file}", env!("CARGO_MANIFEST_DIR"));
    parse_policy(&path, &std::fs::read(&path).unwrap()).unwrap()
}

fn opts(runs: u32, approval_delay: Duration) -> SimOptions {
    SimOptions {
        runs,
        seed: 20_261_126,
        threads: None,
        approval_delay,
        ..SimOptions::default()
    }
}

fn run(p: &Policy, s: &canaryd_sim::scenario::Scenario, o: &SimOptions) -> StyleResult {
    let report = simulate(p, &model_source(s, p), o).unwrap();
    report.results.into_iter().next().unwrap()
}

/// `alpha` plus three binomial standard errors at `n` runs: a correct policy
/// exceeds it with probability about 0.1%.
fn margin(alpha: f64, n: u32) -> f64 {
    alpha + 3.0 * (alpha * (1.0 - alpha) / f64::from(n)).sqrt()
}

#[test]
fn a_a_rollbacks_stay_within_alpha() {
    let p = policy(FAST_WEB);
    let s = scenario("aa", "2h", 100, "");
    let n = 300;
    let r = run(&p, &s, &opts(n, Duration::from_secs(600)));
    let bound = margin(0.05, n);
    eprintln!(
        "fast-web A/A: rollback rate {} over {n} runs (bound {bound:.3})",
        r.rollback_rate
    );
    assert!(r.rollback_rate <= bound, "{r:?}");
}

#[test]
fn a_a_on_real_policies_time_compressed() {
    // The recommender's 48h bake compressed 24x; the emergency hotfix and the
    // search experiment as written or compressed. Objective triggers and the
    // gates stay as written.
    let n = 150;
    let s = scenario("aa", "3h", 100, "");
    for (file, factor, alpha) in [
        ("recommender.yaml", 24, 0.01),
        ("emergency-hotfix.yaml", 1, 0.01),
        ("experiment-search-ranking.yaml", 84, 0.05),
    ] {
        let p = time_compressed(&real_policy(file), factor);
        let r = run(&p, &s, &opts(n, Duration::from_secs(300)));
        let bound = margin(alpha, n);
        eprintln!(
            "{file} (/{factor}) A/A: rollback rate {} over {n} runs (bound {bound:.3}), by trigger {:?}",
            r.rollback_rate, r.by_trigger
        );
        assert!(r.rollback_rate <= bound, "{file}: {r:?}");
    }
}

#[test]
fn regressions_are_rolled_back_by_the_right_trigger() {
    let p = policy(FAST_WEB);
    let o = opts(100, Duration::from_secs(600));
    let ctr = run(
        &p,
        &scenario("ctr", "2h", 100, "  canary: { ctr: { relative: -20% } }\n"),
        &o,
    );
    eprintln!("ctr -20%: {ctr:?}");
    assert!(ctr.rollback_rate >= 0.95, "{ctr:?}");
    assert!(
        ctr.by_trigger.get("ctr-drop").copied().unwrap_or(0) >= 90,
        "{ctr:?}"
    );
    let err = run(
        &p,
        &scenario(
            "errors",
            "2h",
            100,
            "  canary: { errorRate: { absolute: 0.006 } }\n",
        ),
        &o,
    );
    eprintln!("errors x3: {err:?}");
    assert!(err.rollback_rate >= 0.95, "{err:?}");
    assert!(
        err.by_trigger.get("error-rate").copied().unwrap_or(0) >= 90,
        "{err:?}"
    );
    // Caught at the 10% step, long before the 50% step would start.
    assert!(err.time_to_rollback_s.unwrap().p90 < 20.0 * 60.0, "{err:?}");
}

#[test]
fn healthy_canary_is_promoted_after_its_bakes_and_approvals() {
    let p = policy(FAST_WEB);
    let delay = Duration::from_secs(600);
    let r = run(&p, &scenario("healthy", "3h", 100, ""), &opts(100, delay));
    eprintln!("healthy: {r:?}");
    // A/A with alpha 0.05: nearly all promote.
    assert!(r.promotion_rate >= 0.9, "{r:?}");
    let t = r.time_to_promotion_s.unwrap();
    // Bakes 20m + 20m, plus the approval delay: no sooner.
    let floor = (40.0 * 60.0) + delay.as_secs_f64();
    // Not much later: within three intervals (minSamples and the warm-up at
    // 100 rps take one or two).
    assert!(t.p50 >= floor && t.p90 <= floor + 30.0, "{t:?}");
}

#[test]
fn same_seed_same_report_whatever_the_threads() {
    let p = time_compressed(&real_policy("recommender.yaml"), 48);
    let s = scenario(
        "drop",
        "90m",
        200,
        "  canary: { ctr: { relative: -4% }, latency: { scale: 1.05 } }\n",
    );
    let src = model_source(&s, &p);
    let mut o = opts(8, Duration::from_secs(300));
    o.compare = true;
    o.threads = Some(1);
    let one = serde_json::to_string(&simulate(&p, &src, &o).unwrap()).unwrap();
    o.threads = Some(2);
    let two = serde_json::to_string(&simulate(&p, &src, &o).unwrap()).unwrap();
    assert_eq!(one, two);
    o.seed += 1;
    let other = serde_json::to_string(&simulate(&p, &src, &o).unwrap()).unwrap();
    assert_ne!(one, other, "a different seed gives different traffic");
}

/// Full-length real policies; minutes of CPU. `CANARYD_STAT_SWEEP=1`.
#[test]
fn sweep_real_policies_full_length() {
    if std::env::var("CANARYD_STAT_SWEEP").as_deref() != Ok("1") {
        eprintln!("skipped: set CANARYD_STAT_SWEEP=1 for the full-length sweep");
        return;
    }
    let n = 200;
    let s = scenario("aa", "60h", 200, "");
    for (file, alpha) in [("recommender.yaml", 0.01), ("emergency-hotfix.yaml", 0.01)] {
        let p = real_policy(file);
        let r = run(&p, &s, &opts(n, Duration::from_secs(3600)));
        let bound = margin(alpha, n);
        eprintln!(
            "{file} A/A full length: rollback rate {} over {n} runs (bound {bound:.3})",
            r.rollback_rate
        );
        assert!(r.rollback_rate <= bound, "{file}: {r:?}");
    }
    let p = policy(FAST_WEB);
    let n = 2000;
    let r = run(
        &p,
        &scenario("aa", "2h", 100, ""),
        &opts(n, Duration::from_secs(600)),
    );
    let bound = margin(0.05, n);
    eprintln!(
        "fast-web A/A: rollback rate {} over {n} runs (bound {bound:.3})",
        r.rollback_rate
    );
    assert!(r.rollback_rate <= bound, "{r:?}");
}

//! Promotion needs evidence, not silence (PRODUCT.md section 2,
//! `requireNoHarm`): on a policy with no explicit gates
//! (`policies/no-harm-web.yaml`), a canary whose true harm is 2.5 times a
//! trigger's tolerance is promoted in at most `alpha` of runs (plus three
//! binomial standard errors), for an error-rate trigger (`relativeIncrease`)
//! and a CTR trigger (`relativeDrop`); the same policy with
//! `requireNoHarm: false` shows what the engine did before (printed, and
//! required to be worse, so the test can fail if the gates stop working); a
//! healthy canary with enough traffic is promoted in most runs.
//!
//! Fixed seed, deterministic. `CANARYD_STAT_SWEEP=1` runs 4,000 runs per
//! case instead of 1,000.

use std::time::Duration;

use canaryd::policy::{Policy, parse_policy};
use canaryd_sim::report::StyleResult;
use canaryd_sim::scenario::{Scenario, parse_scenario};
use canaryd_sim::{SimOptions, model_source, simulate};

const NO_HARM_WEB: &str = include_str!("../policies/no-harm-web.yaml");

fn policy(opted_out: bool) -> Policy {
    let text = if opted_out {
        NO_HARM_WEB.replace(
            "maxDuration: 2h }",
            "maxDuration: 2h, requireNoHarm: false }",
        )
    } else {
        NO_HARM_WEB.to_owned()
    };
    assert!(!opted_out || text.contains("requireNoHarm: false"));
    parse_policy("no-harm-web.yaml", text.as_bytes()).unwrap()
}

fn scenario(name: &str, rps: u32, canary: &str) -> Scenario {
    let text = format!(
        "apiVersion: canaryd.dev/v1
kind: Scenario
metadata: {{ name: {name} }}
spec:
  duration: 3h
  traffic: {{ requestsPerSecond: {rps}, diurnalAmplitude: 0.5 }}
  baseline: {{ ctr: 0.05, errorRate: 0.01 }}
{canary}"
    );
    parse_scenario(name, text.as_bytes()).unwrap()
}

fn runs() -> u32 {
    if std::env::var("CANARYD_STAT_SWEEP").as_deref() == Ok("1") {
        4_000
    } else {
        1_000
    }
}

fn run(p: &Policy, s: &Scenario, runs: u32) -> StyleResult {
    let o = SimOptions {
        runs,
        seed: 20_261_205,
        threads: None,
        approval_delay: Duration::ZERO,
        ..SimOptions::default()
    };
    simulate(p, &model_source(s, p), &o)
        .unwrap()
        .results
        .into_iter()
        .next()
        .unwrap()
}

/// The outcomes (rounded to three decimals in the report) add up to all
/// runs.
fn every_run_ended(r: &StyleResult) -> bool {
    let sum = r.rollback_rate + r.promotion_rate + r.inconclusive_rate + r.unfinished_rate;
    (sum - 1.0).abs() < 0.005
}

/// `alpha` plus three binomial standard errors at `n` runs.
fn margin(alpha: f64, n: u32) -> f64 {
    alpha + 3.0 * (alpha * (1.0 - alpha) / f64::from(n)).sqrt()
}

/// Harm of 2.5x a tolerance at `rps`: promoted at most alpha of the time
/// with the implied gates, and more often than that without them.
fn harmful(name: &str, rps: u32, canary: &str) {
    let n = runs();
    let s = scenario(name, rps, canary);
    let with = run(&policy(false), &s, n);
    let without = run(&policy(true), &s, n);
    let bound = margin(0.05, n);
    eprintln!(
        "{name} at {rps} req/s, {n} runs: promoted {:.4} with requireNoHarm (bound {bound:.4}; rolled back {:.4}, inconclusive {:.4}), {:.4} with requireNoHarm: false (rolled back {:.4})",
        with.promotion_rate,
        with.rollback_rate,
        with.inconclusive_rate,
        without.promotion_rate,
        without.rollback_rate
    );
    assert!(with.promotion_rate <= bound, "{with:?}");
    assert!(
        without.promotion_rate > bound,
        "the scenario must promote a harmful canary without the gates, or it tests nothing: {without:?}"
    );
    assert!(every_run_ended(&with), "{with:?}");
}

#[test]
fn errors_up_2_5x_the_tolerance_are_promoted_at_most_alpha() {
    // error-rate tolerates +20%: the canary's errors are +50%.
    harmful(
        "errors-plus-50pct",
        50,
        "  canary: { errorRate: { relative: 50% } }\n",
    );
}

#[test]
fn ctr_down_2_5x_the_tolerance_is_promoted_at_most_alpha() {
    // ctr-drop tolerates -2%: the canary's CTR is -5%.
    harmful(
        "ctr-minus-5pct",
        50,
        "  canary: { ctr: { relative: -5% } }\n",
    );
}

#[test]
fn errors_up_exactly_the_margin_are_promoted_at_most_alpha() {
    // The null of the implied gate itself (+40% = 2 x 20%), at a traffic
    // where the trigger alone misses it in some runs.
    let n = runs();
    let s = scenario(
        "errors-plus-40pct",
        100,
        "  canary: { errorRate: { relative: 40% } }\n",
    );
    let with = run(&policy(false), &s, n);
    let without = run(&policy(true), &s, n);
    eprintln!(
        "errors-plus-40pct at 100 req/s, {n} runs: promoted {:.4} with requireNoHarm, {:.4} with requireNoHarm: false",
        with.promotion_rate, without.promotion_rate
    );
    assert!(with.promotion_rate <= margin(0.05, n), "{with:?}");
    assert!(without.promotion_rate > margin(0.05, n), "{without:?}");
}

#[test]
fn a_healthy_canary_with_enough_traffic_shows_its_gates_and_is_promoted() {
    let n = 300;
    let r = run(&policy(false), &scenario("aa", 2_000, ""), n);
    eprintln!("A/A at 2000 req/s, {n} runs: {r:?}");
    assert!(r.promotion_rate >= 0.9, "{r:?}");
    // The bakes take 30m: at this traffic the implied gates are shown
    // before the last step needs them, so they hold nothing.
    let t = r.time_to_promotion_s.unwrap();
    assert!(t.p50 >= 30.0 * 60.0 && t.p90 <= 31.0 * 60.0, "{t:?}");
    // At 50 req/s (the harmful scenarios' traffic) a healthy canary mostly
    // cannot show them within maxDuration: reported, not required.
    let low = run(&policy(false), &scenario("aa-low", 50, ""), n);
    eprintln!("A/A at 50 req/s, {n} runs: {low:?}");
    assert!(every_run_ended(&low), "{low:?}");
}

#[test]
fn the_explain_forecast_of_showing_the_gates_matches_the_simulated_mean() {
    // Long enough a maxDuration that no run is cut short; flat traffic (the
    // forecast assumes a constant rate).
    let p = parse_policy(
        "no-harm-web.yaml",
        NO_HARM_WEB
            .replace("maxDuration: 2h", "maxDuration: 12h")
            .as_bytes(),
    )
    .unwrap();
    let text = "apiVersion: canaryd.dev/v1
kind: Scenario
metadata: { name: aa-flat }
spec:
  duration: 14h
  traffic: { requestsPerSecond: 50 }
  baseline: { ctr: 0.05, errorRate: 0.01 }
";
    let s = parse_scenario("aa-flat", text.as_bytes()).unwrap();
    let r = run(&p, &s, 400);
    let simulated = r.time_to_promotion_s.unwrap().mean;
    let base = |metric: &str| if metric == "ctr" { 0.05 } else { 0.01 };
    let forecast = p
        .implied_gates()
        .map(|g| {
            canaryd::monitor::gate_schedule(&p, g, 50.0, Some(base(g.check.metric_name())))
                .unwrap()
                .shown_at
                .unwrap()
                .as_secs_f64()
        })
        .fold(30.0 * 60.0, f64::max);
    eprintln!(
        "healthy at 50 req/s: promoted {} at mean {simulated:.0}s; forecast {forecast:.0}s",
        r.promotion_rate
    );
    assert!(r.promotion_rate >= 0.99, "{r:?}");
    assert!(
        (simulated / forecast - 1.0).abs() <= 0.15,
        "simulated {simulated:.0}s, forecast {forecast:.0}s"
    );
}

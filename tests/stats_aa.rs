//! A/A calibration: for each statistical test, thousands of seeded healthy
//! rollouts per traffic configuration; the share that (falsely) crossed must
//! stay at most alpha plus three binomial standard errors. Most
//! configurations also sit *on* the null boundary (the canary exactly as bad
//! as tolerated), the least favourable healthy case.
//!
//! Default: 1,000 runs × 2 h (240 intervals of 30 s) per configuration.
//! `CANARYD_STAT_SWEEP=1` runs 5,000 per configuration.
//!
//! Measured with `CANARYD_STAT_SWEEP=1 cargo test -p canaryd
//! --no-default-features --test stats_aa -- --nocapture` (test profile,
//! opt-level 2; alpha = 0.05, 5,000
//! runs each, bound 0.0592), false-crossing rates over low / high 5/95 /
//! 50/50 / split change / diurnal:
//! - error-rate relativeIncrease 10%, count test, A/A: 0.0010 / 0 / 0.0004 /
//!   0.0006 / 0; on the null boundary (canary ×1.1): high 0.0162, diurnal 0.
//! - CTR relativeDrop 2%, normal mixture, A/A: 0 / 0 / 0.0004 / 0.0008 / 0;
//!   boundary (canary ×0.98): high 0.0132, diurnal 0.
//! - error-rate threshold 0.5%, canary at 0.5%: 0.0086 / 0.0106 / 0.0150 /
//!   0.0132 / 0 (diurnal stays below the threshold except at its peak).
//! - p95 threshold 200 ms, canary P(>200 ms) = 5%: 0.0120 / 0.0048 / 0.0056 /
//!   0.0130 / 0.
//! - p95 relativeIncrease 10% (exceedance, boundary): 0.0094 / 0.0048 /
//!   0.0066 / 0.0104 / 0.
//! - disparity minRatio 0.8, min/max exactly 0.8: 0 in all five.
//! - sample-ratio check: 0.0196 / 0.0046 / 0.0082 / 0.0170 / 0.0134.

mod stats_support;

use canaryd::stats::{
    ChangeDetection, Disparity, QuantileThreshold, QuantileVsBaseline, RatioMethod, RatioThreshold,
    RatioVsBaseline, SampleRatioCheck, StatTest,
};
use stats_support::*;

const ALPHA: f64 = 0.05;

fn runs() -> usize {
    if sweep() { 5_000 } else { 1_000 }
}

fn change() -> ChangeDetection {
    ChangeDetection::over_horizon(HORIZON_INTERVALS, 31)
}

/// Runs `runs()` rollouts of every scenario; `make_interval(rng, scenario, i, effect)`
/// builds interval `i`. Returns false-crossing rates per configuration.
fn calibrate(
    label: &str,
    make: impl Fn() -> StatTest,
    effects: &[(f64, bool)],
    make_interval: impl Fn(&mut Rng, &Scenario, u64, f64) -> (canaryd::stats::IntervalSnapshot, f64),
) {
    let runs = runs();
    let bound = ALPHA + binomial_margin(ALPHA, runs);
    for (s_idx, sc) in scenarios().iter().enumerate() {
        for &(effect, all_scenarios) in effects {
            if !(all_scenarios || sc.name.starts_with("high") || sc.name.starts_with("diurnal")) {
                continue;
            }
            let mut fires = 0;
            for r in 0..runs {
                let mut rng = Rng::new(
                    0xA11CE ^ ((s_idx as u64) << 40) ^ ((effect * 1000.0) as u64) << 20 ^ r as u64,
                );
                let mut t = make();
                let res = run(&mut t, HORIZON_INTERVALS, |i| {
                    make_interval(&mut rng, sc, i, effect)
                });
                fires += usize::from(res.crossed_at.is_some());
            }
            let rate = fires as f64 / runs as f64;
            println!(
                "A/A {label} | {} | canary effect ×{effect} | {runs} runs | false crossings {fires} ({rate:.4}) | bound {bound:.4}",
                sc.name
            );
            assert!(rate <= bound, "{label} / {}: {rate} > {bound}", sc.name);
        }
    }
}

fn two_arm_counts(
    rng: &mut Rng,
    sc: &Scenario,
    i: u64,
    num: &str,
    den: &str,
    p_b: f64,
    effect: f64,
) -> (canaryd::stats::IntervalSnapshot, f64) {
    let (nc, nb, m) = sc.route(rng, i);
    let pb = p_b * m.rate;
    let events = (rng.binom(nc, pb * effect), rng.binom(nb, pb));
    let s = counts_snapshot(i, (nc, nb), num, den, events);
    (s, sc.at(i).weight)
}

#[test]
fn aa_error_rate_vs_baseline_count_test() {
    calibrate(
        "error-rate relativeIncrease 10% (count test)",
        || {
            StatTest::RatioVsBaseline(
                RatioVsBaseline::relative_increase("errors", "requests", 0.10, ALPHA, change())
                    .unwrap(),
            )
        },
        &[(1.0, true), (1.10, false)],
        |rng, sc, i, e| two_arm_counts(rng, sc, i, "errors", "requests", 0.005, e),
    );
}

#[test]
fn aa_ctr_vs_baseline_normal_test() {
    calibrate(
        "CTR relativeDrop 2% (normal mixture)",
        || {
            StatTest::RatioVsBaseline(
                RatioVsBaseline::relative_drop("clicks", "impressions", 0.02, ALPHA, change())
                    .unwrap()
                    .with_method(RatioMethod::Auto),
            )
        },
        &[(1.0, true), (0.98, false)],
        |rng, sc, i, e| two_arm_counts(rng, sc, i, "clicks", "impressions", 0.05, e),
    );
}

#[test]
fn aa_error_rate_threshold() {
    calibrate(
        "error-rate threshold above 0.5% (canary at 0.5%)",
        || {
            StatTest::RatioThreshold(
                RatioThreshold::new("errors", "requests", 0.005, ALPHA, change()).unwrap(),
            )
        },
        &[(1.0, true)],
        |rng, sc, i, _| {
            let (nc, nb, m) = sc.route(rng, i);
            let mut s = snapshot(i);
            // On the boundary at every moment (at the diurnal peak for diurnal load).
            let p = if sc.diurnal {
                0.005 * m.rate / 1.5
            } else {
                0.005
            };
            s.canary.add("requests", nc);
            s.baseline.add("requests", nb);
            s.canary.add("errors", rng.binom(nc, p));
            (s, sc.at(i).weight)
        },
    );
}

/// Latency histograms reduced to what the tests read: `x` observations well
/// above `t_ms`, the rest well below.
fn exceedance_hist(arm: &mut canaryd::stats::ArmData, n: u64, x: u64, t_ms: f64) {
    arm.add("requests", n);
    let h = arm.latency_mut("latency_ms");
    h.record_n_us((t_ms * 3000.0) as u64, x);
    h.record_n_us((t_ms * 300.0) as u64, n - x);
}

#[test]
fn aa_p95_threshold() {
    calibrate(
        "p95 threshold above 200ms (canary P(>200ms) = 5%)",
        || {
            StatTest::QuantileThreshold(
                QuantileThreshold::new("latency_ms", 0.95, 200.0, ALPHA, change()).unwrap(),
            )
        },
        &[(1.0, true)],
        |rng, sc, i, _| {
            let (nc, nb, m) = sc.route(rng, i);
            let mut s = snapshot(i);
            let p = if sc.diurnal {
                0.05 * m.rate / 1.5
            } else {
                0.05
            };
            let x = rng.binom(nc, p);
            exceedance_hist(&mut s.canary, nc, x, 200.0);
            s.baseline.add("requests", nb);
            (s, sc.at(i).weight)
        },
    );
}

#[test]
fn aa_p95_vs_baseline_exceedance() {
    // T fixed in advance at 200 ms; canary P(> 1.1·T) equals baseline P(> T):
    // the canary's tail is exactly 10% slower, the null boundary.
    calibrate(
        "p95 relativeIncrease 10% (two-arm exceedance at T = 200ms)",
        || {
            StatTest::QuantileVsBaseline(
                QuantileVsBaseline::relative_increase("latency_ms", 0.95, 0.10, ALPHA, change())
                    .unwrap()
                    .with_threshold_ms(200.0),
            )
        },
        &[(1.0, true)],
        |rng, sc, i, _| {
            let (nc, nb, m) = sc.route(rng, i);
            let mut s = snapshot(i);
            let p = 0.05 * m.rate;
            let xc = rng.binom(nc, p);
            let xb = rng.binom(nb, p);
            exceedance_hist(&mut s.canary, nc, xc, 220.0);
            exceedance_hist(&mut s.baseline, nb, xb, 200.0);
            (s, sc.at(i).weight)
        },
    );
}

#[test]
fn aa_disparity() {
    // Four groups; the lowest rate is exactly 0.8 × the highest (boundary).
    calibrate(
        "approval disparity minRatio 0.8 (4 groups, min/max = 0.8)",
        || StatTest::Disparity(Disparity::new("approvals", "requests", 0.8, ALPHA, 4).unwrap()),
        &[(1.0, true)],
        |rng, sc, i, _| {
            let (nc, nb, m) = sc.route(rng, i);
            let mut s = snapshot(i);
            s.canary.add("requests", nc);
            s.baseline.add("requests", nb);
            let mut left = nc;
            for (g, rate) in [("a", 0.24), ("b", 0.30), ("c", 0.30), ("d", 0.30)]
                .iter()
                .enumerate()
                .map(|(k, x)| (k, *x))
            {
                let n = if g == 3 {
                    left
                } else {
                    rng.binom(left, 1.0 / (4 - g) as f64)
                };
                left -= n;
                let p = if sc.diurnal {
                    rate.1 * m.rate / 1.5
                } else {
                    rate.1
                };
                s.canary.add_group("requests", rate.0, n);
                s.canary.add_group("approvals", rate.0, rng.binom(n, p));
            }
            (s, sc.at(i).weight)
        },
    );
}

#[test]
fn aa_sample_ratio_check() {
    let runs = runs();
    let bound = ALPHA + binomial_margin(ALPHA, runs);
    for (s_idx, sc) in scenarios().iter().enumerate() {
        let mut fires = 0;
        for r in 0..runs {
            let mut rng = Rng::new(0x5A5A ^ ((s_idx as u64) << 40) ^ r as u64);
            let mut t = SampleRatioCheck::new("requests", ALPHA, change()).unwrap();
            for i in 0..HORIZON_INTERVALS {
                let (nc, nb, m) = sc.route(&mut rng, i);
                let mut s = snapshot(i);
                s.canary.add("requests", nc);
                s.baseline.add("requests", nb);
                // The check is told the weight the router really applied.
                if t.observe(&s, m.weight).crossed() {
                    fires += 1;
                    break;
                }
            }
        }
        let rate = fires as f64 / runs as f64;
        println!(
            "A/A sample-ratio check | {} | {runs} runs | false crossings {fires} ({rate:.4}) | bound {bound:.4}",
            sc.name
        );
        assert!(rate <= bound);
    }
}

//! Power, detection cost against the Wald SPRT oracle, late-change delays,
//! confidence-sequence coverage, extreme counts and checkpoint/restore.
//! Seeded and deterministic; figures are printed (`--nocapture`).

mod stats_support;

use canaryd::stats::forecast::{
    Cadence, Conditions, rate_threshold, ratio_vs_baseline, two_arm_count,
};
use canaryd::stats::{
    ChangeDetection, Direction, Disparity, IntervalSnapshot, QuantileThreshold, QuantileVsBaseline,
    RatioThreshold, RatioVsBaseline, StatTest, alpha_share,
};
use stats_support::*;

/// A policy with three statistical triggers at alpha = 0.01.
fn share() -> f64 {
    alpha_share(0.01, 3)
}

const LONG_HORIZON: u64 = 1440; // 12 h of 30 s intervals

/// Where a forecast is made for these tests: no schedule, no warm-up
/// (they feed every interval), 30 s intervals.
fn conditions(rps_total: f64, canary_weight: f64) -> Conditions<'static> {
    Conditions {
        rps_total,
        canary_weight,
        alpha_share: share(),
        change: long_change(),
        schedule: None,
        cadence: Some(Cadence {
            interval_s: INTERVAL_MS as f64 / 1000.0,
            warmup_intervals: 0,
        }),
    }
}

fn long_change() -> ChangeDetection {
    ChangeDetection::over_horizon(LONG_HORIZON, 31)
}

fn power_runs() -> usize {
    if sweep() { 1_000 } else { 200 }
}

fn counts_interval(
    rng: &mut Rng,
    sc: &Scenario,
    i: u64,
    num: &str,
    den: &str,
    p_b: f64,
    effect: f64,
) -> (IntervalSnapshot, f64) {
    let (nc, nb, m) = sc.route(rng, i);
    let events = (
        rng.binom(nc, p_b * m.rate * effect),
        rng.binom(nb, p_b * m.rate),
    );
    let s = counts_snapshot(i, (nc, nb), num, den, events);
    (s, m.weight)
}

fn exceedance_hist(arm: &mut canaryd::stats::ArmData, n: u64, x: u64, t_ms: f64) {
    arm.add("requests", n);
    let h = arm.latency_mut("latency_ms");
    h.record_n_us((t_ms * 3000.0) as u64, x);
    h.record_n_us((t_ms * 300.0) as u64, n - x);
}

struct Power {
    detected: usize,
    runs: usize,
    mean_canary_requests: f64,
    mean_minutes: f64,
}

fn measure(
    make: impl Fn() -> StatTest,
    horizon: u64,
    seed: u64,
    mut make_interval: impl FnMut(&mut Rng, u64) -> (IntervalSnapshot, f64),
) -> Power {
    let runs = power_runs();
    let (mut detected, mut req, mut mins) = (0, 0.0, 0.0);
    for r in 0..runs {
        let mut rng = Rng::new(seed ^ (r as u64) << 8);
        let mut t = make();
        let res = run(&mut t, horizon, |i| make_interval(&mut rng, i));
        if let Some(at) = res.crossed_at {
            detected += 1;
            req += res.canary_requests as f64;
            mins += (at + 1) as f64 * INTERVAL_MS as f64 / 60_000.0;
        }
    }
    let d = detected.max(1) as f64;
    Power {
        detected,
        runs,
        mean_canary_requests: req / d,
        mean_minutes: mins / d,
    }
}

fn report(label: &str, p: &Power, forecast_req: f64, oracle_req: f64) {
    println!(
        "POWER {label} | detected {}/{} | mean canary requests {:.0} ({:.1} min) | forecast {:.0} | Wald oracle {:.0} | ratio to oracle {:.2}",
        p.detected,
        p.runs,
        p.mean_canary_requests,
        p.mean_minutes,
        forecast_req,
        oracle_req,
        p.mean_canary_requests / oracle_req
    );
}

/// `policy explain --rps` forecasts this test's mean detection effort
/// within 10%.
fn assert_forecast_close(label: &str, p: &Power, forecast_req: f64) {
    let error = forecast_req / p.mean_canary_requests - 1.0;
    assert!(
        error.abs() <= 0.10,
        "{label}: forecast {forecast_req:.0} against {:.0} measured ({:+.1}%)",
        p.mean_canary_requests,
        100.0 * error
    );
}

fn steady(rps: f64, weight: f64) -> Scenario {
    Scenario {
        name: "steady",
        rps,
        weight,
        weight_change: None,
        diurnal: false,
    }
}

#[test]
fn power_error_rate_vs_baseline() {
    // 0.5% errors, relativeIncrease 25%, canary truly 50% worse (2× tolerance).
    let sc = steady(200.0, 0.05);
    let change = long_change();
    let p = measure(
        || {
            StatTest::RatioVsBaseline(
                RatioVsBaseline::relative_increase("errors", "requests", 0.25, share(), change)
                    .unwrap(),
            )
        },
        LONG_HORIZON,
        1,
        |rng, i| counts_interval(rng, &sc, i, "errors", "requests", 0.005, 1.5),
    );
    let f = ratio_vs_baseline(0.005, Direction::Increase, 0.25, &conditions(200.0, 0.05));
    report(
        "error rate 0.5%→0.75%, relativeIncrease 25%, 200 rps, 5% canary",
        &p,
        f.canary_requests,
        f.oracle_canary_requests,
    );
    assert!(p.detected as f64 >= 0.95 * p.runs as f64);
    assert!(p.mean_canary_requests < 4.0 * f.oracle_canary_requests);
    assert_forecast_close("errors vs baseline", &p, f.canary_requests);
}

#[test]
fn power_ctr_vs_baseline() {
    // CTR 5%, relativeDrop 2%, canary truly 4% worse; 2000 rps at 10% canary.
    let sc = steady(2000.0, 0.10);
    let change = long_change();
    let p = measure(
        || {
            StatTest::RatioVsBaseline(
                RatioVsBaseline::relative_drop("clicks", "impressions", 0.02, share(), change)
                    .unwrap(),
            )
        },
        LONG_HORIZON,
        2,
        |rng, i| counts_interval(rng, &sc, i, "clicks", "impressions", 0.05, 0.96),
    );
    let f = ratio_vs_baseline(0.05, Direction::Decrease, 0.02, &conditions(2000.0, 0.10));
    report(
        "CTR 5%→4.8%, relativeDrop 2%, 2000 rps, 10% canary",
        &p,
        f.canary_requests,
        f.oracle_canary_requests,
    );
    assert!(p.detected as f64 >= 0.95 * p.runs as f64);
    assert_forecast_close("CTR vs baseline", &p, f.canary_requests);
}

#[test]
fn power_thresholds() {
    let sc = steady(20.0, 0.05);
    let change = long_change();
    let p = measure(
        || {
            StatTest::RatioThreshold(
                RatioThreshold::new("errors", "requests", 0.005, share(), change).unwrap(),
            )
        },
        LONG_HORIZON,
        3,
        |rng, i| counts_interval(rng, &sc, i, "errors", "requests", 0.010, 1.0),
    );
    let f = rate_threshold(0.005, &conditions(20.0, 0.05));
    report(
        "error-rate threshold 0.5%, canary at 1.0%, 20 rps, 5% canary",
        &p,
        f.canary_requests,
        f.oracle_canary_requests,
    );
    assert!(p.detected as f64 >= 0.95 * p.runs as f64);
    assert_forecast_close("error-rate threshold", &p, f.canary_requests);

    let q = measure(
        || {
            StatTest::QuantileThreshold(
                QuantileThreshold::new("latency_ms", 0.95, 200.0, share(), change).unwrap(),
            )
        },
        LONG_HORIZON,
        4,
        |rng, i| {
            let (nc, nb, m) = sc.route(rng, i);
            let mut s = snapshot(i);
            let x = rng.binom(nc, 0.10);
            exceedance_hist(&mut s.canary, nc, x, 200.0);
            s.baseline.add("requests", nb);
            (s, m.weight)
        },
    );
    let g = rate_threshold(0.05, &conditions(20.0, 0.05));
    report(
        "p95 threshold 200ms, canary P(>200ms) = 10%, 20 rps, 5% canary",
        &q,
        g.canary_requests,
        g.oracle_canary_requests,
    );
    assert!(q.detected as f64 >= 0.95 * q.runs as f64);
    assert_forecast_close("p95 threshold", &q, g.canary_requests);
}

#[test]
fn power_p95_vs_baseline_and_disparity() {
    let sc = steady(20.0, 0.05);
    let change = long_change();
    let p = measure(
        || {
            StatTest::QuantileVsBaseline(
                QuantileVsBaseline::relative_increase("latency_ms", 0.95, 0.10, share(), change)
                    .unwrap()
                    .with_threshold_ms(200.0),
            )
        },
        LONG_HORIZON,
        5,
        |rng, i| {
            let (nc, nb, m) = sc.route(rng, i);
            let mut s = snapshot(i);
            let (xc, xb) = (rng.binom(nc, 0.10), rng.binom(nb, 0.05));
            exceedance_hist(&mut s.canary, nc, xc, 220.0);
            exceedance_hist(&mut s.baseline, nb, xb, 200.0);
            (s, m.weight)
        },
    );
    // The exceedance ratio doubles: the count test's design point.
    let f = two_arm_count(
        0.05,
        Direction::Increase,
        1.0,
        2.0,
        0,
        &conditions(20.0, 0.05),
    );
    report(
        "p95 relativeIncrease 10%, canary P(>220ms) = 10% vs baseline P(>200ms) = 5%, 20 rps, 5% canary",
        &p,
        f.canary_requests,
        f.oracle_canary_requests,
    );
    assert!(p.detected as f64 >= 0.95 * p.runs as f64);

    let d = measure(
        || StatTest::Disparity(Disparity::new("approvals", "requests", 0.8, share(), 4).unwrap()),
        LONG_HORIZON,
        6,
        |rng, i| {
            let (nc, nb, m) = sc.route(rng, i);
            let mut s = snapshot(i);
            s.canary.add("requests", nc);
            s.baseline.add("requests", nb);
            let mut left = nc;
            for (g, (name, rate)) in [("a", 0.15), ("b", 0.30), ("c", 0.30), ("d", 0.30)]
                .into_iter()
                .enumerate()
            {
                let n = if g == 3 {
                    left
                } else {
                    rng.binom(left, 1.0 / (4 - g) as f64)
                };
                left -= n;
                s.canary.add_group("requests", name, n);
                s.canary.add_group("approvals", name, rng.binom(n, rate));
            }
            (s, m.weight)
        },
    );
    println!(
        "POWER disparity minRatio 0.8, true min/max 0.5, 4 groups, 20 rps, 5% canary | detected {}/{} | mean canary requests {:.0} ({:.1} min)",
        d.detected, d.runs, d.mean_canary_requests, d.mean_minutes
    );
    assert!(d.detected as f64 >= 0.95 * d.runs as f64);
}

/// Delay (minutes from onset) of a ×1.5 error regression that starts at
/// `onset` into a healthy step.
fn late_change_delay(onset: u64, change: ChangeDetection, seed: u64) -> Power {
    let sc = steady(200.0, 0.05);
    let runs = power_runs();
    let (mut detected, mut req, mut mins, mut near) = (0, 0.0, 0.0, 0u64);
    for r in 0..runs {
        let mut rng = Rng::new(seed ^ (r as u64) << 8);
        let mut t = StatTest::RatioVsBaseline(
            RatioVsBaseline::relative_increase("errors", "requests", 0.25, share(), change)
                .unwrap(),
        );
        let mut canary_after = 0u64;
        let res = run(&mut t, LONG_HORIZON, |i| {
            let effect = if i >= onset { 1.5 } else { 1.0 };
            let out = counts_interval(&mut rng, &sc, i, "errors", "requests", 0.005, effect);
            if i >= onset {
                canary_after += out.0.canary.counter("requests");
            }
            out
        });
        if let Some(at) = res.crossed_at.filter(|&at| at >= onset) {
            // The evidence points at a segment that starts near the onset.
            let since = res
                .last
                .as_ref()
                .unwrap()
                .evidence
                .evidence_since
                .as_millis()
                / INTERVAL_MS;
            let slack = if change.restarts == 0 {
                onset
            } else {
                change.every
            };
            near += u64::from(since + slack >= onset && since <= onset + 4 * slack);
            detected += 1;
            mins += (at + 1 - onset) as f64 * INTERVAL_MS as f64 / 60_000.0;
            req += canary_after as f64;
        }
    }
    println!(
        "LATE onset {onset}: evidence_since within [onset − spacing, onset + 4·spacing] in {near}/{detected} detections"
    );
    let d = detected.max(1) as f64;
    Power {
        detected,
        runs,
        mean_canary_requests: req / d,
        mean_minutes: mins / d,
    }
}

#[test]
fn late_change_is_caught_about_as_fast_as_an_early_one() {
    let change = long_change();
    let early = late_change_delay(0, change, 7);
    let late = late_change_delay(240, change, 8);
    let later = late_change_delay(700, change, 9);
    let plain_late = late_change_delay(240, ChangeDetection::OFF, 8);
    for (label, p) in [
        ("onset 0 (restarts)", &early),
        ("onset 2h (restarts)", &late),
        ("onset 5h50m (restarts)", &later),
        ("onset 2h (no restarts)", &plain_late),
    ] {
        println!(
            "LATE error ×1.5 {label} | detected {}/{} | mean delay {:.1} min | canary requests after onset {:.0}",
            p.detected, p.runs, p.mean_minutes, p.mean_canary_requests
        );
    }
    println!(
        "(restart spacing {} intervals = {:.1} min)",
        change.every,
        change.every as f64 * 0.5
    );
    assert!(late.detected as f64 >= 0.95 * late.runs as f64);
    // The start slot holds 0.9 of the weight (most regressions ship with
    // the canary: they pay ln(1/0.9) ≈ 0.1 nats), so a late change pays
    // ln(10R) ≈ 5.7 nats here: for this weak effect (×1.5 at 10 canary
    // requests per second) about twice the early delay, plus up to one
    // restart spacing. With ½ it was 1.5× (ln(2R)), and every change
    // present from the start paid ln 2 more.
    let allowance = 2.0 * early.mean_minutes + change.every as f64 * 0.5;
    assert!(
        late.mean_minutes <= allowance,
        "{} > {allowance}",
        late.mean_minutes
    );
    assert!(
        later.mean_minutes <= allowance,
        "{} > {allowance}",
        later.mean_minutes
    );
}

#[test]
fn confidence_sequences_cover_the_truth_at_all_times() {
    let runs = if sweep() { 2_000 } else { 500 };
    let alpha = 0.05;
    let sc = steady(200.0, 0.2);
    for (label, num, den, p_b, effect) in [
        (
            "count (errors 0.5%, ratio 1.3)",
            "errors",
            "requests",
            0.005,
            1.3,
        ),
        (
            "normal (CTR 5%, ratio 0.9)",
            "clicks",
            "impressions",
            0.05,
            0.9,
        ),
    ] {
        let mut misses = 0;
        for r in 0..runs {
            let mut rng = Rng::new(0xC5 ^ (r as u64) << 8);
            let mut t =
                RatioVsBaseline::relative_increase(num, den, 10.0, alpha, ChangeDetection::OFF)
                    .unwrap();
            for i in 0..HORIZON_INTERVALS {
                let (s, _) = counts_interval(&mut rng, &sc, i, num, den, p_b, effect);
                let v = t.observe(&s);
                let iv = v.evidence.interval;
                if v.status == canaryd::stats::Status::Collecting {
                    continue;
                }
                let below = iv.lower.is_some_and(|l| l > effect);
                let above = iv.upper.is_some_and(|u| u < effect);
                if below || above {
                    misses += 1;
                    break;
                }
            }
        }
        let rate = misses as f64 / runs as f64;
        let bound = alpha + binomial_margin(alpha, runs);
        println!(
            "CS coverage {label} | {runs} runs × {HORIZON_INTERVALS} looks | ever excluded truth {misses} ({rate:.4}) | bound {bound:.4}"
        );
        assert!(rate <= bound);
    }
    // Rate CS (threshold tests, disparity groups).
    let mut misses = 0;
    for r in 0..runs {
        let mut rng = Rng::new(0xC6 ^ (r as u64) << 8);
        let mut t =
            RatioThreshold::new("errors", "requests", 0.5, alpha, ChangeDetection::OFF).unwrap();
        for i in 0..HORIZON_INTERVALS {
            let (s, _) = counts_interval(&mut rng, &sc, i, "errors", "requests", 0.01, 1.0);
            let iv = t.observe(&s).evidence.interval;
            if iv.lower.is_some_and(|l| l > 0.01) || iv.upper.is_some_and(|u| u < 0.01) {
                misses += 1;
                break;
            }
        }
    }
    let rate = misses as f64 / runs as f64;
    println!("CS coverage rate (1%) | {runs} runs | ever excluded truth {misses} ({rate:.4})");
    assert!(rate <= alpha + binomial_margin(alpha, runs));
}

fn all_tests() -> Vec<StatTest> {
    let c = ChangeDetection::over_horizon(100, 7);
    vec![
        StatTest::RatioVsBaseline(
            RatioVsBaseline::relative_increase("errors", "requests", 0.1, 0.01, c).unwrap(),
        ),
        StatTest::RatioVsBaseline(
            RatioVsBaseline::relative_drop("clicks", "requests", 0.01, 0.01, c)
                .unwrap()
                .with_method(canaryd::stats::RatioMethod::Normal),
        ),
        StatTest::RatioThreshold(
            RatioThreshold::new("errors", "requests", 0.005, 0.01, c).unwrap(),
        ),
        StatTest::QuantileThreshold(
            QuantileThreshold::new("latency_ms", 0.95, 200.0, 0.01, c).unwrap(),
        ),
        StatTest::QuantileVsBaseline(
            QuantileVsBaseline::relative_increase("latency_ms", 0.95, 0.1, 0.01, c)
                .unwrap()
                .with_burn_in(1),
        ),
        StatTest::Disparity(Disparity::new("errors", "requests", 0.8, 0.01, 4).unwrap()),
    ]
}

fn extreme(i: u64, n: u64, x: u64) -> IntervalSnapshot {
    let mut s = snapshot(i);
    for arm in [&mut s.canary, &mut s.baseline] {
        arm.add("requests", n);
        arm.add("errors", x);
        arm.add("clicks", x);
        arm.add_group("requests", "a", n);
        arm.add_group("errors", "a", x);
        arm.add_group("requests", "b", n);
        arm.add_group("errors", "b", x / 2);
        arm.latency_mut("latency_ms").record_n_us(500_000, x);
        arm.latency_mut("latency_ms").record_n_us(5_000, n - x);
    }
    s
}

#[test]
fn zero_tiny_and_huge_counts_stay_finite() {
    let cases = [
        (0, 0),
        (1, 0),
        (1, 1),
        (3, 1),
        (1_000_000_000_000, 0),
        (1_000_000_000_000, 1_000_000_000_000),
        (1_000_000_000_000, 5_000_000_000),
    ];
    for t0 in all_tests() {
        let mut t = t0.clone();
        for (i, &(n, x)) in cases.iter().cycle().take(40).enumerate() {
            let v = t.observe(&extreme(i as u64, n, x));
            let e = &v.evidence;
            for num in [e.estimate, e.log_e_value, e.log_boundary, e.interval.level] {
                assert!(num.is_finite(), "{t0:?} {n} {x}: {e:?}");
            }
            assert!(
                e.interval.lower.is_none_or(f64::is_finite)
                    && e.interval.upper.is_none_or(f64::is_finite)
            );
            // Serializable to JSON (which rejects NaN/inf).
            serde_json::to_string(&v).unwrap();
        }
    }
}

#[test]
fn checkpoint_and_restore_replay_an_identical_trace() {
    let sc = steady(200.0, 0.05);
    for t0 in all_tests() {
        let mut rng = Rng::new(42);
        let snaps: Vec<IntervalSnapshot> = (0..120)
            .map(|i| {
                let (mut s, _) = counts_interval(&mut rng, &sc, i, "errors", "requests", 0.01, 1.3);
                let (nc, nb) = (s.canary.counter("requests"), s.baseline.counter("requests"));
                let (xc, xb) = (rng.binom(nc, 0.08), rng.binom(nb, 0.05));
                exceedance_hist(&mut s.canary, 0, 0, 1.0);
                s.canary.latency_mut("latency_ms").record_n_us(600_000, xc);
                s.canary
                    .latency_mut("latency_ms")
                    .record_n_us(100_000, nc - xc);
                s.baseline
                    .latency_mut("latency_ms")
                    .record_n_us(600_000, xb);
                s.baseline
                    .latency_mut("latency_ms")
                    .record_n_us(100_000, nb - xb);
                s.canary.add_group("requests", "a", nc / 2);
                s.canary.add_group("requests", "b", nc - nc / 2);
                s.canary.add_group("errors", "a", rng.binom(nc / 2, 0.01));
                s.canary
                    .add_group("errors", "b", rng.binom(nc - nc / 2, 0.02));
                s.canary.add("clicks", rng.binom(nc, 0.05));
                s.baseline.add("clicks", rng.binom(nb, 0.05));
                s
            })
            .collect();
        let mut straight = t0.clone();
        let trace: Vec<_> = snaps.iter().map(|s| straight.observe(s)).collect();
        let mut first = t0.clone();
        for s in &snaps[..60] {
            first.observe(s);
        }
        let saved = serde_json::to_string(&first).unwrap();
        let mut restored: StatTest = serde_json::from_str(&saved).unwrap();
        assert_eq!(restored, first);
        let replay: Vec<_> = snaps[60..].iter().map(|s| restored.observe(s)).collect();
        assert_eq!(replay, trace[60..].to_vec());
    }
}

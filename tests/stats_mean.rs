//! Calibration of the mean test (`kind: mean`): A/A on the null boundary
//! (canary mean exactly `1 + x` times the baseline's) under diurnal load and
//! unequal arms, and power for a change of twice the tolerance. Seeded;
//! `CANARYD_STAT_SWEEP=1` runs 5,000 runs instead of 1,000.

use canaryd::stats::mean::MeanTest;
use canaryd::stats::{ChangeDetection, IntervalSnapshot};
use canaryd::time::Timestamp;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, LogNormal, Poisson};

const INTERVALS: u64 = 240;
const ALPHA: f64 = 0.05;
const TOLERANCE: f64 = 0.05;

fn runs() -> u64 {
    if std::env::var("CANARYD_STAT_SWEEP").is_ok_and(|v| v == "1") {
        5000
    } else {
        1000
    }
}

/// Runs the relativeIncrease test on lognormal values (σ_log = 0.5) whose
/// baseline mean swings ±40% over a compressed day; the canary's mean is
/// `ratio` times the baseline's. Returns (fired runs, mean interval of firing).
fn simulate(ratio: f64, seed: u64) -> (u64, f64) {
    let sigma: f64 = 0.5;
    let change = ChangeDetection::over_horizon(INTERVALS, 31);
    let mut fired = 0;
    let mut at_sum = 0.0;
    for run in 0..runs() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (run << 20));
        let mut test = MeanTest::relative_increase("eta_err", TOLERANCE, ALPHA, change).unwrap();
        for i in 0..INTERVALS {
            let day = (2.0 * std::f64::consts::PI * i as f64 / 120.0).sin();
            let base_mean = 100.0 * (1.0 + 0.4 * day);
            // Unequal arms: about 10% of requests go to the canary.
            let load = 200.0 * (1.0 + 0.5 * day);
            let mut s = IntervalSnapshot::new(
                Timestamp::from_millis(i * 60_000),
                Timestamp::from_millis((i + 1) * 60_000),
            );
            for (arm, share, mean) in [
                (&mut s.canary, 0.1, base_mean * ratio),
                (&mut s.baseline, 0.9, base_mean),
            ] {
                let n = Poisson::new(load * share).unwrap().sample(&mut rng) as u64;
                // A lognormal with this mean: mu = ln(mean) − σ²/2.
                let dist = LogNormal::new(mean.ln() - sigma * sigma / 2.0, sigma).unwrap();
                let h = arm.latency_mut("eta_err");
                for _ in 0..n {
                    h.record_ms(dist.sample(&mut rng));
                }
            }
            if test.observe(&s).crossed() {
                fired += 1;
                at_sum += i as f64;
                break;
            }
        }
    }
    (
        fired,
        if fired > 0 {
            at_sum / fired as f64
        } else {
            f64::NAN
        },
    )
}

#[test]
fn aa_on_the_null_boundary_stays_within_alpha() {
    let n = runs();
    let (fired, _) = simulate(1.0 + TOLERANCE, 0xA11CE);
    let rate = fired as f64 / n as f64;
    // Three binomial standard errors above alpha.
    let margin = 3.0 * (ALPHA * (1.0 - ALPHA) / n as f64).sqrt();
    eprintln!(
        "mean test A/A on the null boundary: {fired}/{n} false fires ({rate:.4}), alpha {ALPHA}"
    );
    assert!(
        rate <= ALPHA + margin,
        "false-fire rate {rate} above {ALPHA} + {margin:.4}"
    );
}

#[test]
fn a_change_of_twice_the_tolerance_is_detected() {
    let n = runs();
    let (fired, mean_at) = simulate(1.0 + 2.0 * TOLERANCE, 0xB0B);
    let rate = fired as f64 / n as f64;
    eprintln!(
        "mean test power at 2x tolerance: {fired}/{n} detected ({rate:.3}), mean {mean_at:.1} intervals"
    );
    assert!(rate >= 0.9, "power {rate}");
}

#[test]
fn aa_for_a_bound_on_the_canary_mean() {
    // `threshold: {above: 100}` on a mean with the canary's mean at exactly
    // 100, at low canary traffic (about 5 values a minute).
    use canaryd::stats::Direction;
    let n = runs();
    let change = ChangeDetection::over_horizon(INTERVALS, 31);
    let mut fired = 0;
    for run in 0..n {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0xB0D ^ (run << 20));
        let mut test =
            MeanTest::bound("eta_err", Direction::Increase, 100.0, ALPHA, change).unwrap();
        let dist = LogNormal::new(100f64.ln() - 0.125, 0.5).unwrap();
        for i in 0..INTERVALS {
            let mut s = IntervalSnapshot::new(
                Timestamp::from_millis(i * 60_000),
                Timestamp::from_millis((i + 1) * 60_000),
            );
            let k = Poisson::new(5.0).unwrap().sample(&mut rng) as u64;
            let h = s.canary.latency_mut("eta_err");
            for _ in 0..k {
                h.record_ms(dist.sample(&mut rng));
            }
            if test.observe(&s).crossed() {
                fired += 1;
                break;
            }
        }
    }
    let rate = fired as f64 / n as f64;
    let margin = 3.0 * (ALPHA * (1.0 - ALPHA) / n as f64).sqrt();
    eprintln!("mean bound A/A at the bound: {fired}/{n} false fires ({rate:.4}), alpha {ALPHA}");
    assert!(rate <= ALPHA + margin, "false-fire rate {rate}");
}

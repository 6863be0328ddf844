//! A/A calibration on traffic shaped like production: counts that vary more
//! than binomially. Each test runs as canaryd builds it (`overdispersion:
//! auto`) and, for the table, with overdispersion ignored (`Fixed(1)`, what
//! every test did before it existed); only the first is asserted at or below
//! alpha plus three binomial standard errors.
//!
//! Noise kinds (the simulator's `spec.noise`, applied per interval):
//! - `rateSd σ`: each arm's event rate times its own mean-one lognormal
//!   factor `exp(σZ − σ²/2)`;
//! - `commonRateSd σ`: one such factor shared by both arms;
//! - sessions `size 20, correlation 0.05`: each arm's events overdispersed
//!   by `φ = 1 + (size − 1)·ρ` (a gamma-Poisson count with that variance,
//!   the sum over many sessions);
//! - `splitSd σ`: the canary's share of requests times a mean-one lognormal
//!   factor (the sample-ratio check).
//!
//! Default: 1,000 runs × 2 h (240 intervals of 30 s) per row;
//! `CANARYD_STAT_SWEEP=1` runs 5,000. Figures: `cargo test --test
//! stats_noise -- --nocapture`.

mod stats_support;

use canaryd::stats::{
    ChangeDetection, IntervalSnapshot, Overdispersion, RatioThreshold, RatioVsBaseline,
    SampleRatioCheck, StatTest,
};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Gamma, StandardNormal};
use stats_support::*;

const ALPHA: f64 = 0.05;

fn runs() -> usize {
    if sweep() { 5_000 } else { 1_000 }
}

fn change() -> ChangeDetection {
    ChangeDetection::over_horizon(HORIZON_INTERVALS, 31)
}

/// What makes the counts of one interval vary.
#[derive(Clone, Copy, Debug)]
enum Noise {
    /// Independent per-arm lognormal rate factors with this log-sd.
    Rate(f64),
    /// One lognormal rate factor shared by both arms.
    Common(f64),
    /// Events in sessions: dispersion `1 + (size − 1)·correlation`.
    Sessions { size: f64, correlation: f64 },
}

impl Noise {
    fn label(self) -> String {
        match self {
            Noise::Rate(s) => format!("rateSd {s}"),
            Noise::Common(s) => format!("commonRateSd {s}"),
            Noise::Sessions { size, correlation } => {
                format!("sessions {size}/{correlation}")
            }
        }
    }
}

/// The noise's own random numbers, apart from the traffic's.
struct NoiseRng(Xoshiro256PlusPlus);

impl NoiseRng {
    fn factor(&mut self, sd: f64) -> f64 {
        let z: f64 = StandardNormal.sample(&mut self.0);
        (sd * z - 0.5 * sd * sd).exp()
    }

    /// A count with mean `mu` and variance `phi·mu·(1 − p)` (gamma-Poisson;
    /// `phi ≤ 1/(1 − p)` gives the binomial).
    fn overdispersed(&mut self, rng: &mut Rng, n: u64, p: f64, phi: f64) -> u64 {
        let mu = n as f64 * p;
        let extra = phi * (1.0 - p) - 1.0;
        if mu <= 0.0 || extra <= 0.0 {
            return rng.binom(n, p);
        }
        let shape = mu / extra;
        let g: f64 = Gamma::new(shape, 1.0 / shape).unwrap().sample(&mut self.0);
        rng.poisson(mu * g).min(n)
    }
}

/// Both arms' events of one interval at base rate `p` (the canary's times
/// `effect`) under `noise`.
#[allow(clippy::too_many_arguments)]
fn noisy_counts(
    rng: &mut Rng,
    nr: &mut NoiseRng,
    sc: &Scenario,
    i: u64,
    num: &str,
    den: &str,
    p: f64,
    noise: Noise,
) -> (IntervalSnapshot, f64) {
    let (nc, nb, m) = sc.route(rng, i);
    let p = p * m.rate;
    let events = match noise {
        Noise::Rate(sd) => {
            let (fc, fb) = (nr.factor(sd), nr.factor(sd));
            (
                rng.binom(nc, (p * fc).min(1.0)),
                rng.binom(nb, (p * fb).min(1.0)),
            )
        }
        Noise::Common(sd) => {
            let f = nr.factor(sd);
            (
                rng.binom(nc, (p * f).min(1.0)),
                rng.binom(nb, (p * f).min(1.0)),
            )
        }
        Noise::Sessions { size, correlation } => {
            let phi = 1.0 + (size - 1.0) * correlation;
            (
                nr.overdispersed(rng, nc, p, phi),
                nr.overdispersed(rng, nb, p, phi),
            )
        }
    };
    let s = counts_snapshot(i, (nc, nb), num, den, events);
    (s, sc.at(i).weight)
}

/// The false-crossing rate of `make(setting)` over `runs()` rollouts.
fn rate(
    make: &dyn Fn(Overdispersion) -> StatTest,
    setting: Overdispersion,
    seed: u64,
    interval: &dyn Fn(&mut Rng, &mut NoiseRng, u64) -> (IntervalSnapshot, f64),
) -> f64 {
    let runs = runs();
    let mut fires = 0;
    for r in 0..runs {
        let mut rng = Rng::new(seed ^ r as u64);
        let mut nr = NoiseRng(Xoshiro256PlusPlus::seed_from_u64(!seed ^ (r as u64) << 7));
        let mut t = make(setting);
        let res = run(&mut t, HORIZON_INTERVALS, |i| {
            interval(&mut rng, &mut nr, i)
        });
        fires += usize::from(res.crossed_at.is_some());
    }
    fires as f64 / runs as f64
}

const NOISES: [Noise; 4] = [
    Noise::Rate(0.3),
    Noise::Rate(0.45),
    Noise::Common(0.2),
    Noise::Sessions {
        size: 20.0,
        correlation: 0.05,
    },
];

/// Every noise kind on the high-traffic and the diurnal scenario (where
/// counts per interval are large enough for noise to dominate).
fn calibrate(label: &str, make: &dyn Fn(Overdispersion) -> StatTest, num: &str, den: &str, p: f64) {
    let bound = ALPHA + binomial_margin(ALPHA, runs());
    for (s_idx, sc) in scenarios().iter().enumerate() {
        if !(sc.name.starts_with("high") || sc.name.starts_with("diurnal")) {
            continue;
        }
        for (n_idx, &noise) in NOISES.iter().enumerate() {
            if std::env::var("NOISEONLY").is_ok_and(|v| v != n_idx.to_string())
                || (std::env::var_os("NOISEONLY").is_some() && s_idx != 1)
            {
                continue;
            }
            let seed = 0x0D15_7E55 ^ ((s_idx as u64) << 40) ^ ((n_idx as u64) << 32);
            let interval = |rng: &mut Rng, nr: &mut NoiseRng, i| {
                noisy_counts(rng, nr, sc, i, num, den, p, noise)
            };
            let before = if std::env::var_os("NOISEONLY").is_some() {
                0.0
            } else {
                rate(make, Overdispersion::Fixed(1.0), seed, &interval)
            };
            let after = rate(make, Overdispersion::Auto, seed, &interval);
            println!(
                "A/A noise {label} | {} | {} | {} runs | ignored {before:.4} | auto {after:.4} | bound {bound:.4}",
                sc.name,
                noise.label(),
                runs()
            );
            assert!(
                after <= bound,
                "{label} / {} / {noise:?}: {after} > {bound}",
                sc.name
            );
        }
    }
}

#[test]
fn noise_error_rate_vs_baseline_count_test() {
    calibrate(
        "error-rate relativeIncrease 20% (count)",
        &|o| {
            StatTest::RatioVsBaseline(
                RatioVsBaseline::relative_increase("errors", "requests", 0.2, ALPHA, change())
                    .unwrap()
                    .with_overdispersion(o),
            )
        },
        "errors",
        "requests",
        0.005,
    );
}

#[test]
fn noise_ctr_vs_baseline_normal_test() {
    calibrate(
        "CTR relativeDrop 2% (normal)",
        &|o| {
            StatTest::RatioVsBaseline(
                RatioVsBaseline::relative_drop("clicks", "impressions", 0.02, ALPHA, change())
                    .unwrap()
                    .with_overdispersion(o),
            )
        },
        "clicks",
        "impressions",
        0.05,
    );
}

/// A canary-alone threshold's null holds interval by interval ("the rate
/// is at most the threshold in every interval", which is what lets diurnal
/// swings below it pass): a canary whose rate averages exactly the
/// threshold while wobbling around it is above it in half the intervals,
/// so it is not a healthy case. Here the canary averages 80% of it.
#[test]
fn noise_error_rate_threshold() {
    calibrate(
        "error-rate threshold 0.5% (canary at 0.4% on average)",
        &|o| {
            StatTest::RatioThreshold(
                RatioThreshold::new("errors", "requests", 0.005, ALPHA, change())
                    .unwrap()
                    .with_overdispersion(o),
            )
        },
        "errors",
        "requests",
        0.004,
    );
}

/// The split itself wobbles: per interval the canary's share is the weight
/// times a mean-one lognormal factor (routing per connection or session).
#[test]
fn noise_sample_ratio_check() {
    let bound = ALPHA + binomial_margin(ALPHA, runs());
    for (s_idx, sc) in scenarios().iter().enumerate() {
        for split_sd in [0.05, 0.1] {
            let count = |setting: Option<Overdispersion>| {
                let mut fires = 0;
                for r in 0..runs() {
                    let mut rng = Rng::new(0x5917 ^ ((s_idx as u64) << 40) ^ r as u64);
                    let mut nr = NoiseRng(Xoshiro256PlusPlus::seed_from_u64(r as u64));
                    let mut t = SampleRatioCheck::new("requests", ALPHA, change()).unwrap();
                    if let Some(o) = setting {
                        t = t
                            .with_overdispersion(o)
                            .with_tolerance(canaryd::monitor::SRM_TOLERANCE);
                    } else {
                        t = t.with_overdispersion(Overdispersion::Fixed(1.0));
                    }
                    for i in 0..HORIZON_INTERVALS {
                        let m = sc.at(i);
                        let share = (m.weight * nr.factor(split_sd)).min(0.999);
                        let total = rng.poisson(m.rps * INTERVAL_MS as f64 / 1000.0);
                        let nc = rng.binom(total, share);
                        let mut s = snapshot(i);
                        s.canary.add("requests", nc);
                        s.baseline.add("requests", total - nc);
                        if t.observe(&s, m.weight).crossed() {
                            fires += 1;
                            break;
                        }
                    }
                }
                fires as f64 / runs() as f64
            };
            let before = count(None);
            let after = count(Some(Overdispersion::Auto));
            println!(
                "A/A noise sample-ratio check | {} | splitSd {split_sd} | {} runs | ignored (no band) {before:.4} | auto with band {after:.4} | bound {bound:.4}",
                sc.name,
                runs()
            );
            assert!(
                after <= bound,
                "{} / splitSd {split_sd}: {after} > {bound}",
                sc.name
            );
        }
    }
}

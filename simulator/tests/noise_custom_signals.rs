//! `spec.noise` on custom signals and `of:` subsets (the ratios of
//! `rollout-policies/fraud.yaml` and `medical-imaging-triage.yaml`): a rate
//! above ½ (a sensitivity of 97%, a share of legitimate transactions of
//! 99.8%) wobbles through its complement, so it keeps its mean and varies by
//! `(1 − p)²(e^{σ²} − 1)` beyond the binomial; a rate at or below ½ is
//! multiplied as before.

use std::time::Duration;

use canaryd::stats::{ArmData, LatencyReads};
use canaryd_sim::latency::LatencyRng;
use canaryd_sim::scenario::parse_scenario;
use canaryd_sim::traffic::TrafficModel;
use rand::SeedableRng;

fn model(noise: &str) -> TrafficModel {
    let text = format!(
        "apiVersion: canaryd.dev/v1
kind: Scenario
metadata: {{ name: subsets }}
spec:
  duration: 50h
  traffic: {{ requestsPerSecond: 200 }}
  baseline:
    signals:
      confirmed_urgent:  {{ rate: 0.1 }}
      flagged_urgent:    {{ rate: 0.97, of: confirmed_urgent }}
      legit_total:       {{ rate: 0.9 }}
      legit_blocked:     {{ rate: 0.02, of: legit_total }}
  noise:
{noise}"
    );
    TrafficModel::new(
        &parse_scenario("subsets.yaml", text.as_bytes()).unwrap(),
        false,
    )
}

/// `pieces` 30 s pieces at 50%: the canary arm of each.
fn canary_draws(model: &TrafficModel, pieces: u32, seed: u64) -> Vec<ArmData> {
    let mut rng = LatencyRng::seed_from_u64(seed);
    let mut latency = LatencyRng::seed_from_u64(seed + 1);
    (0..pieces)
        .map(|i| {
            let (mut b, mut c) = (ArmData::default(), ArmData::default());
            let t = Duration::from_secs(30 * u64::from(i));
            model.generate(
                &mut rng,
                &mut latency,
                t,
                t + Duration::from_secs(30),
                0.5,
                &LatencyReads::NOTHING,
                &mut b,
                &mut c,
            );
            c
        })
        .collect()
}

/// Mean and variance of `xs`, with their standard errors.
fn moments(xs: &[f64]) -> (f64, f64, f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let m4 = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n;
    (
        mean,
        var,
        (var / n).sqrt(),
        ((m4 - var * var).max(0.0) / n).sqrt(),
    )
}

fn close(what: &str, got: f64, want: f64, se: f64) {
    eprintln!("{what}: {got:.5e} vs {want:.5e} (se {se:.2e})");
    assert!(
        (got - want).abs() <= 4.0 * se,
        "{what}: {got:e} is {:.1} standard errors from {want:e}",
        (got - want) / se
    );
}

/// Per ratio `num / den` with true rate `p` (per event of `den`): its mean
/// is `p` and its variance the binomial part, averaged over the draws'
/// denominators, plus `min(p, 1 − p)²(lift − 1)`.
fn check_ratio(arms: &[ArmData], num: &str, den: &str, p: f64, lift: f64) {
    let q = p.min(1.0 - p);
    let ratios: Vec<f64> = arms
        .iter()
        .map(|a| a.counter(num) as f64 / a.counter(den) as f64)
        .collect();
    let (mean, var, se_mean, se_var) = moments(&ratios);
    // E[p_f (1 − p_f)] with p_f = 1 − q f (or q f): q − q² lift.
    let binomial = arms
        .iter()
        .map(|a| (q - q * q * lift) / a.counter(den) as f64)
        .sum::<f64>()
        / arms.len() as f64;
    close(&format!("{num}/{den}: mean"), mean, p, se_mean);
    close(
        &format!("{num}/{den}: variance"),
        var,
        binomial + q * q * (lift - 1.0),
        se_var,
    );
}

/// `rateSd` and `commonRateSd` on an `of` subset at 97% and a request-level
/// signal at 90%: means kept, variance from the complement. Before the
/// complement rule the 97% sensitivity averaged 86.7%.
#[test]
fn rates_above_half_wobble_through_their_complement() {
    for (noise, sd) in [
        ("    rateSd: 0.3", 0.3f64),
        (
            "    rateSd: 0.3\n    commonRateSd: 0.2",
            (0.09f64 + 0.04).sqrt(),
        ),
    ] {
        let lift = (sd * sd).exp();
        let arms = canary_draws(&model(noise), 20_000, 41);
        check_ratio(&arms, "flagged_urgent", "confirmed_urgent", 0.97, lift);
        check_ratio(&arms, "legit_blocked", "legit_total", 0.02, lift);
        check_ratio(&arms, "legit_total", "requests", 0.9, lift);
        check_ratio(&arms, "confirmed_urgent", "requests", 0.1, lift);
    }
}

/// The complement rule never moves a rate out of [0, 1] and is the
/// identity at factor 1.
#[test]
fn wobbled_rate_stays_a_probability() {
    use canaryd_sim::traffic::wobbled_rate;
    for p in [0.0, 0.001, 0.3, 0.5, 0.51, 0.97, 1.0] {
        assert_eq!(wobbled_rate(p, 1.0), p);
        for f in [0.0, 0.2, 1.7, 40.0] {
            let r = wobbled_rate(p, f);
            assert!((0.0..=1.0).contains(&r), "{p} × {f} gave {r}");
        }
    }
    assert_eq!(wobbled_rate(0.2, 2.0), 0.4);
    assert!((wobbled_rate(0.97, 2.0) - 0.94).abs() < 1e-12);
}

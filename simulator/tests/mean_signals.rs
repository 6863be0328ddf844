//! Mean signals (`baseline.means`): the values drawn into each arm's
//! histogram have the declared mean and standard deviation, one per event of
//! their `of` counter; a canary change moves them; `rateSd` makes an arm's
//! mean wobble by `mean²(e^{σ²} − 1)` per piece; sessions give the values
//! the declared intra-session correlation; and a policy that reads no mean
//! signal gets the same counts as one that does.

use std::time::Duration;

use canaryd::stats::histogram::Moments;
use canaryd::stats::{ArmData, LatencyReads};
use canaryd_sim::latency::LatencyRng;
use canaryd_sim::scenario::parse_scenario;
use canaryd_sim::traffic::TrafficModel;
use canaryd_sim::values::session_log_sd;
use rand::SeedableRng;

fn model(distribution: &str, canary: &str, noise: &str) -> TrafficModel {
    let text = format!(
        "apiVersion: canaryd.dev/v1
kind: Scenario
metadata: {{ name: values }}
spec:
  duration: 50h
  traffic: {{ requestsPerSecond: 40 }}
  baseline:
    signals:
      trips: {{ rate: 0.25 }}
    means:
      eta: {{ distribution: {distribution}, mean: 90, sd: 80, of: trips }}
      score: {{ distribution: {distribution}, mean: 0.45, sd: 0.1 }}
{canary}  noise:
{noise}"
    );
    TrafficModel::new(
        &parse_scenario("values.yaml", text.as_bytes()).unwrap(),
        false,
    )
}

/// `pieces` 30 s pieces at 50%: (baseline, canary) each.
fn draw(model: &TrafficModel, pieces: u32, seed: u64) -> Vec<(ArmData, ArmData)> {
    let mut rng = LatencyRng::seed_from_u64(seed);
    let mut latency = LatencyRng::seed_from_u64(seed + 1);
    (0..pieces)
        .map(|i| {
            let (mut b, mut c) = (ArmData::default(), ArmData::default());
            let t = Duration::from_secs(30 * u64::from(i % 1000));
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
            (b, c)
        })
        .collect()
}

fn values(arm: &ArmData, signal: &str) -> Moments {
    arm.latency
        .get(signal)
        .and_then(|h| h.moments_ms())
        .unwrap_or_default()
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

/// Pooled over pieces: the values' mean and variance, and how many there
/// are (one per trip, one per request).
#[test]
fn values_have_the_declared_law_and_count() {
    for dist in ["gamma", "lognormal"] {
        let m = model(dist, "", "    rateSd: 0\n");
        let runs = draw(&m, 3_000, 5);
        for (signal, mean, sd, per) in [
            ("eta", 90.0, 80.0, "trips"),
            ("score", 0.45, 0.1, "requests"),
        ] {
            let (mut n, mut sum, mut sum_sq) = (0.0, 0.0, 0.0);
            for (b, c) in &runs {
                for arm in [b, c] {
                    let v = values(arm, signal);
                    assert_eq!(
                        v.n,
                        arm.counter(per),
                        "{dist} {signal}: one value per {per}"
                    );
                    let k = v.n as f64;
                    n += k;
                    sum += k * v.mean;
                    sum_sq += k * (v.variance + v.mean * v.mean);
                }
            }
            let got_mean = sum / n;
            let got_var = sum_sq / n - got_mean * got_mean;
            close(
                &format!("{dist} {signal}: mean"),
                got_mean,
                mean,
                sd / n.sqrt(),
            );
            // Relative standard error of a variance estimate: sqrt((kurtosis − 1)/n);
            // the lognormal's kurtosis at cv 0.9 is about 40.
            let se_var = sd * sd * (45.0 / n).sqrt();
            close(
                &format!("{dist} {signal}: variance"),
                got_var,
                sd * sd,
                se_var,
            );
        }
    }
}

/// A canary change at full size moves the canary's values alone.
#[test]
fn a_canary_change_moves_the_canary_values() {
    let m = model(
        "gamma",
        "  canary:\n    means:\n      eta: { mean: { relative: 10% }, sd: { absolute: 160 } }\n",
        "    rateSd: 0\n",
    );
    let runs = draw(&m, 3_000, 6);
    let pooled = |pick: &dyn Fn(&(ArmData, ArmData)) -> Moments| {
        let (mut n, mut sum, mut sum_sq) = (0.0, 0.0, 0.0);
        for r in &runs {
            let v = pick(r);
            let k = v.n as f64;
            n += k;
            sum += k * v.mean;
            sum_sq += k * (v.variance + v.mean * v.mean);
        }
        let mean = sum / n;
        (n, mean, (sum_sq / n - mean * mean).sqrt())
    };
    let (n, mean, sd) = pooled(&|r| values(&r.1, "eta"));
    close("canary mean", mean, 99.0, 160.0 / n.sqrt());
    close("canary sd", sd, 160.0, 160.0 * (8.0 / n).sqrt());
    let (n, mean, _) = pooled(&|r| values(&r.0, "eta"));
    close("baseline mean", mean, 90.0, 80.0 / n.sqrt());
}

/// `rateSd: σ` on values: the per-piece mean of an arm varies by
/// `mean²(e^{σ²} − 1)` on top of the sampling variance `E[f²]·sd²/n`, and
/// the arms' means do not covary. `commonRateSd` adds the same variance to
/// each arm and exactly that much covariance.
#[test]
fn rate_noise_wobbles_each_arms_mean() {
    for (noise, own, common) in [
        ("    rateSd: 0.3\n", 0.3f64, 0.0f64),
        ("    commonRateSd: 0.2\n", 0.0, 0.2),
    ] {
        let runs = draw(&model("gamma", "", noise), 6_000, 7);
        let (mu, sd) = (0.45f64, 0.1f64);
        let lift = (own * own + common * common).exp();
        let pairs: Vec<(f64, f64)> = runs
            .iter()
            .map(|(b, c)| (values(b, "score").mean, values(c, "score").mean))
            .collect();
        let canary: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let (mean, var, se_mean, se_var) = moments(&canary);
        let sampling = runs
            .iter()
            .map(|(_, c)| lift * sd * sd / c.counter("requests") as f64)
            .sum::<f64>()
            / runs.len() as f64;
        close(&format!("{noise:?} mean"), mean, mu, se_mean);
        close(
            &format!("{noise:?} variance of the canary's mean"),
            var,
            sampling + mu * mu * (lift - 1.0),
            se_var,
        );
        let base: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let (bm, bv, _, _) = moments(&base);
        let n = pairs.len() as f64;
        let cov = pairs
            .iter()
            .map(|(b, c)| (b - bm) * (c - mean))
            .sum::<f64>()
            / (n - 1.0);
        let want = mu * mu * ((common * common).exp() - 1.0);
        close(
            &format!("{noise:?} covariance of the arms' means"),
            cov,
            want,
            (var * bv / n).sqrt(),
        );
    }
}

/// Sessions of `size` values with correlation `ρ`: the variance of a piece's
/// mean is `σx²·Σ sᵢ(1 + (sᵢ − 1)ρ)/n²` over its sessions' sizes, `σx²`
/// the values' variance widened by the shared factor.
#[test]
fn sessions_correlate_values() {
    let (size, rho) = (20u64, 0.2f64);
    let runs = draw(
        &model(
            "lognormal",
            "",
            "    sessions: { size: 20, correlation: 0.2 }\n",
        ),
        6_000,
        8,
    );
    let (mu, sd) = (0.45f64, 0.1f64);
    let cv = sd / mu;
    let s = session_log_sd(cv, rho);
    let tau2 = (s * s).exp() - 1.0;
    let var_x = (1.0 + tau2) * (sd * sd + mu * mu) - mu * mu;
    let means: Vec<f64> = runs.iter().map(|(_, c)| values(c, "score").mean).collect();
    let (mean, var, se_mean, se_var) = moments(&means);
    let want = runs
        .iter()
        .map(|(_, c)| {
            let n = c.counter("requests");
            let (full, last) = (n / size, n % size);
            let sessions = full as f64 * size as f64 * (1.0 + (size - 1) as f64 * rho)
                + last as f64 * (1.0 + last.saturating_sub(1) as f64 * rho);
            var_x * sessions / (n * n) as f64
        })
        .sum::<f64>()
        / runs.len() as f64;
    close("sessions: mean", mean, mu, se_mean);
    close("sessions: variance of a piece's mean", var, want, se_var);
}

/// Counts do not depend on which mean signals a policy reads: the values
/// come from a stream of their own.
#[test]
fn reading_values_changes_no_count() {
    let all = model("gamma", "", "    rateSd: 0.3\n");
    let none = model("gamma", "", "    rateSd: 0.3\n").means_only(&[]);
    let a = draw(&all, 200, 9);
    let b = draw(&none, 200, 9);
    for ((ab, ac), (bb, bc)) in a.iter().zip(&b) {
        assert_eq!(ab.counters, bb.counters);
        assert_eq!(ac.counters, bc.counters);
        assert!(bc.latency.is_empty() && !ac.latency.is_empty());
    }
}

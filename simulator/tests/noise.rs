//! `spec.noise` (PRODUCT.md section 9): the generated per-interval counts
//! have the dispersion each kind of noise states, and a scenario without
//! noise draws exactly what it drew before noise existed.

use std::time::Duration;

use canaryd::stats::{ArmData, LatencyReads};
use canaryd_sim::latency::LatencyRng;
use canaryd_sim::scenario::{Scenario, parse_scenario};
use canaryd_sim::traffic::TrafficModel;
use rand::SeedableRng;

fn scenario(noise: &str) -> Scenario {
    let text = format!(
        "apiVersion: canaryd.dev/v1
kind: Scenario
metadata: {{ name: noisy }}
spec:
  duration: 50h
  traffic: {{ requestsPerSecond: 200, diurnalAmplitude: 0.5 }}
  baseline:
    ctr: 0.05
    errorRate: 0.002
    latency: {{ distribution: lognormal, p50: 80ms, p95: 150ms }}
    signals:
      approvals: {{ rate: {{ a: 0.2, b: 0.5 }}, groups: {{ a: 0.6, b: 0.4 }} }}
      refunds: {{ rate: 0.1, of: approvals }}
  canary:
    from: 1h
    rampOver: 2h
    errorRate: {{ absolute: 0.004 }}
{noise}"
    );
    parse_scenario("noisy.yaml", text.as_bytes()).unwrap()
}

/// FNV-1a over every counter, group count and latency bucket of an arm.
fn digest(h: &mut u64, arm: &ArmData) {
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            *h ^= u64::from(*b);
            *h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, n) in &arm.counters {
        eat(name.as_bytes());
        eat(&n.to_le_bytes());
    }
    for (name, groups) in &arm.groups {
        for (g, n) in groups {
            eat(name.as_bytes());
            eat(g.as_bytes());
            eat(&n.to_le_bytes());
        }
    }
    for (name, hist) in &arm.latency {
        eat(name.as_bytes());
        eat(&hist.total().to_le_bytes());
        for q in [0.5, 0.9, 0.95, 0.99] {
            eat(&hist.quantile_ms(q).unwrap_or(-1.0).to_bits().to_le_bytes());
        }
    }
}

/// The counts a model draws over `pieces` 30s pieces at weights cycling
/// through 0%, 1%, 10%, 50% and 100%, with every latency bucket drawn.
fn fingerprint(model: &TrafficModel, pieces: u64) -> u64 {
    let mut rng = LatencyRng::seed_from_u64(7);
    let mut latency = LatencyRng::seed_from_u64(8);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for i in 0..pieces {
        let (mut b, mut c) = (ArmData::default(), ArmData::default());
        let t = Duration::from_secs(30 * i);
        let weight = [0.0, 0.01, 0.1, 0.5, 1.0][(i % 5) as usize];
        model.generate(
            &mut rng,
            &mut latency,
            t,
            t + Duration::from_secs(30),
            weight,
            &LatencyReads::EVERYTHING,
            &mut b,
            &mut c,
        );
        digest(&mut h, &b);
        digest(&mut h, &c);
    }
    h
}

/// Without `noise` (or with every kind at zero) a scenario draws exactly
/// the counts and latencies it drew before noise was added: the digest
/// below was taken from the simulator as it was then.
#[test]
fn no_noise_draws_what_it_always_drew() {
    let model = TrafficModel::new(&scenario(""), true);
    let grouped = TrafficModel::new(&scenario(""), true).grouping_only(&["approvals".into()]);
    let got = (fingerprint(&model, 600), fingerprint(&grouped, 600));
    assert_eq!(got, (13_002_626_330_581_910_213, 7_014_267_355_165_231_416));
}

/// Mean, sample variance, and the standard errors of both (the variance's
/// from the sample's fourth central moment, so heavy tails widen it).
struct Moments {
    mean: f64,
    var: f64,
    se_mean: f64,
    se_var: f64,
}

fn moments(xs: &[f64]) -> Moments {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let m4 = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n;
    Moments {
        mean,
        var,
        se_mean: (var / n).sqrt(),
        se_var: ((m4 - var * var).max(0.0) / n).sqrt(),
    }
}

/// `got` within four standard errors of `want`.
fn close(what: &str, got: f64, want: f64, se: f64) {
    eprintln!("{what}: {got:.4e} vs {want:.4e} (se {se:.2e})");
    assert!(
        (got - want).abs() <= 4.0 * se,
        "{what}: {got:e} is {:.1} standard errors from {want:e}",
        (got - want) / se
    );
}

/// A steady A/A scenario (no diurnal swing) with `noise`.
fn steady(rps: u32, noise: &str) -> Scenario {
    let text = format!(
        "apiVersion: canaryd.dev/v1
kind: Scenario
metadata: {{ name: steady }}
spec:
  duration: 50h
  traffic: {{ requestsPerSecond: {rps} }}
  baseline:
    ctr: 0.05
    errorRate: 0.01
    signals:
      approvals: {{ rate: {{ a: 0.2, b: 0.4 }}, groups: {{ a: 0.5, b: 0.5 }} }}
  noise:
{noise}"
    );
    parse_scenario("steady.yaml", text.as_bytes()).unwrap()
}

/// `pieces` independent 30s pieces at `weight`: (baseline, canary) each.
fn draw(model: &TrafficModel, pieces: u32, weight: f64, seed: u64) -> Vec<(ArmData, ArmData)> {
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
                weight,
                &LatencyReads::NOTHING,
                &mut b,
                &mut c,
            );
            (b, c)
        })
        .collect()
}

fn rate(arm: &ArmData, num: &str) -> f64 {
    arm.counter(num) as f64 / arm.counter("requests") as f64
}

/// Covariance of paired values, with its standard error under independence
/// (enough to tell a covariance of the size expected from none).
fn covariance(pairs: &[(f64, f64)]) -> (f64, f64) {
    let a = moments(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let b = moments(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    let n = pairs.len() as f64;
    let cov = pairs
        .iter()
        .map(|(x, y)| (x - a.mean) * (y - b.mean))
        .sum::<f64>()
        / (n - 1.0);
    (cov, (a.var * b.var / n).sqrt())
}

/// The variance of an arm's rate `p̂` when its true rate `p` is multiplied
/// by a mean-one lognormal factor `f` with `E[f²] = lift`: the binomial part
/// `E[f p (1 − f p)]/n`, averaged over the draws' `n`, plus `p²(lift − 1)`.
fn noisy_rate_variance(p: f64, lift: f64, requests: impl Iterator<Item = u64>) -> f64 {
    let (mut sum, mut k) = (0.0, 0.0);
    for n in requests {
        sum += (p - lift * p * p) / n as f64;
        k += 1.0;
    }
    sum / k + p * p * (lift - 1.0)
}

/// `rateSd: σ`: an arm's rate varies from interval to interval by the
/// binomial variance plus `p²(e^{σ²} − 1)`, for every ratio signal (errors,
/// clicks, a custom signal with per-group rates), with mean `p` still; the
/// two arms' factors are independent (no covariance); the groups of one
/// arm share its factor, so their rates move together.
#[test]
fn rate_sd_adds_lognormal_variance_per_arm() {
    let sd: f64 = 0.3;
    let lift = (sd * sd).exp();
    let model = TrafficModel::new(&steady(200, "    rateSd: 0.3"), false)
        .grouping_only(&["approvals".into(), "requests".into()]);
    let runs = draw(&model, 20_000, 0.5, 31);
    // Approvals: 0.2 in group a, 0.4 in b, half the requests each: per
    // request a Bernoulli(0.3 f).
    for (signal, p) in [("errors", 0.01), ("clicks", 0.05), ("approvals", 0.3)] {
        for (side, arm) in [("baseline", 0usize), ("canary", 1)] {
            let arm = |r: &(ArmData, ArmData)| if arm == 0 { r.0.clone() } else { r.1.clone() };
            let m = moments(
                &runs
                    .iter()
                    .map(|r| rate(&arm(r), signal))
                    .collect::<Vec<_>>(),
            );
            let want =
                noisy_rate_variance(p, lift, runs.iter().map(|r| arm(r).counter("requests")));
            close(
                &format!("{signal} {side}: rate variance"),
                m.var,
                want,
                m.se_var,
            );
            close(&format!("{signal} {side}: rate mean"), m.mean, p, m.se_mean);
        }
        let pairs: Vec<(f64, f64)> = runs
            .iter()
            .map(|(b, c)| (rate(b, signal), rate(c, signal)))
            .collect();
        let (cov, se) = covariance(&pairs);
        close(&format!("{signal}: covariance of the arms"), cov, 0.0, se);
    }
    let group_rate = |a: &ArmData, g: &str| {
        a.group_counter("approvals", g) as f64 / a.group_counter("requests", g) as f64
    };
    let pairs: Vec<(f64, f64)> = runs
        .iter()
        .map(|(_, c)| (group_rate(c, "a"), group_rate(c, "b")))
        .collect();
    let (cov, se) = covariance(&pairs);
    close(
        "approvals: covariance of the groups",
        cov,
        0.2 * 0.4 * (lift - 1.0),
        se,
    );
}

/// `commonRateSd: σ`: one factor per signal shared by both arms. Each arm's
/// rate gets `p²(e^{σ²} − 1)` of variance, and the arms covary by exactly
/// that much, so the canary-minus-baseline contrast keeps the binomial
/// variance alone. With `rateSd` too, each arm's factor is the product.
#[test]
fn common_rate_sd_moves_both_arms_together() {
    for (noise, own, common) in [
        ("    commonRateSd: 0.2", 0.0f64, 0.2f64),
        ("    commonRateSd: 0.2\n    rateSd: 0.3", 0.3, 0.2),
    ] {
        let model = TrafficModel::new(&steady(200, noise), false);
        let runs = draw(&model, 20_000, 0.5, 41);
        let shared = (common * common).exp();
        let lift = (own * own + common * common).exp();
        for (signal, p) in [("errors", 0.01), ("clicks", 0.05)] {
            let pairs: Vec<(f64, f64)> = runs
                .iter()
                .map(|(b, c)| (rate(b, signal), rate(c, signal)))
                .collect();
            let (cov, se) = covariance(&pairs);
            close(
                &format!("{noise:?} {signal}: covariance of the arms"),
                cov,
                p * p * (shared - 1.0),
                se,
            );
            let m = moments(&pairs.iter().map(|x| x.1).collect::<Vec<_>>());
            let want = noisy_rate_variance(p, lift, runs.iter().map(|r| r.1.counter("requests")));
            close(
                &format!("{noise:?} {signal}: canary rate variance"),
                m.var,
                want,
                m.se_var,
            );
            let d = moments(&pairs.iter().map(|x| x.1 - x.0).collect::<Vec<_>>());
            let want = noisy_rate_variance(p, lift, runs.iter().map(|r| r.0.counter("requests")))
                + noisy_rate_variance(p, lift, runs.iter().map(|r| r.1.counter("requests")))
                - 2.0 * p * p * (shared - 1.0);
            close(
                &format!("{noise:?} {signal}: contrast variance"),
                d.var,
                want,
                d.se_var,
            );
        }
    }
}

/// The exact law's variance of events among `n` requests in sessions of
/// `size` (the last one shorter), over the binomial's: `Σ sᵢ(1 + (sᵢ−1)ρ)/n`.
fn session_dispersion(n: u64, size: u64, rho: f64) -> f64 {
    let spread = |s: u64| s as f64 * (1.0 + (s as f64 - 1.0) * rho);
    ((n / size) as f64 * spread(size) + spread(n % size)) / n as f64
}

/// `session_binomial` against the exact law's mean `n·p` and variance
/// `n·p(1−p)·φ`: session by session (few sessions) and moment-matched (many),
/// at rare and common rates, with and without a short last session.
#[test]
fn session_counts_have_the_exact_laws_mean_and_variance() {
    use canaryd_sim::sampling::{EXACT_SESSIONS, session_binomial};
    let mut rng = LatencyRng::seed_from_u64(51);
    let size = 20;
    for (n, p, rho) in [
        (size * EXACT_SESSIONS, 0.05, 0.05),
        (size * EXACT_SESSIONS - 7, 0.3, 0.2),
        (45, 0.01, 0.05),
        (size * EXACT_SESSIONS + 1, 0.05, 0.05),
        (3_000, 0.002, 0.05),
        (3_013, 0.05, 0.05),
        (100_000, 0.01, 0.1),
    ] {
        let xs: Vec<f64> = (0..100_000)
            .map(|_| session_binomial(&mut rng, n, p, size, rho) as f64)
            .collect();
        let m = moments(&xs);
        let nf = n as f64;
        let mode = if n.div_ceil(size) <= EXACT_SESSIONS {
            "exact"
        } else {
            "moment-matched"
        };
        close(
            &format!("n {n} p {p} ({mode}): mean"),
            m.mean,
            nf * p,
            m.se_mean,
        );
        let want = nf * p * (1.0 - p) * session_dispersion(n, size, rho);
        close(
            &format!("n {n} p {p} ({mode}): variance"),
            m.var,
            want,
            m.se_var,
        );
    }
}

/// `sessions`: in the traffic model, every counter drawn out of requests has
/// dispersion (variance over the binomial's, given the arm's requests) about
/// `1 + (size − 1)ρ` (exactly `Σ sᵢ(1 + (sᵢ−1)ρ)/n`), on a large arm
/// (moment-matched) and a small one (exact, a 1% canary).
#[test]
fn sessions_inflate_dispersion_by_the_design_effect() {
    // Nothing written per group: errors and clicks are one draw per arm
    // (per group, sessions would form within each group's requests).
    let model = TrafficModel::new(
        &steady(200, "    sessions: { size: 20, correlation: 0.05 }"),
        false,
    )
    .grouping_only(&[]);
    for (weight, pieces) in [(0.5, 20_000), (0.01, 40_000)] {
        let runs = draw(&model, pieces, weight, 61);
        for (signal, p) in [("errors", 0.01), ("clicks", 0.05)] {
            let arm = |r: &(ArmData, ArmData)| r.1.clone();
            let (mut z2, mut want, mut k) = (Vec::new(), 0.0, 0.0);
            for r in &runs {
                let a = arm(r);
                let n = a.counter("requests");
                if n == 0 {
                    continue;
                }
                let nf = n as f64;
                let x = a.counter(signal) as f64;
                z2.push((x - nf * p).powi(2) / (nf * p * (1.0 - p)));
                want += session_dispersion(n, 20, 0.05);
                k += 1.0;
            }
            let m = moments(&z2);
            close(
                &format!("weight {weight} {signal}: dispersion"),
                m.mean,
                want / k,
                m.se_mean,
            );
        }
    }
}

/// `splitSd: σ`: the observed canary share of requests has log-sd about σ
/// (plus the Poisson split's own, tiny at this traffic) and mean the weight;
/// weights 0% and 100% stay exact.
#[test]
fn split_sd_moves_the_canary_share() {
    let sd = 0.05;
    let model = TrafficModel::new(&steady(10_000, "    splitSd: 0.05"), false);
    for weight in [0.1, 0.5] {
        let runs = draw(&model, 20_000, weight, 71);
        let shares: Vec<f64> = runs
            .iter()
            .map(|(b, c)| {
                let (nb, nc) = (b.counter("requests") as f64, c.counter("requests") as f64);
                nc / (nb + nc)
            })
            .collect();
        let total = 10_000.0 * 30.0;
        let m = moments(&shares.iter().map(|s| s.ln()).collect::<Vec<_>>());
        let want = sd * sd + (1.0 - weight) / (total * weight);
        close(
            &format!("weight {weight}: log-share variance"),
            m.var,
            want,
            m.se_var,
        );
        let m = moments(&shares);
        close(
            &format!("weight {weight}: share mean"),
            m.mean,
            weight,
            m.se_mean,
        );
    }
    for weight in [0.0, 1.0] {
        for (b, c) in draw(&model, 200, weight, 81) {
            let idle = if weight == 0.0 { &c } else { &b };
            assert_eq!(idle.counter("requests"), 0, "weight {weight}");
        }
    }
}

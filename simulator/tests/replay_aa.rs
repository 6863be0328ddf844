//! A/A on replays. The repo has no recorded production replay, so
//! `replays/synthetic-aa.json` is SYNTHETIC: written once by the seeded
//! `replays/generate_synthetic_aa.py` (sessions, per-host drift, bursts, two
//! arms recorded separately; see its docs). These tests check that
//! - a replay resamples each arm at its own recorded per-interval rates (an
//!   arm without recorded requests borrows the other's), so a replay whose
//!   arms were recorded separately keeps each arm's own wobble, not only
//!   the shared one;
//! - the synthetic replay carries production-like dispersion between its
//!   arms (the variance of the per-interval two-arm z statistic, 1 for
//!   independent requests);
//! - the seed policies whose signals it carries (requests, errors,
//!   impressions, clicks, approvals per group; no latency) stay within
//!   alpha + 3 binomial SE on it. Default: a few hundred runs of
//!   time-compressed policies over the replay's first hours;
//!   `CANARYD_STAT_SWEEP=1`: 1,000 runs each at full length (the replay's
//!   48 h).

use std::time::Duration;

use canaryd::policy::{Policy, parse_policy};
use canaryd::stats::{IntervalSnapshot, LatencyReads};
use canaryd::time::Timestamp;
use canaryd_sim::latency::LatencyRng;
use canaryd_sim::source::{Replay, Source, parse_replay};
use canaryd_sim::{SimOptions, simulate, time_compressed};
use rand::SeedableRng;

const SYNTHETIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/replays/synthetic-aa.json");

fn synthetic() -> Replay {
    parse_replay(SYNTHETIC, &std::fs::read(SYNTHETIC).unwrap()).unwrap()
}

/// Both arms' counts of `signal` over `pieces` draws of the replay's first
/// interval at `weight`.
fn resample(replay: Replay, weight: f64, pieces: u32) -> Vec<IntervalSnapshot> {
    let source = Source::Replay(replay);
    let mut rng = LatencyRng::seed_from_u64(3);
    let mut latency = LatencyRng::seed_from_u64(4);
    (0..pieces)
        .map(|_| {
            let mut snap = IntervalSnapshot::new(Timestamp::EPOCH, Timestamp::from_millis(60_000));
            source.generate(
                &mut rng,
                &mut latency,
                Duration::ZERO,
                Duration::from_secs(60),
                weight,
                &LatencyReads::NOTHING,
                &mut snap,
            );
            snap
        })
        .collect()
}

fn rate(snaps: &[IntervalSnapshot], canary: bool, signal: &str) -> f64 {
    let (mut x, mut n) = (0u64, 0u64);
    for s in snaps {
        let arm = if canary { &s.canary } else { &s.baseline };
        x += arm.counter(signal);
        n += arm.counter("requests");
    }
    x as f64 / n as f64
}

/// A replay whose canary was recorded with ten times the baseline's error
/// rate draws each arm at its own rate; one whose canary recorded nothing
/// draws both at the baseline's.
#[test]
fn each_recorded_arm_keeps_its_own_rates() {
    let both = r#"{"interval": "1m", "intervals": [
        {"baseline": {"counters": {"requests": 10000, "errors": 100}},
         "canary": {"counters": {"requests": 1000, "errors": 100}}}]}"#;
    let snaps = resample(
        parse_replay("both.json", both.as_bytes()).unwrap(),
        0.3,
        400,
    );
    let (b, c) = (rate(&snaps, false, "errors"), rate(&snaps, true, "errors"));
    eprintln!("recorded 1% and 10%: drawn {b:.4} and {c:.4}");
    assert!(
        (b - 0.01).abs() < 0.001 && (c - 0.1).abs() < 0.005,
        "{b} {c}"
    );
    let one = r#"{"interval": "1m", "intervals": [
        {"baseline": {"counters": {"requests": 10000, "errors": 100}}, "canary": {}}]}"#;
    let snaps = resample(parse_replay("one.json", one.as_bytes()).unwrap(), 0.3, 400);
    let c = rate(&snaps, true, "errors");
    assert!((c - 0.01).abs() < 0.001, "borrowed {c}");
}

/// A replay's `of` map keeps a subset inside its parent: fraud_blocked is
/// drawn out of fraud_total's draw, never above it, so `blocked − 0.8·total`
/// varies by the nested binomial's `0.8·0.2·E[total]` (drawn independently
/// of each other, as before `of`, it varied about nine times as much and
/// blocked could exceed total).
#[test]
fn a_subset_is_drawn_within_its_parent() {
    let nested = r#"{"interval": "1m", "of": {"fraud_blocked": "fraud_total"}, "intervals": [
        {"baseline": {"counters": {"requests": 100000, "fraud_total": 200, "fraud_blocked": 160}},
         "canary": {}}]}"#;
    let snaps = resample(
        parse_replay("nested.json", nested.as_bytes()).unwrap(),
        0.5,
        4000,
    );
    let mut diffs = Vec::new();
    let mut total = 0.0;
    for s in &snaps {
        for arm in [&s.baseline, &s.canary] {
            let (t, b) = (arm.counter("fraud_total"), arm.counter("fraud_blocked"));
            assert!(b <= t, "{b} blocked of {t}");
            diffs.push(b as f64 - 0.8 * t as f64);
            total += t as f64;
        }
    }
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let want = 0.8 * 0.2 * total / n;
    eprintln!("blocked − 0.8·total: mean {mean:.3}, variance {var:.2} (nested binomial {want:.2})");
    assert!(mean.abs() < 4.0 * (want / n).sqrt(), "{mean}");
    assert!((var / want - 1.0).abs() < 0.1, "{var} vs {want}");
}

/// Mistakes in `of` are refused with the place: a name that is not one, a
/// cycle, `requests` inside something.
#[test]
fn replay_of_mistakes_are_located() {
    let with = |of: &str| {
        format!(
            r#"{{"interval": "1m", "of": {of}, "intervals": [{{"baseline": {{}}, "canary": {{}}}}]}}"#
        )
    };
    for (of, want) in [
        (
            r#"{"a": "b", "b": "a"}"#,
            "r.json:1:1: of.a: `a` would count within itself (a cycle through `b`)",
        ),
        (
            r#"{"x": "x"}"#,
            "r.json:1:1: of.x: `x` would count within itself (a cycle through `x`)",
        ),
        (
            r#"{"requests": "errors"}"#,
            "r.json:1:1: of.requests: `requests` is the traffic itself and counts within nothing",
        ),
        (
            r#"{"a b": "c"}"#,
            "r.json:1:1: of.a b: `a b` is not a signal name",
        ),
    ] {
        let got = parse_replay("r.json", with(of).as_bytes()).err();
        assert_eq!(got.as_deref(), Some(want), "{of}");
    }
    assert!(parse_replay("r.json", with(r#"{"a": "b", "b": "c"}"#).as_bytes()).is_ok());
}

/// Variance of the per-interval z statistic of the two recorded arms'
/// rates of `num / den` (1 for independent requests at equal rates).
fn recorded_dispersion(replay: &Replay, num: &str, den: &str) -> f64 {
    let zs: Vec<f64> = replay
        .intervals
        .iter()
        .filter_map(|r| {
            let (b, c) = (&r.baseline.counters, &r.canary.counters);
            let get = |m: &std::collections::BTreeMap<String, u64>, k: &str| {
                m.get(k).copied().unwrap_or(0) as f64
            };
            let (nb, nc, xb, xc) = (get(b, den), get(c, den), get(b, num), get(c, num));
            let p = (xb + xc) / (nb + nc);
            let v = p * (1.0 - p) * (1.0 / nb + 1.0 / nc);
            (v > 0.0).then(|| (xc / nc - xb / nb) / v.sqrt())
        })
        .collect();
    let n = zs.len() as f64;
    let mean = zs.iter().sum::<f64>() / n;
    zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / n
}

/// The synthetic replay says what it is, spans 48 h of 1-minute intervals,
/// and its arms differ from interval to interval well beyond independent
/// requests: errors about 2x the binomial variance, clicks about 5x.
#[test]
fn the_synthetic_replay_carries_production_like_dispersion() {
    let replay = synthetic();
    assert!(replay.name.contains("SYNTHETIC"), "{}", replay.name);
    assert_eq!(replay.duration(), Duration::from_secs(48 * 3600));
    let errors = recorded_dispersion(&replay, "errors", "requests");
    let clicks = recorded_dispersion(&replay, "clicks", "impressions");
    eprintln!("recorded dispersion: errors {errors:.2}, clicks {clicks:.2}");
    assert!((1.5..3.0).contains(&errors), "errors {errors}");
    assert!((3.5..7.0).contains(&clicks), "clicks {clicks}");
}

fn load(path: &str) -> Policy {
    let path = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    parse_policy(&path, &std::fs::read(&path).unwrap()).unwrap()
}

fn margin(alpha: f64, n: u32) -> f64 {
    alpha + 3.0 * (alpha * (1.0 - alpha) / f64::from(n)).sqrt()
}

/// The seed policies whose signals the replay carries: false rollbacks at
/// most alpha + 3 SE. Approvals are granted at once (the CLI's default).
#[test]
fn a_a_on_the_synthetic_replay_stays_within_alpha() {
    let full = std::env::var("CANARYD_STAT_SWEEP").as_deref() == Ok("1");
    let replay = synthetic();
    // (policy, alpha, compression for the default suite, runs by default)
    let cases = [
        ("simulator/policies/product-example.yaml", 0.01, 24, 150),
        ("rollout-policies/recommender.yaml", 0.01, 24, 150),
        ("simulator/policies/fast-web.yaml", 0.05, 1, 200),
        ("rollout-policies/checkout-web.yaml", 0.01, 1, 100),
        (
            "rollout-policies/experiment-search-ranking.yaml",
            0.05,
            84,
            150,
        ),
        ("rollout-policies/emergency-hotfix.yaml", 0.01, 1, 200),
    ];
    let source = Source::Replay(Replay {
        name: replay.name.clone(),
        interval: replay.interval,
        // By default the replay's first 6 hours (a day's low and rise).
        of: replay.of.clone(),
        intervals: if full {
            replay.intervals
        } else {
            replay.intervals[..360].to_vec()
        },
    });
    for (file, alpha, factor, runs) in cases {
        let policy = if full {
            load(file)
        } else {
            time_compressed(&load(file), factor)
        };
        let n = if full { 1000 } else { runs };
        let opts = SimOptions {
            runs: n,
            seed: 1,
            threads: None,
            approval_delay: Duration::ZERO,
            ..SimOptions::default()
        };
        let r = simulate(&policy, &source, &opts).unwrap();
        let r = &r.results[0];
        let bound = margin(alpha, n);
        eprintln!(
            "{file} on the synthetic replay: rollback {} (bound {bound:.4}), promoted {}, unfinished {}, inconclusive {}, by trigger {:?}",
            r.rollback_rate, r.promotion_rate, r.unfinished_rate, r.inconclusive_rate, r.by_trigger
        );
        assert!(r.rollback_rate <= bound, "{file}: {r:?}");
    }
}

//! The simulator samples only what the engine's analysis says it will read
//! of each arm's latency histogram (`Analysis::latency_reads`): nothing,
//! the counts above some thresholds, or everything. That is sound only if
//! the declaration is complete. This test feeds two monitors of the same
//! policy the same full-resolution traffic, one of them each histogram
//! reduced to what it declared just before (`LatencyHistogram::reduced_to`),
//! and requires every assessment, evidence included, to be identical, for
//! every seed policy that reads latency and on traffic where latency
//! triggers and gates stay quiet and where they fire.

use std::time::Duration;

use canaryd::engine::Analysis;
use canaryd::monitor::Monitor;
use canaryd::policy::{Policy, Weight, parse_policy};
use canaryd::stats::{ArmData, HistogramReads, IntervalSnapshot};
use canaryd::time::Timestamp;
use canaryd_sim::latency::{LATENCY_SIGNAL, LatencyRng};
use canaryd_sim::scenario::parse_scenario;
use canaryd_sim::traffic::TrafficModel;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

fn policies() -> Vec<Policy> {
    let mut out = Vec::new();
    for dir in ["../rollout-policies", "policies"] {
        let dir = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for p in paths {
            let policy = parse_policy(&p.display().to_string(), &std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e:?}", p.display()));
            if canaryd_sim::needs_latency(&policy) {
                out.push(policy);
            }
        }
    }
    out
}

fn reduce(arm: &mut ArmData, reads: &HistogramReads) {
    if let Some(h) = arm.latency.remove(LATENCY_SIGNAL)
        && let Some(r) = h.reduced_to(reads)
    {
        arm.latency.insert(LATENCY_SIGNAL.to_string(), r);
    }
}

/// Runs `intervals` intervals (a fifth at 5%, the rest at 50%) through a
/// monitor fed full histograms and one fed reduced ones; returns how many
/// intervals had a reduced histogram (so the test knows it reduced).
fn compare(policy: &Policy, scenario: &str, seed: u64, intervals: u64) -> u64 {
    let scenario = parse_scenario(
        scenario,
        &std::fs::read(format!(
            "{}/scenarios/{scenario}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let model = TrafficModel::new(&scenario, true);
    let mut full = Monitor::new(policy).unwrap();
    let mut reduced = full.clone();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut latency = LatencyRng::seed_from_u64(seed ^ 0x5eed);
    let every = canaryd::stats::LatencyReads::EVERYTHING;
    let step = policy.analysis.interval;
    let mut reductions = 0;
    for i in 0..intervals {
        let weight = Weight::new(if i < intervals / 5 { 5 } else { 50 }).unwrap();
        let (t0, t1) = (step * i as u32, step * (i as u32 + 1));
        let at = |d: Duration| Timestamp::from_millis(d.as_millis() as u64);
        if i == 0 || i == intervals / 5 {
            full.step_started(at(t0), weight);
            reduced.step_started(at(t0), weight);
        }
        let mut snap = IntervalSnapshot::new(at(t0), at(t1));
        model.generate(
            &mut rng,
            &mut latency,
            t0,
            t1,
            weight.fraction(),
            &every,
            &mut snap.baseline,
            &mut snap.canary,
        );
        let reads = reduced.latency_reads(LATENCY_SIGNAL).into_owned();
        assert_eq!(reads, *full.latency_reads(LATENCY_SIGNAL));
        if reads != every {
            reductions += 1;
        }
        let mut small = snap.clone();
        reduce(&mut small.baseline, &reads.baseline);
        reduce(&mut small.canary, &reads.canary);
        full.observe_owned(snap, weight);
        reduced.observe_owned(small, weight);
        let (a, b) = (full.assess(at(t1)), reduced.assess(at(t1)));
        assert_eq!(
            a, b,
            "policy {}, seed {seed}, interval {i}: the reduced histograms changed the assessment",
            policy.name
        );
    }
    reductions
}

#[test]
fn reading_only_the_declared_latency_changes_no_assessment() {
    let policies = policies();
    assert!(
        policies.len() >= 6,
        "{} policies read latency",
        policies.len()
    );
    let mut reduced_somewhere = 0;
    for policy in &policies {
        for (scenario, seed) in [("aa.yaml", 1), ("latency-tail.yaml", 2)] {
            reduced_somewhere += compare(policy, scenario, seed, 300);
        }
    }
    assert!(reduced_somewhere > 1_000, "{reduced_somewhere}");
}

//! One rollout's evaluation per interval: the engine (state machine plus the
//! policy-driven monitor with five triggers) handling one 1 s interval of
//! data, against the monitor alone fed the same snapshot (the statistics'
//! share of the cost) in the same run. The figure that matters is how many
//! concurrent rollouts one core can evaluate each second at a 1 s interval:
//! 1 / (time per evaluation).
//!
//! Run briefly: `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use canaryd::engine::{Analysis, Input, Rollout, RolloutSpec};
use canaryd::monitor::Monitor;
use canaryd::policy::{ChangeType, Weight, parse_policy};
use canaryd::stats::IntervalSnapshot;
use canaryd::time::Timestamp;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// Five triggers of four kinds, evaluated every second.
const POLICY: &str = "\
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata: { name: bench }
spec:
  analysis: { interval: 1s, alpha: 0.01, minSamples: 1000000000, maxDuration: 24h }
  steps: [ { setWeight: 10 }, { bake: 24h }, { setWeight: 100 } ]
  metrics:
    ctr: { kind: ratio, numerator: clicks, denominator: impressions }
    errors: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - { name: ctr-drop, metric: ctr, vsBaseline: { relativeDrop: 2% } }
    - { name: error-rate, metric: errors, threshold: { above: 1% } }
    - { name: errors-vs-baseline, metric: errors, vsBaseline: { relativeIncrease: 20% } }
    - { name: p95, metric: latency, quantile: 0.95, vsBaseline: { relativeIncrease: 10% } }
    - { name: p99-slo, metric: latency, quantile: 0.99, threshold: { above: 500ms, for: 5m } }
";

/// One second of traffic at 1,000 requests per second, 10% to the canary.
fn snapshot(i: u64) -> IntervalSnapshot {
    let mut s = IntervalSnapshot::new(
        Timestamp::from_millis(i * 1000),
        Timestamp::from_millis((i + 1) * 1000),
    );
    for (arm, n) in [(&mut s.baseline, 900u64), (&mut s.canary, 100u64)] {
        arm.add("requests", n);
        arm.add("impressions", n);
        arm.add("clicks", n / 20);
        arm.add("errors", n / 500);
        let h = arm.latency_mut("latency_ms");
        for k in 0..n {
            h.record_us(20_000 + (k * 7919) % 180_000);
        }
    }
    s
}

fn warmed_rollout() -> (Rollout<Monitor>, u64) {
    let policy = parse_policy("bench.yaml", POLICY.as_bytes()).unwrap();
    let monitor = Monitor::new(&policy).unwrap();
    let spec = RolloutSpec {
        id: "bench".into(),
        service: "svc".into(),
        baseline: "1".into(),
        canary: "2".into(),
        change_type: ChangeType::Standard,
        dry_run: false,
        started_by: "ci".into(),
        reason: None,
        ticket: None,
    };
    let mut r = Rollout::new(spec, policy, monitor, Timestamp::EPOCH).unwrap();
    r.handle(Timestamp::EPOCH, Input::Tick).unwrap();
    r.handle(
        Timestamp::EPOCH,
        Input::RouterAck {
            weight: Weight::new(10).unwrap(),
            error: None,
        },
    )
    .unwrap();
    // Ten minutes of history so every test is running, not collecting.
    for i in 0..600 {
        r.handle(
            Timestamp::from_millis((i + 1) * 1000),
            Input::Data {
                snapshot: snapshot(i),
            },
        )
        .unwrap();
    }
    while r.poll_effect().is_some() {}
    (r, 600)
}

fn evaluation(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_interval_five_triggers");
    let snaps: Vec<IntervalSnapshot> = (600..664).map(snapshot).collect();
    g.bench_function("monitor_only", |b| {
        let (r, _) = warmed_rollout();
        let mut monitor = r.analysis().clone();
        let mut next = snaps.iter().cycle();
        b.iter_batched(
            || next.next().cloned().unwrap_or_default(),
            |s| {
                monitor.observe(&s, Weight::new(10).unwrap());
                black_box(monitor.assess(s.end));
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("engine_handle", |b| {
        let (mut r, start) = warmed_rollout();
        let mut t = start;
        let mut next = snaps.iter().cycle();
        b.iter_batched(
            || next.next().cloned().unwrap_or_default(),
            |mut s| {
                s.start = Timestamp::from_millis(t * 1000);
                s.end = Timestamp::from_millis((t + 1) * 1000);
                t += 1;
                r.handle(s.end, Input::Data { snapshot: s }).unwrap();
                while let Some(e) = r.poll_effect() {
                    black_box(e);
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);

//! Stats hot paths: recording one observation (against a bare
//! `hdrhistogram` record plus counter increment in the same run), and one
//! interval's evaluation of five statistical triggers.
//!
//! Run briefly: `cargo bench --bench stats -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use canaryd::stats::{
    ArmData, ChangeDetection, IntervalSnapshot, QuantileThreshold, QuantileVsBaseline, RatioMethod,
    RatioThreshold, RatioVsBaseline, StatTest,
};
use canaryd::time::Timestamp;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn latencies() -> Vec<u64> {
    // Deterministic spread of latencies from 0.5 ms to ~2 s, in µs.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            500 + (x % 2_000_000) * (x % 7 + 1) / 7
        })
        .collect()
}

fn record(c: &mut Criterion) {
    let values = latencies();
    let mut g = c.benchmark_group("record_one_observation");
    g.bench_function("bare_hdrhistogram_plus_counter", |b| {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        let mut requests = 0u64;
        let mut i = 0;
        b.iter(|| {
            let v = values[i & 4095];
            i += 1;
            h.saturating_record(black_box(v));
            requests += 1;
            black_box(requests);
        });
    });
    g.bench_function("canaryd_histogram_plus_counter", |b| {
        let mut arm = ArmData::default();
        arm.add("requests", 0);
        let h = arm.latency_mut("latency_ms");
        let mut requests = 0u64;
        let mut i = 0;
        b.iter(|| {
            let v = values[i & 4095];
            i += 1;
            h.record_us(black_box(v));
            requests += 1;
            black_box(requests);
        });
    });
    g.bench_function("canaryd_arm_data_by_signal_name", |b| {
        let mut arm = ArmData::default();
        let mut i = 0;
        b.iter(|| {
            let v = values[i & 4095];
            i += 1;
            arm.latency_mut(black_box("latency_ms"))
                .record_us(black_box(v));
            arm.add(black_box("requests"), 1);
        });
    });
    g.finish();
}

fn interval(i: u64) -> IntervalSnapshot {
    let mut s = IntervalSnapshot::new(
        Timestamp::from_millis(i * 30_000),
        Timestamp::from_millis((i + 1) * 30_000),
    );
    let values = latencies();
    for (arm, n) in [(&mut s.canary, 300u64), (&mut s.baseline, 5_700u64)] {
        arm.add("requests", n);
        arm.add("errors", n / 150 + i % 3);
        arm.add("impressions", n);
        arm.add("clicks", n / 20 + i % 5);
        let h = arm.latency_mut("latency_ms");
        for v in values.iter().take(n as usize) {
            h.record_us(*v / 10);
        }
    }
    s
}

fn five_triggers(c: &mut Criterion) {
    let change = ChangeDetection::over_horizon(5760, 31);
    let a = 0.01 / 5.0;
    let mut tests = vec![
        StatTest::RatioVsBaseline(
            RatioVsBaseline::relative_increase("errors", "requests", 0.1, a, change).unwrap(),
        ),
        StatTest::RatioVsBaseline(
            RatioVsBaseline::relative_drop("clicks", "impressions", 0.01, a, change)
                .unwrap()
                .with_method(RatioMethod::Normal),
        ),
        StatTest::RatioThreshold(
            RatioThreshold::new("errors", "requests", 0.005, a, change).unwrap(),
        ),
        StatTest::QuantileThreshold(
            QuantileThreshold::new("latency_ms", 0.95, 200.0, a, change).unwrap(),
        ),
        StatTest::QuantileVsBaseline(
            QuantileVsBaseline::relative_increase("latency_ms", 0.95, 0.1, a, change)
                .unwrap()
                .with_threshold_ms(150.0),
        ),
    ];
    // Warm the tests past burn-in and into many restart slots.
    for i in 0..2_000 {
        let s = interval(i % 7);
        for t in &mut tests {
            t.observe(&s);
        }
    }
    let snap = interval(2_000);
    c.bench_function("evaluate_one_interval_five_triggers", |b| {
        b.iter_batched(
            || tests.clone(),
            |mut ts| {
                for t in &mut ts {
                    black_box(t.observe(&snap));
                }
                ts
            },
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, record, five_triggers);
criterion_main!(benches);

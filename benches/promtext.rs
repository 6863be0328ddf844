//! Exposition parse throughput on a real Prometheus server's own `/metrics`
//! (the captured corpus file, ~40 KB, 156 families), and one signal query on
//! the parsed result.
//!
//! Run briefly: `cargo bench --bench promtext -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use canaryd::sources::prom_text::{Format, Limits, Selector, parse, sum};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let text = include_str!("../tests/promtext_corpus/real_prometheus.prom");
    let limits = Limits::default();
    let mut group = c.benchmark_group("promtext");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse real prometheus /metrics", |b| {
        b.iter(|| parse(black_box(text), Format::PrometheusText, &limits).unwrap())
    });
    group.finish();
    let families = parse(text, Format::PrometheusText, &limits).unwrap();
    let selector = Selector::parse(r#"prometheus_http_requests_total{code=~"2.."}"#).unwrap();
    c.bench_function("promtext/sum with a regex matcher", |b| {
        b.iter(|| sum(black_box(&families), &selector).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

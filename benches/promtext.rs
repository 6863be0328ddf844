//! Exposition parse throughput on a real Prometheus server's own `/metrics`
//! (the captured corpus file, ~40 KB, 156 families), on an OpenMetrics
//! exposition shaped like a service's (the `prometheus-client` encoder's: a
//! labelled request counter, a latency histogram per route, gauges; Prometheus
//! 2.42 serves its own only as 0.0.4), and one signal query on the parsed
//! result.
//!
//! Run briefly: `cargo bench --bench promtext -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use canaryd::sources::prom_text::{Format, Limits, Selector, parse, sum};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
    }
}

/// 120 counter series, 24 histograms of 12 buckets, 16 gauges; the same
/// bytes every run (values from a fixed arithmetic sequence).
fn service_openmetrics() -> String {
    let mut registry = Registry::default();
    let requests = Family::<Labels, Counter>::default();
    let latency = Family::<Labels, Histogram, LatencyBuckets>::new_with_constructor(LatencyBuckets);
    let in_flight = Family::<Labels, Gauge>::default();
    let mut n = 0u64;
    for path in 0..8 {
        for method in ["GET", "POST", "PUT"] {
            let route = vec![
                ("path", format!("/api/v1/resource{path}")),
                ("method", method.to_owned()),
            ];
            for code in ["200", "201", "404", "500", "503"] {
                let mut labels = route.clone();
                labels.push(("code", code.to_owned()));
                n += 7919;
                requests.get_or_create(&labels).inc_by(n % 100_000);
            }
            let h = latency.get_or_create(&route);
            for i in 0..50u64 {
                h.observe((n + i * 37) as f64 % 3000.0 / 1000.0);
            }
        }
        in_flight
            .get_or_create(&vec![("path", format!("/api/v1/resource{path}"))])
            .set(path);
        in_flight
            .get_or_create(&vec![("queue", format!("q{path}"))])
            .set(path * 3);
    }
    registry.register("http_requests", "Requests by route and code", requests);
    registry.register("http_request_duration_seconds", "Request latency", latency);
    registry.register("in_flight", "Requests in flight", in_flight);
    let mut out = String::new();
    text::encode(&mut out, &registry).expect("encode");
    out
}

fn bench(c: &mut Criterion) {
    let text = include_str!("../tests/promtext_corpus/real_prometheus.prom");
    let limits = Limits::default();
    let mut group = c.benchmark_group("promtext");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse real prometheus /metrics", |b| {
        b.iter(|| parse(black_box(text), Format::PrometheusText, &limits).unwrap())
    });
    group.finish();
    let om = service_openmetrics();
    let mut group = c.benchmark_group("promtext");
    group.throughput(Throughput::Bytes(om.len() as u64));
    group.bench_function("parse prometheus-client openmetrics", |b| {
        b.iter(|| parse(black_box(&om), Format::OpenMetrics, &limits).unwrap())
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

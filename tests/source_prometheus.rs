//! `prometheusQuery` against a real Prometheus (Debian's 2.42, installed
//! when missing) whose data directory was backfilled with
//! `promtool tsdb create-blocks-from openmetrics` before it started: two
//! versions with known, steady rates, so the source must read exactly known
//! request counts, error counts and latency buckets for both arms. Then the
//! failures: bad PromQL, no series, `NaN`, several series, and the server
//! stopped. Skips, loudly, only when the package cannot be installed.
//!
//! About `increase()`'s extrapolation: Prometheus 2.x selects the samples in
//! `[end - window, end]` and, when the first or last sample is less than
//! 1.1 scrape intervals from the window's edge, extrapolates the observed
//! increase linearly to that edge (by at most half an interval otherwise, and
//! never below zero). For a counter growing at a steady rate, that linear
//! extrapolation is exact, so every number below is exact whether or not the
//! window's edges fall on a sample (one test moves the end 7 s off the
//! 15 s sample grid to show it). For real traffic it is an estimate, which
//! is why the source rounds it to a whole count.

mod source_support;

use std::time::Duration;

use canaryd::sources::{QueryConfig, SourceConfig, SourceError, build};
use canaryd::stats::{ArmData, Layout};
use canaryd::time::Timestamp;
use source_support::prometheus::{self, Prometheus};
use source_support::window_at;

/// 2026-01-01T00:00:00Z: the backfill's first sample.
const T0: u64 = 1_767_225_600;
const STEP_SECS: u64 = 15;
const STEPS: u64 = 120; // 30 minutes
const T_END: u64 = T0 + STEP_SECS * STEPS;
const BOUNDS: [&str; 6] = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];

/// Per 15 s step: (version, code, requests).
const REQUESTS: [(&str, &str, u64); 4] = [
    ("v1", "200", 594),
    ("v1", "500", 6),
    ("v2", "200", 114),
    ("v2", "500", 6),
];

/// Per 15 s step: (version, path, observations per bucket (not cumulative)).
/// v1: 600 per step over two paths, p95 in (100, 250] ms; v2: 120 per
/// step, p95 in (500, 1000] ms.
const LATENCY: [(&str, &str, [u64; 6]); 3] = [
    ("v1", "/a", [200, 100, 50, 14, 6, 0]),
    ("v1", "/b", [100, 100, 20, 10, 0, 0]),
    ("v2", "/a", [40, 40, 20, 12, 6, 2]),
];

fn backfill() -> String {
    let mut om =
        String::from("# HELP http_requests Requests served.\n# TYPE http_requests counter\n");
    for (version, code, per_step) in REQUESTS {
        for k in 0..=STEPS {
            om += &format!(
                "http_requests_total{{version=\"{version}\",code=\"{code}\"}} {} {}\n",
                k * per_step,
                T0 + k * STEP_SECS
            );
        }
    }
    om += "# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n";
    for (version, path, own) in LATENCY {
        for k in 0..=STEPS {
            let ts = T0 + k * STEP_SECS;
            let mut cumulative = 0;
            for (le, n) in BOUNDS.iter().zip(own) {
                cumulative += n * k;
                om += &format!(
                    "http_request_duration_seconds_bucket{{version=\"{version}\",path=\"{path}\",le=\"{le}\"}} {cumulative} {ts}\n"
                );
            }
            om += &format!(
                "http_request_duration_seconds_count{{version=\"{version}\",path=\"{path}\"}} {cumulative} {ts}\n\
                 http_request_duration_seconds_sum{{version=\"{version}\",path=\"{path}\"}} {} {ts}\n",
                cumulative as f64 * 0.1
            );
        }
    }
    om.push_str("# EOF\n");
    om
}

fn config(url: &str, signals: &[(&str, &str)]) -> SourceConfig {
    SourceConfig::PrometheusQuery(QueryConfig {
        url: url.to_owned(),
        signals: signals
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        timeout: Duration::from_secs(5),
        tls: Default::default(),
    })
}

const SIGNALS: [(&str, &str); 3] = [
    (
        "requests",
        r#"sum(increase(http_requests_total{version="{{version}}"}[{{window}}]))"#,
    ),
    (
        "errors",
        r#"sum(increase(http_requests_total{version="{{version}}",code=~"5.."}[{{window}}]))"#,
    ),
    (
        "latency_ms",
        r#"http_request_duration_seconds{version="{{version}}"}"#,
    ),
];

/// The window `[end - length, end]`, end in unix seconds.
fn window(end_secs: u64, length: Duration) -> canaryd::sources::Window {
    window_at(
        Timestamp::from_millis(end_secs * 1000) - length,
        length,
        "v1",
        "v2",
    )
}

/// Own counts per latency bucket, checking the `le` layout in µs.
fn buckets(arm: &ArmData) -> Vec<u64> {
    let h = &arm.latency["latency_ms"];
    let Layout::Bucketed { upper_bounds_us } = h.layout() else {
        panic!("le layout expected: {h:?}")
    };
    assert_eq!(
        upper_bounds_us,
        &[50_000, 100_000, 250_000, 500_000, 1_000_000, u64::MAX]
    );
    let mut own = Vec::new();
    let mut above_prev = h.total();
    for &ub in &upper_bounds_us[..upper_bounds_us.len() - 1] {
        let above = h.count_surely_above_us(ub);
        own.push(above_prev - above);
        above_prev = above;
    }
    own.push(above_prev);
    own
}

fn times(own: [u64; 6], n: u64) -> Vec<u64> {
    own.iter().map(|c| c * n).collect()
}

async fn query_source_reads_known_data(server: &Prometheus) {
    let source = build(&config(&server.url(), &SIGNALS)).expect("valid config");
    assert_eq!(
        source.describe(),
        format!("prometheusQuery {}", server.url())
    );

    // 5 minutes ending on a sample: 20 steps.
    let c = source
        .collect(&window(T_END, Duration::from_secs(300)))
        .await
        .expect("collect");
    assert_eq!(c.baseline.counter("requests"), 600 * 20);
    assert_eq!(c.baseline.counter("errors"), 6 * 20);
    assert_eq!(c.canary.counter("requests"), 120 * 20);
    assert_eq!(c.canary.counter("errors"), 6 * 20);
    // v1's two paths are added bucket by bucket.
    assert_eq!(buckets(&c.baseline), times([300, 200, 70, 24, 6, 0], 20));
    assert_eq!(buckets(&c.canary), times([40, 40, 20, 12, 6, 2], 20));
    // p95: rank 11400 of 12000 is the last observation at or below 250 ms;
    // rank 2280 of 2400 lies in (500, 1000] ms. Reported with the bounds.
    let p95 = |arm: &ArmData| arm.latency["latency_ms"].quantile_bounds_us(0.95);
    assert_eq!(p95(&c.baseline), Some((100_001, 250_000)));
    assert_eq!(p95(&c.canary), Some((500_001, 1_000_000)));

    // `{{window}}` as a compound duration: 1m30s is 6 steps.
    let c = source
        .collect(&window(T_END, Duration::from_secs(90)))
        .await
        .unwrap();
    assert_eq!(c.baseline.counter("requests"), 600 * 6);
    assert_eq!(c.canary.counter("errors"), 6 * 6);
    assert_eq!(buckets(&c.canary), times([40, 40, 20, 12, 6, 2], 6));

    // An end 7 s off the sample grid: increase() extrapolates 7 s and 8 s to
    // the edges, which for a steady rate is exact.
    let c = source
        .collect(&window(T_END - 7, Duration::from_secs(300)))
        .await
        .unwrap();
    assert_eq!(c.baseline.counter("requests"), 600 * 20);
    assert_eq!(c.canary.counter("errors"), 6 * 20);

    // Successive windows tile time: two 2m30s windows add up to the 5m one.
    let first = source
        .collect(&window(T_END - 150, Duration::from_secs(150)))
        .await
        .unwrap();
    let second = source
        .collect(&window(T_END, Duration::from_secs(150)))
        .await
        .unwrap();
    assert_eq!(
        first.baseline.counter("requests") + second.baseline.counter("requests"),
        600 * 20
    );
}

async fn query_failures_are_told_apart(server: &Prometheus) {
    let w = window(T_END, Duration::from_secs(300));
    let one = |signal: &'static str, promql: &'static str| {
        build(&config(&server.url(), &[(signal, promql)])).expect("valid config")
    };

    let err = one("requests", "sum(increase(http_requests_total[{{window}}])")
        .collect(&w)
        .await
        .unwrap_err();
    match &err {
        SourceError::Query {
            error_type, detail, ..
        } => {
            assert_eq!(error_type, "bad_data");
            assert!(detail.contains("parse error"), "{err}");
        }
        other => panic!("expected Query, got {other:?}"),
    }

    let err = one(
        "requests",
        r#"sum(increase(http_requests_total{version="v9-{{version}}"}[{{window}}]))"#,
    )
    .collect(&w)
    .await
    .unwrap_err();
    assert!(
        matches!(&err, SourceError::Empty { signal, .. } if signal == "requests"),
        "{err:?}"
    );

    let err = one(
        "latency_ms",
        r#"no_such_histogram_seconds{version="{{version}}"}"#,
    )
    .collect(&w)
    .await
    .unwrap_err();
    assert!(
        matches!(&err, SourceError::Empty { signal, .. } if signal == "latency_ms"),
        "{err:?}"
    );

    for nan in ["0/0", "1/0", "-1"] {
        let err = build(&config(&server.url(), &[("errors", nan)]))
            .unwrap()
            .collect(&w)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SourceError::NotANumber { signal, .. } if signal == "errors"),
            "{nan}: {err:?}"
        );
    }

    // Two series where one count is expected: refused, never added up.
    let err = one(
        "requests",
        r#"sum by (code) (increase(http_requests_total{version="{{version}}"}[{{window}}]))"#,
    )
    .collect(&w)
    .await
    .unwrap_err();
    match &err {
        SourceError::NotANumber { detail, .. } => assert!(detail.contains("2 series"), "{err}"),
        other => panic!("expected NotANumber, got {other:?}"),
    }

    // A range vector answer is not a count.
    let err = one("requests", "http_requests_total[{{window}}]")
        .collect(&w)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Query { .. } | SourceError::Parse { .. }),
        "{err:?}"
    );
}

#[tokio::test]
// The test reports how long its own setup took; no code under test reads a clock.
#[allow(clippy::disallowed_methods)]
async fn query_source_against_a_real_prometheus() {
    let started = std::time::Instant::now();
    // A missing server is a failure, never a silent pass (scripts/test
    // installs it; this installs it when run on its own).
    prometheus::ensure_installed().unwrap_or_else(|why| panic!("cannot install prometheus: {why}"));
    let mut server = prometheus::start_with_backfill(&backfill()).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "backfilled and ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    query_source_reads_known_data(&server).await;
    query_failures_are_told_apart(&server).await;

    let source = build(&config(&server.url(), &SIGNALS)).unwrap();
    server.kill();
    let err = source
        .collect(&window(T_END, Duration::from_secs(300)))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    println!(
        "prometheus end-to-end took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

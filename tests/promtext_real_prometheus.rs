//! A real exposition: a real Prometheus server's own `/metrics`, in both
//! formats it serves. The test installs the Debian `prometheus` package when
//! it is missing, starts the server on a free loopback port with a temporary
//! config and data directory, scrapes it twice, checks families every
//! Prometheus exposes, and kills it. It skips, loudly, only when the package
//! cannot be installed.
//!
//! `PROMTEXT_CAPTURE=1` also writes the expositions into the corpus
//! (`tests/promtext_corpus/real_prometheus.{prom,om}`).

mod source_support;

use std::path::Path;

use canaryd::sources::prom_text::{
    Family, Format, Kind, Limits, Selector, counter_delta, histogram, parse, sum,
};
use source_support::prometheus::{self, get};

fn family<'f>(families: &'f [Family], name: &str) -> &'f Family {
    families
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no family `{name}`"))
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn check_families(families: &[Family], format: Format) {
    let om = format == Format::OpenMetrics;
    let requests = family(
        families,
        if om {
            "prometheus_http_requests"
        } else {
            "prometheus_http_requests_total"
        },
    );
    assert_eq!(requests.kind, Kind::Counter);
    assert!(requests.help.as_deref().is_some_and(|h| !h.is_empty()));
    for s in requests
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_total"))
    {
        assert!(
            s.label("code").is_some() && s.label("handler").is_some(),
            "{s:?}"
        );
    }
    let ready = sum(
        families,
        &sel(r#"prometheus_http_requests_total{handler="/-/ready",code="200"}"#),
    )
    .unwrap();
    assert!(ready.series == 1 && ready.value >= 1.0, "{ready:?}");

    let gc = family(families, "go_gc_duration_seconds");
    assert_eq!(gc.kind, Kind::Summary);
    let quantiles: Vec<&str> = gc
        .samples
        .iter()
        .filter_map(|s| s.label("quantile"))
        .collect();
    assert_eq!(quantiles, ["0", "0.25", "0.5", "0.75", "1"]);
    assert!(
        gc.samples
            .iter()
            .any(|s| s.name == "go_gc_duration_seconds_count")
    );
    assert!(
        gc.samples
            .iter()
            .any(|s| s.name == "go_gc_duration_seconds_sum")
    );

    let duration = family(families, "prometheus_http_request_duration_seconds");
    assert_eq!(duration.kind, Kind::Histogram);
    let buckets = histogram(
        families,
        &sel(r#"prometheus_http_request_duration_seconds{handler="/-/ready"}"#),
    )
    .unwrap();
    assert!(buckets.len() >= 2, "{buckets:?}");
    let (last_le, total) = *buckets.last().unwrap();
    assert_eq!(last_le, f64::INFINITY);
    assert!(total >= 1, "{buckets:?}");
}

#[test]
// The test reports how long its own setup took; no code under test reads a clock.
#[allow(clippy::disallowed_methods)]
fn parses_a_real_prometheus_servers_own_metrics() {
    let started = std::time::Instant::now();
    // A missing server is a failure, never a silent pass (scripts/test
    // installs it; this installs it when run on its own).
    prometheus::ensure_installed().unwrap_or_else(|why| panic!("cannot install prometheus: {why}"));
    // Scrapes itself every second, so its counters move between our scrapes.
    let server = prometheus::start(
        |port| {
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            )
        },
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = server.port;
    println!(
        "prometheus ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let limits = Limits::default();
    let mut captures = Vec::new();
    for (accept, expected_format) in [
        ("text/plain;version=0.0.4", Format::PrometheusText),
        (
            "application/openmetrics-text;version=1.0.0",
            Format::OpenMetrics,
        ),
    ] {
        let (status, content_type, first) = get(port, "/metrics", accept).expect("scrape");
        assert_eq!(status, 200, "{first}");
        // The Content-Type decides, as it will in the scrape source; Prometheus
        // 2.42 answers its own /metrics in 0.0.4 even when asked for OpenMetrics.
        let format = Format::from_content_type(&content_type);
        if format != expected_format {
            println!("asked for {accept}, served {content_type}");
        }
        let before = parse(&first, format, &limits).unwrap_or_else(|e| panic!("{e}"));
        check_families(&before, format);
        let (_, _, second) = get(port, "/metrics", accept).expect("second scrape");
        let after = parse(&second, format, &limits).unwrap_or_else(|e| panic!("{e}"));
        // The first scrape was itself counted by the second.
        let scrapes = counter_delta(
            &before,
            &after,
            &sel(r#"prometheus_http_requests_total{handler="/metrics"}"#),
        )
        .unwrap();
        assert!(scrapes.value >= 1.0, "{scrapes:?}");
        println!(
            "{content_type}: {} bytes, {} families, {} samples",
            first.len(),
            before.len(),
            before.iter().map(|f| f.samples.len()).sum::<usize>()
        );
        if format == expected_format {
            captures.push((format, first));
        }
    }
    if std::env::var_os("PROMTEXT_CAPTURE").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promtext_corpus");
        for (format, text) in captures {
            let ext = if format == Format::OpenMetrics {
                "om"
            } else {
                "prom"
            };
            std::fs::write(dir.join(format!("real_prometheus.{ext}")), text).expect("capture");
        }
    }
}

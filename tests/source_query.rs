//! `prometheusQuery` against a stand-in for Prometheus' HTTP API on
//! 127.0.0.1 whose answers the test writes: what is sent (POST form,
//! templates, `time`), and each kind of failure told apart: Prometheus'
//! error JSON, other HTTP errors, garbage, the wrong result type, several
//! series, values that are not counts, histograms that are not cumulative,
//! a timeout. `source_prometheus.rs` runs the same source against a real
//! Prometheus.

mod source_support;

use std::sync::Arc;
use std::time::Duration;

use canaryd::sources::{QueryConfig, Source, SourceConfig, SourceError, Window, build};
use canaryd::stats::Layout;
use source_support::{FakeServer, Reply, window, window_at};

fn source(server: &FakeServer, signals: &[(&str, &str)], timeout: Duration) -> Arc<dyn Source> {
    build(&SourceConfig::PrometheusQuery(QueryConfig {
        url: server.url(""),
        signals: signals
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        timeout,
        tls: Default::default(),
    }))
    .expect("valid config")
}

fn scalar(value: &str) -> Reply {
    Reply::json(
        200,
        format!(
            r#"{{"status":"success","data":{{"resultType":"scalar","result":[1767225630,"{value}"]}}}}"#
        ),
    )
}

fn vector(samples: &[(&str, &str)]) -> Reply {
    let result: Vec<String> = samples
        .iter()
        .map(|(metric, value)| {
            format!(r#"{{"metric":{{{metric}}},"value":[1767225630,"{value}"]}}"#)
        })
        .collect();
    Reply::json(
        200,
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            result.join(",")
        ),
    )
}

fn w() -> Window {
    window(0, "v1", "v2")
}

const REQUESTS: (&str, &str) = (
    "requests",
    r#"sum(increase(http_requests_total{version="{{version}}"}[{{window}}]))"#,
);

async fn requests_error(reply: Reply) -> (SourceError, usize) {
    let server = FakeServer::start(reply).await;
    let err = source(&server, &[REQUESTS], Duration::from_secs(2))
        .collect(&w())
        .await
        .unwrap_err();
    (err, server.requests().len())
}

fn form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                let mut out = Vec::new();
                let bytes = s.as_bytes();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%' {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            (decode(k), decode(v))
        })
        .collect()
}

#[tokio::test]
async fn each_signal_and_arm_is_one_post_with_the_templates_filled_in() {
    let server = FakeServer::start(scalar("41.6")).await;
    let c = source(&server, &[REQUESTS], Duration::from_millis(2500))
        .collect(&window_at(
            canaryd::time::Timestamp::from_millis(1_767_225_600_250),
            Duration::from_secs(90),
            "v1",
            "2",
        ))
        .await
        .unwrap();
    // increase() extrapolates, so values are fractional: rounded.
    assert_eq!(c.baseline.counter("requests"), 42);
    assert_eq!(c.canary.counter("requests"), 42);
    let mut seen: Vec<Vec<(String, String)>> = server
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, "/api/v1/query");
            assert_eq!(r.content_type, "application/x-www-form-urlencoded");
            form(&r.body)
        })
        .collect();
    seen.sort();
    let expect = |version: &str| {
        vec![
            (
                "query".to_owned(),
                format!(r#"sum(increase(http_requests_total{{version="{version}"}}[1m30s]))"#),
            ),
            ("time".to_owned(), "1767225690.250".to_owned()),
            ("timeout".to_owned(), "2500ms".to_owned()),
        ]
    };
    assert_eq!(seen, vec![expect("2"), expect("v1")]);
}

#[tokio::test]
async fn a_latency_signal_asks_for_the_buckets_and_keeps_their_bounds() {
    // Fractional (extrapolated) cumulative counts, in any order.
    let server = FakeServer::start(vector(&[
        (r#""le":"+Inf""#, "100.4"),
        (r#""le":"0.1""#, "59.6"),
        (r#""le":"0.025""#, "10.2"),
        (r#""le":"0.5""#, "99.5"),
    ]))
    .await;
    let c = source(
        &server,
        &[(
            "latency_ms",
            r#"http_request_duration_seconds{version="{{version}}",code!~"4.."}"#,
        )],
        Duration::from_secs(2),
    )
    .collect(&w())
    .await
    .unwrap();
    let query = &form(&server.requests()[0].body)[0].1;
    assert!(
        query.starts_with(
            r#"sum by (le) (increase(http_request_duration_seconds_bucket{version="v"#
        ) && query.ends_with(r#"",code!~"4.."}[30s]))"#),
        "{query}"
    );
    let h = &c.canary.latency["latency_ms"];
    assert_eq!(
        h.layout(),
        &Layout::Bucketed {
            upper_bounds_us: vec![25_000, 100_000, 500_000, u64::MAX]
        }
    );
    assert_eq!(h.total(), 100);
    // Rounded cumulative 10, 60, 100 (99.5 rounds up), 100.
    assert_eq!(h.count_surely_above_us(25_000), 90);
    assert_eq!(h.count_surely_above_us(100_000), 40);
    assert_eq!(h.count_surely_above_us(500_000), 0);

    // A family in milliseconds keeps its numbers.
    let server =
        FakeServer::start(vector(&[(r#""le":"250""#, "3"), (r#""le":"+Inf""#, "4")])).await;
    let c = source(
        &server,
        &[("latency_ms", "rpc_latency_milliseconds")],
        Duration::from_secs(2),
    )
    .collect(&w())
    .await
    .unwrap();
    assert_eq!(
        c.baseline.latency["latency_ms"].layout(),
        &Layout::Bucketed {
            upper_bounds_us: vec![250_000, u64::MAX]
        }
    );
}

#[tokio::test]
async fn histograms_that_cannot_be_read_honestly_are_refused() {
    let latency = [("latency_ms", "x_seconds")];
    for (samples, expect) in [
        (vec![(r#""le":"0.1""#, "5")], "+Inf"),
        (
            vec![(r#""le":"0.1""#, "50"), (r#""le":"+Inf""#, "20")],
            "not cumulative",
        ),
        (
            vec![(r#""le":"0.1""#, "NaN"), (r#""le":"+Inf""#, "1")],
            "NaN",
        ),
    ] {
        let server = FakeServer::start(vector(&samples)).await;
        let err = source(&server, &latency, Duration::from_secs(2))
            .collect(&w())
            .await
            .unwrap_err();
        match &err {
            SourceError::NotANumber { signal, detail, .. } => {
                assert_eq!(signal, "latency_ms");
                assert!(detail.contains(expect), "{err}");
            }
            other => panic!("expected NotANumber ({expect}), got {other:?}"),
        }
    }
}

#[tokio::test]
async fn prometheus_errors_are_query_errors_and_only_transient_ones_are_retried() {
    let (err, requests) = requests_error(Reply::json(
        400,
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:16: parse error: unclosed left parenthesis"}"#,
    ))
    .await;
    match &err {
        SourceError::Query {
            error_type, detail, ..
        } => {
            assert_eq!(error_type, "bad_data");
            assert!(detail.contains("unclosed left parenthesis"), "{err}");
        }
        other => panic!("expected Query, got {other:?}"),
    }
    assert_eq!(requests, 2, "one per arm, no retry");

    let (err, requests) = requests_error(Reply::json(
        503,
        r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#,
    ))
    .await;
    assert!(
        matches!(&err, SourceError::Query { error_type, .. } if error_type == "timeout"),
        "{err:?}"
    );
    assert_eq!(requests, 4, "one retry per arm");
}

#[tokio::test]
async fn other_http_errors_garbage_and_wrong_shapes_are_told_apart() {
    let (err, requests) = requests_error(Reply {
        status: 502,
        content_type: "text/html".to_owned(),
        ..Reply::text("<html>bad gateway</html>")
    })
    .await;
    assert!(
        matches!(&err, SourceError::Http { status: 502, detail, .. } if detail.contains("bad gateway")),
        "{err:?}"
    );
    assert_eq!(requests, 4);

    let (err, _) = requests_error(Reply::json(404, "404 page not found")).await;
    assert!(
        matches!(&err, SourceError::Http { status: 404, .. }),
        "{err:?}"
    );

    let (err, _) = requests_error(Reply::json(200, "<html>login</html>")).await;
    assert!(matches!(&err, SourceError::Parse { .. }), "{err:?}");

    let (err, _) = requests_error(Reply::json(
        200,
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
    ))
    .await;
    match &err {
        SourceError::Parse { detail, .. } => assert!(detail.contains("matrix"), "{err}"),
        other => panic!("expected Parse, got {other:?}"),
    }

    // Answers are bounded (4 MiB): a huge one is refused, not buffered.
    let (err, _) = requests_error(Reply::json(200, "x".repeat(5 << 20))).await;
    match &err {
        SourceError::Parse { detail, .. } => assert!(detail.contains("limit"), "{err}"),
        other => panic!("expected Parse, got {other:?}"),
    }

    let (err, _) = requests_error(scalar("twelve")).await;
    assert!(matches!(&err, SourceError::Parse { .. }), "{err:?}");
}

#[tokio::test]
async fn no_series_several_series_and_non_counts_are_never_read_as_numbers() {
    let (err, _) = requests_error(vector(&[])).await;
    assert!(
        matches!(&err, SourceError::Empty { signal, .. } if signal == "requests"),
        "{err:?}"
    );
    let (err, _) = requests_error(vector(&[
        (r#""code":"200""#, "5"),
        (r#""code":"500""#, "1"),
    ]))
    .await;
    match &err {
        SourceError::NotANumber { detail, .. } => assert!(detail.contains("2 series"), "{err}"),
        other => panic!("expected NotANumber, got {other:?}"),
    }
    for value in ["NaN", "+Inf", "-Inf", "-3"] {
        let (err, _) = requests_error(vector(&[("", value)])).await;
        assert!(
            matches!(&err, SourceError::NotANumber { signal, .. } if signal == "requests"),
            "{value}: {err:?}"
        );
    }
    // One sample with labels is fine.
    let server = FakeServer::start(vector(&[(r#""version":"v1""#, "7")])).await;
    let c = source(&server, &[REQUESTS], Duration::from_secs(2))
        .collect(&w())
        .await
        .unwrap();
    assert_eq!(c.baseline.counter("requests"), 7);
}

#[tokio::test]
async fn a_slow_prometheus_times_out_after_one_retry() {
    let server = FakeServer::start(Reply {
        delay: Duration::from_secs(5),
        ..scalar("1")
    })
    .await;
    let timeout = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let err = source(&server, &[REQUESTS], timeout)
        .collect(&w())
        .await
        .unwrap_err();
    // Both arms' queries run at once: two attempts and one pause of at most
    // 250 ms, not twice that.
    let took = started.elapsed();
    assert!(took < 2 * timeout + Duration::from_millis(550), "{took:?}");
    assert!(
        matches!(&err, SourceError::Timeout { after, .. } if *after == timeout),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 4, "two arms, two attempts each");
}

#[tokio::test]
async fn a_stopped_prometheus_is_unreachable() {
    let server = FakeServer::start(scalar("1")).await;
    let s = source(&server, &[REQUESTS], Duration::from_secs(2));
    server.stop().await;
    let err = s.collect(&w()).await.unwrap_err();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_version_that_would_break_out_of_a_promql_string_is_refused() {
    let server = FakeServer::start(scalar("1")).await;
    let err = source(&server, &[REQUESTS], Duration::from_secs(2))
        .collect(&window(0, "v1", r#"x"} or vector(1e9) or {a=""#))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Config { .. }), "{err:?}");
    assert!(
        server.requests().iter().all(|r| !r.body.contains("vector")),
        "nothing with it was sent"
    );
}

#[test]
fn bad_configs_are_refused_when_built() {
    let config = |url: &str, signal: &str, promql: &str| {
        SourceConfig::PrometheusQuery(QueryConfig {
            url: url.to_owned(),
            signals: [(signal.to_owned(), promql.to_owned())].into(),
            timeout: Duration::from_secs(1),
            tls: Default::default(),
        })
    };
    for (url, signal, promql, expect) in [
        (
            "http://127.0.0.1:9090",
            "requests",
            "sum(x{v=\"{{verison}}\"})",
            "verison",
        ),
        (
            "http://127.0.0.1:9090",
            "latency_ms",
            "histogram_quantile(0.9, x)",
            "latency_ms",
        ),
        ("127.0.0.1:9090", "requests", "up", "url"),
    ] {
        match build(&config(url, signal, promql)) {
            Err(SourceError::Config { detail, .. }) => assert!(detail.contains(expect), "{detail}"),
            Err(other) => panic!("expected Config, got {other:?}"),
            Ok(_) => panic!("{promql}: accepted"),
        }
    }
    let mut zero = config("http://127.0.0.1:9090", "requests", "up");
    if let SourceConfig::PrometheusQuery(c) = &mut zero {
        c.timeout = Duration::ZERO;
    }
    assert!(
        matches!(build(&zero), Err(SourceError::Config { detail, .. }) if detail.contains("timeout"))
    );
    // A path prefix (Prometheus behind --web.route-prefix) is kept.
    assert!(build(&config("http://127.0.0.1:9090/prom/", "requests", "up")).is_ok());
}

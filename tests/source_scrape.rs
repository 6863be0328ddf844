//! `prometheusScrape` against small HTTP servers on 127.0.0.1 that serve
//! expositions the test writes: deltas per window, counter resets, restarts
//! (counters back to zero, a changed start time, a target that goes away and
//! comes back), a missing family, an exposition that does not parse,
//! timeouts, HTTP errors, and OpenMetrics. And end to end, with the real
//! `canaryd serve`: a target whose exposition breaks a rule (buckets out of
//! `le` order) shows that rule, its line and its column in the rollout's
//! source status, through the API and the command line.

mod daemon_support;
mod source_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canaryd::sources::{ScrapeConfig, Source, SourceConfig, SourceError, Window, build};
use canaryd::stats::{ArmData, Layout};
use source_support::{FakeServer, Reply, window};

/// One target's counters, as its `/metrics` shows them.
#[derive(Clone, Copy)]
struct Target {
    ok: u64,
    /// `None`: no 5xx series yet.
    errors: Option<u64>,
    /// Cumulative at le 0.05, 0.1, 0.25 and +Inf seconds.
    buckets: [u64; 4],
    start_time: f64,
}

const IDLE: Target = Target {
    ok: 0,
    errors: None,
    buckets: [0; 4],
    start_time: 1000.0,
};

fn text(t: Target) -> String {
    let mut out =
        String::from("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n");
    out += &format!("http_requests_total{{code=\"200\",path=\"/\"}} {}\n", t.ok);
    if let Some(errors) = t.errors {
        out += &format!("http_requests_total{{path=\"/\",code=\"500\"}} {errors}\n");
    }
    out += "# TYPE http_request_duration_seconds histogram\n";
    for (le, n) in ["0.05", "0.1", "0.25", "+Inf"].iter().zip(t.buckets) {
        out += &format!("http_request_duration_seconds_bucket{{le=\"{le}\"}} {n}\n");
    }
    out += &format!(
        "http_request_duration_seconds_sum 1.5\nhttp_request_duration_seconds_count {}\n",
        t.buckets[3]
    );
    out += &format!(
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}\n",
        t.start_time
    );
    out
}

/// The same counters in OpenMetrics (family `http_requests`, `_total`
/// samples, `# EOF`).
fn openmetrics(t: Target) -> String {
    let mut out = String::from("# TYPE http_requests counter\n");
    out += &format!("http_requests_total{{code=\"200\"}} {}\n", t.ok);
    if let Some(errors) = t.errors {
        out += &format!("http_requests_total{{code=\"500\"}} {errors}\n");
    }
    out += "# TYPE http_request_duration_seconds histogram\n# UNIT http_request_duration_seconds seconds\n";
    for (le, n) in ["0.05", "0.1", "0.25", "+Inf"].iter().zip(t.buckets) {
        out += &format!("http_request_duration_seconds_bucket{{le=\"{le}\"}} {n}\n");
    }
    out += &format!(
        "http_request_duration_seconds_count {}\nhttp_request_duration_seconds_sum 1.5\n# EOF\n",
        t.buckets[3]
    );
    out
}

fn signals() -> BTreeMap<String, String> {
    [
        ("requests", "http_requests_total"),
        ("errors", r#"http_requests_total{code=~"5.."}"#),
        ("latency_ms", "http_request_duration_seconds"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn source(baseline: &FakeServer, canary: &FakeServer, timeout: Duration) -> Arc<dyn Source> {
    build(&SourceConfig::PrometheusScrape(ScrapeConfig {
        baseline: baseline.url("/metrics"),
        canary: canary.url("/metrics"),
        signals: signals(),
        timeout,
        tls: Default::default(),
    }))
    .expect("valid config")
}

struct Pair {
    baseline: FakeServer,
    canary: FakeServer,
    source: Arc<dyn Source>,
}

async fn pair(baseline: Target, canary: Target) -> Pair {
    let baseline = FakeServer::start(Reply::text(text(baseline))).await;
    let canary = FakeServer::start(Reply::text(text(canary))).await;
    let source = source(&baseline, &canary, Duration::from_secs(2));
    Pair {
        baseline,
        canary,
        source,
    }
}

fn w(i: u64) -> Window {
    window(i, "v1", "v2")
}

/// (requests, errors, latency buckets' own counts) of one arm.
fn summary(arm: &ArmData) -> (u64, u64, Vec<u64>) {
    let latency = arm.latency.get("latency_ms").map_or_else(Vec::new, |h| {
        // Own counts per bucket from the histogram's queries.
        let Layout::Bucketed { upper_bounds_us } = h.layout() else {
            panic!("a scraped latency keeps the le layout: {h:?}")
        };
        assert_eq!(upper_bounds_us, &[50_000, 100_000, 250_000, u64::MAX]);
        let mut own = Vec::new();
        let mut above_prev = h.total();
        for &ub in &upper_bounds_us[..3] {
            let above = h.count_surely_above_us(ub);
            own.push(above_prev - above);
            above_prev = above;
        }
        own.push(above_prev);
        own
    });
    (arm.counter("requests"), arm.counter("errors"), latency)
}

#[tokio::test]
async fn the_first_scrape_is_a_reference_then_each_window_reports_its_deltas() {
    let p = pair(
        Target {
            ok: 1000,
            errors: Some(10),
            buckets: [500, 900, 990, 1010],
            start_time: 1000.0,
        },
        Target {
            ok: 50,
            errors: None,
            buckets: [10, 20, 40, 50],
            start_time: 2000.0,
        },
    )
    .await;
    let first = p.source.collect(&w(0)).await.expect("first scrape");
    assert_eq!(first.baseline, ArmData::default());
    assert_eq!(first.canary, ArmData::default());

    p.baseline.set_body(text(Target {
        ok: 1990,
        errors: Some(20),
        buckets: [1000, 1800, 1980, 2010],
        start_time: 1000.0,
    }));
    p.canary.set_body(text(Target {
        ok: 150,
        errors: Some(5),
        buckets: [20, 60, 120, 155],
        start_time: 2000.0,
    }));
    let second = p.source.collect(&w(1)).await.expect("second scrape");
    assert_eq!(
        summary(&second.baseline),
        (1000, 10, vec![500, 400, 90, 10])
    );
    // The canary's 5xx series is new: it counts from zero.
    assert_eq!(summary(&second.canary), (105, 5, vec![10, 30, 40, 25]));
    // The p95 is reported with its bucket's bounds, in ms.
    let p95 = second.canary.latency["latency_ms"].quantile_bounds_us(0.95);
    assert_eq!(p95, Some((250_001, u64::MAX)));

    // Nothing happened: zero, not missing.
    let third = p.source.collect(&w(2)).await.expect("third scrape");
    assert_eq!(summary(&third.baseline), (0, 0, vec![0, 0, 0, 0]));
    assert_eq!(third.baseline.counters.get("requests"), Some(&0));
}

#[tokio::test]
async fn a_selector_that_matches_no_series_yet_is_zero_not_missing() {
    let p = pair(IDLE, IDLE).await;
    p.source.collect(&w(0)).await.unwrap();
    p.baseline.set_body(text(Target { ok: 7, ..IDLE }));
    let c = p.source.collect(&w(1)).await.unwrap();
    assert_eq!(c.baseline.counters.get("errors"), Some(&0));
    assert_eq!(c.baseline.counter("requests"), 7);
}

/// A canary that names the status label differently: its errors selector
/// (`code=~"5.."`) can never match, and reading it as zero would make its
/// errors vanish. The window fails, naming the label, instead; the arm
/// whose series carry `code` (without any 5xx yet) still reads zero.
#[tokio::test]
async fn a_selector_needing_a_label_no_series_has_is_missing_not_zero() {
    let p = pair(IDLE, IDLE).await;
    p.canary.set_body(
        "# TYPE http_requests_total counter\nhttp_requests_total{status=\"500\"} 4\n\
         http_requests_total{status=\"200\"} 9\n\
         # TYPE http_request_duration_seconds histogram\n\
         http_request_duration_seconds_bucket{le=\"+Inf\"} 0\n\
         http_request_duration_seconds_count 0\nhttp_request_duration_seconds_sum 0\n",
    );
    let err = p.source.collect(&w(0)).await.unwrap_err();
    match &err {
        SourceError::Empty {
            source_name,
            signal,
            detail,
        } => {
            assert_eq!(signal, "errors");
            assert!(source_name.contains("canary"), "{err}");
            assert!(detail.contains("label `code`"), "{err}");
            assert!(detail.contains("not as zero"), "{err}");
        }
        other => panic!("expected Empty, got {other:?}"),
    }
    // Series that carry `code`, none of them a 5xx: a true zero.
    p.canary.set_body(text(IDLE));
    p.source.collect(&w(1)).await.unwrap();
    p.canary.set_body(text(Target { ok: 3, ..IDLE }));
    let c = p.source.collect(&w(2)).await.unwrap();
    assert_eq!(c.canary.counters.get("errors"), Some(&0));
    // A family without any series yet says nothing of its labels.
    let p = pair(IDLE, IDLE).await;
    p.canary.set_body(
        "# TYPE http_requests_total counter\n\
         # TYPE http_request_duration_seconds histogram\n\
         http_request_duration_seconds_bucket{le=\"+Inf\"} 0\n\
         http_request_duration_seconds_count 0\nhttp_request_duration_seconds_sum 0\n",
    );
    p.source.collect(&w(0)).await.unwrap();
}

#[tokio::test]
async fn a_counter_that_goes_down_was_reset_and_counts_its_new_value() {
    let before = Target {
        ok: 5000,
        errors: Some(50),
        buckets: [4000, 4900, 5040, 5050],
        start_time: 1000.0,
    };
    let p = pair(before, before).await;
    p.source.collect(&w(0)).await.unwrap();
    // The baseline's process restarted and has served 30 requests since; its
    // start time is not exposed (as many exporters do), the counters say it.
    let mut reset = Target {
        ok: 28,
        errors: Some(2),
        buckets: [20, 25, 29, 30],
        start_time: 1000.0,
    };
    p.baseline.set_body(text(reset));
    p.canary.set_body(text(Target { ok: 5100, ..before }));
    let c = p.source.collect(&w(1)).await.unwrap();
    assert_eq!(summary(&c.baseline), (30, 2, vec![20, 5, 4, 1]));
    assert_eq!(summary(&c.canary), (100, 0, vec![0, 0, 0, 0]));
    // After the reset, deltas are taken from the new values.
    reset.ok += 10;
    p.baseline.set_body(text(reset));
    let c = p.source.collect(&w(2)).await.unwrap();
    assert_eq!(c.baseline.counter("requests"), 10);
}

#[tokio::test]
async fn a_new_start_time_means_a_restart_even_when_counters_grew() {
    let before = Target {
        ok: 100,
        errors: Some(1),
        buckets: [50, 90, 100, 101],
        start_time: 1000.0,
    };
    let p = pair(before, before).await;
    p.source.collect(&w(0)).await.unwrap();
    // Restarted and served more than before: every counter is higher, only
    // the start time tells.
    p.baseline.set_body(text(Target {
        ok: 400,
        errors: Some(3),
        buckets: [300, 380, 400, 403],
        start_time: 1020.0,
    }));
    let c = p.source.collect(&w(1)).await.unwrap();
    assert_eq!(summary(&c.baseline), (403, 3, vec![300, 80, 20, 3]));
}

#[tokio::test]
async fn a_target_that_goes_away_fails_the_window_and_the_next_one_is_a_reference() {
    let p = pair(IDLE, IDLE).await;
    p.source.collect(&w(0)).await.unwrap();
    let canary_addr = p.canary.stop().await;
    let err = p.source.collect(&w(1)).await.unwrap_err();
    match &err {
        SourceError::Unreachable { source_name, .. } => {
            assert!(source_name.contains("canary"), "{err}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // It comes back (restarted: counters from zero) on the same address.
    let canary =
        FakeServer::start_on(canary_addr, Reply::text(text(Target { ok: 3, ..IDLE }))).await;
    p.baseline.set_body(text(Target { ok: 40, ..IDLE }));
    let c = p.source.collect(&w(2)).await.unwrap();
    // Window 1 failed, so no delta may reach back across it: both arms only
    // take a new reference (the baseline's own reference was window 1's).
    assert_eq!(c.canary, ArmData::default());
    assert_eq!(c.baseline.counter("requests"), 40);
    canary.set_body(text(Target { ok: 13, ..IDLE }));
    let c = p.source.collect(&w(3)).await.unwrap();
    assert_eq!(c.canary.counter("requests"), 10);
}

#[tokio::test]
async fn a_delta_never_spans_a_gap_or_a_new_version() {
    let p = pair(IDLE, IDLE).await;
    p.source.collect(&w(0)).await.unwrap();
    p.baseline.set_body(text(Target { ok: 10, ..IDLE }));
    p.canary.set_body(text(Target { ok: 10, ..IDLE }));
    // Window 1 was never collected: window 2 cannot be measured from window 0.
    let c = p.source.collect(&w(2)).await.unwrap();
    assert_eq!(c, Default::default());
    p.baseline.set_body(text(Target { ok: 20, ..IDLE }));
    p.canary.set_body(text(Target { ok: 20, ..IDLE }));
    // A new canary version is another process.
    let c = p.source.collect(&window(3, "v1", "v3")).await.unwrap();
    assert_eq!(c.baseline.counter("requests"), 10);
    assert_eq!(c.canary, ArmData::default());
}

#[tokio::test]
async fn windows_a_few_milliseconds_apart_still_chain() {
    let p = pair(IDLE, IDLE).await;
    p.source.collect(&w(0)).await.unwrap();
    p.baseline.set_body(text(Target { ok: 10, ..IDLE }));
    // The daemon's next window starts 5 ms after the previous one ended.
    let next = w(1);
    let late = source_support::window_at(
        next.start + Duration::from_millis(5),
        Duration::from_secs(30),
        "v1",
        "v2",
    );
    let c = p.source.collect(&late).await.unwrap();
    assert_eq!(c.baseline.counter("requests"), 10);
}

#[tokio::test]
async fn a_missing_family_is_empty_and_names_the_signal() {
    let p = pair(IDLE, IDLE).await;
    p.canary
        .set_body("# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} 5\n");
    // Already on the first scrape: a misconfigured signal shows at once.
    let err = p.source.collect(&w(0)).await.unwrap_err();
    match &err {
        SourceError::Empty {
            source_name,
            signal,
            detail,
        } => {
            assert_eq!(signal, "latency_ms");
            assert!(source_name.contains("canary"), "{err}");
            assert!(detail.contains("http_request_duration_seconds"), "{err}");
        }
        other => panic!("expected Empty, got {other:?}"),
    }
}

#[tokio::test]
async fn an_exposition_that_does_not_parse_fails_the_whole_scrape() {
    let p = pair(IDLE, IDLE).await;
    p.source.collect(&w(0)).await.unwrap();
    let mut broken = text(Target { ok: 10, ..IDLE });
    broken.push_str("http_requests_total{code=\"200\" 3\n");
    p.baseline.set_body(broken);
    p.canary.set_body(text(Target { ok: 10, ..IDLE }));
    let err = p.source.collect(&w(1)).await.unwrap_err();
    match &err {
        SourceError::Parse {
            source_name,
            detail,
        } => {
            assert!(source_name.contains("baseline"), "{err}");
            assert!(detail.contains("line 13, column 32"), "{err}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
    // A histogram signal that names a counter cannot be measured.
    let p = pair(IDLE, IDLE).await;
    let wrong = build(&SourceConfig::PrometheusScrape(ScrapeConfig {
        baseline: p.baseline.url("/metrics"),
        canary: p.canary.url("/metrics"),
        signals: [("latency_ms".to_owned(), "http_requests_total".to_owned())].into(),
        timeout: Duration::from_secs(2),
        tls: Default::default(),
    }))
    .unwrap();
    let err = wrong.collect(&w(0)).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::NotANumber { signal, .. } if signal == "latency_ms"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_slow_target_times_out_after_one_retry() {
    let p = pair(IDLE, IDLE).await;
    let timeout = Duration::from_millis(300);
    let source = source(&p.baseline, &p.canary, timeout);
    source.collect(&w(0)).await.unwrap();
    let mut slow = Reply::text(text(IDLE));
    slow.delay = Duration::from_secs(5);
    p.canary.set(slow);
    let started = tokio::time::Instant::now();
    let err = source.collect(&w(1)).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err,
        SourceError::Timeout {
            source_name: format!("prometheusScrape canary {}", p.canary.url("/metrics")),
            after: timeout,
        }
    );
    // Two attempts and a pause of at most 250 ms.
    assert!(
        took >= 2 * timeout && took < 2 * timeout + Duration::from_millis(800),
        "{took:?}"
    );
    assert_eq!(
        p.canary.requests().len(),
        3,
        "one first scrape, two attempts"
    );
}

#[tokio::test]
async fn http_errors_are_reported_with_their_status() {
    let p = pair(IDLE, IDLE).await;
    p.baseline.set(Reply {
        status: 503,
        ..Reply::text("overloaded")
    });
    let err = p.source.collect(&w(0)).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Http { status: 503, detail, .. } if detail == "overloaded"),
        "{err:?}"
    );
    // 5xx is retried once; 404 is not.
    assert_eq!(p.baseline.requests().len(), 2);
    p.baseline.set(Reply {
        status: 404,
        ..Reply::text("not found")
    });
    let err = p.source.collect(&w(1)).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(p.baseline.requests().len(), 3);
}

#[tokio::test]
async fn openmetrics_is_read_as_openmetrics_when_the_content_type_says_so() {
    const OM: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let om = |t: Target| Reply {
        content_type: OM.to_owned(),
        ..Reply::text(openmetrics(t))
    };
    let p = pair(IDLE, IDLE).await;
    p.baseline.set(om(Target {
        ok: 100,
        errors: Some(1),
        buckets: [50, 90, 100, 101],
        ..IDLE
    }));
    p.source.collect(&w(0)).await.unwrap();
    p.baseline.set(om(Target {
        ok: 150,
        errors: Some(4),
        buckets: [60, 120, 150, 154],
        ..IDLE
    }));
    let c = p.source.collect(&w(1)).await.unwrap();
    assert_eq!(summary(&c.baseline), (53, 3, vec![10, 20, 20, 3]));
    let asked = &p.baseline.requests()[0];
    assert_eq!(
        (asked.method.as_str(), asked.path.as_str()),
        ("GET", "/metrics")
    );
    assert!(
        asked
            .accept
            .starts_with("application/openmetrics-text;version=1.0.0"),
        "{}",
        asked.accept
    );
    // OpenMetrics must end in `# EOF`: a truncated answer is refused, where
    // the same bytes as text 0.0.4 would have passed.
    let mut truncated = om(IDLE);
    truncated.body = truncated.body.replace("# EOF\n", "");
    p.baseline.set(truncated);
    let err = p.source.collect(&w(2)).await.unwrap_err();
    match &err {
        SourceError::Parse { detail, .. } => assert!(detail.contains("EOF"), "{err}"),
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn bad_configs_are_refused_when_built() {
    let config = |baseline: &str, signal: &str| {
        SourceConfig::PrometheusScrape(ScrapeConfig {
            baseline: baseline.to_owned(),
            canary: "http://127.0.0.1:1/metrics".to_owned(),
            signals: [("requests".to_owned(), signal.to_owned())].into(),
            timeout: Duration::from_secs(1),
            tls: Default::default(),
        })
    };
    let mut zero = config("http://127.0.0.1:1/metrics", "x");
    if let SourceConfig::PrometheusScrape(c) = &mut zero {
        c.timeout = Duration::ZERO;
    }
    assert!(
        matches!(build(&zero), Err(SourceError::Config { detail, .. }) if detail.contains("timeout"))
    );
    for (baseline, signal, expect) in [
        (
            "http://127.0.0.1:1/metrics",
            "http_requests_total{code=~\"5..\"",
            "signals.requests",
        ),
        (
            "http://127.0.0.1:1/metrics",
            "rate(x[5m])",
            "signals.requests",
        ),
        ("127.0.0.1:9101/metrics", "x", "baseline"),
        ("ftp://h/metrics", "x", "not an http URL"),
    ] {
        match build(&config(baseline, signal)) {
            Err(SourceError::Config { detail, .. }) => {
                assert!(detail.contains(expect), "{detail}")
            }
            Err(other) => panic!("expected Config, got {other:?}"),
            Ok(_) => panic!("{baseline} {signal}: accepted"),
        }
    }
}

/// The canary's OpenMetrics with two buckets swapped: line 6 breaks the
/// rule that buckets come in increasing `le` order.
const BUCKETS_OUT_OF_ORDER: &str = "\
# TYPE http_requests counter
http_requests_total{code=\"200\"} 10
# TYPE http_request_duration_seconds histogram
# UNIT http_request_duration_seconds seconds
http_request_duration_seconds_bucket{le=\"0.1\"} 4
http_request_duration_seconds_bucket{le=\"0.05\"} 2
http_request_duration_seconds_bucket{le=\"0.25\"} 5
http_request_duration_seconds_bucket{le=\"+Inf\"} 6
http_request_duration_seconds_count 6
http_request_duration_seconds_sum 1.5
# EOF
";

const BROKEN_RULE: &str = "line 6, column 41: histogram `http_request_duration_seconds`: \
bucket le=\"0.05\" after le=\"0.1\" (buckets must be in increasing le order)";

fn openmetrics_reply(body: &str) -> Reply {
    Reply {
        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8".to_owned(),
        ..Reply::text(body)
    }
}

#[tokio::test]
async fn an_exposition_breaking_a_type_rule_fails_the_scrape_naming_rule_and_place() {
    let p = pair(IDLE, IDLE).await;
    p.canary.set(openmetrics_reply(BUCKETS_OUT_OF_ORDER));
    let err = p.source.collect(&w(0)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "prometheusScrape canary {}: cannot parse the answer: OpenMetrics exposition: {BROKEN_RULE}",
            p.canary.url("/metrics")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_status_shows_the_broken_rule_and_its_line() {
    let baseline = FakeServer::start(Reply::text(text(IDLE))).await;
    let canary = FakeServer::start(openmetrics_reply(BUCKETS_OUT_OF_ORDER)).await;
    let config = format!(
        "  scraped:\n    router: {{ file: {{ path: {{dir}}/scraped.json }} }}\n    source:\n      prometheusScrape:\n        baseline: {}\n        canary: {}\n        timeout: 2s\n        signals:\n          requests: 'http_requests_total'\n          errors: 'http_requests_total{{code=~\"5..\"}}'\n          latency_ms: 'http_request_duration_seconds'\n",
        baseline.url("/metrics"),
        canary.url("/metrics"),
    );
    let d = tokio::task::block_in_place(|| daemon_support::Daemon::start(&config));
    let api = d.client();
    let started = api.start("scraped", "slow").await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let id = started.body["id"].as_str().unwrap().to_owned();

    daemon_support::eventually("the source failing", Duration::from_secs(20), || async {
        api.rollout(&id).await["source"]["status"] == "failing"
    })
    .await;
    let rollout = api.rollout(&id).await;
    let error = rollout["source"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "prometheusScrape canary {}",
            canary.url("/metrics")
        )) && error.contains(BROKEN_RULE),
        "{rollout}"
    );
    let status = tokio::task::block_in_place(|| d.cli(&["rollout", "status", &id]));
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{shown}");
    // The status wraps its lines to the terminal: read the sources'
    // paragraph whole.
    let sources: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("sources:"))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let sources = sources.join(" ");
    assert!(
        sources.contains("failing") && sources.contains(BROKEN_RULE),
        "{shown}"
    );
}

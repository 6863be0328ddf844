//! Every outbound integration canaryd owns, over TLS, against real servers
//! on 127.0.0.1 with a CA and certificates made in the test
//! (`tls_support`): Prometheus itself serving HTTPS (`--web.config.file`),
//! with and without a required client certificate, for the query source;
//! a Python `ssl` server as a scrape target, a webhook router's receiver
//! and a URL hook's. Each is also shown to refuse the wrong CA with the
//! TLS reason in its error. (MLflow behind an nginx TLS front, and the
//! errors reaching a rollout's status, run the real daemon:
//! `tls_daemon.rs`.) The plain-HTTP versions of the same integrations are
//! the older tests (`source_prometheus`, `source_scrape`, `router_failures`).

// Real processes are waited for on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod tls_support;

use std::collections::BTreeMap;
use std::time::Duration;

use canaryd::policy::Weight;
use canaryd::routers::hooks::{HookContext, HookEvent, run_hook};
use canaryd::routers::webhook::WebhookRouter;
use canaryd::routers::{HookConfig, Router, RouterError, Target, WebhookConfig};
use canaryd::sources::{QueryConfig, ScrapeConfig, SourceConfig, SourceError, Window, build};
use canaryd::time::Timestamp;
use canaryd::tls::ClientTls;
use tls_support::{HttpsServer, TlsFiles, TlsPrometheus, client_tls};

/// 2026-01-01T00:00:00Z: the backfill's first sample.
const T0: u64 = 1_767_225_600;
const STEP_SECS: u64 = 15;
const STEPS: u64 = 40; // 10 minutes

/// Per 15 s step, as `(version, code, requests)`.
const REQUESTS: [(&str, &str, u64); 4] = [
    ("v1", "200", 300),
    ("v1", "500", 0),
    ("v2", "200", 57),
    ("v2", "500", 3),
];

fn backfill() -> String {
    let mut om = String::from("# TYPE http_requests counter\n");
    for (version, code, per_step) in REQUESTS {
        for k in 0..=STEPS {
            om += &format!(
                "http_requests_total{{version=\"{version}\",code=\"{code}\"}} {} {}\n",
                k * per_step,
                T0 + k * STEP_SECS
            );
        }
    }
    om + "# EOF\n"
}

fn query_config(url: &str, tls: ClientTls) -> SourceConfig {
    SourceConfig::PrometheusQuery(QueryConfig {
        url: url.to_owned(),
        signals: [
            (
                "requests",
                r#"sum(increase(http_requests_total{version="{{version}}"}[{{window}}]))"#,
            ),
            (
                "errors",
                r#"sum(increase(http_requests_total{version="{{version}}",code=~"5.."}[{{window}}]))"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        timeout: Duration::from_secs(5),
        tls,
    })
}

/// The last 5 minutes of the backfill.
fn backfill_window() -> Window {
    let end = Timestamp::from_millis((T0 + STEP_SECS * STEPS) * 1000);
    let length = Duration::from_secs(300);
    Window {
        start: end - length,
        end,
        baseline_version: "v1".into(),
        canary_version: "v2".into(),
    }
}

/// (requests, errors) of both arms, or the source's error.
async fn query(url: &str, tls: ClientTls) -> Result<[(u64, u64); 2], SourceError> {
    let source = build(&query_config(url, tls)).expect("a valid config");
    let c = source.collect(&backfill_window()).await?;
    let counts = |a: &canaryd::stats::ArmData| (a.counters["requests"], a.counters["errors"]);
    Ok([counts(&c.baseline), counts(&c.canary)])
}

fn files() -> (tempfile::TempDir, TlsFiles) {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles::write(dir.path());
    (dir, files)
}

/// 5 minutes = 20 steps: v1 6000 requests, no errors; v2 1200, 60 errors.
const EXPECTED: [(u64, u64); 2] = [(6000, 0), (1200, 60)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_source_reads_prometheus_over_tls() {
    let (_dir, f) = files();
    let prometheus = TlsPrometheus::start(&f, false, &backfill()).await;
    let url = prometheus.url();

    assert_eq!(
        query(&url, client_tls(&f, &f.ca, false)).await.unwrap(),
        EXPECTED
    );

    let wrong = query(&url, client_tls(&f, &f.wrong_ca, false))
        .await
        .unwrap_err();
    println!("wrong CA: {wrong}");
    assert!(
        matches!(wrong, SourceError::Unreachable { .. }),
        "{wrong:?}"
    );
    assert!(
        wrong
            .to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{wrong}"
    );
    // The system roots do not know the test CA.
    let system = query(&url, ClientTls::default()).await.unwrap_err();
    assert!(
        system.to_string().contains("invalid peer certificate"),
        "{system}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_source_presents_a_client_certificate_to_prometheus() {
    let (_dir, f) = files();
    let prometheus = TlsPrometheus::start(&f, true, &backfill()).await;
    let url = prometheus.url();

    assert_eq!(
        query(&url, client_tls(&f, &f.ca, true)).await.unwrap(),
        EXPECTED
    );

    let without = query(&url, client_tls(&f, &f.ca, false)).await.unwrap_err();
    println!("no client certificate: {without}");
    assert!(
        matches!(without, SourceError::Unreachable { .. }),
        "{without:?}"
    );
    let stranger = ClientTls::new(
        Some(f.ca.clone()),
        Some(canaryd::tls::ClientIdentity {
            cert: f.stranger_cert.clone(),
            key: f.stranger_key.clone(),
        }),
    )
    .unwrap();
    let refused = query(&url, stranger).await.unwrap_err();
    println!("a client certificate from another CA: {refused}");
    assert!(
        matches!(refused, SourceError::Unreachable { .. }),
        "{refused:?}"
    );
}

/// A scrape target's exposition with `requests` so far (5 errors in each
/// 100).
fn exposition(requests: u64) -> String {
    format!(
        "# TYPE http_requests_total counter\nhttp_requests_total{{code=\"200\"}} {}\nhttp_requests_total{{code=\"500\"}} {}\n",
        requests - requests / 20,
        requests / 20
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_source_reads_https_targets_with_mutual_tls() {
    let (_dir, f) = files();
    let baseline = HttpsServer::start(&f, true).await;
    let canary = HttpsServer::start(&f, true).await;
    let signals: BTreeMap<String, String> = [
        ("requests", "http_requests_total"),
        ("errors", r#"http_requests_total{code=~"5.."}"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = |tls: ClientTls| {
        SourceConfig::PrometheusScrape(ScrapeConfig {
            baseline: baseline.url("/metrics"),
            canary: canary.url("/metrics"),
            signals: signals.clone(),
            timeout: Duration::from_secs(5),
            tls,
        })
    };
    let window = |i: u64| {
        let start = Timestamp::from_millis(T0 * 1000 + i * 30_000);
        Window {
            start,
            end: start + Duration::from_secs(30),
            baseline_version: "v1".into(),
            canary_version: "v2".into(),
        }
    };

    let source = build(&config(client_tls(&f, &f.ca, true))).unwrap();
    baseline.set_metrics(&exposition(1000));
    canary.set_metrics(&exposition(200));
    source.collect(&window(0)).await.unwrap();
    baseline.set_metrics(&exposition(3000));
    canary.set_metrics(&exposition(600));
    let c = source.collect(&window(1)).await.unwrap();
    assert_eq!(
        (
            c.baseline.counters["requests"],
            c.baseline.counters["errors"]
        ),
        (2000, 100)
    );
    assert_eq!(
        (c.canary.counters["requests"], c.canary.counters["errors"]),
        (400, 20)
    );

    for (what, tls) in [
        ("wrong CA", client_tls(&f, &f.wrong_ca, true)),
        ("no client certificate", client_tls(&f, &f.ca, false)),
    ] {
        let source = build(&config(tls)).unwrap();
        let e = source.collect(&window(0)).await.unwrap_err();
        println!("scrape, {what}: {e}");
        assert!(
            matches!(e, SourceError::Unreachable { .. }),
            "{what}: {e:?}"
        );
        if what == "wrong CA" {
            assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        }
    }
}

fn target() -> Target {
    Target {
        epoch: None,
        service: "checkout".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_router_and_a_url_hook_post_over_tls() {
    let (_dir, f) = files();
    let receiver = HttpsServer::start(&f, true).await;

    let router = WebhookRouter::new(WebhookConfig {
        url: receiver.url("/split"),
        tls: client_tls(&f, &f.ca, true),
    });
    router
        .set_weight(&target(), Weight::new(25).unwrap())
        .await
        .unwrap();
    let ctx = HookContext {
        event: HookEvent::OnPromoted,
        service: "checkout".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
        rollout_id: "r-7".into(),
        outcome: Some("promoted".into()),
        reason: None,
    };
    let hook = HookConfig::Webhook(WebhookConfig {
        url: receiver.url("/hook"),
        tls: client_tls(&f, &f.ca, true),
    });
    run_hook(&hook, &ctx).await.unwrap();
    let posts = receiver.posts();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0].0, "/split");
    assert_eq!(
        posts[0].1,
        serde_json::json!({ "service": "checkout", "baseline": "v1", "canary": "v2", "canary_weight": 25 })
    );
    assert_eq!(posts[1].0, "/hook");
    assert_eq!(posts[1].1["event"], "onPromoted");
    assert_eq!(posts[1].1["rollout_id"], "r-7");

    let wrong = WebhookRouter::new(WebhookConfig {
        url: receiver.url("/split"),
        tls: client_tls(&f, &f.wrong_ca, true),
    });
    let e = wrong.set_weight(&target(), Weight::ZERO).await.unwrap_err();
    println!("webhook router, wrong CA: {e}");
    assert!(matches!(e, RouterError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{e}"
    );

    let no_cert = HookConfig::Webhook(WebhookConfig {
        url: receiver.url("/hook"),
        tls: client_tls(&f, &f.ca, false),
    });
    let e = run_hook(&no_cert, &ctx).await.unwrap_err();
    println!("URL hook, no client certificate: {e}");
    assert!(matches!(e, RouterError::Unreachable { .. }), "{e:?}");
    assert_eq!(receiver.posts().len(), 2, "nothing refused arrived");
}

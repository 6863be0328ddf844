//! The daemon the `metrics_*` tests look at: every family of `/metrics`
//! has something to say. The real `canaryd serve` binary with
//!
//! - `web`: a live rollout (long bake) fed pushed observations with
//!   latencies, so its triggers have log e-values and its arms ratios and
//!   latency percentiles;
//! - `api`: a rollout whose canary fails half its requests, rolled back
//!   (a rollback decision, an incident whose webhook is unreachable);
//! - `scraped`: a live rollout whose `prometheusScrape` source reads two
//!   arms served by this process (counters, a latency histogram, and a
//!   `kind: mean` metric over it);
//! - `broken`: a live rollout whose source is a closed port (source errors);
//! - receivers `ok-chat` (answers 200, in this process) and `down-chat`
//!   (a closed port: failures, pending deliveries);
//! - an MLflow watch on a closed port (registry errors).
//!
//! Every wait is bounded.

#![allow(dead_code)]
// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

use crate::daemon_support::{Api, Daemon};

/// Long bake at 10%: the rollout stays live while a test looks at it.
pub const WATCHED_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: watched
spec:
  analysis:
    interval: 1s
    alpha: 0.05
    minSamples: 20
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 1h
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 20% }
    - name: error-vs-baseline
      metric: error_rate
      vsBaseline: { relativeIncrease: 50% }
    - name: p95-latency
      metric: latency
      quantile: 0.95
      threshold: { above: 500ms }
"#;

/// As `watched`, with a `kind: mean` metric over the scraped latency.
pub const SCRAPED_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: scraped
spec:
  analysis:
    interval: 1s
    alpha: 0.05
    minSamples: 20
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 1h
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
    latency_mean: { kind: mean, signal: latency_ms }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 20% }
    - name: mean-latency
      metric: latency_mean
      threshold: { above: 400 }
"#;

/// The two arms' `/metrics` (each scrape adds 100 requests, 1 failed, and
/// their latencies) and a receiver that takes every delivery.
pub struct Upstreams {
    pub addr: SocketAddr,
    pub deliveries: Arc<AtomicU64>,
    scrapes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Served {
    scrapes: Arc<AtomicU64>,
    deliveries: Arc<AtomicU64>,
}

async fn arm(State(s): State<Served>) -> ([(&'static str, &'static str); 1], String) {
    let n = s.scrapes.fetch_add(1, Ordering::SeqCst) + 1;
    let (ok, errors) = (99 * n, n);
    // 60 under 50 ms, 30 under 100 ms, 10 under 250 ms per 100 requests.
    let (b1, b2, b3) = (60 * n, 90 * n, 100 * n);
    let sum = n as f64 * (60.0 * 0.03 + 30.0 * 0.07 + 10.0 * 0.2);
    let body = format!(
        "# TYPE http_requests_total counter\nhttp_requests_total{{code=\"200\"}} {ok}\nhttp_requests_total{{code=\"500\"}} {errors}\n# TYPE http_request_duration_seconds histogram\nhttp_request_duration_seconds_bucket{{le=\"0.05\"}} {b1}\nhttp_request_duration_seconds_bucket{{le=\"0.1\"}} {b2}\nhttp_request_duration_seconds_bucket{{le=\"0.25\"}} {b3}\nhttp_request_duration_seconds_bucket{{le=\"+Inf\"}} {b3}\nhttp_request_duration_seconds_sum {sum}\nhttp_request_duration_seconds_count {b3}\n"
    );
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

async fn hook(State(s): State<Served>) -> &'static str {
    s.deliveries.fetch_add(1, Ordering::SeqCst);
    "ok"
}

impl Upstreams {
    pub async fn start() -> Upstreams {
        let served = Served {
            scrapes: Arc::new(AtomicU64::new(0)),
            deliveries: Arc::new(AtomicU64::new(0)),
        };
        let app = Router::new()
            .route("/baseline", get(arm))
            .route("/canary", get(arm))
            .route("/hook", post(hook))
            .with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstreams {
            addr,
            deliveries: served.deliveries,
            scrapes: served.scrapes,
            task,
        }
    }
}

/// A loopback port nobody listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub struct Scenario {
    pub daemon: Daemon,
    pub api: Api,
    pub upstreams: Upstreams,
    /// Service to rollout id.
    pub rollouts: BTreeMap<&'static str, String>,
    feeder: tokio::task::JoinHandle<()>,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

/// The config lines after the harness's own services (`web`, `api`,
/// `pushonly`).
fn extra_config(up: SocketAddr, closed: u16) -> String {
    format!(
        r#"  scraped:
    router: {{ file: {{ path: {{dir}}/scraped.json }} }}
    source:
      prometheusScrape:
        baseline: http://{up}/baseline
        canary: http://{up}/canary
        timeout: 2s
        signals:
          requests: 'http_requests_total'
          errors: 'http_requests_total{{code=~"5.."}}'
          latency_ms: 'http_request_duration_seconds'
  broken:
    router: {{ file: {{ path: {{dir}}/broken.json }} }}
    source:
      prometheusScrape:
        baseline: http://127.0.0.1:{closed}/baseline
        canary: http://127.0.0.1:{closed}/canary
        timeout: 1s
        signals:
          requests: 'http_requests_total'
          errors: 'http_requests_total{{code=~"5.."}}'
notifications:
  retryFor: 1h
  retryInitial: 1s
  retryMaxInterval: 2s
  receivers:
    ok-chat:
      slack: {{ url: "http://{up}/hook" }}
    down-chat:
      slack: {{ url: "http://127.0.0.1:{closed}/hook" }}
  routes:
    - receivers: [ok-chat, down-chat]
registries:
  - mlflow: {{ url: "http://127.0.0.1:{closed}", model: m, alias: champion,
              service: pushonly, policy: watched, pollInterval: 1s }}
"#
    )
}

impl Scenario {
    /// Start everything and wait (bounded) until every family has data.
    pub async fn start() -> Scenario {
        Scenario::start_then(|_| ()).await.0
    }

    /// As [`Scenario::start`], calling `before_rollouts` with the daemon's
    /// base URL once it is up and before any rollout starts (to start a
    /// Prometheus that sees every counter from 0).
    pub async fn start_then<T>(before_rollouts: impl FnOnce(&str) -> T) -> (Scenario, T) {
        let upstreams = Upstreams::start().await;
        let closed = closed_port();
        let daemon = Daemon::start_with_policies(
            &extra_config(upstreams.addr, closed),
            &[
                ("watched.yaml", WATCHED_POLICY),
                ("scraped.yaml", SCRAPED_POLICY),
            ],
        );
        let api = daemon.client();
        let before = before_rollouts(&daemon.base);
        let mut rollouts = BTreeMap::new();
        for (service, policy) in [
            ("web", "watched"),
            ("api", "fast"),
            ("scraped", "scraped"),
            ("broken", "watched"),
        ] {
            let a = api.start(service, policy).await;
            assert_eq!(a.status, 201, "{service}: {:?}", a.body);
            rollouts.insert(service, a.body["id"].as_str().unwrap().to_string());
        }
        let feeder = {
            let api = api.clone();
            let web = rollouts["web"].clone();
            let bad = rollouts["api"].clone();
            tokio::spawn(async move {
                loop {
                    let _ = api.try_push(&web, 50, 0.02, 0.02).await;
                    // Refused once it is rolled back; that is fine.
                    let _ = api.try_push(&bad, 50, 0.0, 0.5).await;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let s = Scenario {
            daemon,
            api,
            upstreams,
            rollouts,
            feeder,
        };
        s.wait_for_every_family(Duration::from_secs(60)).await;
        (s, before)
    }

    /// `/metrics` as `promtool` and `curl` get it (text format 0.0.4).
    pub async fn text(&self) -> String {
        self.api.metrics().await
    }

    async fn wait_for_every_family(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text().await;
            let missing = missing(&text);
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {limit:?}, still missing: {missing:?}\n{text}\n{}",
                self.daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The families declared (`# TYPE`) in a text exposition, with how many
/// samples each has.
pub fn families(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or("").to_string();
            out.entry(name).or_insert(0);
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            // A histogram's samples carry suffixes
            // (`canaryd_window_lag_seconds_bucket`, `_sum`, `_count`).
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| out.contains_key(*f)))
                .unwrap_or(name);
            if let Some(n) = out.get_mut(family) {
                *n += 1;
            }
        }
    }
    out
}

fn value_of(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(f64::max)
}

/// What a complete scenario shows and `text` does not yet.
pub fn missing(text: &str) -> Vec<String> {
    let mut out: Vec<String> = families(text)
        .into_iter()
        .filter(|(_, n)| *n == 0)
        .map(|(name, _)| format!("a sample of {name}"))
        .collect();
    let above_zero = [
        "canaryd_decisions_total{service=\"api\",decision=\"rollback\"}",
        "canaryd_source_errors_total{service=\"broken\"",
        "canaryd_source_last_success_timestamp_seconds{service=\"scraped\"}",
        "canaryd_registry_errors_total{",
        "canaryd_notification_failures_total{service=\"web\"}",
        "canaryd_notifications_delivered_total{service=\"web\",receiver=\"ok-chat\"}",
        "canaryd_notifications_pending{kind=\"delivery\"}",
        "canaryd_rollout_arm_events_total{",
        "canaryd_trigger_boundary{",
    ];
    for prefix in above_zero {
        if !value_of(text, prefix).is_some_and(|v| v > 0.0) {
            out.push(format!("{prefix}... above 0"));
        }
    }
    for needed in [
        "canaryd_rollout_arm_latency_seconds{",
        "canaryd_rollout_arm_mean{",
        "canaryd_trigger_log_evalue{",
        "phase=\"rolled-back\"} 1",
    ] {
        if !text.contains(needed) {
            out.push(needed.to_string());
        }
    }
    out
}

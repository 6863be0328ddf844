//! A rollout driven only by Prometheus data, end to end: two tiny upstreams
//! in this process (baseline `v1`, canary `v2`) export
//! `http_requests_total{version,code}` and the histogram
//! `http_request_duration_seconds{version}` while a background task serves
//! them steady, deterministic traffic; a real Prometheus (Debian's, see
//! `source_support/prometheus.rs`) scrapes both every second; the real
//! `canaryd serve` binary reads them through `prometheusQuery` every 4 s
//! (four scrape intervals, PRODUCT.md section 5) and moves a `file` router.
//!
//! - a canary failing 10% of its requests is rolled back on the error-rate
//!   trigger, with the rate in the incident's evidence;
//! - a healthy canary goes through the weight steps to promotion;
//! - Prometheus killed mid-rollout: the status says the source is failing
//!   and why (unreachable), and the policy's `noData` trigger pauses the
//!   rollout; nothing is rolled back or promoted; Prometheus back, the
//!   source recovers and an operator's resume continues the rollout;
//! - a query Prometheus refuses (`bad_data`) and a query with no series
//!   (`Empty`): neither reads as healthy, the rollout never gets past its
//!   first weight, and `noData` pauses it.
//!
//! Skips, loudly, only when the Prometheus package cannot be installed.

// End-to-end tests of real processes wait on the wall clock (bounded waits).
#![allow(clippy::disallowed_methods)]

mod daemon_support;
mod source_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use daemon_support::{Api, Daemon, eventually, read_json};
use serde_json::Value;
use source_support::prometheus::{self, Prometheus};

/// Traffic ticks: 10 ticks a second, 10 requests per arm per tick, so
/// 100 requests per second on each arm whatever the router's weight (the
/// router here is a file; `sampleRatioCheck` is off).
const TICK: Duration = Duration::from_millis(100);
const REQUESTS_PER_TICK: u64 = 10;

/// Histogram bucket bounds (seconds) and where each of ten consecutive
/// requests lands: 6 under 50 ms, 3 under 100 ms, 1 under 250 ms.
const BOUNDS: [&str; 5] = ["0.05", "0.1", "0.25", "0.5", "+Inf"];
const BUCKET_OF: [usize; 10] = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2];
const SECONDS_OF_BUCKET: [f64; 5] = [0.03, 0.07, 0.2, 0.4, 1.0];

/// Interval 4 s (four scrape intervals); 10% → 50% → 100% with 4 s bakes;
/// rollback on evidence of an error rate above 2% or a canary p95 surely
/// above 500 ms for 8 s; pause after 12 s without canary requests.
const FAST_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: prom-fast
spec:
  analysis:
    interval: 4s
    alpha: 0.05
    minSamples: 50
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 4s
    - setWeight: 50
    - bake: 4s
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
    latency: { kind: latency, signal: latency_ms }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 2% }
    - name: p95-latency
      metric: latency
      quantile: 0.95
      threshold: { above: 500ms, for: 8s }
    - name: no-data
      noData: { for: 12s }
      action: pause
"#;

/// The same error and noData triggers, but the first weight bakes for an hour: a test can
/// break the source while the rollout sits at 10%.
const HOLD_POLICY: &str = r#"
apiVersion: canaryd.dev/v1
kind: RolloutPolicy
metadata:
  name: prom-hold
spec:
  analysis:
    interval: 4s
    alpha: 0.05
    minSamples: 50
    sampleRatioCheck: false
  steps:
    - setWeight: 10
    - bake: 1h
    - setWeight: 100
  metrics:
    error_rate: { kind: ratio, numerator: errors, denominator: requests }
  triggers:
    - name: error-rate
      metric: error_rate
      threshold: { above: 2% }
    - name: no-data
      noData: { for: 12s }
      action: pause
"#;

const REQUESTS: &str = r#"'sum(increase(http_requests_total{version="{{version}}"}[{{window}}]))'"#;
const ERRORS: &str = r#"'sum(increase(http_requests_total{version="{{version}}",code=~"5.."}[{{window}}])) or vector(0)'"#;
const LATENCY: &str = r#"'http_request_duration_seconds{version="{{version}}"}'"#;

/// A service `NAME` on a `file` router at `{dir}/NAME.json`, reading
/// Prometheus at `url` with the given signal queries (YAML scalars).
fn service(name: &str, url: &str, requests: &str, errors: &str) -> String {
    format!(
        "  {name}:\n    router: {{ file: {{ path: {{dir}}/{name}.json }} }}\n    source:\n      prometheusQuery:\n        url: {url}\n        timeout: 2s\n        signals:\n          requests: {requests}\n          errors: {errors}\n          latency_ms: {LATENCY}\n"
    )
}

/// One upstream's counters, as its `/metrics` exports them.
#[derive(Default)]
struct Counts {
    ok: u64,
    errors: u64,
    buckets: [u64; 5],
    sum_seconds: f64,
}

struct Upstream {
    version: &'static str,
    /// Errors per 1000 requests (0 healthy, 100 bad).
    error_per_mille: u64,
    counts: Mutex<Counts>,
}

impl Upstream {
    /// One tick of traffic: exactly `error_per_mille` of all requests so far
    /// are errors (rounded down), with no randomness.
    fn serve(&self, n: u64) {
        let mut c = self.counts.lock().unwrap();
        for _ in 0..n {
            let total = c.ok + c.errors + 1;
            if (total * self.error_per_mille) / 1000 > c.errors {
                c.errors += 1;
            } else {
                c.ok += 1;
            }
            let bucket = BUCKET_OF[((total - 1) % 10) as usize];
            c.buckets[bucket] += 1;
            c.sum_seconds += SECONDS_OF_BUCKET[bucket];
        }
    }

    fn exposition(&self) -> String {
        let c = self.counts.lock().unwrap();
        let v = self.version;
        let mut out = String::from(
            "# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n",
        );
        out += &format!(
            "http_requests_total{{version=\"{v}\",code=\"200\"}} {}\n",
            c.ok
        );
        // Like a real client library: the 5xx series exists from the first 5xx.
        if c.errors > 0 {
            out += &format!(
                "http_requests_total{{version=\"{v}\",code=\"500\"}} {}\n",
                c.errors
            );
        }
        out += "# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n";
        let mut cumulative = 0;
        for (le, own) in BOUNDS.iter().zip(c.buckets) {
            cumulative += own;
            out += &format!(
                "http_request_duration_seconds_bucket{{version=\"{v}\",le=\"{le}\"}} {cumulative}\n"
            );
        }
        out += &format!(
            "http_request_duration_seconds_sum{{version=\"{v}\"}} {}\nhttp_request_duration_seconds_count{{version=\"{v}\"}} {cumulative}\n",
            c.sum_seconds
        );
        out
    }
}

async fn metrics(State(up): State<Arc<Upstream>>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        up.exposition(),
    )
}

/// Serves `/metrics` on an ephemeral loopback port; returns `host:port`.
async fn serve_metrics(up: Arc<Upstream>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(up);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr.to_string()
}

/// Both upstreams, their traffic and a Prometheus scraping them every
/// second, with three scrapes of each done. Everything stops with the test's
/// runtime (tasks) and the returned value (Prometheus).
struct Setup {
    prometheus: Prometheus,
}

impl Setup {
    /// `None` (after saying so) when Prometheus cannot be installed.
    async fn start(canary_error_per_mille: u64) -> Setup {
        // A missing server is a failure, never a silent pass.
        tokio::task::block_in_place(prometheus::ensure_installed)
            .unwrap_or_else(|why| panic!("cannot install prometheus: {why}"));
        let baseline = Arc::new(Upstream {
            version: "v1",
            error_per_mille: 5,
            counts: Mutex::default(),
        });
        let canary = Arc::new(Upstream {
            version: "v2",
            error_per_mille: canary_error_per_mille,
            counts: Mutex::default(),
        });
        let targets = [
            serve_metrics(baseline.clone()).await,
            serve_metrics(canary.clone()).await,
        ];
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tick.tick().await;
                baseline.serve(REQUESTS_PER_TICK);
                canary.serve(REQUESTS_PER_TICK);
            }
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: upstreams\n    static_configs:\n      - targets: ['{}', '{}']\n",
            targets[0], targets[1]
        );
        let prometheus = tokio::task::block_in_place(|| prometheus::start(|_| config, None))
            .unwrap_or_else(|e| panic!("{e}"));
        let setup = Setup { prometheus };
        // Three scrapes of each target: `increase(...[4s])` has samples to
        // work with from the first window on.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if setup.instant_value("sum(count_over_time(up[10s]))") >= Some(6.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not scrape the upstreams within 20 s:\n{}",
                setup.prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        setup
    }

    fn url(&self) -> String {
        self.prometheus.url()
    }

    /// An instant query's single value, if it has one.
    fn instant_value(&self, promql: &str) -> Option<f64> {
        let path = format!(
            "/api/v1/query?query={}",
            promql
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        let (status, _, body) = prometheus::get(self.prometheus.port, &path, "*/*").ok()?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// The daemon with one service, `prom`, reading `setup`'s Prometheus, and
/// one policy (`name` is its file's stem and its `metadata.name`).
fn prom_daemon(setup: &Setup, name: &str, policy: &str) -> Daemon {
    let config = service("prom", &setup.url(), REQUESTS, ERRORS);
    let file = format!("{name}.yaml");
    tokio::task::block_in_place(|| Daemon::start_with_policies(&config, &[(file.as_str(), policy)]))
}

async fn start_rollout(api: &Api, service: &str, policy: &str) -> String {
    let a = api.start(service, policy).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

fn router_weight(d: &Daemon, service: &str) -> Option<u64> {
    let path = d.path(&format!("{service}.json"));
    path.exists()
        .then(|| read_json(&path)["canary_weight"].as_u64())
        .flatten()
}

fn trigger<'a>(rollout: &'a Value, name: &str) -> &'a Value {
    rollout["triggers"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no trigger {name}: {rollout}"))
}

async fn daemon_metrics(d: &Daemon) -> String {
    d.client().metrics().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_10_percent_is_rolled_back_on_prometheus_data() {
    let started = Instant::now();
    let setup = Setup::start(100).await;
    let d = prom_daemon(&setup, "prom-fast", FAST_POLICY);
    let api = d.client();
    let id = start_rollout(&api, "prom", "prom-fast").await;

    eventually("a rollback", Duration::from_secs(40), || async {
        api.rollout(&id).await["state"] == "rolled-back"
    })
    .await;
    let r = api.rollout(&id).await;
    assert_eq!(r["outcome"], "rolled-back", "{r}");
    assert_eq!(r["fired"], "error-rate", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("error-rate"), "{r}");
    assert_eq!(r["weight"], 0, "{r}");
    assert_eq!(router_weight(&d, "prom"), Some(0));

    let inc_id = r["incident"].as_str().expect("an incident");
    let inc = api.get(&format!("/v1/incidents/{inc_id}")).await.body;
    assert_eq!(inc["trigger"], "error-rate", "{inc}");
    assert_eq!(inc["router_result"]["weight"], 0, "{inc}");
    let ev = &inc["evidence"];
    // Prometheus' `increase()` extrapolates to the window's edges; the rate
    // itself is the canary's 10%.
    let estimate = ev["estimate"].as_f64().unwrap();
    assert!((0.08..=0.12).contains(&estimate), "{ev}");
    let requests = ev["canary"]["exposure"].as_u64().unwrap();
    let errors = ev["canary"]["events"].as_u64().unwrap();
    assert!(requests >= 50, "{ev}");
    let observed = errors as f64 / requests as f64;
    assert!((0.08..=0.12).contains(&observed), "{ev}");
    assert!(
        ev["log_e_value"].as_f64().unwrap() >= ev["log_boundary"].as_f64().unwrap(),
        "{ev}"
    );
    assert_eq!(api.get("/v1/audit/verify").await.body["ok"], true);
    println!(
        "rolled back with a canary error rate of {estimate:.4} ({errors}/{requests}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_goes_through_the_weight_steps_on_prometheus_data() {
    let started = Instant::now();
    let setup = Setup::start(0).await;
    let d = prom_daemon(&setup, "prom-fast", FAST_POLICY);
    let api = d.client();
    let id = start_rollout(&api, "prom", "prom-fast").await;

    let mut weights = BTreeSet::new();
    let mut states = BTreeSet::new();
    let mut source_states = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(50);
    let r = loop {
        let r = api.rollout(&id).await;
        if let Some(w) = router_weight(&d, "prom") {
            weights.insert(w);
        }
        states.insert(r["state"].as_str().unwrap().to_string());
        // A finished rollout's view has no live source status.
        if let Some(s) = r["source"]["status"].as_str() {
            source_states.insert(s.to_string());
        }
        if r["state"] == "promoted" {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "not promoted in 50 s (router weights seen {weights:?}): {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r["outcome"], "promoted", "{r}");
    assert!(r["incident"].is_null(), "{r}");
    assert!(r["fired"].is_null(), "{r}");
    assert_eq!(r["weight"], 100, "{r}");
    // `unknown` until the first window closes; never `failing`.
    assert!(source_states.contains("ok"), "{source_states:?}");
    assert!(!source_states.contains("failing"), "{source_states:?}");
    assert_eq!(trigger(&r, "error-rate")["verdict"], "ok", "{r}");
    // The canary's p95 lies in the (100 ms, 250 ms] bucket of the scraped
    // histogram; the objective trigger reports the bucket's lower bound,
    // the one least favourable to firing (in whole microseconds: 100.001).
    let p95 = trigger(&r, "p95-latency");
    assert_eq!(p95["verdict"], "ok", "{r}");
    let estimate = p95["estimate"].as_f64().unwrap();
    assert!(estimate > 100.0 && estimate <= 100.001, "{r}");
    assert_eq!(p95["boundary"].as_f64(), Some(500.0), "{r}");
    assert!(
        weights.is_superset(&BTreeSet::from([10, 50, 100])),
        "router weights seen: {weights:?}"
    );
    assert!(
        states.iter().all(|s| s == "progressing" || s == "promoted"),
        "{states:?}"
    );
    assert_eq!(api.get("/v1/incidents").await.body, Value::Array(vec![]));
    assert_eq!(api.get("/v1/audit/verify").await.body["ok"], true);
    println!(
        "promoted through {weights:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stopped_mid_rollout_pauses_on_no_data_and_says_why() {
    let started = Instant::now();
    let mut setup = Setup::start(0).await;
    let d = prom_daemon(&setup, "prom-hold", HOLD_POLICY);
    let api = d.client();
    let id = start_rollout(&api, "prom", "prom-hold").await;

    eventually("data from prometheus", Duration::from_secs(20), || async {
        let r = api.rollout(&id).await;
        r["source"]["status"] == "ok" && r["canary_requests_in_step"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(router_weight(&d, "prom"), Some(10));

    setup.prometheus.kill();
    eventually("the source failing", Duration::from_secs(15), || async {
        api.rollout(&id).await["source"]["status"] == "failing"
    })
    .await;
    let r = api.rollout(&id).await;
    let err = r["source"]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("prometheusQuery") && err.contains("unreachable"),
        "{r}"
    );
    assert!(r["source"]["last_success_at"].is_string(), "{r}");
    println!("source status after the kill: {}", r["source"]);
    let up = daemon_metrics(&d).await;
    assert!(up.contains("canaryd_source_up{service=\"prom\"} 0"), "{up}");

    eventually("a pause on no data", Duration::from_secs(25), || async {
        api.rollout(&id).await["state"] != "progressing"
    })
    .await;
    let r = api.rollout(&id).await;
    assert_eq!(r["state"], "paused", "{r}");
    println!("after the noData trigger: {} ({})", r["state"], r["reason"]);
    assert!(r["outcome"].is_null(), "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("no-data"),
        "the reason should name the noData trigger: {r}"
    );
    assert_eq!(trigger(&r, "no-data")["verdict"], "fired", "{r}");
    assert!(
        trigger(&r, "no-data")["estimate"].as_f64() >= Some(12.0),
        "{r}"
    );
    assert_eq!(r["source"]["status"], "failing", "{r}");
    assert!(r["incident"].is_null(), "{r}");
    assert!(r["fired"].is_null(), "{r}");
    assert_eq!(r["weight"], 10, "{r}");
    assert_eq!(router_weight(&d, "prom"), Some(10));
    assert!(
        daemon_metrics(&d).await.lines().any(|l| l
            .starts_with("canaryd_source_errors_total{service=\"prom\",")
            && !l.ends_with(" 0")),
        "no source errors counted"
    );

    // Prometheus back on the same address: the source recovers by itself,
    // the pause holds until an operator resumes, and then data counts again.
    tokio::task::block_in_place(|| setup.prometheus.restart()).unwrap_or_else(|e| panic!("{e}"));
    eventually("the source recovering", Duration::from_secs(20), || async {
        api.rollout(&id).await["source"]["status"] == "ok"
    })
    .await;
    let r = api.rollout(&id).await;
    assert_eq!(r["state"], "paused", "{r}");
    assert!(r["source"]["last_error"].is_string(), "{r}");
    let resumed = api
        .post(
            &format!("/v1/rollouts/{id}/resume"),
            serde_json::json!({"reason": "prometheus is back"}),
        )
        .await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    eventually(
        "canary requests after resume",
        Duration::from_secs(15),
        || async { api.rollout(&id).await["canary_requests_in_step"].as_u64() > Some(0) },
    )
    .await;
    let r = api.rollout(&id).await;
    assert_eq!(r["state"], "progressing", "{r}");
    assert_eq!(r["source"]["status"], "ok", "{r}");
    assert_ne!(trigger(&r, "no-data")["verdict"], "fired", "{r}");
    assert_eq!(r["weight"], 10, "{r}");
    assert!(r["incident"].is_null(), "{r}");
    assert_eq!(api.get("/v1/audit/verify").await.body["ok"], true);
    println!(
        "paused on no data after prometheus stopped, resumed after it came back, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_error_and_an_empty_answer_never_read_as_healthy() {
    let started = Instant::now();
    let setup = Setup::start(0).await;
    // `increase` without a range: Prometheus refuses it (`bad_data`).
    let bad_errors = r#"'sum(increase(http_requests_total{version="{{version}}",code=~"5.."}))'"#;
    // A job nobody scrapes: no series, so no requests (`Empty`).
    let no_requests = r#"'sum(increase(http_requests_total{version="{{version}}",job="no-such-job"}[{{window}}]))'"#;
    let config = format!(
        "{}{}",
        service("badql", &setup.url(), REQUESTS, bad_errors),
        service("empty", &setup.url(), no_requests, ERRORS)
    );
    let d = tokio::task::block_in_place(|| {
        Daemon::start_with_policies(&config, &[("prom-fast.yaml", FAST_POLICY)])
    });
    let api = d.client();
    let bad = start_rollout(&api, "badql", "prom-fast").await;
    let empty = start_rollout(&api, "empty", "prom-fast").await;
    eventually("the first weight", Duration::from_secs(10), || async {
        api.rollout(&bad).await["weight"] == 10 && api.rollout(&empty).await["weight"] == 10
    })
    .await;

    // The 4 s bakes end long before the pause: only the missing data holds
    // the rollouts at their first weight.
    let deadline = Instant::now() + Duration::from_secs(35);
    let mut paused = BTreeSet::new();
    while paused.len() < 2 {
        for (service, id) in [("badql", &bad), ("empty", &empty)] {
            let r = api.rollout(id).await;
            assert_eq!(r["weight"], 10, "{r}");
            assert!(router_weight(&d, service) <= Some(10), "{r}");
            assert_eq!(r["canary_requests_in_step"], 0, "{r}");
            assert!(r["outcome"].is_null(), "{r}");
            assert_eq!(trigger(&r, "error-rate")["verdict"], "inconclusive", "{r}");
            assert_ne!(r["source"]["status"], "ok", "{r}");
            if r["state"] == "paused" {
                paused.insert(service);
            } else {
                assert_eq!(r["state"], "progressing", "{r}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "not both paused in 35 s (paused: {paused:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let r = api.rollout(&bad).await;
    let err = r["source"]["last_error"].as_str().unwrap_or_default();
    assert_eq!(r["source"]["status"], "failing", "{r}");
    assert!(
        err.contains("query error (bad_data)") && err.contains("increase"),
        "{r}"
    );
    assert!(r["source"]["last_success_at"].is_null(), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("no-data"), "{r}");
    assert!(r["incident"].is_null(), "{r}");
    println!("refused query: {} ({})", r["source"], r["reason"]);

    let r = api.rollout(&empty).await;
    let err = r["source"]["last_error"].as_str().unwrap_or_default();
    assert_eq!(r["source"]["status"], "failing", "{r}");
    assert!(
        err.contains("no data for requests") && err.contains("returned no series"),
        "{r}"
    );
    assert!(r["source"]["last_success_at"].is_null(), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("no-data"), "{r}");
    assert!(r["incident"].is_null(), "{r}");
    println!("empty answer: {} ({})", r["source"], r["reason"]);

    let text = daemon_metrics(&d).await;
    for service in ["badql", "empty"] {
        assert!(
            text.contains(&format!("canaryd_source_up{{service=\"{service}\"}} 0")),
            "{text}"
        );
    }
    assert_eq!(api.get("/v1/audit/verify").await.body["ok"], true);
    println!(
        "a refused query and an empty answer both held at 10% and paused, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
